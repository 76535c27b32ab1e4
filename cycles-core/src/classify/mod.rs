//! Tier classification: from the tool's registration, then from its arguments and name.
//!
//! The tier of a call comes from, in order:
//! 1. the tool's registration in the policy (exact name, else the first matching glob);
//! 2. the registration's argument classifier, if any ([`sql`], [`shell`], [`http`],
//!    `graphql`, [`names`], [`path`]), which reads one argument of the call;
//! 3. for an unregistered tool, the policy's `unknown_tool` tier raised by the name
//!    heuristics of [`names`].
//!
//! Arguments and names only ever raise a registered tier, never lower it. Every
//! [`Classification`] lists the ids of the rules that fired (`tool:run_sql`, `sql.drop`, ...).

use std::collections::HashMap;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::model::{Tier, ToolCall};
use crate::policy::{Issue, ToolRule, UnknownTool};

pub mod http;
pub mod names;
pub mod path;
mod redis;
pub mod shell;
pub mod sql;

pub use sql::SqlDialect;

/// The outcome of classifying one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// The tier.
    pub tier: Tier,
    /// The action kind from the registration (or the call).
    pub kind: Option<String>,
    /// Ids of the rules that fired, in order.
    pub rules: Vec<String>,
    /// The tool is not registered.
    pub unknown: bool,
}

/// What one classifier found: the highest tier and the ids of every rule that fired (also
/// those that did not raise the tier, such as `sql.select`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The highest tier of the rules that fired (0 when none did).
    pub tier: Tier,
    /// Rule ids in the order they first fired, each once.
    pub rules: Vec<&'static str>,
}

impl Verdict {
    /// Records that `rule` fired with `tier`.
    pub fn raise(&mut self, tier: Tier, rule: &'static str) {
        if tier > self.tier {
            self.tier = tier;
        }
        if !self.rules.contains(&rule) {
            self.rules.push(rule);
        }
    }
}

/// Which argument classifier a tool registration uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassifierKind {
    /// SQL text (argument `query`, `sql` or `statement`), parsed in the registration's dialect.
    Sql,
    /// A shell command line (argument `command`, `cmd` or `script`; a string, or an argv array).
    Shell,
    /// An HTTP request: URL (`url`, `path` or `endpoint`, with query parameters from `params`),
    /// method (`method` or another spelling of it, or a method-override entry of `headers`:
    /// every one is rated) and body (`body`, `json`, `data`, `form` or `payload`, and other
    /// spellings such as `requestBody`; a GraphQL body is classified as GraphQL).
    Http,
    /// A GraphQL document (argument `query`) with `operationName`.
    Graphql,
    /// Name heuristics on an argument (`arg`), or on the tool name when `arg` is not set.
    Names,
    /// A file path the tool writes to (argument `file_path`, `path`, `notebook_path` or
    /// `filename`; a string or an array of them): the gate's own configuration, files that run
    /// code later, data stores and system directories are not ordinary files.
    Path,
}

impl ClassifierKind {
    fn as_str(self) -> &'static str {
        match self {
            ClassifierKind::Sql => "sql",
            ClassifierKind::Shell => "shell",
            ClassifierKind::Http => "http",
            ClassifierKind::Graphql => "graphql",
            ClassifierKind::Names => "names",
            ClassifierKind::Path => "path",
        }
    }

    /// Argument names tried, in order, when the registration does not name one.
    fn default_args(self) -> &'static [&'static str] {
        match self {
            ClassifierKind::Sql => &["query", "sql", "statement"],
            ClassifierKind::Shell => &["command", "cmd", "script"],
            ClassifierKind::Http => &["url", "path", "endpoint"],
            ClassifierKind::Graphql => &["query"],
            ClassifierKind::Names => &[],
            ClassifierKind::Path => &["file_path", "path", "notebook_path", "filename"],
        }
    }

    fn missing_rule(self) -> &'static str {
        match self {
            ClassifierKind::Sql => "sql.arg_missing",
            ClassifierKind::Shell => "shell.arg_missing",
            ClassifierKind::Http => "http.arg_missing",
            ClassifierKind::Graphql => "graphql.arg_missing",
            ClassifierKind::Names => "name.arg_missing",
            ClassifierKind::Path => "path.arg_missing",
        }
    }
}

/// A dotted argument path (`input.sql`, `statements.0`), resolved against the call's JSON.
#[derive(Debug, Clone)]
struct ArgPath(Vec<String>);

impl ArgPath {
    fn parse(field: &str, path: &str) -> Result<ArgPath, Issue> {
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(Issue::new(
                field,
                format!(
                    "{path:?} is not a dotted argument path such as \"query\" or \"input.sql\""
                ),
            ));
        }
        Ok(ArgPath(path.split('.').map(str::to_string).collect()))
    }

    fn get<'v>(&self, args: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        let mut v = args;
        for seg in &self.0 {
            v = match v {
                serde_json::Value::Object(m) => m.get(seg)?,
                serde_json::Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }
}

