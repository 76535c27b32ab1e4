//! Core results as JS objects (camelCase), one plain object type per core type.
//!
//! Integers cross as [`Int`]: a JS number while it is a safe integer, a bigint beyond 2^53, so
//! no amount is ever rounded and the common case still works with `JSON.stringify`.

use std::collections::HashMap;

use cycles_core as core;
use napi::bindgen_prelude::{BigInt, JsObjectValue, Null, Object, ToNapiValue, TypeName};
use napi::{Env, ValueType, sys};
use napi_derive::napi;
use serde::{Serialize, Serializer};

use crate::convert::MAX_SAFE_INTEGER;

/// An exact integer for JS: a number when safe, a bigint otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int(pub i64);

impl TypeName for Int {
    fn type_name() -> &'static str {
        "Int"
    }
    fn value_type() -> ValueType {
        ValueType::Number
    }
}

impl Serialize for Int {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

impl ToNapiValue for Int {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        if val.0.unsigned_abs() <= MAX_SAFE_INTEGER as u64 {
            // SAFETY: forwarded from our caller.
            unsafe { i64::to_napi_value(env, val.0) }
        } else {
            unsafe { BigInt::to_napi_value(env, BigInt::from(val.0)) }
        }
    }
}

/// Free-form JSON with the same integer rule as [`Int`]: the exact (slow) way results cross
/// when they hold an integer beyond 2^53, and the audit `detail`.
pub struct Json(pub serde_json::Value);

impl TypeName for Json {
    fn type_name() -> &'static str {
        "unknown"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl ToNapiValue for Json {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        use serde_json::Value;
        match val.0 {
            Value::Number(n) => match n.as_i64() {
                Some(i) => unsafe { Int::to_napi_value(env, Int(i)) },
                // u64 above i64::MAX or a float: the core writes neither in records.
                None => unsafe { f64::to_napi_value(env, n.as_f64().unwrap_or(f64::NAN)) },
            },
            Value::Array(items) => {
                let items: Vec<Json> = items.into_iter().map(Json).collect();
                unsafe { Vec::<Json>::to_napi_value(env, items) }
            }
            Value::Object(map) => {
                let mut obj = Object::new(&Env::from(env))?;
                for (k, v) in map {
                    obj.set_named_property(&k, Json(v))?;
                }
                unsafe { Object::to_napi_value(env, obj) }
            }
            Value::String(s) => unsafe { String::to_napi_value(env, s) },
            Value::Bool(b) => unsafe { bool::to_napi_value(env, b) },
            Value::Null => unsafe { Null::to_napi_value(env, Null) },
        }
    }
}

/// Result objects cross as JSON when they can ([`crate::fast::to_js`]).
macro_rules! to_js_via_json {
    ($($t:ty),* $(,)?) => {$(
        impl ToNapiValue for $t {
            unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
                unsafe { crate::fast::to_js(env, &val) }
            }
        }
    )*};
}

to_js_via_json!(
    Amount,
    Balance,
    Caps,
    Decision,
    Subject,
    Action,
    Hold,
    ReservationData,
    CommitResult,
    ReleaseResult,
    EventResult,
    OwedSettlement,
    Explanation,
    PolicyDenial,
    BrokenRecord,
    VerifyReport,
    AuditRecord,
);

fn ints(v: &[core::Amount]) -> Vec<Amount> {
    v.iter().map(Amount::from).collect()
}

/// A quantity in a unit.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Amount {
    /// `USD_MICROCENTS`, `TOKENS`, `CREDITS` or `RISK_POINTS`.
    #[napi(ts_type = "Unit")]
    pub unit: String,
    /// Never negative.
    pub amount: Int,
}

impl From<&core::Amount> for Amount {
    fn from(a: &core::Amount) -> Self {
        Amount {
            unit: a.unit.as_str().to_string(),
            amount: Int(a.amount),
        }
    }
}

/// A caps counter (`[[caps]]` rule and scope) as a reservation left it.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapsCounter {
    /// `<rule id>@<scope>`.
    pub key: String,
    /// Reservations made while the caps applied.
    pub steps: Int,
    /// The budget's allocation when the steps started counting.
    pub allocated: Int,
    /// No reservation of the scope before this ledger time while the caps apply.
    pub cooldown_until_ms: Int,
}

impl From<&core::CapsCounter> for CapsCounter {
    fn from(c: &core::CapsCounter) -> Self {
        CapsCounter {
            key: c.key.clone(),
            steps: Int(c.steps),
            allocated: Int(c.allocated),
            cooldown_until_ms: Int(c.cooldown_until_ms),
        }
    }
}

