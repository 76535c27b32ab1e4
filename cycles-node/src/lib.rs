//! # cycles-node
//!
//! The Node.js binding of [`cycles_core`], built with napi-rs. It only translates: JS objects
//! become the core's request structs ([`convert`]), core results become plain JS objects
//! ([`types`]) and every [`cycles_core::CyclesError`] becomes one JS `Error` with a stable
//! `code` ([`error`]). Every rule of the gate stays in the core's [`cycles_core::Authority`].
//!
//! Methods return Promises and run the core call on libuv's thread pool ([`task`]), so a file
//! ledger's fsync never blocks the event loop; each has a `...Sync` twin for scripts and for the
//! in-memory ledger, where a call costs microseconds.

#![warn(missing_docs)]

pub mod convert;
pub mod error;
pub mod fast;
pub mod task;
pub mod types;
pub mod wire;

use std::sync::{Arc, Mutex};

use core::CyclesError;
use cycles_core as core;
use napi::bindgen_prelude::{AsyncTask, ClassInstance, Either, FromNapiValue};
use napi::{Env, JsValue, Unknown};
use napi_derive::napi;
use serde_json::{Map, Value};

use convert::{CALL_FIELDS, Dest, Numbers};
use task::{Op, run};

type CoreResult<T> = Result<T, CyclesError>;

/// Runs a conversion or a core call on the JS thread and throws the translated error.
fn sync<T>(env: &Env, r: CoreResult<T>) -> napi::Result<T> {
    r.map_err(|e| error::to_js(env, e))
}

/// An input conversion for a Promise method: a bad argument rejects the promise (never throws
/// synchronously), and nothing reaches the ledger.
fn rejected<T, J>(e: CyclesError) -> AsyncTask<Op<T, J>>
where
    T: Send + 'static,
    J: napi::bindgen_prelude::ToNapiValue + napi::bindgen_prelude::TypeName + 'static,
{
    run(
        move || Err(e),
        |_| unreachable!("a rejected task never resolves"),
    )
}

/// Parses `{ policy, clock, synchronous, busyTimeoutMs }`.
struct OpenOptions {
    policy: core::Policy,
    clock: Option<core::ManualClock>,
    sqlite: core::SqliteOptions,
}

fn open_options(opts: Option<&Unknown<'_>>, file: bool) -> CoreResult<OpenOptions> {
    let clock = match convert::property(opts, "clock")? {
        None => None,
        Some(v) => {
            // SAFETY: `v` is a live value of the current call; the conversion checks the class.
            let c: Result<ClassInstance<ManualClock>, _> =
                unsafe { FromNapiValue::from_napi_value(v.value().env, v.raw()) };
            let c =
                c.map_err(|_| CyclesError::invalid("options.clock", "expected a ManualClock"))?;
            Some(c.inner.clone())
        }
    };
    let mut map = convert::object(opts, "options", &[], &["clock"])?;
    let policy = match map.remove("policy") {
        None | Some(Value::Null) => core::Policy::default(),
        Some(Value::String(path)) => core::Policy::from_file(&path)?,
        Some(v @ Value::Object(_)) => serde_json::from_value(v)
            .map_err(|e| CyclesError::Policy(format!("policy object: {e}")))?,
        Some(_) => {
            return Err(CyclesError::invalid(
                "options.policy",
                "a path to a TOML policy file or a policy object",
            ));
        }
    };
    let mut sqlite = core::SqliteOptions::default();
    if file {
        match map.remove("synchronous") {
            None => {}
            Some(Value::String(s)) if s == "FULL" => sqlite.synchronous = core::Synchronous::Full,
            Some(Value::String(s)) if s == "NORMAL" => {
                sqlite.synchronous = core::Synchronous::Normal
            }
            Some(_) => {
                return Err(CyclesError::invalid(
                    "options.synchronous",
                    "\"FULL\" or \"NORMAL\"",
                ));
            }
        }
        match map.remove("busyTimeoutMs") {
            None => {}
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                sqlite.busy_timeout = std::time::Duration::from_millis(n.as_u64().unwrap_or(0));
            }
            Some(_) => {
                return Err(CyclesError::invalid(
                    "options.busyTimeoutMs",
                    "a non-negative integer",
                ));
            }
        }
    }
    if let Some(key) = map.keys().next() {
        let known = if file {
            "policy, clock, synchronous, busyTimeoutMs"
        } else {
            "policy, clock"
        };
        return Err(CyclesError::invalid(
            format!("options.{key}"),
            format!("unknown option; expected one of {known}"),
        ));
    }
    Ok(OpenOptions {
        policy,
        clock,
        sqlite,
    })
}

fn build(opts: OpenOptions, ledger: Option<Arc<dyn core::Ledger>>) -> CoreResult<core::Authority> {
    let mut b = core::Authority::builder().policy(opts.policy);
    if let Some(l) = ledger {
        b = b.shared_ledger(l);
    }
    if let Some(c) = opts.clock {
        b = b.clock(c);
    }
    b.build()
}

/// Opens the ledger `location` names: a SQLite file or a `postgres://` URL (the core decides).
/// `synchronous` applies to both backends, `busyTimeoutMs` to SQLite.
fn open_location(location: String, opts: OpenOptions) -> CoreResult<core::Authority> {
    let mut options = core::LedgerOptions::default().synchronous(opts.sqlite.synchronous);
    options.sqlite = opts.sqlite.clone();
    let ledger = core::open_ledger(&location, &options)?;
    build(opts, Some(ledger))
}

const RESERVE_FIELDS: &[(&str, Dest)] = &[
    ("estimate", Dest::Top("estimate")),
    ("ttlMs", Dest::Top("ttl_ms")),
    ("gracePeriodMs", Dest::Top("grace_period_ms")),
    ("overagePolicy", Dest::Top("overage_policy")),
    ("idempotencyKey", Dest::Top("idempotency_key")),
    ("grant", Dest::Top("grant")),
];
const DECIDE_FIELDS: &[(&str, Dest)] = &[("estimate", Dest::Top("estimate"))];
/// The JS fields of an `explain` request: a call without a subject, and a scope.
const EXPLAIN_FIELDS: &[(&str, Dest)] = &[
    ("tool", Dest::Call("name")),
    ("args", Dest::Call("args")),
    ("kind", Dest::Call("kind")),
    ("tags", Dest::Call("tags")),
    ("scope", Dest::Top("scope")),
];

/// An `explain` request, renamed to core fields.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainRequest {
    call: core::ToolCall,
    #[serde(default)]
    scope: Option<String>,
}
const EVENT_FIELDS: &[(&str, Dest)] = &[
    ("actual", Dest::Top("actual")),
    ("overagePolicy", Dest::Top("overage_policy")),
    ("idempotencyKey", Dest::Top("idempotency_key")),
];
const COMMIT_FIELDS: &[(&str, Dest)] = &[
    ("actual", Dest::Top("actual")),
    ("chargeIfExpired", Dest::Top("charge_if_expired")),
    ("idempotencyKey", Dest::Top("idempotency_key")),
];
const SETTLE_FIELDS: &[(&str, Dest)] = &[
    ("outcome", Dest::Top("outcome")),
    ("actual", Dest::Top("actual")),
    ("reason", Dest::Top("reason")),
    ("idempotencyKey", Dest::Top("idempotency_key")),
];
const RELEASE_FIELDS: &[(&str, Dest)] = &[
    ("reason", Dest::Top("reason")),
    ("idempotencyKey", Dest::Top("idempotency_key")),
];
const EXTEND_FIELDS: &[(&str, Dest)] = &[
    ("byMs", Dest::Top("extend_by_ms")),
    ("idempotencyKey", Dest::Top("idempotency_key")),
];
const BUDGET_FIELDS: &[(&str, Dest)] = &[
    ("scope", Dest::Top("scope")),
    ("unit", Dest::Top("unit")),
    ("allocated", Dest::Top("allocated")),
    ("overdraftLimit", Dest::Top("overdraft_limit")),
    ("status", Dest::Top("status")),
];
const AUDIT_FIELDS: &[(&str, Dest)] = &[
    ("scope", Dest::Top("scope")),
    ("kinds", Dest::Top("kinds")),
    ("sinceMs", Dest::Top("since_ms")),
    ("untilMs", Dest::Top("until_ms")),
    ("afterSeq", Dest::Top("after_seq")),
    ("limit", Dest::Top("limit")),
];