/// Where a classifier reads its input: the configured path, or every default name present.
#[derive(Debug, Clone)]
enum ArgSource {
    Path(ArgPath),
    Defaults(&'static [&'static str]),
}

impl ArgSource {
    /// Every candidate present: an executor may read any of the default names, so a harmless
    /// `path` beside a `notebook_path` to the gate's own settings (or a `query` beside a
    /// destructive `sql`) is rated by the worse of them.
    fn all<'v>(&self, args: &'v serde_json::Value) -> Vec<&'v serde_json::Value> {
        match self {
            ArgSource::Path(p) => p.get(args).into_iter().collect(),
            ArgSource::Defaults(names) => names.iter().filter_map(|n| args.get(n)).collect(),
        }
    }
}

/// A registration's compiled argument classifier.
#[derive(Debug, Clone)]
struct ArgClassifier {
    kind: ClassifierKind,
    input: Option<ArgSource>,
    dialect: SqlDialect,
    method: ArgSource,
    body: ArgSource,
}

impl ArgClassifier {
    fn build(i: usize, rule: &ToolRule) -> Result<Option<ArgClassifier>, Issue> {
        let field = |f: &str| format!("tools[{i}].{f}");
        let Some(kind) = rule.classifier else {
            for (name, set) in [
                ("arg", rule.arg.is_some()),
                ("dialect", rule.dialect.is_some()),
                ("method_arg", rule.method_arg.is_some()),
                ("body_arg", rule.body_arg.is_some()),
            ] {
                if set {
                    return Err(Issue::new(
                        field(name),
                        "is only valid together with `classifier`",
                    ));
                }
            }
            return Ok(None);
        };
        if rule.dialect.is_some() && kind != ClassifierKind::Sql {
            return Err(Issue::new(
                field("dialect"),
                format!("applies to classifier \"sql\", not {:?}", kind.as_str()),
            ));
        }
        for (name, set) in [
            ("method_arg", &rule.method_arg),
            ("body_arg", &rule.body_arg),
        ] {
            if set.is_some() && kind != ClassifierKind::Http {
                return Err(Issue::new(
                    field(name),
                    format!("applies to classifier \"http\", not {:?}", kind.as_str()),
                ));
            }
        }
        let path = |name: &str, v: &Option<String>, defaults: &'static [&'static str]| {
            Ok::<_, Issue>(match v {
                Some(p) => ArgSource::Path(ArgPath::parse(&field(name), p)?),
                None => ArgSource::Defaults(defaults),
            })
        };
        let input = match (kind, &rule.arg) {
            (ClassifierKind::Names, None) => None,
            _ => Some(path("arg", &rule.arg, kind.default_args())?),
        };
        Ok(Some(ArgClassifier {
            kind,
            input,
            dialect: rule.dialect.unwrap_or_default(),
            method: path("method_arg", &rule.method_arg, &["method"])?,
            body: path(
                "body_arg",
                &rule.body_arg,
                &["body", "json", "data", "form", "payload"],
            )?,
        }))
    }

    /// Raises `v` by the call's arguments.
    fn apply(&self, call: &ToolCall, v: &mut Verdict) {
        let args = &call.args;
        let Some(input) = &self.input else {
            names::apply_operation(&call.action.name, v);
            // A tool registered by its name alone (the starter policy's `mcp__*`) may still
            // be a database tool: its SQL is read as an unregistered tool's is, so that
            // registering it never rates `DROP DATABASE` lower than leaving it unregistered.
            apply_sql_args(&call.action.name, args, v);
            apply_dispatch_args(args, v);
            return;
        };
        let values = input.all(args);
        if values.is_empty() {
            self.apply_value(call, None, v);
        }
        for value in values {
            self.apply_value(call, Some(value), v);
        }
    }

    /// Raises `v` by one candidate input (`None`: the argument is missing).
    fn apply_value(&self, call: &ToolCall, value: Option<&serde_json::Value>, v: &mut Verdict) {
        let args = &call.args;
        let missing = |v: &mut Verdict| v.raise(Tier::T4, self.kind.missing_rule());
        match self.kind {
            ClassifierKind::Sql => match value {
                Some(serde_json::Value::String(s)) => sql::apply(s, self.dialect, v),
                Some(serde_json::Value::Array(items)) if !items.is_empty() => {
                    for item in items {
                        match item.as_str() {
                            Some(s) => sql::apply(s, self.dialect, v),
                            None => missing(v),
                        }
                    }
                }
                _ => missing(v),
            },
            ClassifierKind::Shell => match value {
                Some(serde_json::Value::String(s)) => shell::apply(s, v),
                Some(serde_json::Value::Array(items)) => {
                    let argv: Option<Vec<String>> = items
                        .iter()
                        .map(|a| a.as_str().map(str::to_string))
                        .collect();
                    match argv {
                        Some(argv) => shell::apply_argv(&argv, v),
                        None => missing(v),
                    }
                }
                _ => missing(v),
            },
            ClassifierKind::Http => match value {
                Some(serde_json::Value::String(url)) => self.apply_http(args, url, v),
                _ => missing(v),
            },
            ClassifierKind::Graphql => match value {
                Some(serde_json::Value::String(doc)) => {
                    let op = ["operationName", "operation_name", "operation"]
                        .iter()
                        .find_map(|k| args.get(k).and_then(|o| o.as_str()));
                    http::apply_graphql(doc, op, v)
                }
                _ => missing(v),
            },
            ClassifierKind::Names => match value {
                Some(serde_json::Value::String(s)) => {
                    names::apply_operation(s, v);
                    // A dispatching tool may name the verb in one argument and what it acts on
                    // in another (`{"action": "delete", "resource": "volume"}`): read them as one
                    // name.
                    for object in dispatch_objects(args, s) {
                        names::apply_operation(&format!("{s} {object}"), v);
                    }
                    // Its SQL says what it does, as an unregistered tool's does.
                    apply_sql_args(&call.action.name, args, v);
                }
                _ => missing(v),
            },
            ClassifierKind::Path => match value {
                Some(serde_json::Value::String(p)) => path::apply(p, v),
                Some(serde_json::Value::Array(items)) if !items.is_empty() => {
                    for item in items {
                        match item.as_str() {
                            Some(p) => path::apply(p, v),
                            None => missing(v),
                        }
                    }
                }
                _ => missing(v),
            },
        }
    }
}