/// One budget's state: `remaining = allocated - spent - reserved - debt`.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    /// The scope path, e.g. `tenant:acme/agent:bot`.
    pub scope: String,
    /// The unit.
    #[napi(ts_type = "Unit")]
    pub unit: String,
    /// What may be spent.
    pub allocated: Int,
    /// What has been charged.
    pub spent: Int,
    /// What active reservations hold.
    pub reserved: Int,
    /// Overdraft debt.
    pub debt: Int,
    /// `allocated - spent - reserved - debt`.
    pub remaining: Int,
    /// Most debt allowed.
    pub overdraft_limit: Int,
    /// A capped commit or debt past the limit happened.
    pub is_over_limit: bool,
    /// `ACTIVE`, `FROZEN` or `CLOSED`.
    #[napi(ts_type = "BudgetStatus")]
    pub status: String,
}

impl From<&core::Balance> for Balance {
    fn from(b: &core::Balance) -> Self {
        Balance {
            scope: b.scope.clone(),
            unit: b.unit.as_str().to_string(),
            allocated: Int(b.allocated),
            spent: Int(b.spent),
            reserved: Int(b.reserved),
            debt: Int(b.debt),
            remaining: Int(b.remaining),
            overdraft_limit: Int(b.overdraft_limit),
            is_over_limit: b.is_over_limit,
            status: b.status.as_str().to_string(),
        }
    }
}

/// Limits that come with `ALLOW_WITH_CAPS` (the denylist and cooldown are enforced).
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Caps {
    /// Most tokens the caller should spend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<Int>,
    /// Steps the agent has left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps_remaining: Option<Int>,
    /// Only these tools may run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_allowlist: Option<Vec<String>>,
    /// These tools may not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_denylist: Option<Vec<String>>,
    /// Minimum pause between calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown_ms: Option<Int>,
}

impl From<&core::Caps> for Caps {
    fn from(c: &core::Caps) -> Self {
        Caps {
            max_tokens: c.max_tokens.map(Int),
            max_steps_remaining: c.max_steps_remaining.map(Int),
            tool_allowlist: c.tool_allowlist.clone(),
            tool_denylist: c.tool_denylist.clone(),
            cooldown_ms: c.cooldown_ms.map(Int),
        }
    }
}

/// The gate's answer for one call.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// `ALLOW`, `ALLOW_WITH_CAPS` or `DENY`.
    #[napi(ts_type = "DecisionKind")]
    pub decision: String,
    /// Why, on `DENY`.
    #[napi(ts_type = "ReasonCode")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// The call's tier, 0 to 4.
    pub tier: u32,
    /// RISK_POINTS the call costs.
    pub risk_points: Int,
    /// Ids of the rules that determined the tier and the decision.
    pub rules: Vec<String>,
    /// Only on `ALLOW_WITH_CAPS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caps: Option<Caps>,
    /// The scope that caused a denial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Balances of the budgeted scopes at decision time.
    pub balances: Vec<Balance>,
    /// When a retry may succeed (cooldowns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<Int>,
    /// The approval request to show an approver (`APPROVAL_REQUIRED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_request_id: Option<String>,
    /// Human-readable detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl From<&core::Decision> for Decision {
    fn from(d: &core::Decision) -> Self {
        Decision {
            decision: d.decision.as_str().to_string(),
            reason_code: d.reason_code.map(|r| r.as_str().to_string()),
            tier: u32::from(d.tier.get()),
            risk_points: Int(d.risk_points),
            rules: d.rules.clone(),
            caps: d.caps.as_ref().map(Caps::from),
            scope: d.scope.clone(),
            balances: d.balances.iter().map(Balance::from).collect(),
            retry_after_ms: d.retry_after_ms.map(Int),
            approval_request_id: d.approval_request_id.clone(),
            message: d.message.clone(),
        }
    }
}

/// How the policy rates a call before any budget (`explain`).
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The tool name.
    pub tool: String,
    /// The call's tier, 0 to 4.
    pub tier: u32,
    /// The action kind from the registration (or the call).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Ids of the rules that fired, in order.
    pub rules: Vec<String>,
    /// The tool is not registered.
    pub unknown: bool,
    /// RISK_POINTS the call reserves.
    pub risk_points: Int,
    /// The policy denies the call by itself (unknown tool, tier above the scope's maximum).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny: Option<PolicyDenial>,
    /// Not denied, and the tier needs an approver's grant.
    pub approval_required: bool,
}