/// Tool arguments and grants are free-form JSON; every other field is a typed request field.
const FREE_FORM: &[&str] = &["args", "grant"];

fn request<T: serde::de::DeserializeOwned>(
    v: Option<&Unknown<'_>>,
    what: &str,
    fields: &[&[(&str, Dest)]],
) -> CoreResult<T> {
    // Fast path: the request as exact JSON text. Any doubt (or any error) goes to the exact
    // walker below, which gives the same result or the precise error.
    if let Some(map) = v.and_then(convert::object_fast)
        && let Ok(renamed) = convert::rename(map, "", fields)
        && let Ok(parsed) = convert::parse(renamed, what)
    {
        return Ok(parsed);
    }
    let map = convert::object(v, "", FREE_FORM, &[])?;
    let renamed = convert::rename(map, "", fields)?;
    convert::parse(renamed, what)
}

/// The JS shape of a decide or reserve request, read straight from exact JSON text: the hot
/// path, without the intermediate map of [`request`]. Anything it does not accept goes to
/// [`request`], which gives the same result or the precise error.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JsCallRequest {
    subject: core::Subject,
    tool: String,
    #[serde(default)]
    args: Value,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    estimate: Vec<core::Amount>,
    #[serde(default)]
    ttl_ms: Option<i64>,
    #[serde(default)]
    grace_period_ms: Option<i64>,
    #[serde(default)]
    overage_policy: Option<core::CommitOveragePolicy>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    grant: Option<Value>,
}

impl JsCallRequest {
    fn read(req: &Unknown<'_>) -> Option<JsCallRequest> {
        let value = req.value();
        // SAFETY: a live handle of the current call.
        let text = unsafe { fast::stringify(value.env, value.value) }?;
        Self::from_text(&text)
    }

    /// From the text `JSON.stringify` gave with [`fast`]'s replacer (exact by construction).
    fn from_text(text: &str) -> Option<JsCallRequest> {
        let r: JsCallRequest = serde_json::from_str(text).ok()?;
        let too_deep = |v: &Value| convert::deeper_than(v, convert::MAX_DEPTH - 2);
        (!too_deep(&r.args) && !r.grant.as_ref().is_some_and(too_deep)).then_some(r)
    }

    fn call(&mut self) -> core::ToolCall {
        let mut call = core::ToolCall::new(std::mem::take(&mut self.tool), self.args.take());
        call.action.kind = self.kind.take();
        call.action.tags = std::mem::take(&mut self.tags);
        call
    }
}

fn decide_request(req: &Unknown<'_>) -> CoreResult<core::DecideRequest> {
    decide_request_from(JsCallRequest::read(req), req)
}

/// A decide request from its exact JSON text when that text is a plain decide request,
/// otherwise from the object itself (the exact walker, with its precise errors).
fn decide_request_from(
    parsed: Option<JsCallRequest>,
    req: &Unknown<'_>,
) -> CoreResult<core::DecideRequest> {
    if let Some(mut r) = parsed
        && r.ttl_ms.is_none()
        && r.grace_period_ms.is_none()
        && r.overage_policy.is_none()
        && r.idempotency_key.is_none()
        && r.grant.is_none()
    {
        let call = r.call();
        return Ok(core::DecideRequest {
            subject: r.subject,
            call,
            estimate: r.estimate,
        });
    }
    request(Some(req), "decide request", &[CALL_FIELDS, DECIDE_FIELDS])
}

fn reserve_request(req: &Unknown<'_>) -> CoreResult<core::ReserveRequest> {
    if let Some(mut r) = JsCallRequest::read(req) {
        let call = r.call();
        return Ok(core::ReserveRequest {
            subject: r.subject,
            call,
            estimate: r.estimate,
            ttl_ms: r.ttl_ms,
            grace_period_ms: r.grace_period_ms,
            overage_policy: r.overage_policy,
            idempotency_key: r.idempotency_key,
            grant: r.grant,
        });
    }
    request(Some(req), "reserve request", &[CALL_FIELDS, RESERVE_FIELDS])
}

fn event_request(req: &Unknown<'_>) -> CoreResult<core::EventRequest> {
    request(Some(req), "event request", &[CALL_FIELDS, EVENT_FIELDS])
}

/// The JS fields of `ran` (the call that actually ran) in commit options.
const RAN_FIELDS: &[(&str, Dest)] = &[
    ("tool", Dest::Call("name")),
    ("args", Dest::Call("args")),
    ("kind", Dest::Call("kind")),
    ("tags", Dest::Call("tags")),
];

/// `ran` as [`convert::rename`] leaves it: the call under `call`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RanCall {
    call: core::ToolCall,
}

/// Options that may carry `ran` (the call that actually ran): `ran` is read apart, as a
/// call (`{ tool, args, kind, tags }`), and the rest as `fields`.
fn with_ran<T: serde::de::DeserializeOwned>(
    opts: Option<&Unknown<'_>>,
    what: &str,
    fields: &[(&str, Dest)],
) -> CoreResult<(T, Option<core::ToolCall>)> {
    let parse = |mut map: Map<String, Value>| -> CoreResult<(T, Option<core::ToolCall>)> {
        let ran = map.remove("ran");
        let renamed = convert::rename(map, "", &[fields])?;
        let req: T = convert::parse(renamed, what)?;
        let ran = match ran {
            None | Some(Value::Null) => None,
            Some(Value::Object(call)) => {
                let renamed = convert::rename(call, "ran", &[RAN_FIELDS])?;
                Some(convert::parse::<RanCall>(renamed, "ran")?.call)
            }
            Some(_) => {
                return Err(CyclesError::invalid(
                    "ran",
                    "expected an object { tool, args, kind, tags }",
                ));
            }
        };
        Ok((req, ran))
    };
    // As `request`: the exact-JSON fast path, then the exact walker (`ran.args` is the
    // caller's JSON, as `args` is).
    if let Some(map) = opts.and_then(convert::object_fast)
        && let Ok(req) = parse(map)
    {
        return Ok(req);
    }
    parse(convert::object(opts, "", &["ran"], &[])?)
}

/// `commit(reservation, { actual, ran: { tool, args, kind, tags }, chargeIfExpired, idempotencyKey })`.
fn commit_request(opts: Option<&Unknown<'_>>) -> CoreResult<core::CommitRequest> {
    let (mut req, ran): (core::CommitRequest, _) = with_ran(opts, "commit options", COMMIT_FIELDS)?;
    req.ran = ran;
    Ok(req)
}