impl ArgClassifier {
    /// Raises `v` by an HTTP request to `url` described by the call's arguments. Every method
    /// the request may run with is rated and the highest wins: the method argument (any
    /// spelling of it, also inside a fetch-style `options` object), a method-override header
    /// (servers that ignore it run the sent method, those that honour it the override), and
    /// any argument whose value is a bare HTTP verb.
    fn apply_http(&self, args: &serde_json::Value, url: &str, v: &mut Verdict) {
        use serde_json::Value;
        let missing = |v: &mut Verdict| v.raise(Tier::T4, ClassifierKind::Http.missing_rule());
        // Where a fetch-style tool reads its request from: the arguments themselves and an
        // options object (`fetch(url, {method, headers, body})`, Python's `kwargs`), also one
        // inside another (`request.options`) or sent as a JSON string.
        let parsed_options: Vec<Value> = option_objects(args)
            .into_iter()
            .chain(option_objects(args).into_iter().flat_map(option_objects))
            .filter_map(|o| match o {
                Value::String(text) => serde_json::from_str::<Value>(text)
                    .ok()
                    .filter(Value::is_object),
                _ => None,
            })
            .collect();
        let mut containers = vec![args];
        for o in option_objects(args) {
            if o.is_object() {
                containers.push(o);
                containers.extend(option_objects(o).into_iter().filter(|i| i.is_object()));
            }
        }
        containers.extend(parsed_options.iter());
        let defaults = matches!(self.method, ArgSource::Defaults(_));
        let mut bodies = self.body.all(args);
        if let ArgSource::Defaults(names) = &self.body {
            for c in &containers[1..] {
                bodies.extend(names.iter().filter_map(|n| c.get(n)));
            }
            // Other spellings of the body (`requestBody` of OpenAPI-generated tools, `Body`,
            // `content`, `raw`, `formData`).
            for c in &containers {
                let Value::Object(m) = c else { continue };
                for (key, value) in m {
                    if !names.iter().any(|n| n == key)
                        && OTHER_BODY_KEYS.contains(&key_form(key).as_str())
                    {
                        bodies.push(value);
                    }
                }
            }
            // A GraphQL document as a top-level `query` (a GET with `?query=`, or a tool that
            // posts it): rated as the body it is.
            for c in &containers {
                if let Some(Value::String(doc)) = c.get("query")
                    && http::looks_like_graphql(doc)
                {
                    bodies.push(c);
                }
            }
        }
        // Only text, an object or a list is a body: a flag such as the fetch server's `raw:
        // true` or request's `json: true` sends none.
        bodies.retain(|b| matches!(b, Value::String(_) | Value::Object(_) | Value::Array(_)));
        let mut methods: Vec<String> = Vec::new();
        match &self.method {
            ArgSource::Path(p) => match p.get(args) {
                Some(Value::String(m)) => methods.push(m.clone()),
                Some(_) => return missing(v),
                None => {}
            },
            ArgSource::Defaults(_) => {
                for c in &containers {
                    let Value::Object(m) = c else { continue };
                    for (key, val) in m {
                        let named = http::is_method_key(key);
                        match val {
                            Value::String(s) if named || http::is_http_verb(s) => {
                                methods.push(s.clone())
                            }
                            Value::Null => {}
                            _ if named => return missing(v),
                            _ => {}
                        }
                    }
                }
            }
        }
        if methods.is_empty() {
            // fetch-style tools default to GET, and to POST when they carry a body.
            methods.push(if bodies.is_empty() { "GET" } else { "POST" }.to_string());
        }
        let mut headers = Vec::new();
        for c in &containers {
            let Value::Object(m) = c else { continue };
            // `headers` in any case, and other spellings (`request_headers`, `extra_headers`).
            for (_, h) in m
                .iter()
                .filter(|(k, h)| HEADER_KEYS.contains(&key_form(k).as_str()) && !h.is_null())
            {
                headers.extend(http::header_pairs(Some(h)));
            }
        }
        // A method-override header (`X-HTTP-Method-Override: DELETE`) is the method servers
        // honouring it run; the others run the sent one: both are rated.
        // A list of values (`["GET", "DELETE"]`, read as `GET,DELETE`) is each of them.
        methods.extend(
            headers
                .iter()
                .filter(|(k, _)| http::is_method_override(k))
                .flat_map(|(_, m)| m.split(',').map(|m| m.trim().to_string()))
                .filter(|m| !m.is_empty()),
        );
        methods.sort_unstable();
        methods.dedup();
        http::apply_headers(&headers, v);
        // Query parameters given apart from the URL (`params` as in Python's requests) are
        // sent in the query string: read them there.
        let mut url = url.to_string();
        if defaults {
            for c in &containers {
                let Value::Object(m) = c else { continue };
                for (key, params) in m {
                    let listed = http::QUERY_PARAMETER_KEYS.contains(&key.as_str());
                    // Other spellings (`Params`, `query_parameters`, `url_params`, undici's
                    // `query` object) are read too; a value of theirs that is no parameters
                    // (`"query": "red shoes"`) is left alone.
                    let other =
                        !listed && OTHER_QUERY_PARAMETER_KEYS.contains(&key_form(key).as_str());
                    if !listed && !other {
                        continue;
                    }
                    if other
                        && !matches!(params, Value::Object(_) | Value::Array(_))
                        && !params.as_str().is_some_and(|q| q.contains('='))
                    {
                        continue;
                    }
                    // Parameters sent as a JSON string (`"params": "{\"Action\": ...}"`).
                    let parsed = params
                        .as_str()
                        .filter(|t| t.trim_start().starts_with('{'))
                        .and_then(|t| serde_json::from_str::<Value>(t).ok())
                        .filter(Value::is_object);
                    let params = parsed.as_ref().unwrap_or(params);
                    match http::query_string(params) {
                        Some(q) if q.is_empty() => {}
                        Some(q) => {
                            url.push(if url.contains('?') { '&' } else { '?' });
                            url.push_str(&q);
                        }
                        None if other => {}
                        None => return missing(v),
                    }
                }
            }
        }
        for method in &methods {
            if bodies.is_empty() {
                http::apply(method, &url, None, v);
            }
            for body in &bodies {
                http::apply(method, &url, Some(body), v);
            }
        }
    }
}