/// A denial by the policy itself, before any budget.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDenial {
    /// `TOOL_UNKNOWN` or `TIER_NOT_PERMITTED`.
    #[napi(ts_type = "ReasonCode")]
    pub reason_code: String,
    /// Why, for people.
    pub message: String,
}

impl From<&core::Explanation> for Explanation {
    fn from(e: &core::Explanation) -> Self {
        Explanation {
            tool: e.tool.clone(),
            tier: u32::from(e.tier.get()),
            kind: e.kind.clone(),
            rules: e.rules.clone(),
            unknown: e.unknown,
            risk_points: Int(e.risk_points),
            deny: e.deny.as_ref().map(|d| PolicyDenial {
                reason_code: d.reason_code.as_str().to_string(),
                message: d.message.clone(),
            }),
            approval_required: e.approval_required,
        }
    }
}

/// Who acts.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// Tenant id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Workspace id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// App id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Workflow id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Agent id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Toolset id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toolset: Option<String>,
    /// Free-form dimensions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<HashMap<String, String>>,
}

impl From<&core::Subject> for Subject {
    fn from(s: &core::Subject) -> Self {
        Subject {
            tenant: s.tenant.clone(),
            workspace: s.workspace.clone(),
            app: s.app.clone(),
            workflow: s.workflow.clone(),
            agent: s.agent.clone(),
            toolset: s.toolset.clone(),
            dimensions: (!s.dimensions.is_empty()).then(|| {
                s.dimensions
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
        }
    }
}

/// What a call does: the tool, its kind, its tags.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    /// The tool name.
    pub name: String,
    /// `<category>.<operation>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
}

impl From<&core::Action> for Action {
    fn from(a: &core::Action) -> Self {
        Action {
            name: a.name.clone(),
            kind: a.kind.clone(),
            tags: a.tags.clone(),
        }
    }
}

/// What a reservation holds of one unit, and where.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    /// The unit.
    #[napi(ts_type = "Unit")]
    pub unit: String,
    /// The amount held on each scope.
    pub amount: Int,
    /// The budgeted scopes holding it.
    pub scopes: Vec<String>,
}

/// A reservation as plain data (what `Reservation#toJSON()` returns).
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationData {
    /// `rsv_...`.
    pub reservation_id: String,
    /// `ACTIVE`, `COMMITTED`, `RELEASED` or `EXPIRED`.
    #[napi(ts_type = "ReservationStatus")]
    pub status: String,
    /// Who reserved.
    pub subject: Subject,
    /// For what.
    pub action: Action,
    /// SHA-256 of the canonical call.
    pub call_digest: String,
    /// The call's tier.
    pub tier: u32,
    /// The amounts held.
    pub holds: Vec<Hold>,
    /// The decision that allowed it.
    pub decision: Decision,
    /// Ledger time of creation.
    pub created_at_ms: Int,
    /// Ledger time it expires.
    pub expires_at_ms: Int,
    /// Commit still accepted this long after expiry.
    pub grace_ms: Int,
    /// Times extended.
    pub extensions: u32,
    /// `REJECT`, `ALLOW_IF_AVAILABLE` or `ALLOW_WITH_OVERDRAFT`.
    #[napi(ts_type = "OveragePolicy")]
    pub overage_policy: String,
    /// What was charged, once committed.
    pub charged: Vec<Amount>,
    /// When it was finalized.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finalized_at_ms: Option<Int>,
}

/// The protocol string of an overage policy.
pub fn overage_str(p: core::CommitOveragePolicy) -> &'static str {
    match p {
        core::CommitOveragePolicy::Reject => "REJECT",
        core::CommitOveragePolicy::AllowIfAvailable => "ALLOW_IF_AVAILABLE",
        core::CommitOveragePolicy::AllowWithOverdraft => "ALLOW_WITH_OVERDRAFT",
    }
}

