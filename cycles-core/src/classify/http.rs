//! HTTP requests (method and URL path) and GraphQL documents (operation type, operation name
//! and root fields).
//!
//! GET/HEAD/OPTIONS 0 · POST/PUT/PATCH 2 · DELETE 3 · DELETE or POST on a path naming a volume,
//! backup, database, project, environment, snapshot or cluster 4 · PUT/PATCH on such a path 3 ·
//! a destructive verb in the path (`/users/7/purge`) 3, with a critical noun 4.
//! A GraphQL body (a `query` sent to a GraphQL endpoint, or one that starts like a GraphQL
//! document anywhere) is classified by its operations instead of the method: queries 0, mutations
//! 2, mutations whose operation name or root field names a destructive verb 3, with a critical
//! noun 4 (`mutation { volumeDelete(volumeId: "...") }` is 4). A GraphQL document that does not
//! parse is 4 (fail closed), and so is a POST to a GraphQL endpoint whose body holds no readable
//! document (a persisted-query id, a body from a file). A `?query=` document in the URL is read
//! too. `DELETE /repos/{owner}/{repo}` and wildcard or `_all` deletes are critical. Nested
//! mutation fields count (`volume { delete }`).
//! Parameters count too: an RPC action (`?Action=DeleteVolume`, `{"method": "volumes.delete"}`)
//! like a name, SQL in the body (`{"sql": "DROP TABLE t"}`) by the SQL rules, a `_method`
//! override by the method rules; so do headers naming the operation (`X-Amz-Target`,
//! `SOAPAction`) and a body that is a command as a list of words (`["FLUSHALL"]`).

use super::sql::SqlDialect;
use super::{Verdict, names};
use crate::model::Tier;

/// Longest GraphQL document parsed; longer is tier 4 (`graphql.too_long`).
pub const MAX_GRAPHQL_LEN: usize = 1 << 20;
/// Deepest inline-fragment nesting at the root of an operation.
const MAX_FRAGMENT_DEPTH: usize = 16;

/// Classifies an HTTP request. `body` is the request body when known (a GraphQL body is
/// an object with a `query` string, or a JSON string of one).
///
/// ```
/// use cycles_core::classify::http;
/// use cycles_core::Tier;
/// assert_eq!(http::classify("GET", "https://api.example.com/v1/volumes", None).tier, Tier::T0);
/// assert_eq!(http::classify("DELETE", "/v1/users/7", None).tier, Tier::T3);
/// assert_eq!(http::classify("DELETE", "/v1/volumes/vol-1", None).tier, Tier::T4);
/// let body = serde_json::json!({"query": "mutation { volumeDelete(volumeId: \"v\") }"});
/// assert_eq!(http::classify("POST", "https://backboard.railway.app/graphql/v2", Some(&body)).tier, Tier::T4);
/// ```
pub fn classify(method: &str, url: &str, body: Option<&serde_json::Value>) -> Verdict {
    let mut v = Verdict::default();
    apply(method, url, body, &mut v);
    v
}

/// The path of a URL (or of a bare path): no scheme, host, query or fragment. Backslashes count
/// as slashes, as URL parsers read them in http(s) URLs (see [`apply`]).
fn url_path(url: &str) -> &str {
    let rest = match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            match after.find(['/', '?', '#']) {
                Some(j) => &after[j..],
                None => "",
            }
        }
        None => url,
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