/// `settle(reservation, { outcome, actual, ran, reason, idempotencyKey })`: `outcome` is
/// required (an unknown one is the core's `INVALID_REQUEST`, as serde reads it).
fn settle_request(opts: Option<&Unknown<'_>>) -> CoreResult<core::SettleRequest> {
    let (mut req, ran): (core::SettleRequest, _) = with_ran(opts, "settle options", SETTLE_FIELDS)?;
    req.ran = ran;
    Ok(req)
}

/// A settlement as the JS result of the commit or release it was.
fn settlement_js(s: &core::Settlement) -> Either<types::CommitResult, types::ReleaseResult> {
    match s {
        core::Settlement::Committed(c) => Either::A(types::CommitResult::from(c)),
        core::Settlement::Released(r) => Either::B(types::ReleaseResult::from(r)),
    }
}

/// A settlement as JS: the commit or the release it was.
type SettlementJs = Either<types::CommitResult, types::ReleaseResult>;

fn owed_js(v: Vec<core::OwedSettlement>) -> Vec<types::OwedSettlement> {
    v.iter().map(types::OwedSettlement::from).collect()
}

fn settlement_status(s: &core::Settlement) -> core::ReservationStatus {
    match s {
        core::Settlement::Committed(c) => c.status,
        core::Settlement::Released(r) => r.status,
    }
}

fn release_request(opts: Option<&Unknown<'_>>) -> CoreResult<core::ReleaseRequest> {
    request(opts, "release options", &[RELEASE_FIELDS])
}

/// `extend(reservation, byMs)` or `extend(reservation, { byMs, idempotencyKey })`.
fn extend_request(by: &Unknown<'_>) -> CoreResult<core::ExtendRequest> {
    let ty = by
        .get_type()
        .map_err(|e| CyclesError::invalid("byMs", e.reason.clone()))?;
    if matches!(ty, napi::ValueType::Number | napi::ValueType::BigInt) {
        let mut m = Map::new();
        if let Some(n) = convert::to_json(by, "byMs", Numbers::Integers)? {
            m.insert("extend_by_ms".into(), n);
        }
        return convert::parse(Value::Object(m), "byMs");
    }
    request(Some(by), "extend options", &[EXTEND_FIELDS])
}

fn budget_spec(spec: &Unknown<'_>) -> CoreResult<core::BudgetSpec> {
    request(Some(spec), "budget", &[BUDGET_FIELDS])
}

fn audit_query(q: Option<&Unknown<'_>>) -> CoreResult<core::AuditQuery> {
    request(q, "audit query", &[AUDIT_FIELDS])
}

fn optional_string(v: Option<&Unknown<'_>>, field: &str) -> CoreResult<Option<String>> {
    match v {
        None => Ok(None),
        Some(v) => match convert::to_json(v, field, Numbers::Integers)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(CyclesError::invalid(field, "expected a string")),
        },
    }
}

/// `{ anchors?: string[] }` as parsed anchors.
fn anchors(options: Option<&Unknown<'_>>) -> CoreResult<Vec<core::AuditAnchor>> {
    let Some(v) = options else {
        return Ok(Vec::new());
    };
    let list = match convert::to_json(v, "options", Numbers::Integers)? {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(mut m)) => match m.remove("anchors") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(_) => {
                return Err(CyclesError::invalid(
                    "anchors",
                    "an array of SEQ:HASH strings",
                ));
            }
        },
        Some(_) => return Err(CyclesError::invalid("options", "expected an object")),
    };
    list.iter()
        .map(|a| match a {
            Value::String(s) => s.parse::<core::AuditAnchor>(),
            _ => Err(CyclesError::invalid(
                "anchors",
                "an array of SEQ:HASH strings",
            )),
        })
        .collect()
}

/// An approval request crosses in its wire form (exact integers, see [`types::Json`]).
fn approval_js(r: core::ApprovalRequest) -> types::Json {
    types::Json(serde_json::to_value(&r).expect("approval requests serialize"))
}

fn approvals_js(v: Vec<core::ApprovalRequest>) -> Vec<types::Json> {
    v.into_iter().map(approval_js).collect()
}

fn approval_status(v: Option<&Unknown<'_>>) -> CoreResult<Option<core::ApprovalStatus>> {
    optional_string(v, "status")?
        .map(|s| {
            serde_json::from_value(Value::String(s)).map_err(|_| {
                CyclesError::invalid(
                    "status",
                    "one of PENDING, GRANTED, DENIED, EXPIRED, CONSUMED",
                )
            })
        })
        .transpose()
}

/// An approver's answer in its wire form; grants and denials keep their snake_case keys (the
/// signed fields), so they are read as free-form JSON.
fn approval_answer(v: &Unknown<'_>) -> CoreResult<core::ApprovalResponse> {
    let json = convert::to_json(v, "answer", Numbers::Json)?
        .ok_or_else(|| CyclesError::invalid("answer", "required"))?;
    serde_json::from_value(json).map_err(|e| CyclesError::invalid("answer", e.to_string()))
}

fn balances_js(v: Vec<core::Balance>) -> Vec<types::Balance> {
    v.iter().map(types::Balance::from).collect()
}

fn audit_js(v: Vec<core::AuditRecord>) -> Vec<types::AuditRecord> {
    v.into_iter().map(types::AuditRecord::from).collect()
}

/// The runtime authority: classify, check budgets, reserve, commit, audit.
///
/// Create one per process (`Authority.open(path, { policy })` for a SQLite ledger shared with
/// other processes, `Authority.open('postgres://...', { policy })` for one shared by hosts,
/// `Authority.inMemory({ policy })` for tests and single-process use).
#[napi]
pub struct Authority {
    inner: core::Authority,
}

#[napi]
impl Authority {
    /// An authority over an in-memory ledger. `policy` is a path to a TOML policy file or a
    /// policy object with the file's keys.
    #[napi(factory, ts_args_type = "options?: AuthorityOptions")]
    pub fn in_memory(env: Env, options: Option<Unknown>) -> napi::Result<Authority> {
        let built = open_options(options.as_ref(), false).and_then(|o| build(o, None));
        sync(&env, built).map(|inner| Authority { inner })
    }