impl From<&core::Reservation> for ReservationData {
    fn from(r: &core::Reservation) -> Self {
        ReservationData {
            reservation_id: r.reservation_id.clone(),
            status: r.status.as_str().to_string(),
            subject: Subject::from(&r.subject),
            action: Action::from(&r.action),
            call_digest: r.call_digest.clone(),
            tier: u32::from(r.tier.get()),
            holds: r
                .holds
                .iter()
                .map(|h| Hold {
                    unit: h.unit.as_str().to_string(),
                    amount: Int(h.amount),
                    scopes: h.scopes.clone(),
                })
                .collect(),
            decision: Decision::from(&r.decision),
            created_at_ms: Int(r.created_at_ms),
            expires_at_ms: Int(r.expires_at_ms),
            grace_ms: Int(r.grace_ms),
            extensions: r.extensions,
            overage_policy: overage_str(r.overage_policy).to_string(),
            charged: ints(&r.charged),
            finalized_at_ms: r.finalized_at_ms.map(Int),
        }
    }
}

/// The result of a commit.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitResult {
    /// The reservation.
    pub reservation_id: String,
    /// `COMMITTED`, or `EXPIRED` when the call was charged after its reservation expired
    /// (`chargeIfExpired`; `eventId` names the charge).
    #[napi(ts_type = "ReservationStatus")]
    pub status: String,
    /// Charged per unit.
    pub charged: Vec<Amount>,
    /// Returned per unit.
    pub released: Vec<Amount>,
    /// Overdraft debt created per unit.
    pub debt_incurred: Vec<Amount>,
    /// Balances of the scopes touched, after the commit.
    pub balances: Vec<Balance>,
    /// The event that charged the call after its reservation expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

impl From<&core::CommitResult> for CommitResult {
    fn from(c: &core::CommitResult) -> Self {
        CommitResult {
            reservation_id: c.reservation_id.clone(),
            status: c.status.as_str().to_string(),
            charged: ints(&c.charged),
            released: ints(&c.released),
            debt_incurred: ints(&c.debt_incurred),
            balances: c.balances.iter().map(Balance::from).collect(),
            event_id: c.event_id.clone(),
        }
    }
}

/// The result of a release.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseResult {
    /// The reservation.
    pub reservation_id: String,
    /// `RELEASED`.
    #[napi(ts_type = "ReservationStatus")]
    pub status: String,
    /// Returned per unit.
    pub released: Vec<Amount>,
    /// Balances after.
    pub balances: Vec<Balance>,
}

impl From<&core::ReleaseResult> for ReleaseResult {
    fn from(r: &core::ReleaseResult) -> Self {
        ReleaseResult {
            reservation_id: r.reservation_id.clone(),
            status: r.status.as_str().to_string(),
            released: ints(&r.released),
            balances: r.balances.iter().map(Balance::from).collect(),
        }
    }
}

/// A settlement the ledger refused as unavailable (`settleOrOwe`), kept by the authority and
/// made once the ledger answers again.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwedSettlement {
    /// The reservation to settle.
    pub reservation_id: String,
    /// The settlement as it was asked for, in the shape `settle` takes.
    #[napi(ts_type = "SettleOptions")]
    pub request: Json,
    /// Tries so far, the first included.
    pub attempts: u32,
    /// The ledger's last refusal.
    pub last_error: String,
    /// When the first try failed (ledger clock, ms).
    pub since_ms: Int,
}

impl From<&core::OwedSettlement> for OwedSettlement {
    fn from(o: &core::OwedSettlement) -> Self {
        let r = &o.request;
        let mut req = serde_json::Map::new();
        // SCREAMING_SNAKE_CASE, as `settle` reads it.
        let outcome = serde_json::to_value(r.outcome).unwrap_or(serde_json::Value::Null);
        req.insert("outcome".into(), outcome);
        if !r.actual.is_empty() {
            let actual = r
                .actual
                .iter()
                .map(|a| serde_json::json!({ "unit": a.unit.as_str(), "amount": a.amount }))
                .collect();
            req.insert("actual".into(), serde_json::Value::Array(actual));
        }
        if let Some(ran) = &r.ran {
            let mut call = serde_json::Map::new();
            call.insert("tool".into(), ran.action.name.clone().into());
            call.insert("args".into(), ran.args.clone());
            if let Some(kind) = &ran.action.kind {
                call.insert("kind".into(), kind.clone().into());
            }
            if !ran.action.tags.is_empty() {
                call.insert("tags".into(), ran.action.tags.clone().into());
            }
            req.insert("ran".into(), serde_json::Value::Object(call));
        }
        if let Some(reason) = &r.reason {
            req.insert("reason".into(), reason.clone().into());
        }
        if let Some(key) = &r.idempotency_key {
            req.insert("idempotencyKey".into(), key.clone().into());
        }
        OwedSettlement {
            reservation_id: o.reservation_id.clone(),
            request: Json(serde_json::Value::Object(req)),
            attempts: o.attempts,
            last_error: o.last_error.clone(),
            since_ms: Int(o.since_ms),
        }
    }
}