/// Arguments of an HTTP tool holding an options object (fetch's `init`, Python's `kwargs`),
/// compared without case and separators.
const HTTP_OPTION_KEYS: &[&str] = &[
    "options",
    "init",
    "request",
    "config",
    "opts",
    "requestoptions",
    "kwargs",
    "requestinit",
    "fetchoptions",
    "httpoptions",
    "requestconfig",
];

/// The options objects of an HTTP tool's arguments (or of an options object), any value.
fn option_objects(args: &serde_json::Value) -> Vec<&serde_json::Value> {
    match args {
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(k, _)| HTTP_OPTION_KEYS.contains(&key_form(k).as_str()))
            .map(|(_, v)| v)
            .collect(),
        _ => Vec::new(),
    }
}

/// Spellings of a request body besides the registration's body arguments, compared without
/// case and separators.
const OTHER_BODY_KEYS: &[&str] = &[
    "body",
    "json",
    "data",
    "form",
    "payload",
    "requestbody",
    "content",
    "raw",
    "rawbody",
    "formdata",
    "bodyjson",
    "jsonbody",
    "text",
    // Guzzle's form body.
    "formparams",
];

/// Spellings of the request headers argument, compared without case and separators.
const HEADER_KEYS: &[&str] = &[
    "headers",
    "header",
    "requestheaders",
    "extraheaders",
    "httpheaders",
    "customheaders",
    "additionalheaders",
];