    /// Opens a ledger off the JS thread: a SQLite file path (created if absent) or a PostgreSQL
    /// URL, `postgres://user@host:5432/db?schema=NAME` (the schema is created if absent).
    #[napi(
        ts_args_type = "path: string, options?: OpenOptions",
        ts_return_type = "Promise<Authority>"
    )]
    pub fn open(
        path: Unknown,
        options: Option<Unknown>,
    ) -> AsyncTask<Op<core::Authority, Authority>> {
        let parsed = convert::string(&path, "path")
            .and_then(|p| open_options(options.as_ref(), true).map(|o| (p, o)));
        match parsed {
            Ok((path, opts)) => run(
                move || open_location(path, opts),
                |inner| Authority { inner },
            ),
            Err(e) => rejected(e),
        }
    }

    /// Opens a ledger (a SQLite file path or a `postgres://` URL) on the calling thread, which
    /// waits for the file or the server.
    #[napi(factory, ts_args_type = "path: string, options?: OpenOptions")]
    pub fn open_sync(env: Env, path: Unknown, options: Option<Unknown>) -> napi::Result<Authority> {
        let built = convert::string(&path, "path").and_then(|p| {
            let opts = open_options(options.as_ref(), true)?;
            open_location(p, opts)
        });
        sync(&env, built).map(|inner| Authority { inner })
    }

    /// Would this call be allowed now? Holds nothing; the decision is recorded. A ledger failure
    /// answers `DENY` `LEDGER_UNAVAILABLE`.
    #[napi(
        ts_args_type = "request: CallRequest",
        ts_return_type = "Promise<Decision>"
    )]
    pub fn decide(&self, request: Unknown) -> AsyncTask<Op<core::Decision, types::Decision>> {
        match decide_request(&request) {
            Ok(req) => {
                let auth = self.inner.clone();
                run(move || auth.decide(&req), |d| types::Decision::from(&d))
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(ts_args_type = "request: CallRequest")]
    pub fn decide_sync(&self, env: Env, request: Unknown) -> napi::Result<types::Decision> {
        let d = decide_request(&request).and_then(|req| self.inner.decide(&req));
        sync(&env, d).map(|d| types::Decision::from(&d))
    }

    /// How the policy rates a call before any budget: tier, rules, risk points, a denial by
    /// the policy itself (`TOOL_UNKNOWN`, `TIER_NOT_PERMITTED` for `scope`), whether approval
    /// is needed. Reads no ledger and records nothing: for writing and testing policies;
    /// `decide` is the call that counts.
    #[napi(ts_args_type = "request: ExplainRequest")]
    pub fn explain(&self, env: Env, request: Unknown) -> napi::Result<types::Explanation> {
        let e =
            self::request::<ExplainRequest>(Some(&request), "explain request", &[EXPLAIN_FIELDS])
                .and_then(|r| self.inner.policy().explain(&r.call, r.scope.as_deref()));
        sync(&env, e).map(|e| types::Explanation::from(&e))
    }

    /// `decideSync` for cycles.js: writes the decision into `nums` / `bigs` / `names` (see
    /// [`wire`]) and returns null, or returns the full object when the wire cannot carry it.
    /// `text` is the request as cycles.js stringified it after checking that the text is
    /// exact (undefined when it is not): it saves the call back into JS from here.
    #[napi(skip_typescript, js_name = "__decideWire")]
    pub fn decide_wire(
        &self,
        env: Env,
        text: Option<String>,
        request: Unknown,
        nums: Unknown,
        bigs: Unknown,
        names: Unknown,
    ) -> napi::Result<Option<types::Decision>> {
        let parsed = text.as_deref().and_then(JsCallRequest::from_text);
        let d = decide_request_from(parsed, &request).and_then(|req| self.inner.decide(&req));
        let d = sync(&env, d)?;
        // SAFETY: handles of this synchronous call.
        match unsafe { wire::Wire::open(&nums, &bigs, &names) }.and_then(|w| w.decision(&d)) {
            Some(()) => Ok(None),
            None => Ok(Some(types::Decision::from(&d))),
        }
    }

    /// Reserves the call's risk points and estimate on every budgeted scope. A denial rejects
    /// with an error whose `code` is the reason code and whose `decision` says why.
    #[napi(
        ts_args_type = "request: ReserveRequest",
        ts_return_type = "Promise<Reservation>"
    )]
    pub fn reserve(&self, request: Unknown) -> AsyncTask<Op<core::Reservation, Reservation>> {
        match reserve_request(&request) {
            Ok(req) => {
                let auth = self.inner.clone();
                let auth2 = self.inner.clone();
                run(
                    move || auth.reserve(&req),
                    move |r| Reservation::new(auth2, r),
                )
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(ts_args_type = "request: ReserveRequest")]
    pub fn reserve_sync(&self, env: Env, request: Unknown) -> napi::Result<Reservation> {
        let r = reserve_request(&request).and_then(|req| self.inner.reserve(&req));
        sync(&env, r).map(|r| Reservation::new(self.inner.clone(), r))
    }

    /// Commits a reservation by id (see also `Reservation#commit`).
    #[napi(
        ts_args_type = "reservationId: string, options?: CommitOptions",
        ts_return_type = "Promise<CommitResult>"
    )]
    pub fn commit(
        &self,
        reservation_id: Unknown,
        options: Option<Unknown>,
    ) -> AsyncTask<Op<core::CommitResult, types::CommitResult>> {
        let parsed = convert::string(&reservation_id, "reservationId")
            .and_then(|id| commit_request(options.as_ref()).map(|r| (id, r)));
        match parsed {
            Ok((id, req)) => {
                let auth = self.inner.clone();
                run(
                    move || auth.commit(&id, &req),
                    |c| types::CommitResult::from(&c),
                )
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(ts_args_type = "reservationId: string, options?: CommitOptions")]
    pub fn commit_sync(
        &self,
        env: Env,
        reservation_id: Unknown,
        options: Option<Unknown>,
    ) -> napi::Result<types::CommitResult> {
        let c = convert::string(&reservation_id, "reservationId").and_then(|id| {
            let req = commit_request(options.as_ref())?;
            self.inner.commit(&id, &req)
        });
        sync(&env, c).map(|c| types::CommitResult::from(&c))
    }

    /// Releases a reservation by id without charge.
    #[napi(
        ts_args_type = "reservationId: string, options?: ReleaseOptions",
        ts_return_type = "Promise<ReleaseResult>"
    )]
    pub fn release(
        &self,
        reservation_id: Unknown,
        options: Option<Unknown>,
    ) -> AsyncTask<Op<core::ReleaseResult, types::ReleaseResult>> {
        let parsed = convert::string(&reservation_id, "reservationId")
            .and_then(|id| release_request(options.as_ref()).map(|r| (id, r)));
        match parsed {
            Ok((id, req)) => {
                let auth = self.inner.clone();
                run(
                    move || auth.release(&id, &req),
                    |r| types::ReleaseResult::from(&r),
                )
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(ts_args_type = "reservationId: string, options?: ReleaseOptions")]
    pub fn release_sync(
        &self,
        env: Env,
        reservation_id: Unknown,
        options: Option<Unknown>,
    ) -> napi::Result<types::ReleaseResult> {
        let r = convert::string(&reservation_id, "reservationId").and_then(|id| {
            let req = release_request(options.as_ref())?;
            self.inner.release(&id, &req)
        });
        sync(&env, r).map(|r| types::ReleaseResult::from(&r))
    }

    /// Finishes a reservation by id by saying how its call ended (see also
    /// `Reservation#settle`): the core decides what that costs (`COMPLETED` and `INTERRUPTED`
    /// are charged, `NOT_STARTED` released, `FAILED` as the policy's `on_failure` says).
    /// Resolves to the commit or release it was.
    #[napi(
        ts_args_type = "reservationId: string, options: SettleOptions",
        ts_return_type = "Promise<CommitResult | ReleaseResult>"
    )]
    pub fn settle(
        &self,
        reservation_id: Unknown,
        options: Option<Unknown>,
    ) -> AsyncTask<Op<core::Settlement, Either<types::CommitResult, types::ReleaseResult>>> {
        let parsed = convert::string(&reservation_id, "reservationId")
            .and_then(|id| settle_request(options.as_ref()).map(|r| (id, r)));
        match parsed {
            Ok((id, req)) => {
                let auth = self.inner.clone();
                run(move || auth.settle(&id, &req), |s| settlement_js(&s))
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(
        ts_args_type = "reservationId: string, options: SettleOptions",
        ts_return_type = "CommitResult | ReleaseResult"
    )]
    pub fn settle_sync(
        &self,
        env: Env,
        reservation_id: Unknown,
        options: Option<Unknown>,
    ) -> napi::Result<Either<types::CommitResult, types::ReleaseResult>> {
        let s = convert::string(&reservation_id, "reservationId").and_then(|id| {
            let req = settle_request(options.as_ref())?;
            self.inner.settle(&id, &req)
        });
        sync(&env, s).map(|s| settlement_js(&s))
    }

    /// `settle`, except that when the ledger refuses it as unavailable (`LEDGER_UNAVAILABLE`:
    /// a SQLite file locked past the busy timeout, a PostgreSQL failover) the settlement is
    /// kept owed in this authority and the promise resolves to `null`. The authority makes it
    /// after the next operation the ledger answers, or on `retryOwed()`; `owedSettlements()`
    /// lists what is owed. Any other error rejects as `settle`'s does. Owed settlements live
    /// in this process's memory: retry them at shutdown (`retryOwedSync()`) and log what is left.
    #[napi(
        ts_args_type = "reservationId: string, options: SettleOptions",
        ts_return_type = "Promise<CommitResult | ReleaseResult | null>"
    )]
    pub fn settle_or_owe(
        &self,
        reservation_id: Unknown,
        options: Option<Unknown>,
    ) -> AsyncTask<Op<Option<core::Settlement>, Option<SettlementJs>>> {
        let parsed = convert::string(&reservation_id, "reservationId")
            .and_then(|id| settle_request(options.as_ref()).map(|r| (id, r)));
        match parsed {
            Ok((id, req)) => {
                let auth = self.inner.clone();
                run(
                    move || auth.settle_or_owe(&id, &req),
                    |s| s.as_ref().map(settlement_js),
                )
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread: `null` when owed.
    #[napi(
        ts_args_type = "reservationId: string, options: SettleOptions",
        ts_return_type = "CommitResult | ReleaseResult | null"
    )]
    pub fn settle_or_owe_sync(
        &self,
        env: Env,
        reservation_id: Unknown,
        options: Option<Unknown>,
    ) -> napi::Result<Option<SettlementJs>> {
        let s = convert::string(&reservation_id, "reservationId").and_then(|id| {
            let req = settle_request(options.as_ref())?;
            self.inner.settle_or_owe(&id, &req)
        });
        sync(&env, s).map(|s| s.as_ref().map(settlement_js))
    }

    /// The settlements still owed (`settleOrOwe`), oldest first. Reads only this process's
    /// memory, never the ledger.
    #[napi]
    pub fn owed_settlements(&self) -> Vec<types::OwedSettlement> {
        owed_js(self.inner.owed_settlements())
    }

    /// Tries each owed settlement once, oldest first, stopping at the first the ledger still
    /// refuses as unavailable; resolves to what is still owed. One the ledger answers
    /// otherwise is done (settled, or already finished): never made twice.
    #[napi(ts_return_type = "Promise<Array<OwedSettlement>>")]
    pub fn retry_owed(
        &self,
    ) -> AsyncTask<Op<Vec<core::OwedSettlement>, Vec<types::OwedSettlement>>> {
        let auth = self.inner.clone();
        run(move || Ok(auth.retry_owed()), owed_js)
    }

    /// The same as the Promise form, on the calling thread (a process 'exit' listener's form).
    #[napi]
    pub fn retry_owed_sync(&self) -> Vec<types::OwedSettlement> {
        owed_js(self.inner.retry_owed())
    }

    /// Extends a reservation by id, from its current expiry.
    #[napi(
        ts_args_type = "reservationId: string, by: Int | ExtendOptions",
        ts_return_type = "Promise<ReservationData>"
    )]
    pub fn extend(
        &self,
        reservation_id: Unknown,
        by: Unknown,
    ) -> AsyncTask<Op<core::Reservation, types::ReservationData>> {
        let parsed = convert::string(&reservation_id, "reservationId")
            .and_then(|id| extend_request(&by).map(|r| (id, r)));
        match parsed {
            Ok((id, req)) => {
                let auth = self.inner.clone();
                run(
                    move || auth.extend(&id, &req),
                    |r| types::ReservationData::from(&r),
                )
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(ts_args_type = "reservationId: string, by: Int | ExtendOptions")]
    pub fn extend_sync(
        &self,
        env: Env,
        reservation_id: Unknown,
        by: Unknown,
    ) -> napi::Result<types::ReservationData> {
        let r = convert::string(&reservation_id, "reservationId").and_then(|id| {
            let req = extend_request(&by)?;
            self.inner.extend(&id, &req)
        });
        sync(&env, r).map(|r| types::ReservationData::from(&r))
    }

    /// Charges usage that already happened, without a reservation.
    #[napi(
        ts_args_type = "request: EventRequest",
        ts_return_type = "Promise<EventResult>"
    )]
    pub fn event(&self, request: Unknown) -> AsyncTask<Op<core::EventResult, types::EventResult>> {
        match event_request(&request) {
            Ok(req) => {
                let auth = self.inner.clone();
                run(move || auth.event(&req), |e| types::EventResult::from(&e))
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(ts_args_type = "request: EventRequest")]
    pub fn event_sync(&self, env: Env, request: Unknown) -> napi::Result<types::EventResult> {
        let r = event_request(&request).and_then(|req| self.inner.event(&req));
        sync(&env, r).map(|e| types::EventResult::from(&e))
    }

    /// Creates or changes a budget (recorded in the audit trail).
    #[napi(
        ts_args_type = "budget: BudgetSpec",
        ts_return_type = "Promise<Balance>"
    )]
    pub fn set_budget(&self, budget: Unknown) -> AsyncTask<Op<core::Balance, types::Balance>> {
        match budget_spec(&budget) {
            Ok(spec) => {
                let auth = self.inner.clone();
                run(move || auth.set_budget(&spec), |b| types::Balance::from(&b))
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(ts_args_type = "budget: BudgetSpec")]
    pub fn set_budget_sync(&self, env: Env, budget: Unknown) -> napi::Result<types::Balance> {
        let b = budget_spec(&budget).and_then(|s| self.inner.set_budget(&s));
        sync(&env, b).map(|b| types::Balance::from(&b))
    }

    /// Balances of every budget, or of `scope` and the scopes below it.
    #[napi(
        ts_args_type = "scope?: string",
        ts_return_type = "Promise<Array<Balance>>"
    )]
    pub fn balances(
        &self,
        scope: Option<Unknown>,
    ) -> AsyncTask<Op<Vec<core::Balance>, Vec<types::Balance>>> {
        match optional_string(scope.as_ref(), "scope") {
            Ok(scope) => {
                let auth = self.inner.clone();
                run(move || auth.balances(scope.as_deref()), balances_js)
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(ts_args_type = "scope?: string")]
    pub fn balances_sync(
        &self,
        env: Env,
        scope: Option<Unknown>,
    ) -> napi::Result<Vec<types::Balance>> {
        let b = optional_string(scope.as_ref(), "scope")
            .and_then(|s| self.inner.balances(s.as_deref()));
        sync(&env, b).map(balances_js)
    }

    /// A reservation by id (`NOT_FOUND` if there is none), ready to commit or release.
    #[napi(
        ts_args_type = "reservationId: string",
        ts_return_type = "Promise<Reservation>"
    )]
    pub fn get_reservation(
        &self,
        reservation_id: Unknown,
    ) -> AsyncTask<Op<core::Reservation, Reservation>> {
        match convert::string(&reservation_id, "reservationId") {
            Ok(id) => {
                let auth = self.inner.clone();
                let auth2 = self.inner.clone();
                run(
                    move || auth.reservation(&id),
                    move |r| Reservation::new(auth2, r),
                )
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(ts_args_type = "reservationId: string")]
    pub fn get_reservation_sync(
        &self,
        env: Env,
        reservation_id: Unknown,
    ) -> napi::Result<Reservation> {
        let r = convert::string(&reservation_id, "reservationId")
            .and_then(|id| self.inner.reservation(&id));
        sync(&env, r).map(|r| Reservation::new(self.inner.clone(), r))
    }

    /// The reservation a `reserve` with this idempotency key made, as it stands now; `null`
    /// when no reserve used the key or its answer was a denial (one lookup, however long the
    /// ledger's history).
    #[napi(
        ts_args_type = "idempotencyKey: string",
        ts_return_type = "Promise<Reservation | null>"
    )]
    pub fn reservation_by_key(
        &self,
        idempotency_key: Unknown,
    ) -> AsyncTask<Op<Option<core::Reservation>, Option<Reservation>>> {
        match convert::string(&idempotency_key, "idempotencyKey") {
            Ok(key) => {
                let auth = self.inner.clone();
                let auth2 = self.inner.clone();
                run(
                    move || auth.reservation_by_key(&key),
                    move |r| r.map(|r| Reservation::new(auth2, r)),
                )
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(ts_args_type = "idempotencyKey: string")]
    pub fn reservation_by_key_sync(
        &self,
        env: Env,
        idempotency_key: Unknown,
    ) -> napi::Result<Option<Reservation>> {
        let r = convert::string(&idempotency_key, "idempotencyKey")
            .and_then(|key| self.inner.reservation_by_key(&key));
        sync(&env, r).map(|r| r.map(|r| Reservation::new(self.inner.clone(), r)))
    }

    /// Audit records matching `query`, in chain order.
    #[napi(
        ts_args_type = "query?: AuditQuery",
        ts_return_type = "Promise<Array<AuditRecord>>"
    )]
    pub fn audit(
        &self,
        query: Option<Unknown>,
    ) -> AsyncTask<Op<Vec<core::AuditRecord>, Vec<types::AuditRecord>>> {
        match audit_query(query.as_ref()) {
            Ok(q) => {
                let auth = self.inner.clone();
                run(move || auth.audit(&q), audit_js)
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(ts_args_type = "query?: AuditQuery")]
    pub fn audit_sync(
        &self,
        env: Env,
        query: Option<Unknown>,
    ) -> napi::Result<Vec<types::AuditRecord>> {
        let r = audit_query(query.as_ref()).and_then(|q| self.inner.audit(&q));
        sync(&env, r).map(audit_js)
    }

    /// An approval request by id (`NOT_FOUND` if there is none), in its wire form: the JSON the
    /// ledger stores, approvers receive and `cycles approvals list --json` prints (snake_case
    /// keys, the call with its arguments).
    #[napi(
        ts_args_type = "requestId: string",
        ts_return_type = "Promise<ApprovalRequest>"
    )]
    pub fn approval(
        &self,
        request_id: Unknown,
    ) -> AsyncTask<Op<core::ApprovalRequest, types::Json>> {
        match convert::string(&request_id, "requestId") {
            Ok(id) => {
                let auth = self.inner.clone();
                run(move || auth.approval(&id), approval_js)
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(ts_args_type = "requestId: string", ts_return_type = "ApprovalRequest")]
    pub fn approval_sync(&self, env: Env, request_id: Unknown) -> napi::Result<types::Json> {
        let r = convert::string(&request_id, "requestId").and_then(|id| self.inner.approval(&id));
        sync(&env, r).map(approval_js)
    }

    /// Approval requests, oldest first, optionally only those with `status`.
    #[napi(
        ts_args_type = "status?: ApprovalStatus",
        ts_return_type = "Promise<Array<ApprovalRequest>>"
    )]
    pub fn approvals(
        &self,
        status: Option<Unknown>,
    ) -> AsyncTask<Op<Vec<core::ApprovalRequest>, Vec<types::Json>>> {
        match approval_status(status.as_ref()) {
            Ok(status) => {
                let auth = self.inner.clone();
                run(move || auth.approvals(status), approvals_js)
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(
        ts_args_type = "status?: ApprovalStatus",
        ts_return_type = "Array<ApprovalRequest>"
    )]
    pub fn approvals_sync(
        &self,
        env: Env,
        status: Option<Unknown>,
    ) -> napi::Result<Vec<types::Json>> {
        let r = approval_status(status.as_ref()).and_then(|s| self.inner.approvals(s));
        sync(&env, r).map(approvals_js)
    }

    /// Records an approver's signed answer (`{ grant: {...} }`, `{ deny: {...} }` or
    /// `'pending'`, the wire form `cycles approve --out` writes and webhooks return); the
    /// signature must verify against a key of the policy (`APPROVAL_INVALID` otherwise).
    /// Resolves to the request as stored afterwards. A recorded grant serves the next
    /// `reserve` of exactly that call by that subject, once.
    #[napi(
        ts_args_type = "requestId: string, answer: ApprovalAnswer",
        ts_return_type = "Promise<ApprovalRequest>"
    )]
    pub fn record_approval(
        &self,
        request_id: Unknown,
        answer: Unknown,
    ) -> AsyncTask<Op<core::ApprovalRequest, types::Json>> {
        match convert::string(&request_id, "requestId")
            .and_then(|id| Ok((id, approval_answer(&answer)?)))
        {
            Ok((id, answer)) => {
                let auth = self.inner.clone();
                run(move || auth.record_approval(&id, &answer), approval_js)
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(
        ts_args_type = "requestId: string, answer: ApprovalAnswer",
        ts_return_type = "ApprovalRequest"
    )]
    pub fn record_approval_sync(
        &self,
        env: Env,
        request_id: Unknown,
        answer: Unknown,
    ) -> napi::Result<types::Json> {
        let r = convert::string(&request_id, "requestId")
            .and_then(|id| Ok((id, approval_answer(&answer)?)))
            .and_then(|(id, answer)| self.inner.record_approval(&id, &answer));
        sync(&env, r).map(approval_js)
    }

    /// Walks the whole audit chain; the report names the first broken record. `anchors` are
    /// `SEQ:HASH` strings from `auditAnchor()`, taken earlier and kept outside the ledger: each
    /// anchored record must still be in the chain with that hash (removed last records and a
    /// rebuilt chain are reported as broken).
    #[napi(
        ts_args_type = "options?: { anchors?: string[] }",
        ts_return_type = "Promise<VerifyReport>"
    )]
    pub fn verify(
        &self,
        options: Option<Unknown>,
    ) -> AsyncTask<Op<core::VerifyReport, types::VerifyReport>> {
        match anchors(options.as_ref()) {
            Ok(anchors) => {
                let auth = self.inner.clone();
                run(
                    move || auth.verify_with_anchors(&anchors),
                    |v| types::VerifyReport::from(&v),
                )
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(ts_args_type = "options?: { anchors?: string[] }")]
    pub fn verify_sync(
        &self,
        env: Env,
        options: Option<Unknown>,
    ) -> napi::Result<types::VerifyReport> {
        let r = anchors(options.as_ref()).and_then(|a| self.inner.verify_with_anchors(&a));
        sync(&env, r).map(|v| types::VerifyReport::from(&v))
    }

    /// The head of the audit chain as `SEQ:HASH`, to keep outside the ledger and pass to
    /// `verify({ anchors })` later; `null` while the trail is empty.
    #[napi(ts_return_type = "Promise<string | null>")]
    pub fn audit_anchor(&self) -> AsyncTask<Op<Option<core::AuditAnchor>, Option<String>>> {
        let auth = self.inner.clone();
        run(move || auth.audit_anchor(), |a| a.map(|a| a.to_string()))
    }

    /// The same as the Promise form, on the calling thread.
    #[napi]
    pub fn audit_anchor_sync(&self, env: Env) -> napi::Result<Option<String>> {
        sync(&env, self.inner.audit_anchor()).map(|a| a.map(|a| a.to_string()))
    }

    /// Expires every reservation past its expiry plus grace; resolves to how many.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn sweep_expired(&self) -> AsyncTask<Op<usize, u32>> {
        let auth = self.inner.clone();
        run(
            move || auth.sweep_expired(),
            |n| u32::try_from(n).unwrap_or(u32::MAX),
        )
    }

    /// The same as the Promise form, on the calling thread.
    #[napi]
    pub fn sweep_expired_sync(&self, env: Env) -> napi::Result<u32> {
        sync(&env, self.inner.sweep_expired()).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Benchmark hook, not part of the API: runs `op` (`decide` or `reserve+commit`) with
    /// `request` `n` times inside Rust and returns nanoseconds per call, so benches/node can
    /// report the binding's overhead against the core measured in the same process.
    #[napi(skip_typescript, js_name = "__benchCore")]
    pub fn bench_core(&self, env: Env, op: String, request: Unknown, n: u32) -> napi::Result<f64> {
        let run = || -> CoreResult<f64> {
            let n = n.max(1);
            match op.as_str() {
                "decide" => {
                    let req = decide_request(&request)?;
                    let start = std::time::Instant::now();
                    for _ in 0..n {
                        self.inner.decide(&req)?;
                    }
                    Ok(start.elapsed().as_nanos() as f64 / f64::from(n))
                }
                "reserve+commit" => {
                    let req = reserve_request(&request)?;
                    let commit = core::CommitRequest::default();
                    let start = std::time::Instant::now();
                    for _ in 0..n {
                        let r = self.inner.reserve(&req)?;
                        self.inner.commit(&r.reservation_id, &commit)?;
                    }
                    Ok(start.elapsed().as_nanos() as f64 / f64::from(n))
                }
                other => Err(CyclesError::invalid("op", format!("no bench op {other:?}"))),
            }
        };
        sync(&env, run())
    }

    /// The current time on the authority's clock (ms since the epoch).
    #[napi(getter)]
    pub fn now_ms(&self) -> types::Int {
        types::Int(self.inner.now_ms())
    }

    /// Where the ledger lives (`memory`, `sqlite:/path`).
    #[napi(getter)]
    pub fn ledger(&self) -> String {
        self.inner.ledger().describe()
    }
}

/// A clock that moves only when told to, for tests and simulations: pass it as
/// `{ clock }` when creating an authority and it becomes the ledger's time.
#[napi]
pub struct ManualClock {
    inner: core::ManualClock,
}

fn int_arg(env: &Env, v: &Unknown<'_>, field: &str) -> napi::Result<i64> {
    let n = match convert::to_json(v, field, Numbers::Integers) {
        Ok(Some(Value::Number(n))) => n.as_i64(),
        Ok(_) => None,
        Err(e) => return Err(error::to_js(env, e)),
    };
    n.ok_or_else(|| error::to_js(env, CyclesError::invalid(field, "expected an integer")))
}

#[napi]
impl ManualClock {
    /// A clock showing `startMs` (milliseconds since the epoch).
    #[napi(constructor, ts_args_type = "startMs: Int")]
    pub fn new(env: Env, start_ms: Unknown) -> napi::Result<Self> {
        let start = int_arg(&env, &start_ms, "startMs")?;
        Ok(ManualClock {
            inner: core::ManualClock::new(start),
        })
    }

    /// Moves the clock by `deltaMs` (negative moves it back).
    #[napi(ts_args_type = "deltaMs: Int")]
    pub fn advance(&self, env: Env, delta_ms: Unknown) -> napi::Result<()> {
        self.inner.advance(int_arg(&env, &delta_ms, "deltaMs")?);
        Ok(())
    }

    /// Sets the time.
    #[napi(ts_args_type = "ms: Int")]
    pub fn set(&self, env: Env, ms: Unknown) -> napi::Result<()> {
        self.inner.set(int_arg(&env, &ms, "ms")?);
        Ok(())
    }

    /// The time it shows.
    #[napi(getter)]
    pub fn now_ms(&self) -> types::Int {
        use core::Clock;
        types::Int(self.inner.now_ms())
    }
}

/// Authority held for one call until it is committed, released or expires.
///
/// Settle it by how the call ended (`settle`; the core decides what that costs), or commit /
/// release it directly; an unfinished reservation expires after its TTL and its hold returns.
#[napi]
pub struct Reservation {
    auth: core::Authority,
    // Shared with the Promise forms, which update it from the thread pool after success.
    state: Arc<Mutex<core::Reservation>>,
}

impl Reservation {
    fn new(auth: core::Authority, r: core::Reservation) -> Self {
        Reservation {
            auth,
            state: Arc::new(Mutex::new(r)),
        }
    }

    fn snapshot(&self) -> core::Reservation {
        lock(&self.state).clone()
    }

    fn id(&self) -> String {
        lock(&self.state).reservation_id.clone()
    }
}

fn lock(m: &Mutex<core::Reservation>) -> std::sync::MutexGuard<'_, core::Reservation> {
    // A poisoned lock only means a panic elsewhere mid-update of a plain snapshot.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn set_status(state: &Mutex<core::Reservation>, status: core::ReservationStatus) {
    lock(state).status = status;
}