/// Decodes `%XX` escapes so `/vol%75mes` reads as `/volumes` (invalid escapes stay as is).
fn percent_decode(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains('%') {
        return std::borrow::Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The GraphQL document and operation name carried by a body, if it is a GraphQL body.
fn graphql_in(body: &serde_json::Value) -> Option<(String, Option<String>)> {
    match body {
        serde_json::Value::Object(m) => {
            let q = m.get("query")?.as_str()?;
            let op = m
                .get("operationName")
                .or_else(|| m.get("operation_name"))
                .and_then(|o| o.as_str())
                .map(str::to_string);
            Some((q.to_string(), op))
        }
        serde_json::Value::String(s) => {
            let parsed: serde_json::Value = serde_json::from_str(s).ok()?;
            match parsed {
                serde_json::Value::Object(_) => graphql_in(&parsed),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether a header name overrides the request method for servers that honour it.
pub(crate) fn is_method_override(name: &str) -> bool {
    [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Whether an argument key names the request method in some tool's schema (`method`,
/// `Method`, `http_method`, `httpMethod`, `verb`, `requestMethod`).
pub(crate) fn is_method_key(key: &str) -> bool {
    let canonical: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    matches!(
        canonical.as_str(),
        "method" | "httpmethod" | "verb" | "httpverb" | "requestmethod" | "requestverb"
    )
}

/// Whether a value is an HTTP method that writes or deletes (a read method names nothing to
/// fear wherever it stands).
pub(crate) fn is_http_verb(value: &str) -> bool {
    ["POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .any(|m| value.trim().eq_ignore_ascii_case(m))
}

/// Arguments holding query parameters apart from the URL (Python requests' `params`).
pub(crate) const QUERY_PARAMETER_KEYS: &[&str] = &[
    "params",
    "query_params",
    "queryParams",
    "search_params",
    "searchParams",
    "qs",
    "query_string",
    "queryString",
];

/// Query parameters as a query string: an object (list values repeat the key, nested values
/// as JSON), a list of `[key, value]` pairs, or a query string itself; `None` for anything
/// else (fail closed).
pub(crate) fn query_string(params: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let encode = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '%' | '&' | '=' | '#' | '+' | '?' => out.push_str(&format!("%{:02X}", c as u32)),
                _ => out.push(c),
            }
        }
        out
    };
    // A nested value is sent in some serialisation of its own: its JSON text keeps its words.
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => Some(String::new()),
        _ => Some(v.to_string()),
    };
    let mut pairs = Vec::new();
    let mut push = |k: &str, v: &Value| -> Option<()> {
        match v {
            Value::Array(items) => {
                for item in items {
                    pairs.push(format!("{}={}", encode(k), encode(&scalar(item)?)));
                }
            }
            _ => pairs.push(format!("{}={}", encode(k), encode(&scalar(v)?))),
        }
        Some(())
    };
    match params {
        Value::Null => {}
        Value::String(s) => return Some(s.trim_start_matches('?').to_string()),
        Value::Object(m) => {
            for (k, v) in m {
                push(k, v)?;
            }
        }
        Value::Array(items) => {
            for item in items {
                match item.as_array().map(Vec::as_slice) {
                    Some([Value::String(k), v]) => push(k, v)?,
                    _ => return None,
                }
            }
        }
        _ => return None,
    }
    Some(pairs.join("&"))
}

/// A request's headers as `(name, value)` pairs, from an object (`{"X-Amz-Target": "..."}`,
/// a list value joined with commas), a list of `"Name: value"` lines (curl's `-H`), of
/// `{"name", "value"}` objects (HAR, Postman) or of `[name, value]` pairs, or one such line.
pub(crate) fn header_pairs(headers: Option<&serde_json::Value>) -> Vec<(String, String)> {
    use serde_json::Value;
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|i| i.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        // `{"X-Amz-Target": {"value": "..."}}`
        Value::Object(o) => o
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("value"))
            .and_then(|(_, val)| val.as_str())
            .map(|s| s.trim().to_string()),
        _ => None,
    };
    let line = |l: &str| {
        l.split_once(':')
            .map(|(k, val)| (k.trim().to_string(), val.trim().to_string()))
    };
    match headers {
        Some(Value::Object(h)) => h
            .iter()
            .filter_map(|(k, val)| Some((k.trim().to_string(), text(val)?)))
            .collect(),
        Some(Value::Array(h)) => h
            .iter()
            .flat_map(|item| match item {
                Value::String(l) => line(l).into_iter().collect(),
                Value::Object(o) => {
                    let field = |names: &[&str]| {
                        o.iter()
                            .find(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
                            .map(|(_, val)| val)
                    };
                    match (field(&["name", "key"]), field(&["value"])) {
                        (Some(Value::String(k)), Some(val)) => text(val)
                            .map(|val| (k.trim().to_string(), val))
                            .into_iter()
                            .collect(),
                        // `[{"X-Amz-Target": "...", ...}]`: headers as keys.
                        _ => o
                            .iter()
                            .filter_map(|(k, val)| Some((k.trim().to_string(), text(val)?)))
                            .collect(),
                    }
                }
                Value::Array(pair) => match pair.as_slice() {
                    [Value::String(k), val] => text(val)
                        .map(|val| (k.trim().to_string(), val))
                        .into_iter()
                        .collect(),
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            })
            .collect(),
        Some(Value::String(l)) => l.lines().filter_map(line).collect(),
        _ => Vec::new(),
    }
}

/// Raises `v` by the operation a request's headers name, like an RPC action parameter: AWS's
/// JSON protocol puts it in `X-Amz-Target: DynamoDB_20120810.DeleteTable` (the body only holds
/// its parameters), SOAP in `SOAPAction: "urn:.../DeleteUser"` or SOAP 1.2's `Content-Type:
/// application/soap+xml; action="..."`. Only the operation's name is read, not the service's
/// (`DynamoDB` is no database being deleted in `DeleteItem`).
pub(crate) fn apply_headers<K: AsRef<str>, V: AsRef<str>>(headers: &[(K, V)], v: &mut Verdict) {
    for (name, value) in headers {
        let (name, value) = (name.as_ref(), value.as_ref());
        if name.eq_ignore_ascii_case("x-amz-target") {
            let operation = value.rsplit('.').next().unwrap_or(value);
            match names::scan_operation(operation) {
                // AWS operations are a verb and a noun: deleting a whole store (a DynamoDB
                // table, a Kinesis stream, a log group, a keyspace, a file system) deletes the
                // data in it.
                (true, false) if deletes_aws_store(operation) => {
                    v.raise(Tier::T4, "http.action_critical")
                }
                _ => action_rules(operation, v),
            }
        } else if name.eq_ignore_ascii_case("soapaction") {
            soap_action(value, v);
        } else if name.eq_ignore_ascii_case("content-type")
            && value.to_ascii_lowercase().contains("soap")
        {
            for parameter in value.split(';') {
                if let Some((key, action)) = parameter.split_once('=')
                    && key.trim().eq_ignore_ascii_case("action")
                {
                    soap_action(action, v);
                }
            }
        }
    }
}

/// Whether an AWS operation name deletes a whole data store (by its noun).
fn deletes_aws_store(operation: &str) -> bool {
    let lower = operation.to_ascii_lowercase();
    [
        "table",
        "tables",
        "stream",
        "loggroup",
        "keyspace",
        "filesystem",
        "collection",
        "userpool",
        "directory",
        "disk",
        "domain",
        "ledger",
        "graph",
        "replicationgroup",
        "cachecluster",
        "index",
        "vault",
        "secret",
        "queue",
    ]
    .iter()
    .any(|noun| lower.ends_with(noun))
}

/// A SOAP action URI (`"http://tempuri.org/IBackupService/Delete"`): the verb must be in its
/// operation, the last segment; the noun may be there or in the service before it.
fn soap_action(uri: &str, v: &mut Verdict) {
    let uri = uri.trim().trim_matches('"').trim_end_matches(['/', '#']);
    let mut parts = uri.rsplit(['/', '#', ':']);
    let operation = parts.next().unwrap_or(uri);
    let service = parts.next().unwrap_or("");
    let (destructive, critical) = names::scan_operation(operation);
    if !destructive {
        return;
    }
    if critical || names::scan_operation(service).1 {
        v.raise(Tier::T4, "http.action_critical");
    } else {
        v.raise(Tier::T3, "http.action_destructive");
    }
}

/// An RPC action name that destroys: 3, with a critical noun 4, and 4 when it deletes a whole
/// store (AWS's query API: `Action=PurgeQueue`, `DeleteReplicationGroup`).
fn action_rules(action: &str, v: &mut Verdict) {
    match names::scan_operation(action) {
        (true, true) => v.raise(Tier::T4, "http.action_critical"),
        (true, false) if deletes_aws_store(action) => v.raise(Tier::T4, "http.action_critical"),
        (true, false) => v.raise(Tier::T3, "http.action_destructive"),
        _ => {}
    }
}

/// A body that is a Redis command as a list of words (Upstash's REST API: `["FLUSHALL"]`,
/// `["DEL", "key"]`), or a list of such commands (its `/pipeline`, `/multi-exec`): every
/// command Redis knows is rated by the Redis table, whatever its case; a list whose first word
/// is no Redis command is data.
fn command_list_rules(body: &serde_json::Value, redis_endpoint: bool, v: &mut Verdict) {
    use super::redis::rate;
    let serde_json::Value::Array(items) = body else {
        return;
    };
    let mut one = |command: &[serde_json::Value]| {
        let words: Vec<&str> = command.iter().map_while(|w| w.as_str()).collect();
        // Off a Redis endpoint a list of words is data (`["debug", "config"]` labels) unless
        // its first word can only be a Redis command.
        let unambiguous = words.first().is_some_and(|w| {
            let upper = w.to_ascii_uppercase();
            matches!(
                upper.as_str(),
                "FLUSHALL"
                    | "FLUSHDB"
                    | "SWAPDB"
                    | "UNLINK"
                    | "GETDEL"
                    | "EVALSHA"
                    | "EVAL"
                    | "FCALL"
                    | "REPLICAOF"
                    | "SLAVEOF"
            ) || (upper.contains('.')
                && upper
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'.' || b == b'_'))
        });
        if !(redis_endpoint || unambiguous) {
            return;
        }
        if let (effect, true) = rate(&words) {
            redis_rules(effect, v);
        }
    };
    if items.first().is_some_and(serde_json::Value::is_array) {
        for command in items {
            if let Some(words) = command.as_array() {
                one(words);
            }
        }
    } else {
        one(items);
    }
}

/// The host of a URL as HTTP clients read it (WHATWG parsing, as in reqwest and Node): tabs
/// and newlines dropped, any run of slashes after the scheme (`https:x.io`, `https:///x.io`),
/// userinfo and port removed, percent escapes decoded, ideographic full stops as dots, a
/// trailing dot dropped, lowercased; empty for a bare path.
fn url_host(url: &str) -> String {
    let url: String = url
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let Some(rest) = after_scheme(&url) else {
        return String::new();
    };
    let authority = rest.split(['/', '\\', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let host = if host.starts_with('[') {
        host.split(']').next().unwrap_or(host)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    percent_decode(host)
        .replace(['\u{3002}', '\u{FF0E}', '\u{FF61}'], ".")
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// The explicit port of a URL (`9200` of `http://localhost:9200/logs`), if any.
fn url_port(url: &str) -> Option<&str> {
    let authority = after_scheme(url)?.split(['/', '\\', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let port = host.rsplit_once(']').map_or(host, |(_, after)| after);
    port.rsplit_once(':').map(|(_, p)| p)
}

/// A URL after its scheme and the slashes that follow (`x.io/a` of `https:///x.io/a`), or
/// `None` when it has no scheme (a bare path).
fn after_scheme(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once(':')?;
    let scheme_like = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    scheme_like.then(|| rest.trim_start_matches(['/', '\\']))
}

/// The HTTP rules for a Redis command that deletes or empties a store.
fn redis_rules(effect: super::redis::Effect, v: &mut Verdict) {
    use super::redis::Effect;
    match effect {
        Effect::Flush => v.raise(Tier::T4, "http.action_critical"),
        Effect::Delete => v.raise(Tier::T3, "http.action_destructive"),
        Effect::Read | Effect::Write => {}
    }
}

/// Whether a URL is a Redis REST endpoint (Upstash, Vercel KV), where a body or a path is a
/// Redis command.
fn redis_endpoint(url: &str) -> bool {
    let host = url_host(url);
    host.ends_with(".upstash.io") || host.ends_with(".kv.vercel-storage.com")
}

/// Raises `v` by an HTTP request.
pub(crate) fn apply(method: &str, url: &str, body: Option<&serde_json::Value>, v: &mut Verdict) {
    apply_request(method, url, body, MAX_BATCH_DEPTH, v);
}

/// Whether `method` on a path is a read sent as POST because it has a body
/// (`POST /v1/databases/{id}/query` (Notion), `POST .../search`, Google's
/// `.../documents:runQuery`): the path's nouns do not make it critical by themselves.
fn read_post(method: &str, destructive: bool, segments: &[&str]) -> bool {
    let last = segments
        .last()
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    // Google's custom methods follow a colon (`.../documents:runQuery`,
    // `.../models/gemini:generateContent`).
    let custom = last
        .rsplit_once(':')
        .map_or(last.as_str(), |(_, verb)| verb);
    !destructive
        && method.eq_ignore_ascii_case("POST")
        && (matches!(
            last.as_str(),
            "query"
                | "queries"
                | "search"
                | "list"
                | "get"
                | "find"
                | "lookup"
                | "count"
                | "describe"
        ) || matches!(
            custom,
            "query"
                | "runquery"
                | "runaggregationquery"
                | "search"
                | "list"
                | "get"
                | "batchget"
                | "lookup"
                | "count"
                | "counttokens"
                | "generatecontent"
                | "streamgeneratecontent"
                | "embedcontent"
                | "batchembedcontents"
                | "predict"
                | "publish"
        ))
}

/// Whether the path's nouns make `method` on it critical.
fn critical_for(
    method: &str,
    destructive: bool,
    path_critical: bool,
    segments: &[&str],
    data_store_port: bool,
) -> bool {
    let mut critical = path_critical && !read_post(method, destructive, segments);
    if method.eq_ignore_ascii_case("DELETE") {
        // `DELETE /repos/{owner}/{repo}` (Bitbucket: `/repositories/{ws}/{repo}`) deletes a
        // repository; `DELETE /logs-*` or `/_all` (Elasticsearch) every index it matches.
        let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
        let n = lower.len();
        critical |= n >= 3 && matches!(lower[n - 3].as_str(), "repos" | "repositories");
        critical |= segments.iter().any(|s| s.contains('*') || *s == "_all");
        // A store or a container of everything in it, deleted by its id (`/namespaces/x`) or
        // whole (`/namespaces/default/persistentvolumeclaims`).
        critical |= lower
            .iter()
            .skip(n.saturating_sub(2))
            .any(|s| DELETED_STORES.contains(&s.as_str()));
        // Heroku's data add-ons (`/apps/a/addons/postgresql-curved-123`).
        critical |= n >= 2
            && lower[n - 2] == "addons"
            && ["postgres", "redis", "mysql", "mongo", "kafka"]
                .iter()
                .any(|d| lower[n - 1].contains(d));
        // CouchDB (port 5984) and Elasticsearch/OpenSearch (9200) delete a whole database or
        // index by `DELETE /{name}`.
        critical |= n == 1 && !lower[0].starts_with('_') && data_store_port;
        // DigitalOcean deletes a droplet with its volumes and snapshots.
        critical |= lower
            .iter()
            .any(|s| s == "destroy_with_associated_resources");
    }
    critical
}

/// Path segments naming a store, or a container of everything in it, whose DELETE (of one, by
/// the segment after it, or of all) deletes data: Kubernetes namespaces and persistent volumes,
/// Azure resource groups, storage accounts and database servers, EFS file systems, OpenSearch
/// domains, Render's and others' databases, Fly apps (with their volumes), GitHub orgs, GitLab
/// groups, workspaces.
const DELETED_STORES: &[&str] = &[
    "namespaces",
    "persistentvolumes",
    "persistentvolumeclaims",
    "resourcegroups",
    "storageaccounts",
    "flexibleservers",
    "file-systems",
    "filesystems",
    "domain",
    "domains",
    "postgres",
    "postgresql",
    "mysql",
    "redis",
    "keyspaces",
    "datasets",
    "tables",
    "collections",
    "indices",
    "disks",
    "apps",
    "orgs",
    "organizations",
    "groups",
    "workspaces",
];

/// How deep batches inside batches are read (a generic batch endpoint may run a batch
/// sub-request as a batch).
const MAX_BATCH_DEPTH: usize = 4;

/// Raises `v` by one request; `batch`: how many levels of sub-requests in its body are still
/// read (0: none).
fn apply_request(
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
    batch: usize,
    v: &mut Verdict,
) {
    let method = method.trim();
    let url = url.trim().replace('\\', "/");
    let path = percent_decode(url_path(&url));
    let (destructive, path_critical) = names::scan(&path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let data_store_port = matches!(url_port(&url), Some("5984" | "9200"));
    // A DELETE whose query matches everything (FHIR's conditional `DELETE Patient?name=*`)
    // deletes every match.
    let wildcard_delete = method.eq_ignore_ascii_case("DELETE")
        && url
            .split_once('?')
            .is_some_and(|(_, q)| percent_decode(q).contains('*'));
    let critical = wildcard_delete
        || critical_for(
            method,
            destructive,
            path_critical,
            &segments,
            data_store_port,
        );
    // Upstash's REST API also takes a command as the path: `/unlink/k`, `/config/set/dir/x`
    // (the path after the host as clients read it, `https:x.upstash.io/unlink/k` too).
    if redis_endpoint(&url) {
        let words: Vec<String> = after_scheme(&url)
            .and_then(|rest| rest.split_once(['/', '\\']).map(|(_, path)| path))
            .map(|path| path.split(['?', '#']).next().unwrap_or(path))
            .map(|path| {
                path.split(['/', '\\'])
                    .filter(|w| !w.is_empty())
                    .map(|w| percent_decode(w).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        if words.first().is_some_and(|first| {
            !matches!(
                first.to_ascii_lowercase().as_str(),
                "pipeline" | "multi-exec" | "multi" | "exec"
            )
        }) {
            redis_rules(super::redis::rate(&words).0, v);
        }
    }
    // `/graphql`, `/graphql/v2`, and `/gql` (Twitch and others).
    let graphql_endpoint = segments.iter().any(|s| {
        let s = s.to_ascii_lowercase();
        s.contains("graphql") || s == "gql"
    });
    let mut graphql = false;
    // GraphQL over GET (or a POST that also carries one): the document is in `?query=`.
    if let Some(q) = url
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or(q))
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("query=")))
        && graphql_endpoint
    {
        let doc = percent_decode(&q.replace('+', " ")).into_owned();
        graphql = true;
        apply_graphql(&doc, None, v);
    }
    if let Some(body) = body {
        // A batch is an array of operations; every one of them runs (also sent as a JSON
        // string).
        let parsed_batch = match body {
            serde_json::Value::String(text) if text.trim_start().starts_with('[') => {
                serde_json::from_str::<serde_json::Value>(text).ok()
            }
            _ => None,
        };
        let items: &[serde_json::Value] = match parsed_batch.as_ref().unwrap_or(body) {
            serde_json::Value::Array(a) => a,
            other => std::slice::from_ref(other),
        };
        for item in items {
            if let Some((doc, op)) = graphql_in(item)
                // Off a GraphQL endpoint a `query` is GraphQL only if it starts like a
                // document: `{"query": "DROP TABLE t"}` to a SQL-over-HTTP API is SQL (read
                // below), `{"query": "red shoes"}` to a search API is a search.
                && (graphql_endpoint || looks_like_graphql(&doc))
            {
                graphql = true;
                apply_graphql(&doc, op.as_deref(), v);
            } else if let serde_json::Value::String(doc) = item
                && gql::parse(doc).is_some()
            {
                // An `application/graphql` body: the document itself.
                graphql = true;
                apply_graphql(doc, None, v);
            }
        }
    }
    let read = ["GET", "HEAD", "OPTIONS", "TRACE"]
        .iter()
        .any(|m| method.eq_ignore_ascii_case(m));
    if graphql_endpoint && !graphql && !read {
        // A persisted query id, a body from a file, a misspelt key: the operation that runs
        // cannot be seen.
        v.raise(Tier::T4, "http.graphql_unknown_body");
    }
    // GitHub's `PATCH /repos/o/r/git/refs/heads/main` with `"force": true` rewrites the
    // branch's history.
    if !read
        && segments.windows(2).any(|w| w == ["git", "refs"])
        && body.is_some_and(|b| b.get("force").is_some_and(|f| f == true || f == "true"))
    {
        v.raise(Tier::T3, "http.force_update");
    }
    if !graphql {
        method_rules(method, critical, v);
        // A persisted GraphQL query (`extensions.persistedQuery`, `documentId`): its operation
        // name is all there is to read of it.
        if let Some(serde_json::Value::Object(m)) = body
            && let Some(name) = m.get("operationName").and_then(|n| n.as_str())
        {
            action_rules(name, v);
        }
    }
    // Keys that carry SQL for some services and words for others are read as SQL only at an
    // endpoint that runs statements, never at a search.
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    // ClickHouse's HTTP interface (`POST /?query=...`, port 8123/8443) and libSQL's v1 API
    // (`POST /` with `statements`) run SQL at the root.
    let sql_endpoint = !lower.iter().any(|s| s.contains("search"))
        && (lower.is_empty()
            || matches!(url_port(&url), Some("8123" | "8443"))
            || lower.iter().any(|s| {
                [
                    "sql",
                    "query",
                    "queries",
                    "statement",
                    "statements",
                    "exec",
                    "execute",
                    "run",
                    "pipeline",
                    "rpc",
                    "jobs",
                ]
                .iter()
                .any(|k| s.contains(k))
            }));
    let mut found = Verdict::default();
    let overrides = parameter_rules(&url, body, read, sql_endpoint, graphql_endpoint, &mut found);
    // A read sent as POST to a critical path (BigQuery's `queries`) is exempt only while what
    // it runs is positively a read: SQL or an action that destroys (3 or more), and any query
    // text that does not parse as a read (an unknown statement, Cypher, a misspelt key's SQL),
    // keep it the critical POST it would be without the exemption.
    if path_critical
        && read_post(method, destructive, &segments)
        && (found.tier >= Tier::T3 || !body_queries_read(body, &lower))
    {
        v.raise(Tier::T4, "http.post_critical");
    }
    for rule in &found.rules {
        v.raise(found.tier, rule);
    }
    for m in overrides {
        let critical = critical_for(&m, destructive, path_critical, &segments, data_store_port);
        method_rules(&m, critical, v);
    }
    if batch > 0
        && let Some(body) = body
    {
        for (method, url, body) in sub_requests(body) {
            apply_request(&method, &url, body.as_ref(), batch - 1, v);
        }
    }
    match (destructive, critical) {
        (true, true) => v.raise(Tier::T4, "http.destructive_path_critical"),
        (true, false) => v.raise(Tier::T3, "http.destructive_path"),
        _ => {}
    }
}

/// Keys whose string value is query text (compared by [`key_form`], by their end:
/// `sqlStatements`, `queryText`, `migrationSql`), and the exact short ones.
const QUERY_TEXT_KEY_ENDS: &[&str] = &[
    "sql",
    "query",
    "queries",
    "statement",
    "statements",
    "stmt",
    "stmts",
    "querytext",
    "querystring",
    "sqltext",
    "cypher",
    "script",
];
const QUERY_TEXT_KEYS: &[&str] = &["q", "command", "commands"];

/// Keys that hold a query's text inside a query object (`{"query": {"text": ...}}`).
const QUERY_TEXT_INNER_KEYS: &[&str] = &["text", "value", "string", "body", "source", "code"];

/// A key lowercased without separators (`query_text`, `queryText` → `querytext`).
fn key_form(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn is_query_text_key(key: &str) -> bool {
    let key = key_form(key);
    QUERY_TEXT_KEYS.contains(&key.as_str()) || QUERY_TEXT_KEY_ENDS.iter().any(|e| key.ends_with(e))
}

/// Whether every query text of a read-exempt POST's body (`query`, `sql`, `statement` and the
/// like, a list of them, the text of a query object, or a raw text body) is positively a
/// read: SQL that parses as one, or at a search endpoint words that do not read as SQL. A body
/// without query text runs only what the endpoint names.
fn body_queries_read(body: Option<&serde_json::Value>, segments: &[String]) -> bool {
    use serde_json::Value;
    // A search, and a model's prompt (Vertex AI's `:predict`, Gemini's `:generateContent`),
    // take words: there a `query` that does not read as SQL is no statement.
    let search = segments.last().is_some_and(|s| {
        let custom = s.rsplit_once(':').map_or(s.as_str(), |(_, verb)| verb);
        s.contains("search")
            || matches!(
                custom,
                "predict"
                    | "rawpredict"
                    | "generatecontent"
                    | "streamgeneratecontent"
                    | "embedcontent"
                    | "batchembedcontents"
                    | "counttokens"
            )
    });
    let text_reads = |text: &str| {
        if search {
            let mut sql = Verdict::default();
            !super::sql::apply_if_sql(text, &mut sql) || sql.tier == Tier::T0
        } else {
            text.trim().is_empty() || super::sql::parses_as_read(text)
        }
    };
    fn walk(value: &Value, query: bool, depth: usize, texts: &mut Vec<String>) -> bool {
        if depth > MAX_BODY_DEPTH || texts.len() > MAX_PARAMETERS {
            return false;
        }
        match value {
            Value::String(s) if query => {
                texts.push(s.clone());
                true
            }
            Value::Array(items) => items.iter().all(|i| walk(i, query, depth + 1, texts)),
            Value::Object(m) => m.iter().all(|(k, v)| {
                let own = is_query_text_key(k);
                let inner = query && QUERY_TEXT_INNER_KEYS.contains(&key_form(k).as_str());
                walk(v, own || inner, depth + 1, texts)
            }),
            _ => true,
        }
    }
    let mut texts = Vec::new();
    let complete = match body {
        None => true,
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(parsed @ (Value::Object(_) | Value::Array(_))) => {
                walk(&parsed, false, 0, &mut texts)
            }
            // A raw text body is the query itself.
            _ => {
                texts.push(text.clone());
                true
            }
        },
        Some(other) => walk(other, false, 0, &mut texts),
    };
    complete && texts.iter().all(|t| text_reads(t))
}

/// Keys of a body object whose array holds a batch of sub-requests (Microsoft Graph's
/// `$batch` `requests`, and the like).
/// Compared without case; Salesforce's Composite (`compositeRequest`) and Composite Batch
/// (`batchRequests`), JSON:API's atomic operations.
const BATCH_KEYS: &[&str] = &[
    "requests",
    "operations",
    "batch",
    "calls",
    "ops",
    "compositerequest",
    "batchrequests",
    "atomic:operations",
    // FHIR transaction and batch Bundles: `entry[].request`.
    "entry",
];

/// Sub-requests a body describes (`{"method": "DELETE", "url": "/volumes/1"}` as an item of a
/// top-level array, or of a batch key's array): a batch endpoint runs them.
fn sub_requests(body: &serde_json::Value) -> Vec<(String, String, Option<serde_json::Value>)> {
    use serde_json::Value;
    let parsed;
    let body = match body {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(p) => {
                parsed = p;
                &parsed
            }
            // A `multipart/mixed` batch (Google's `/batch/...`): each part's request line.
            Err(_) => return multipart_requests(s),
        },
        other => other,
    };
    // A batch key's value may be the array as a JSON string (Facebook's Graph API `batch`).
    let mut parsed_batches: Vec<Value> = Vec::new();
    if let Value::Object(m) = body {
        for (key, value) in m {
            if let Value::String(text) = value
                && BATCH_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k))
                && let Ok(array @ Value::Array(_)) = serde_json::from_str::<Value>(text)
            {
                parsed_batches.push(array);
            }
        }
    }
    let mut items: Vec<&Value> = Vec::new();
    match body {
        Value::Array(a) => items.extend(a),
        // The body object itself is not one: `{"method": "DELETE", "url": ...}` posted to
        // `/hooks` configures a webhook, it runs nothing now.
        Value::Object(m) => {
            let is_batch_key = |key: &str| BATCH_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k));
            for (key, value) in m {
                match value {
                    Value::Array(a) if is_batch_key(key) => items.extend(a),
                    // A batch one level down (`{"data": {"requests": [...]}}`).
                    Value::Object(inner) => {
                        for (key, value) in inner {
                            if let Value::Array(a) = value
                                && is_batch_key(key)
                            {
                                items.extend(a);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    for batch in &parsed_batches {
        if let Value::Array(a) = batch {
            items.extend(a);
        }
    }
    let mut out = Vec::new();
    for item in items.into_iter().take(MAX_PARAMETERS) {
        let Some(mut m) = item.as_object() else {
            continue;
        };
        // A FHIR Bundle entry: the request is `request`, its body `resource`.
        let mut entry_resource = None;
        if let Some(Value::Object(request)) = m.get("request")
            && request.keys().any(|k| k.eq_ignore_ascii_case("method"))
        {
            entry_resource = m.get("resource").cloned();
            m = request;
        }
        let field = |names: &[&str]| {
            m.iter()
                .find(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
                .and_then(|(_, v)| v.as_str())
        };
        // The body, else the parameters an RPC sub-request carries (`params`, `requestBody`).
        let body = [
            &["body", "json", "data", "payload", "form"][..],
            &["requestBody", "params", "parameters", "args"][..],
        ]
        .iter()
        .find_map(|names| {
            m.iter()
                .find(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
                .map(|(_, v)| v.clone())
        })
        .or(entry_resource);
        // JSON:API atomic operations: `{"op": "remove", "ref": {"type": "databases", "id":
        // "prod"}}` (or an `href`).
        if let Some(op) = field(&["op"])
            && field(&["method", "http_method", "httpMethod", "verb"]).is_none()
        {
            let method = match op.to_ascii_lowercase().as_str() {
                "remove" => "DELETE",
                "update" => "PATCH",
                "add" => "POST",
                _ => continue,
            };
            let url = match (field(&["href"]), m.get("ref")) {
                (Some(href), _) => href.to_string(),
                (None, Some(Value::Object(r))) => {
                    let part = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
                    format!("/{}/{}", part("type"), part("id"))
                }
                _ => continue,
            };
            out.push((method.to_string(), url, body));
            continue;
        }
        let (Some(method), Some(url)) = (
            field(&["method", "http_method", "httpMethod", "verb"]),
            field(&[
                "url",
                "path",
                "uri",
                "relative_url",
                "relativeUrl",
                "endpoint",
                "href",
                "resource",
            ]),
        ) else {
            continue;
        };
        out.push((method.to_string(), url.to_string(), body.clone()));
        // A sub-request's own method-override header: rated as the method it asks for too.
        let headers = m
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("headers"))
            .map(|(_, h)| h);
        for (_, over) in header_pairs(headers)
            .into_iter()
            .filter(|(k, _)| is_method_override(k))
        {
            out.push((over, url.to_string(), body.clone()));
        }
    }
    out
}

/// The request lines (`DELETE /storage/v1/b/x HTTP/1.1`) of a `multipart/mixed` batch body.
fn multipart_requests(text: &str) -> Vec<(String, String, Option<serde_json::Value>)> {
    // Request lines without a version count only in parts that say they hold requests.
    let http_parts = text.to_ascii_lowercase().contains("application/http");
    text.lines()
        .take(MAX_PARAMETERS)
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (method, url, version) = (words.next()?, words.next()?, words.next());
            // The version may be left out (OData's `DELETE /v1/volumes/1`) in an
            // `application/http` part, and then the method must be one and the target a path
            // or URL.
            let versioned = version
                .is_some_and(|v| v.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("HTTP/")));
            let bare = version.is_none()
                && http_parts
                && is_http_verb(method)
                && (url.starts_with('/') || url.contains("://"));
            ((versioned || bare)
                && words.next().is_none()
                && method.chars().all(|c| c.is_ascii_alphabetic()))
            .then(|| (method.to_string(), url.to_string(), None))
        })
        .collect()
}

/// The tier of a request by its method, on a path naming a critical thing or not.
fn method_rules(method: &str, critical: bool, v: &mut Verdict) {
    let m = |name: &str| method.eq_ignore_ascii_case(name);
    if m("GET") || m("HEAD") || m("OPTIONS") || m("TRACE") {
        v.raise(Tier::T0, "http.read");
    } else if m("POST") {
        v.raise(Tier::T2, "http.post");
        if critical {
            v.raise(Tier::T4, "http.post_critical");
        }
    } else if m("PUT") || m("PATCH") {
        v.raise(Tier::T2, "http.write");
        if critical {
            v.raise(Tier::T3, "http.modify_critical");
        }
    } else if m("DELETE") {
        v.raise(Tier::T3, "http.delete");
        if critical {
            v.raise(Tier::T4, "http.delete_critical");
        }
    } else {
        v.raise(Tier::T3, "http.unknown_method");
    }
}

/// Parameters whose value names the operation an RPC-style API performs: AWS's query API
/// (`?Action=DeleteDBInstance`), JSON-RPC (`{"method": "deleteVolume"}`), and the like.
const ACTION_KEYS: &[&str] = &[
    "action",
    "cmd",
    "command",
    "do",
    "function",
    "func",
    "method",
    "operation",
    "operationid",
    "op",
    "procedure",
    "rpc",
];

/// Parameters whose value is SQL the service runs (`{"sql": ...}`, `{"stmt": {"sql": ...}}`,
/// Athena's `QueryString`): read by the SQL rules, unparsable SQL included (fail closed).
const SQL_KEYS: &[&str] = &[
    "sql",
    "sql_query",
    "sqlquery",
    "sql_text",
    "sqltext",
    "querystring",
];

/// Parameters that carry SQL for some services and words for others (a search box's `query`,
/// a bank `statement`): read by the SQL rules only when the text reads as SQL and parses
/// ([`super::sql::apply_if_sql`]), and never on a read.
const MAYBE_SQL_KEYS: &[&str] = &[
    "query",
    "queries",
    "q",
    "command",
    "commands",
    "statement",
    "statements",
    "stmt",
    "script",
];

/// Parameters that override the method for servers that honour them (`?_method=DELETE`).
const METHOD_OVERRIDE_KEYS: &[&str] = &[
    "_method",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// How many body values are looked at, and how deep; a larger body is not read further.
const MAX_PARAMETERS: usize = 4096;
const MAX_BODY_DEPTH: usize = 32;

/// Whether text starts like a GraphQL executable document: `{`, or an operation or fragment
/// keyword, after blanks and comments.
pub(crate) fn looks_like_graphql(text: &str) -> bool {
    let mut rest = text.trim_start_matches('\u{feff}');
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        match rest.strip_prefix('#') {
            // A comment ends at any line terminator (GraphQL's `\n`, `\r`; U+2028 too: the
            // document then fails to parse, closed).
            Some(comment) => {
                rest = comment
                    .split_once(['\n', '\r', '\u{2028}'])
                    .map_or("", |(_, after)| after)
            }
            None => break,
        }
    }
    rest.starts_with('{')
        || ["query", "mutation", "subscription", "fragment"]
            .iter()
            .any(|k| {
                rest.strip_prefix(k).is_some_and(|after| {
                    !after.starts_with(|c: char| c.is_alphanumeric() || c == '_')
                })
            })
}

/// A parameter: its key (lowercased), its value, and whether it names what the request does
/// (a query-string or form parameter, a key of the body's top-level object or of an item of a
/// top-level array as in a JSON-RPC batch) rather than data nested inside (a policy document's
/// `"Action": "s3:DeleteBucket"`).
struct Param {
    key: String,
    value: String,
    top: bool,
}

/// The `key=value` pairs of a query string or form body, decoded.
fn form_pairs(text: &str, out: &mut Vec<Param>) {
    for pair in text.split('&').take(MAX_PARAMETERS) {
        if let Some((k, val)) = pair.split_once('=') {
            let decode = |s: &str| percent_decode(&s.replace('+', " ")).into_owned();
            out.push(Param {
                key: decode(k).to_ascii_lowercase(),
                value: decode(val),
                top: true,
            });
        }
    }
}

/// Every string value of a JSON body with the key it is under, at any depth; `top` says the
/// object being read is the body's own (or an item of its top-level array).
fn body_pairs(value: &serde_json::Value, key: &str, depth: usize, top: bool, out: &mut Vec<Param>) {
    if depth > MAX_BODY_DEPTH || out.len() >= MAX_PARAMETERS {
        return;
    }
    match value {
        serde_json::Value::Object(m) => {
            for (k, val) in m {
                let child = match val {
                    serde_json::Value::Object(_) | serde_json::Value::Array(_) => false,
                    _ => top,
                };
                body_pairs(val, &k.to_ascii_lowercase(), depth + 1, child, out);
                if let serde_json::Value::String(s) = val {
                    out.push(Param {
                        key: k.to_ascii_lowercase(),
                        value: s.clone(),
                        top,
                    });
                }
            }
        }
        serde_json::Value::Array(a) => {
            for val in a {
                match val {
                    // A batch: each item is a request of its own.
                    serde_json::Value::Object(_) => {
                        body_pairs(val, key, depth + 1, depth == 0, out)
                    }
                    serde_json::Value::String(s) => out.push(Param {
                        key: key.to_string(),
                        value: s.clone(),
                        top: false,
                    }),
                    _ => body_pairs(val, key, depth + 1, false, out),
                }
            }
        }
        _ => {}
    }
}

/// Rates what a request's parameters say it does: an RPC action name that destroys (3, with a
/// critical noun 4: `Action=DeleteVolume`), SQL the service runs (the SQL rules; also a raw
/// SQL body, as ClickHouse and Trino take), a method override (the method rules for that
/// method).
fn parameter_rules(
    url: &str,
    body: Option<&serde_json::Value>,
    read: bool,
    sql_endpoint: bool,
    graphql_endpoint: bool,
    v: &mut Verdict,
) -> Vec<String> {
    let actions_endpoint = url_path(url)
        .trim_end_matches('/')
        .to_ascii_lowercase()
        .ends_with("/actions");
    let mut overrides = Vec::new();
    let mut params = Vec::new();
    if let Some((_, query)) = url.split_once('?') {
        let query = query.split('#').next().unwrap_or(query);
        // S3's DeleteObjects is `POST /?delete` (up to 1000 keys): a bare `delete` parameter
        // makes the request a deletion.
        if query.split('&').any(|p| {
            let (key, value) = p.split_once('=').unwrap_or((p, ""));
            percent_decode(key).eq_ignore_ascii_case("delete") && value.is_empty()
        }) {
            overrides.push("DELETE".to_string());
        }
        form_pairs(query, &mut params);
    }
    match body {
        // A text body: JSON, a form (`-d 'Action=DeleteVolume&...'`), or SQL itself.
        Some(serde_json::Value::String(text)) => {
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(parsed @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => {
                    if !read {
                        command_list_rules(&parsed, redis_endpoint(url), v);
                    }
                    body_pairs(&parsed, "", 0, true, &mut params)
                }
                _ => {
                    if !read {
                        super::sql::apply_if_sql(text, v);
                    }
                    form_pairs(text, &mut params);
                }
            }
        }
        Some(body) => {
            if !read {
                command_list_rules(body, redis_endpoint(url), v);
            }
            body_pairs(body, "", 0, true, &mut params)
        }
        None => {}
    }
    let http_method = |s: &str| {
        ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]
            .iter()
            .any(|m| s.trim().eq_ignore_ascii_case(m))
    };
    for Param { key, value, top } in &params {
        let key = key.as_str();
        // DigitalOcean's actions name the action in `type`: a rebuild or restore reimages the
        // disk, destroying its data.
        if key == "type" && *top && actions_endpoint {
            action_rules(value, v);
            if ["rebuild", "restore", "reimage"]
                .iter()
                .any(|a| value.trim().eq_ignore_ascii_case(a))
            {
                v.raise(Tier::T3, "http.action_destructive");
            }
        }
        if METHOD_OVERRIDE_KEYS.contains(&key) && *top {
            overrides.push(value.trim().to_string());
        } else if ACTION_KEYS.contains(&key) && *top && !(key == "method" && http_method(value)) {
            // (A `method` naming an HTTP verb describes a request, such as a webhook's.)
            action_rules(value, v);
        }
        if SQL_KEYS.contains(&key) && !value.trim().is_empty() {
            super::sql::apply(value, SqlDialect::Generic, v);
        } else if MAYBE_SQL_KEYS.contains(&key)
            && !read
            && sql_endpoint
            && !(key == "query" && graphql_endpoint)
        {
            super::sql::apply_if_sql(value, v);
        }
    }
    overrides
}

/// Classifies a GraphQL document; `operation_name` selects the operation that runs.
///
/// ```
/// use cycles_core::classify::http::classify_graphql;
/// use cycles_core::Tier;
/// assert_eq!(classify_graphql("{ me { id } }", None).tier, Tier::T0);
/// assert_eq!(classify_graphql("mutation Rename { projectUpdate(id: 1, name: \"x\") { id } }", None).tier, Tier::T2);
/// assert_eq!(classify_graphql("mutation Cleanup($id: String!) { backupDelete(id: $id) }", None).tier, Tier::T4);
/// assert_eq!(classify_graphql("mutation {", None).rules, ["graphql.unparsable"]);
/// ```
pub fn classify_graphql(document: &str, operation_name: Option<&str>) -> Verdict {
    let mut v = Verdict::default();
    apply_graphql(document, operation_name, &mut v);
    v
}

/// Raises `v` by a GraphQL document.
pub(crate) fn apply_graphql(document: &str, operation_name: Option<&str>, v: &mut Verdict) {
    if document.len() > MAX_GRAPHQL_LEN {
        v.raise(Tier::T4, "graphql.too_long");
        return;
    }
    let Some(doc) = gql::parse(document) else {
        v.raise(Tier::T4, "graphql.unparsable");
        return;
    };
    let selected: Vec<&gql::Operation<'_>> = match operation_name {
        Some(name) => doc
            .operations
            .iter()
            .filter(|o| o.name == Some(name))
            .collect(),
        None => doc.operations.iter().collect(),
    };
    if selected.is_empty() {
        // The server would reject it; classify what we cannot see as the worst case.
        v.raise(Tier::T4, "graphql.unknown_operation");
        return;
    }
    for op in selected {
        match op.kind {
            gql::Kind::Query | gql::Kind::Subscription => v.raise(Tier::T0, "graphql.query"),
            gql::Kind::Mutation => {
                v.raise(Tier::T2, "graphql.mutation");
                let mut destructive = false;
                let mut critical = false;
                let mut check = |name: &str| {
                    let (d, c) = names::scan_operation(name);
                    destructive |= d;
                    // A critical noun counts together with a destructive verb in the same name.
                    critical |= d && c;
                };
                if let Some(n) = op.name {
                    check(n);
                }
                let (roots, nested) = doc.fields(op);
                for f in &roots {
                    check(f);
                }
                // Namespaced mutations (`volume { delete(id: 1) }`): a destructive field below a
                // root field; critical when either names a critical thing.
                let root_critical = roots.iter().any(|f| names::scan_operation(f).1);
                for f in &nested {
                    // `volume { remove }`: a verb that destroys only critical things counts
                    // below a critical root.
                    let (d, c) = names::scan_in(f, root_critical);
                    destructive |= d;
                    critical |= d && (c || root_critical);
                }
                // A store as the root (`schema { drop }`, `table(name: "users") { drop }`) is
                // what a verb below it destroys, as in the flat `dropTable`; a part below it
                // (`table { deleteRow }`) is not the store, nor is a store in a result selection
                // (`userDelete { project { id } }`: only fields with a verb are read).
                for root in roots.iter().take(64) {
                    for f in nested.iter().take(64).filter(|f| names::scan_in(f, true).0) {
                        let (d, c) = names::scan_operation(&format!("{root} {f}"));
                        critical |= d && c;
                    }
                }
                if critical {
                    v.raise(Tier::T4, "graphql.destructive_mutation_critical");
                } else if destructive {
                    v.raise(Tier::T3, "graphql.destructive_mutation");
                }
                // SQL a mutation passes to the server (`executeSql(query: "DROP ...")`).
                for text in query_arguments(document) {
                    super::sql::apply_if_sql(&text, v);
                }
            }
        }
    }
}

/// The string values of a GraphQL document's arguments named like query text (`query:`,
/// `sql:`, `statement:`; [`is_query_text_key`]), unescaped; block strings too. At most a few
/// hundred are read.
fn query_arguments(document: &str) -> Vec<String> {
    let bytes = document.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut last_name: Option<&str> = None;
    let mut after_colon = false;
    while i < bytes.len() && out.len() < 256 {
        let c = bytes[i];
        if c == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            last_name = Some(&document[start..i]);
            after_colon = false;
            continue;
        }
        if c == b':' {
            after_colon = last_name.is_some();
            i += 1;
            continue;
        }
        if c == b'"' {
            let block = bytes[i..].starts_with(b"\"\"\"");
            let (open, close): (usize, &[u8]) = if block { (3, b"\"\"\"") } else { (1, b"\"") };
            let mut j = i + open;
            let mut text = String::new();
            while j < bytes.len() && !bytes[j..].starts_with(close) {
                if !block && bytes[j] == b'\\' && j + 1 < bytes.len() && bytes[j + 1].is_ascii() {
                    text.push(match bytes[j + 1] {
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        other => other as char,
                    });
                    j += 2;
                    continue;
                }
                let ch = document[j..].chars().next().unwrap_or(' ');
                text.push(ch);
                j += ch.len_utf8();
            }
            if after_colon && last_name.is_some_and(is_query_text_key) {
                out.push(text);
            }
            i = (j + close.len()).min(bytes.len());
            after_colon = false;
            last_name = None;
            continue;
        }
        if !c.is_ascii_whitespace() && c != b',' {
            after_colon = false;
            if c != b'$' {
                last_name = None;
            }
        }
        i += 1;
    }
    out
}

/// A small GraphQL executable-document reader: operations, their names and root fields.
mod gql {
    use super::MAX_FRAGMENT_DEPTH;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Tok<'a> {
        Name(&'a str),
        Punct(u8),
        Spread,
        Value,
    }

    /// Tokens of a document, or `None` if it does not lex.
    fn lex(src: &str) -> Option<Vec<Tok<'_>>> {
        let b = src.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | b',' => i += 1,
                0xEF if b[i..].starts_with(&[0xEF, 0xBB, 0xBF]) => i += 3,
                b'#' => {
                    while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                        i += 1;
                    }
                }
                b'"' => {
                    if b[i..].starts_with(b"\"\"\"") {
                        i += 3;
                        loop {
                            if i >= b.len() {
                                return None;
                            }
                            if b[i..].starts_with(b"\\\"\"\"") {
                                i += 4;
                            } else if b[i..].starts_with(b"\"\"\"") {
                                i += 3;
                                break;
                            } else {
                                i += 1;
                            }
                        }
                    } else {
                        i += 1;
                        loop {
                            match b.get(i) {
                                None | Some(b'\n') | Some(b'\r') => return None,
                                Some(b'\\') => i += 2,
                                Some(b'"') => {
                                    i += 1;
                                    break;
                                }
                                Some(_) => i += 1,
                            }
                        }
                    }
                    out.push(Tok::Value);
                }
                b'.' if b[i..].starts_with(b"...") => {
                    out.push(Tok::Spread);
                    i += 3;
                }
                b'!' | b'$' | b'&' | b'(' | b')' | b':' | b'=' | b'@' | b'[' | b']' | b'{'
                | b'|' | b'}' => {
                    out.push(Tok::Punct(c));
                    i += 1;
                }
                b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                    let start = i;
                    while i < b.len() && (b[i] == b'_' || b[i].is_ascii_alphanumeric()) {
                        i += 1;
                    }
                    out.push(Tok::Name(&src[start..i]));
                }
                b'-' | b'0'..=b'9' => {
                    i += 1;
                    while i < b.len()
                        && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'.' | b'+' | b'-'))
                    {
                        i += 1;
                    }
                    out.push(Tok::Value);
                }
                _ => return None,
            }
        }
        Some(out)
    }

    /// The type of an operation.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Kind {
        Query,
        Mutation,
        Subscription,
    }

    /// Root selections of an operation or fragment.
    #[derive(Debug, Default)]
    pub(super) struct Roots<'a> {
        fields: Vec<&'a str>,
        spreads: Vec<&'a str>,
        /// Fields below the root (`volume { delete }`), flattened.
        nested: Vec<&'a str>,
    }

    /// One operation.
    #[derive(Debug)]
    pub(super) struct Operation<'a> {
        pub kind: Kind,
        pub name: Option<&'a str>,
        roots: Roots<'a>,
    }

    /// A parsed executable document.
    #[derive(Debug)]
    pub(super) struct Document<'a> {
        pub operations: Vec<Operation<'a>>,
        fragments: Vec<(&'a str, Roots<'a>)>,
    }

    impl<'a> Document<'a> {
        /// Root and nested field names of `op`, following fragment spreads (each once; a
        /// spread below the root counts its fields as root ones: fail closed).
        pub(super) fn fields(&self, op: &Operation<'a>) -> (Vec<&'a str>, Vec<&'a str>) {
            let mut fields = op.roots.fields.clone();
            let mut nested = op.roots.nested.clone();
            let mut pending: Vec<&str> = op.roots.spreads.clone();
            let mut seen: Vec<&str> = Vec::new();
            while let Some(name) = pending.pop() {
                if seen.contains(&name) {
                    continue;
                }
                seen.push(name);
                if let Some((_, r)) = self.fragments.iter().find(|(n, _)| *n == name) {
                    fields.extend(&r.fields);
                    nested.extend(&r.nested);
                    pending.extend(&r.spreads);
                }
            }
            (fields, nested)
        }
    }

    struct Parser<'t, 'a> {
        toks: &'t [Tok<'a>],
        pos: usize,
    }

    impl<'a> Parser<'_, 'a> {
        fn peek(&self) -> Option<Tok<'a>> {
            self.toks.get(self.pos).copied()
        }
        fn next(&mut self) -> Option<Tok<'a>> {
            let t = self.peek();
            self.pos += 1;
            t
        }
        fn eat(&mut self, p: u8) -> bool {
            if self.peek() == Some(Tok::Punct(p)) {
                self.pos += 1;
                true
            } else {
                false
            }
        }
        fn name(&mut self) -> Option<&'a str> {
            match self.next()? {
                Tok::Name(n) => Some(n),
                _ => None,
            }
        }

        /// Skips a balanced group starting at the current `(`, `[` or `{`.
        fn skip_group(&mut self) -> Option<()> {
            let mut stack: Vec<u8> = Vec::new();
            loop {
                match self.next()? {
                    Tok::Punct(c @ (b'(' | b'[' | b'{')) => stack.push(match c {
                        b'(' => b')',
                        b'[' => b']',
                        _ => b'}',
                    }),
                    Tok::Punct(c @ (b')' | b']' | b'}')) => {
                        if stack.pop()? != c {
                            return None;
                        }
                        if stack.is_empty() {
                            return Some(());
                        }
                    }
                    _ if stack.is_empty() => return None,
                    _ => {}
                }
            }
        }

        fn directives(&mut self) -> Option<()> {
            while self.eat(b'@') {
                self.name()?;
                if self.peek() == Some(Tok::Punct(b'(')) {
                    self.skip_group()?;
                }
            }
            Some(())
        }

        /// A selection set at the current `{`: collects root fields and spreads.
        fn selection_set(&mut self, roots: &mut Roots<'a>, depth: usize) -> Option<()> {
            if depth > MAX_FRAGMENT_DEPTH || !self.eat(b'{') {
                return None;
            }
            let mut empty = true;
            loop {
                match self.next()? {
                    Tok::Punct(b'}') if !empty => return Some(()),
                    Tok::Name(n) => {
                        let field = if self.eat(b':') { self.name()? } else { n };
                        roots.fields.push(field);
                        if self.peek() == Some(Tok::Punct(b'(')) {
                            self.skip_group()?;
                        }
                        self.directives()?;
                        if self.peek() == Some(Tok::Punct(b'{')) {
                            let mut inner = Roots::default();
                            self.selection_set(&mut inner, depth + 1)?;
                            roots.nested.extend(inner.fields);
                            roots.nested.extend(inner.nested);
                            roots.spreads.extend(inner.spreads);
                        }
                    }
                    Tok::Spread => match self.peek()? {
                        Tok::Name("on") => {
                            self.pos += 1;
                            self.name()?;
                            self.directives()?;
                            self.selection_set(roots, depth + 1)?;
                        }
                        Tok::Name(frag) => {
                            self.pos += 1;
                            roots.spreads.push(frag);
                            self.directives()?;
                        }
                        _ => {
                            self.directives()?;
                            self.selection_set(roots, depth + 1)?;
                        }
                    },
                    _ => return None,
                }
                empty = false;
            }
        }
    }

    /// Parses an executable document; `None` if it is not one.
    pub(super) fn parse(src: &str) -> Option<Document<'_>> {
        let toks = lex(src)?;
        let mut p = Parser {
            toks: &toks,
            pos: 0,
        };
        let mut doc = Document {
            operations: Vec::new(),
            fragments: Vec::new(),
        };
        while let Some(t) = p.peek() {
            match t {
                Tok::Punct(b'{') => {
                    let mut roots = Roots::default();
                    p.selection_set(&mut roots, 0)?;
                    doc.operations.push(Operation {
                        kind: Kind::Query,
                        name: None,
                        roots,
                    });
                }
                Tok::Name(kw @ ("query" | "mutation" | "subscription")) => {
                    p.pos += 1;
                    let kind = match kw {
                        "query" => Kind::Query,
                        "mutation" => Kind::Mutation,
                        _ => Kind::Subscription,
                    };
                    let name = match p.peek()? {
                        Tok::Name(n) => {
                            p.pos += 1;
                            Some(n)
                        }
                        _ => None,
                    };
                    if p.peek() == Some(Tok::Punct(b'(')) {
                        p.skip_group()?;
                    }
                    p.directives()?;
                    let mut roots = Roots::default();
                    p.selection_set(&mut roots, 0)?;
                    doc.operations.push(Operation { kind, name, roots });
                }
                Tok::Name("fragment") => {
                    p.pos += 1;
                    let name = p.name()?;
                    if p.name()? != "on" {
                        return None;
                    }
                    p.name()?;
                    p.directives()?;
                    let mut roots = Roots::default();
                    p.selection_set(&mut roots, 0)?;
                    doc.fragments.push((name, roots));
                }
                _ => return None,
            }
        }
        if doc.operations.is_empty() {
            return None;
        }
        // Tokens borrow `src`, not `toks`: the document outlives the token vector.
        Some(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_of_a_long_pipeline_counts() {
        // Past any parameter limit: a pipeline padded with reads still ends in a flush.
        let mut commands = vec![serde_json::json!(["GET", "a"]); 2 * MAX_PARAMETERS];
        commands.push(serde_json::json!(["FLUSHALL"]));
        let body = serde_json::Value::Array(commands);
        let v = classify("POST", "https://x.upstash.io/pipeline", Some(&body));
        assert_eq!(v.tier, Tier::T4, "{v:?}");
    }

    #[test]
    fn paths() {
        assert_eq!(url_path("https://h.io/a/b?x=1#f"), "/a/b");
        assert_eq!(url_path("https://h.io"), "");
        assert_eq!(url_path("/a/b?x"), "/a/b");
        assert_eq!(percent_decode("/vol%75mes/%zz%"), "/volumes/%zz%");
    }

    #[test]
    fn graphql_query_arguments() {
        assert_eq!(
            query_arguments("mutation { run(sql: \"a\\\"b\", title: \"x\") }"),
            ["a\"b"]
        );
        // A backslash before a multi-byte character, an unterminated string: no panic.
        assert_eq!(
            query_arguments("mutation { run(sql: \"\\é DROP\") }"),
            ["\\é DROP"]
        );
        assert_eq!(query_arguments("mutation { run(query: \"é"), ["é"]);
        assert_eq!(query_arguments("mutation { run(q: \"\"\"x\"\"\") }"), ["x"]);
    }

    #[test]
    fn graphql_roots() {
        let doc = "mutation M { ...F a: x { y } } fragment F on Mutation { backupDelete(id: 1) }";
        let v = classify_graphql(doc, None);
        assert_eq!(v.tier, Tier::T4, "{v:?}");
        let q = "query Q { a } mutation Wipe { userDelete(id: 1) }";
        assert_eq!(classify_graphql(q, Some("Q")).tier, Tier::T0);
        assert_eq!(classify_graphql(q, Some("Wipe")).tier, Tier::T3);
        assert_eq!(classify_graphql(q, Some("Other")).tier, Tier::T4);
        assert_eq!(classify_graphql(q, None).tier, Tier::T3);
        assert_eq!(
            classify_graphql("type Query { a: Int }", None).tier,
            Tier::T4
        );
        assert_eq!(classify_graphql("", None).tier, Tier::T4);
    }
}