/// Spellings of query parameters besides [`http::QUERY_PARAMETER_KEYS`], compared without
/// case and separators.
const OTHER_QUERY_PARAMETER_KEYS: &[&str] = &[
    "params",
    "queryparams",
    "searchparams",
    "querystring",
    "query",
    "queryparameters",
    "urlparams",
    "urlparameters",
    "parameters",
    // API Gateway's event shape.
    "querystringparameters",
    "multivaluequerystringparameters",
];

/// Arguments of a dispatching tool that name what its action acts on, compared without case
/// and separators (`resource_type`, `resourceType`, `Resource-Type`).
const DISPATCH_OBJECT_KEYS: &[&str] = &[
    "resource",
    "resourcetype",
    "kind",
    "target",
    "targettype",
    "type",
    "object",
    "objecttype",
    "entity",
    "entitytype",
];

/// Arguments whose key is itself what the action acts on (`{"action": "drop", "table":
/// "users"}`): these, and [`WHOLE_STORE_NOUN_KEYS`].
const ROWS_STORE_NOUN_KEYS: &[&str] = &["table", "collection", "index"];

/// Whether `key` names what a dispatched action acts on.
fn is_dispatch_noun_key(key: &str) -> bool {
    ROWS_STORE_NOUN_KEYS.contains(&key) || WHOLE_STORE_NOUN_KEYS.contains(&key)
}

/// Arguments that select rows or items inside a store (`{"action": "delete", "table": "users",
/// "where": ...}` deletes rows, not the table).
const ROW_SELECTOR_KEYS: &[&str] = &[
    "where",
    "filter",
    "filters",
    "id",
    "ids",
    "key",
    "keys",
    "match",
    "row",
    "rows",
    "rowid",
    "record",
    "records",
    "recordid",
    "document",
    "documents",
    "doc",
    "docid",
    "item",
    "items",
    "condition",
    "conditions",
    "query",
    "eq",
    "primarykey",
    "pk",
    "column",
    "columns",
    "field",
    "fields",
];