#[napi]
impl Reservation {
    /// `rsv_...`.
    #[napi(getter)]
    pub fn reservation_id(&self) -> String {
        self.id()
    }

    /// `ACTIVE`, `COMMITTED`, `RELEASED` or `EXPIRED`, as last seen by this object.
    #[napi(getter, ts_return_type = "ReservationStatus")]
    pub fn status(&self) -> String {
        lock(&self.state).status.as_str().to_string()
    }

    /// The call's tier, 0 to 4.
    #[napi(getter)]
    pub fn tier(&self) -> u32 {
        u32::from(lock(&self.state).tier.get())
    }

    /// The decision that allowed it.
    #[napi(getter)]
    pub fn decision(&self) -> types::Decision {
        types::Decision::from(&lock(&self.state).decision)
    }

    /// Ledger time it expires.
    #[napi(getter)]
    pub fn expires_at_ms(&self) -> types::Int {
        types::Int(lock(&self.state).expires_at_ms)
    }

    /// Everything about the reservation as plain data (also what `JSON.stringify` sees).
    #[napi(js_name = "toJSON")]
    pub fn to_json(&self) -> types::ReservationData {
        types::ReservationData::from(&self.snapshot())
    }

    /// Charges what the call actually cost (units not listed are charged as held).
    #[napi(
        ts_args_type = "options?: CommitOptions",
        ts_return_type = "Promise<CommitResult>"
    )]
    pub fn commit(
        &self,
        options: Option<Unknown>,
    ) -> AsyncTask<Op<core::CommitResult, types::CommitResult>> {
        match commit_request(options.as_ref()) {
            Ok(req) => {
                let (auth, state, id) = (self.auth.clone(), self.state.clone(), self.id());
                run(
                    move || {
                        let c = auth.commit(&id, &req)?;
                        set_status(&state, c.status);
                        Ok(c)
                    },
                    |c| types::CommitResult::from(&c),
                )
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(ts_args_type = "options?: CommitOptions")]
    pub fn commit_sync(
        &self,
        env: Env,
        options: Option<Unknown>,
    ) -> napi::Result<types::CommitResult> {
        let c = commit_request(options.as_ref()).and_then(|req| self.auth.commit(&self.id(), &req));
        let c = sync(&env, c)?;
        set_status(&self.state, c.status);
        Ok(types::CommitResult::from(&c))
    }

    /// `commitSync` for cycles.js: writes the result into `nums` / `bigs` / `names` (see [`wire`]) and
    /// returns the reservation id, or returns the full object when the wire cannot carry it.
    #[napi(skip_typescript, js_name = "__commitWire")]
    pub fn commit_wire(
        &self,
        env: Env,
        options: Option<Unknown>,
        nums: Unknown,
        bigs: Unknown,
        names: Unknown,
    ) -> napi::Result<Either<String, types::CommitResult>> {
        let c = commit_request(options.as_ref()).and_then(|req| self.auth.commit(&self.id(), &req));
        let c = sync(&env, c)?;
        set_status(&self.state, c.status);
        // SAFETY: handles of this synchronous call.
        match unsafe { wire::Wire::open(&nums, &bigs, &names) }.and_then(|w| w.commit(&c)) {
            Some(()) => Ok(Either::A(c.reservation_id)),
            None => Ok(Either::B(types::CommitResult::from(&c))),
        }
    }

    /// Returns the hold without charge (the call failed or did not run).
    #[napi(
        ts_args_type = "options?: ReleaseOptions",
        ts_return_type = "Promise<ReleaseResult>"
    )]
    pub fn release(
        &self,
        options: Option<Unknown>,
    ) -> AsyncTask<Op<core::ReleaseResult, types::ReleaseResult>> {
        match release_request(options.as_ref()) {
            Ok(req) => {
                let (auth, state, id) = (self.auth.clone(), self.state.clone(), self.id());
                run(
                    move || {
                        let r = auth.release(&id, &req)?;
                        set_status(&state, r.status);
                        Ok(r)
                    },
                    |r| types::ReleaseResult::from(&r),
                )
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(ts_args_type = "options?: ReleaseOptions")]
    pub fn release_sync(
        &self,
        env: Env,
        options: Option<Unknown>,
    ) -> napi::Result<types::ReleaseResult> {
        let r =
            release_request(options.as_ref()).and_then(|req| self.auth.release(&self.id(), &req));
        let r = sync(&env, r)?;
        set_status(&self.state, r.status);
        Ok(types::ReleaseResult::from(&r))
    }

    /// Finishes the reservation by saying how its call ended: `COMPLETED` (it returned),
    /// `FAILED` (it reported an error), `INTERRUPTED` (stopped from outside after it started)
    /// or `NOT_STARTED`. The core decides what that costs; resolves to the commit or release
    /// it was.
    #[napi(
        ts_args_type = "options: SettleOptions",
        ts_return_type = "Promise<CommitResult | ReleaseResult>"
    )]
    pub fn settle(
        &self,
        options: Option<Unknown>,
    ) -> AsyncTask<Op<core::Settlement, Either<types::CommitResult, types::ReleaseResult>>> {
        match settle_request(options.as_ref()) {
            Ok(req) => {
                let (auth, state, id) = (self.auth.clone(), self.state.clone(), self.id());
                run(
                    move || {
                        let s = auth.settle(&id, &req)?;
                        set_status(&state, settlement_status(&s));
                        Ok(s)
                    },
                    |s| settlement_js(&s),
                )
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(
        ts_args_type = "options: SettleOptions",
        ts_return_type = "CommitResult | ReleaseResult"
    )]
    pub fn settle_sync(
        &self,
        env: Env,
        options: Option<Unknown>,
    ) -> napi::Result<Either<types::CommitResult, types::ReleaseResult>> {
        let s = settle_request(options.as_ref()).and_then(|req| self.auth.settle(&self.id(), &req));
        let s = sync(&env, s)?;
        set_status(&self.state, settlement_status(&s));
        Ok(settlement_js(&s))
    }

    /// `settle`, except that when the ledger refuses it as unavailable the settlement is kept
    /// owed in the authority (see `Authority#settleOrOwe`) and the promise resolves to `null`
    /// (this object's `status` then stays `ACTIVE` until it is read again from the ledger).
    #[napi(
        ts_args_type = "options: SettleOptions",
        ts_return_type = "Promise<CommitResult | ReleaseResult | null>"
    )]
    pub fn settle_or_owe(
        &self,
        options: Option<Unknown>,
    ) -> AsyncTask<Op<Option<core::Settlement>, Option<SettlementJs>>> {
        match settle_request(options.as_ref()) {
            Ok(req) => {
                let (auth, state, id) = (self.auth.clone(), self.state.clone(), self.id());
                run(
                    move || {
                        let s = auth.settle_or_owe(&id, &req)?;
                        if let Some(s) = &s {
                            set_status(&state, settlement_status(s));
                        }
                        Ok(s)
                    },
                    |s| s.as_ref().map(settlement_js),
                )
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread: `null` when owed.
    #[napi(
        ts_args_type = "options: SettleOptions",
        ts_return_type = "CommitResult | ReleaseResult | null"
    )]
    pub fn settle_or_owe_sync(
        &self,
        env: Env,
        options: Option<Unknown>,
    ) -> napi::Result<Option<SettlementJs>> {
        let s = settle_request(options.as_ref())
            .and_then(|req| self.auth.settle_or_owe(&self.id(), &req));
        let s = sync(&env, s)?;
        if let Some(s) = &s {
            set_status(&self.state, settlement_status(s));
        }
        Ok(s.as_ref().map(settlement_js))
    }

    /// Pushes the expiry further, from the current expiry (at most 10 times, never after
    /// expiry). Resolves to the updated plain data.
    #[napi(
        ts_args_type = "by: Int | ExtendOptions",
        ts_return_type = "Promise<ReservationData>"
    )]
    pub fn extend(&self, by: Unknown) -> AsyncTask<Op<core::Reservation, types::ReservationData>> {
        match extend_request(&by) {
            Ok(req) => {
                let (auth, state, id) = (self.auth.clone(), self.state.clone(), self.id());
                run(
                    move || {
                        let r = auth.extend(&id, &req)?;
                        *lock(&state) = r.clone();
                        Ok(r)
                    },
                    |r| types::ReservationData::from(&r),
                )
            }
            Err(e) => rejected(e),
        }
    }

    /// The same as the Promise form, on the calling thread.
    #[napi(ts_args_type = "by: Int | ExtendOptions")]
    pub fn extend_sync(&self, env: Env, by: Unknown) -> napi::Result<types::ReservationData> {
        let r = extend_request(&by).and_then(|req| self.auth.extend(&self.id(), &req));
        let r = sync(&env, r)?;
        *lock(&self.state) = r.clone();
        Ok(types::ReservationData::from(&r))
    }
}