/// The result of an event (a direct charge).
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventResult {
    /// `evt_...`.
    pub event_id: String,
    /// Charged per unit.
    pub charged: Vec<Amount>,
    /// Overdraft debt created per unit.
    pub debt_incurred: Vec<Amount>,
    /// Balances after.
    pub balances: Vec<Balance>,
}

impl From<&core::EventResult> for EventResult {
    fn from(e: &core::EventResult) -> Self {
        EventResult {
            event_id: e.event_id.clone(),
            charged: ints(&e.charged),
            debt_incurred: ints(&e.debt_incurred),
            balances: e.balances.iter().map(Balance::from).collect(),
        }
    }
}

/// Where and why the audit chain breaks.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokenRecord {
    /// The sequence number expected at this position.
    pub seq: Int,
    /// What is wrong.
    pub reason: String,
}

/// The outcome of walking the audit chain.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Every record intact and linked.
    pub ok: bool,
    /// Records checked.
    pub records: Int,
    /// Hash of the last intact record.
    pub head_hash: String,
    /// The first broken record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<BrokenRecord>,
    /// Budgets and active reservations whose stored state is not what the intact chain says
    /// (edited outside the gate); empty when they agree.
    pub state_mismatches: Vec<StateMismatch>,
}

/// A budget or reservation whose stored state differs from what the audit chain says.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
pub struct StateMismatch {
    /// `budget SCOPE UNIT` or `reservation ID`.
    pub item: String,
    /// How it differs.
    pub reason: String,
}

impl From<&core::VerifyReport> for VerifyReport {
    fn from(v: &core::VerifyReport) -> Self {
        VerifyReport {
            ok: v.ok,
            records: Int(v.records as i64),
            head_hash: v.head_hash.clone(),
            first_broken: v.first_broken.as_ref().map(|b| BrokenRecord {
                seq: Int(b.seq as i64),
                reason: b.reason.clone(),
            }),
            state_mismatches: v
                .state_mismatches
                .iter()
                .map(|m| StateMismatch {
                    item: m.item.clone(),
                    reason: m.reason.clone(),
                })
                .collect(),
        }
    }
}

/// One hash-chained audit record (call arguments never appear, only their digest).
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: Int,
    /// Ledger time.
    pub time_ms: Int,
    /// `decide`, `denial`, `reserve`, `commit`, `release`, `extend`, `expire`, `event`, ...
    pub kind: String,
    /// Who.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    /// The scopes concerned.
    pub scopes: Vec<String>,
    /// On what.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// SHA-256 of the canonical call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_digest: Option<String>,
    /// The decision, on decide and denial records.
    #[napi(ts_type = "DecisionKind")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The reason code of a denial.
    #[napi(ts_type = "ReasonCode")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// The call's tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<u32>,
    /// Amounts held, charged or released.
    pub amounts: Vec<Amount>,
    /// The budgets this record's operation changed, as they stood after it.
    pub budgets: Vec<Balance>,
    /// The caps counters this record's reservation advanced, as they stood after it.
    pub caps: Vec<CapsCounter>,
    /// The reservation concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
    /// Anything else kept (rule ids, reasons, budget settings), as the core wrote it.
    #[napi(ts_type = "Record<string, unknown>")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Json>,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// SHA-256 of this record's canonical JSON without `hash`.
    pub hash: String,
}

impl From<core::AuditRecord> for AuditRecord {
    fn from(r: core::AuditRecord) -> Self {
        AuditRecord {
            seq: Int(r.seq as i64),
            time_ms: Int(r.time_ms),
            kind: r.kind.as_str().to_string(),
            subject: r.subject.as_ref().map(Subject::from),
            scopes: r.scopes,
            action: r.action.as_ref().map(Action::from),
            call_digest: r.call_digest,
            decision: r.decision.map(|d| d.as_str().to_string()),
            reason_code: r.reason_code.map(|c| c.as_str().to_string()),
            tier: r.tier.map(|t| u32::from(t.get())),
            amounts: ints(&r.amounts),
            budgets: r
                .budgets
                .iter()
                .map(|b| Balance::from(&b.balance()))
                .collect(),
            caps: r.caps.iter().map(CapsCounter::from).collect(),
            reservation_id: r.reservation_id,
            detail: r.detail.map(Json),
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}