/// A key lowercased without separators (`resource_type`, `resourceType` → `resourcetype`).
fn key_form(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Stores whose id names the store itself (`{"action": "delete", "volume": "data", "id":
/// "vol-1"}` deletes the volume): an `id` beside them selects no rows inside them.
const WHOLE_STORE_NOUN_KEYS: &[&str] = &[
    "database",
    "db",
    "schema",
    "keyspace",
    "dataset",
    "volume",
    "bucket",
    "namespace",
    "cluster",
    "snapshot",
    "backup",
];

/// Verbs that act on a store whatever else the arguments name: a drop, a truncate or a
/// restore of a table is of the whole table, a dummy `id` beside it notwithstanding.
const STORE_LEVEL_VERBS: &[&str] = &[
    "drop",
    "truncate",
    "destroy",
    "wipe",
    "nuke",
    "purge",
    "restore",
    "reset",
    "flush",
    "empty",
    "clear",
    "recreate",
    "overwrite",
    "dropdb",
];

/// Arguments of a dispatching tool holding its real arguments (`{"action": "drop", "params":
/// {"table": "users"}}`), compared without case and separators.
const DISPATCH_NESTED_KEYS: &[&str] = &[
    "arguments",
    "args",
    "params",
    "parameters",
    "input",
    "payload",
    "body",
    "data",
    "options",
];

/// The forms a key may name a store or a selector by: the key, and the key without a
/// trailing `name`/`id`/`ids`/`arn` and a plural `s`/`es` (`tableName`, `volumeId`,
/// `databases`, `indexes` name `table`, `volume`, `database`, `index`).
fn key_stems(key: &str) -> Vec<String> {
    let key = key_form(key);
    let mut out = vec![key.clone()];
    let mut bare = key.as_str();
    for suffix in ["names", "name", "ids", "id", "arns", "arn"] {
        if let Some(stem) = bare.strip_suffix(suffix).filter(|s| !s.is_empty()) {
            bare = stem;
            out.push(bare.to_string());
            break;
        }
    }
    for plural in ["es", "s"] {
        if let Some(stem) = bare.strip_suffix(plural).filter(|s| !s.is_empty()) {
            out.push(stem.to_string());
        }
    }
    out
}

/// What a dispatching tool's arguments say its action `verb` acts on: the string values of
/// [`DISPATCH_OBJECT_KEYS`] (and `type`/`kind` inside an object value), and the store named by
/// a key [`is_dispatch_noun_key`] accepts (any spelling [`key_stems`] reads), also one level down in
/// [`DISPATCH_NESTED_KEYS`], unless an argument selects rows inside it: not for a verb that acts
/// on the store itself ([`STORE_LEVEL_VERBS`]), nor an `id` beside a whole store
/// ([`WHOLE_STORE_NOUN_KEYS`]) or one naming the store itself.
fn dispatch_objects(args: &serde_json::Value, verb: &str) -> Vec<String> {
    let serde_json::Value::Object(top) = args else {
        return Vec::new();
    };
    let mut maps = vec![top];
    for (key, value) in top {
        if DISPATCH_NESTED_KEYS.contains(&key_form(key).as_str())
            && let serde_json::Value::Object(inner) = value
        {
            maps.push(inner);
        }
    }
    let store_level = names::any_word(verb, |w| STORE_LEVEL_VERBS.contains(&w));
    let mut selectors: Vec<(String, &serde_json::Value)> = Vec::new();
    for map in &maps {
        for (key, value) in *map {
            if let Some(stem) = key_stems(key)
                .into_iter()
                .find(|k| ROW_SELECTOR_KEYS.contains(&k.as_str()))
            {
                selectors.push((stem, value));
            }
        }
    }
    let mut out = Vec::new();
    for map in &maps {
        for (key, value) in *map {
            let form = key_form(key);
            if DISPATCH_OBJECT_KEYS.contains(&form.as_str()) {
                match value {
                    serde_json::Value::String(object) => out.push(object.clone()),
                    serde_json::Value::Object(inner) => {
                        for (k, val) in inner {
                            if DISPATCH_OBJECT_KEYS.contains(&key_form(k).as_str())
                                && let Some(object) = val.as_str()
                            {
                                out.push(object.to_string());
                            }
                        }
                    }
                    _ => {}
                }
                continue;
            }
            let Some(noun) = key_stems(key).into_iter().find(|k| is_dispatch_noun_key(k)) else {
                continue;
            };
            let selected = !store_level
                && selectors.iter().any(|(selector, selector_value)| {
                    let id = matches!(selector.as_str(), "id" | "ids");
                    let names_store = *selector_value == value;
                    !(names_store || id && WHOLE_STORE_NOUN_KEYS.contains(&noun.as_str()))
                });
            if !selected {
                out.push(noun);
            }
        }
    }
    out
}

/// Arguments naming the verb of a tool that dispatches without a registered `arg`
/// (`{"action": "drop", "table": "users"}`), compared without case and separators.
const DISPATCH_VERB_KEYS: &[&str] = &["action", "operation", "op"];

/// Raises `v` by a verb argument, alone and together with what the arguments say it acts on, for a
/// tool registered by name alone or not at all (the registered `arg` does this otherwise).
fn apply_dispatch_args(args: &serde_json::Value, v: &mut Verdict) {
    let serde_json::Value::Object(map) = args else {
        return;
    };
    let verbs: Vec<&str> = map
        .iter()
        .filter(|(k, _)| DISPATCH_VERB_KEYS.contains(&key_form(k).as_str()))
        .filter_map(|(_, val)| val.as_str())
        .collect();
    if verbs.is_empty() {
        return;
    }
    for verb in &verbs {
        names::apply_operation(verb, v);
    }
    for verb in &verbs {
        for object in dispatch_objects(args, verb) {
            names::apply_operation(&format!("{verb} {object}"), v);
        }
    }
}

/// Whether an argument key of an unregistered or dispatching tool carries SQL
/// (`mcp__postgres__query`), compared by [`key_form`]: any key naming SQL (`sql`, `sql_query`,
/// `migrationSql`, `sqlStatements`), one ending in a statement or query (`statement`,
/// `queries`, `queryText`), and `q`.
fn is_sql_arg_key(key: &str) -> bool {
    let key = key_form(key);
    key == "q"
        || key.contains("sql")
        || [
            "query",
            "queries",
            "querytext",
            "statement",
            "statements",
            "stmt",
            "stmts",
        ]
        .iter()
        .any(|end| key.ends_with(end))
}

/// Keys holding a query's text inside a query object (`{"query": {"text": ...}}`).
const SQL_INNER_TEXT_KEYS: &[&str] = &["text", "value", "string", "body", "source", "code"];

/// How deep arguments are searched for SQL (`{"arguments": {"input": {"queries": [{"sql":
/// ...}]}}}`); deeper values are not read.
const MAX_SQL_ARG_DEPTH: usize = 6;

/// Raises `v` by the SQL in a tool's SQL-carrying arguments ([`is_sql_arg_key`]), at any
/// depth up to [`MAX_SQL_ARG_DEPTH`]: a dispatcher's nested `arguments`/`params`/`input`, lists
/// of strings or of objects; text that reads as SQL is rated as free text is. A search tool
/// (its name says `search`) runs no query it is given: there only a key naming SQL is read, and
/// a `query` about SQL syntax (`truncate table vs delete`) stays a search.
fn apply_sql_args(tool: &str, args: &serde_json::Value, v: &mut Verdict) {
    fn walk(value: &serde_json::Value, sql: bool, search: bool, depth: usize, v: &mut Verdict) {
        if depth > MAX_SQL_ARG_DEPTH {
            return;
        }
        match value {
            serde_json::Value::String(text) if sql => {
                sql::apply_if_sql(text, v);
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    walk(item, sql, search, depth + 1, v);
                }
            }
            serde_json::Value::Object(map) => {
                for (key, inner) in map {
                    let form = key_form(key);
                    let carries = is_sql_arg_key(key) && (!search || form.contains("sql"))
                        || sql && SQL_INNER_TEXT_KEYS.contains(&form.as_str());
                    walk(inner, carries, search, depth + 1, v);
                }
            }
            _ => {}
        }
    }
    let search = tool.to_ascii_lowercase().contains("search");
    walk(args, false, search, 0, v);
}

/// Registered tools: exact names in a hash map, globs in a set (first match wins).
#[derive(Debug, Clone)]
pub(crate) struct ToolIndex {
    exact: HashMap<String, usize>,
    globs: GlobSet,
    glob_rules: Vec<usize>,
    /// Exact registrations by [`canonical_name`]: a call whose name differs from a registered
    /// one only by case or repeated/outer separators is rated at least as that registration.
    canon_exact: HashMap<String, Vec<usize>>,
    /// For each exact registration, the other exact registrations with its canonical name (the
    /// look-alikes of a registered name, fixed when the policy compiles: no work per call).
    exact_alikes: Vec<Vec<usize>>,
    /// The globs matched case-insensitively against a canonical name.
    canon_globs: GlobSet,
    rules: Vec<ToolRule>,
    rule_ids: Vec<String>,
    classifiers: Vec<Option<ArgClassifier>>,
}

fn is_glob(name: &str) -> bool {
    name.contains(['*', '?', '[', '{'])
}

fn is_separator(c: char) -> bool {
    matches!(c, '.' | '_' | '-' | ':' | '/')
}

/// The form under which two tool names are the same tool to a lenient executor: ASCII
/// lowercase, each run of separators (`.`, `_`, `-`, `:`, `/`) reduced to its first, none at
/// either end (`Railway..Delete_Volume.` → `railway.delete_volume`). Registrations are looked
/// up by the exact name; this form only ever adds the tier of a look-alike registration.
pub fn canonical_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut prev_sep = true;
    for c in name.chars() {
        if is_separator(c) {
            if !prev_sep {
                out.push(c);
            }
            prev_sep = true;
        } else {
            out.push(c.to_ascii_lowercase());
            prev_sep = false;
        }
    }
    while out.ends_with(is_separator) {
        out.pop();
    }
    out
}

/// A glob set matching case-insensitively (for names compared in [`canonical_name`] form).
pub(crate) fn case_insensitive_globs<'a>(
    patterns: impl IntoIterator<Item = &'a str>,
) -> std::result::Result<GlobSet, globset::Error> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(
            globset::GlobBuilder::new(p)
                .case_insensitive(true)
                .build()?,
        );
    }
    b.build()
}

impl ToolIndex {
    pub(crate) fn build(rules: &[ToolRule]) -> std::result::Result<ToolIndex, Issue> {
        let mut exact = HashMap::new();
        let mut builder = GlobSetBuilder::new();
        let mut glob_rules = Vec::new();
        let mut classifiers = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            if r.name.is_empty() {
                return Err(Issue::new(format!("tools[{i}].name"), "must not be empty"));
            }
            if is_glob(&r.name) {
                let glob = Glob::new(&r.name)
                    .map_err(|e| Issue::new(format!("tools[{i}].name"), e.to_string()))?;
                builder.add(glob);
                glob_rules.push(i);
            } else if exact.insert(r.name.clone(), i).is_some() {
                return Err(Issue::new(
                    format!("tools[{i}].name"),
                    format!("{:?} is registered twice", r.name),
                ));
            }
            if let Some(k) = &r.kind {
                let probe = crate::model::Action {
                    name: "probe".into(),
                    kind: Some(k.clone()),
                    tags: Vec::new(),
                };
                probe.validate().map_err(|_| {
                    Issue::new(
                        format!("tools[{i}].kind"),
                        "kind must be <category>.<operation>",
                    )
                })?;
            }
            classifiers.push(ArgClassifier::build(i, r)?);
        }
        let globs = builder
            .build()
            .map_err(|e| Issue::new("tools", e.to_string()))?;
        let mut canon_exact: HashMap<String, Vec<usize>> = HashMap::new();
        for &i in exact.values() {
            canon_exact
                .entry(canonical_name(&rules[i].name))
                .or_default()
                .push(i);
        }
        let canon_globs = case_insensitive_globs(glob_rules.iter().map(|&i| &*rules[i].name))
            .map_err(|e| Issue::new("tools", e.to_string()))?;
        let mut exact_alikes = vec![Vec::new(); rules.len()];
        for &i in exact.values() {
            exact_alikes[i] = canon_exact[&canonical_name(&rules[i].name)]
                .iter()
                .copied()
                .filter(|&j| j != i)
                .collect();
        }
        Ok(ToolIndex {
            exact,
            globs,
            glob_rules,
            canon_exact,
            exact_alikes,
            canon_globs,
            rule_ids: rules.iter().map(|r| format!("tool:{}", r.name)).collect(),
            rules: rules.to_vec(),
            classifiers,
        })
    }

    /// The first glob registration matching `name` (exact names are looked up first, by the
    /// caller).
    fn glob_lookup(&self, name: &str) -> Option<usize> {
        if self.glob_rules.is_empty() {
            return None;
        }
        // GlobSet reports matches in insertion order; the first registered wins.
        self.globs
            .matches(name)
            .into_iter()
            .min()
            .map(|g| self.glob_rules[g])
    }

    /// Registrations `name` is a look-alike of: every exact registration with the same
    /// [`canonical_name`], else the first glob matching it case-insensitively.
    fn look_alikes(&self, name: &str) -> Vec<usize> {
        let canon = canonical_name(name);
        if let Some(list) = self.canon_exact.get(&canon) {
            return list.clone();
        }
        self.canon_globs
            .matches(&canon)
            .into_iter()
            .min()
            .map(|g| vec![self.glob_rules[g]])
            .unwrap_or_default()
    }

    /// The tier registration `i` and its classifier give `call`, with the rules that fired.
    fn rate(&self, i: usize, call: &ToolCall, rules: &mut Vec<String>) -> Tier {
        rules.push(self.rule_ids[i].clone());
        let mut tier = self.rules[i].tier;
        if let Some(c) = &self.classifiers[i] {
            let mut v = Verdict::default();
            c.apply(call, &mut v);
            tier = tier.max(v.tier);
            rules.extend(v.rules.iter().map(|r| r.to_string()));
        }
        tier
    }

    pub(crate) fn classify(&self, call: &ToolCall, unknown: &UnknownTool) -> Classification {
        let exact = self.exact.get(call.action.name.as_str()).copied();
        // The registration: the exact name first, then the first matching glob.
        let found = exact.or_else(|| self.glob_lookup(&call.action.name));
        let mut c = self.classify_as(found, call, unknown);
        // A name that differs from a registered one only by case or separators (which a
        // case-insensitive or normalising executor runs as that tool) is never rated below it.
        let computed;
        let alikes: &[usize] = match exact {
            Some(i) => &self.exact_alikes[i],
            None => {
                computed = self.look_alikes(&call.action.name);
                &computed
            }
        };
        for &i in alikes {
            if Some(i) == found {
                continue;
            }
            let mut rules = vec![format!("name.look_alike:{}", self.rules[i].name)];
            let tier = self.rate(i, call, &mut rules);
            if tier > c.tier {
                c.tier = tier;
                c.rules.extend(rules);
            }
        }
        c
    }

    fn classify_as(
        &self,
        found: Option<usize>,
        call: &ToolCall,
        unknown: &UnknownTool,
    ) -> Classification {
        match found {
            Some(i) => {
                let rule = &self.rules[i];
                let mut rules = Vec::with_capacity(1);
                let tier = self.rate(i, call, &mut rules);
                Classification {
                    tier,
                    kind: rule.kind.clone().or_else(|| call.action.kind.clone()),
                    rules,
                    unknown: false,
                }
            }
            None => {
                let base = match unknown {
                    UnknownTool::Tier { tier } => *tier,
                    UnknownTool::Deny => Tier::T4,
                };
                let mut v = Verdict::default();
                names::apply_operation(&call.action.name, &mut v);
                // An unregistered database tool's SQL says what it does, whatever its name.
                apply_sql_args(&call.action.name, &call.args, &mut v);
                apply_dispatch_args(&call.args, &mut v);
                let mut rules = vec!["unknown_tool".to_string()];
                rules.extend(v.rules.iter().map(|r| r.to_string()));
                Classification {
                    tier: base.max(v.tier),
                    kind: call.action.kind.clone(),
                    rules,
                    unknown: true,
                }
            }
        }
    }
}
