//! Requests to and results from the [`Authority`](crate::Authority).
//!
//! Every request deserializes from the same JSON the fixtures and bindings use, so a binding
//! passes a dict or object straight through and adds no rules of its own.

use serde::{Deserialize, Serialize};

use crate::error::{CyclesError, Result};
use crate::model::{
    Amount, Balance, CommitOveragePolicy, MAX_GRACE_MS, MAX_TTL_MS, MIN_TTL_MS, Subject, ToolCall,
    validate_amounts,
};

/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

pub(crate) fn validate_idempotency_key(key: &Option<String>) -> Result<()> {
    if let Some(k) = key
        && (k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_LEN || k.chars().any(|c| c.is_control()))
    {
        return Err(CyclesError::invalid(
            "idempotency_key",
            "1 to 256 printable characters",
        ));
    }
    Ok(())
}

/// A preflight question: would this call be allowed now? Holds nothing.
///
/// ```
/// use cycles_core::{DecideRequest, Subject, ToolCall};
/// let req = DecideRequest::new(Subject::new().agent("bot"), ToolCall::new("read_file", serde_json::json!({})));
/// assert!(req.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    /// Who acts.
    pub subject: Subject,
    /// The proposed call.
    pub call: ToolCall,
    /// Spend estimates in units other than the call's risk points (or extra risk points).
    #[serde(default)]
    pub estimate: Vec<Amount>,
}

impl DecideRequest {
    /// A request with no spend estimate.
    pub fn new(subject: Subject, call: ToolCall) -> Self {
        DecideRequest {
            subject,
            call,
            estimate: Vec::new(),
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        self.subject.validate()?;
        self.call.action.validate()?;
        validate_amounts(&self.estimate, "estimate")
    }
}

/// Reserve authority for a call before it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// Who acts.
    pub subject: Subject,
    /// The proposed call.
    pub call: ToolCall,
    /// Spend estimates held alongside the tier's risk points.
    #[serde(default)]
    pub estimate: Vec<Amount>,
    /// Time to live (1 s to 24 h); the policy default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<i64>,
    /// Grace after expiry during which a commit is accepted (0 to 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_ms: Option<i64>,
    /// What the commit does with overage; the policy default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overage_policy: Option<CommitOveragePolicy>,
    /// Makes retries safe; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// A signed approval grant, for calls that need one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<serde_json::Value>,
}

impl ReserveRequest {
    /// A request with policy defaults.
    pub fn new(subject: Subject, call: ToolCall) -> Self {
        ReserveRequest {
            subject,
            call,
            estimate: Vec::new(),
            ttl_ms: None,
            grace_period_ms: None,
            overage_policy: None,
            idempotency_key: None,
            grant: None,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        self.subject.validate()?;
        self.call.action.validate()?;
        validate_amounts(&self.estimate, "estimate")?;
        if let Some(t) = self.ttl_ms
            && !(MIN_TTL_MS..=MAX_TTL_MS).contains(&t)
        {
            return Err(CyclesError::invalid("ttl_ms", "between 1000 and 86400000"));
        }
        if let Some(g) = self.grace_period_ms
            && !(0..=MAX_GRACE_MS).contains(&g)
        {
            return Err(CyclesError::invalid(
                "grace_period_ms",
                "between 0 and 60000",
            ));
        }
        validate_idempotency_key(&self.idempotency_key)
    }
}

/// Finish a reservation with what the call actually cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// Actual amounts; a held unit not listed is charged as reserved.
    #[serde(default)]
    pub actual: Vec<Amount>,
    /// The call that actually ran, when it may not be the call reserved (a hook rewrote its
    /// input, an event names what ran). When it differs from the reserved call, the
    /// `RISK_POINTS` charged are at least what the policy rates it at, and the commit record
    /// names it (digest, tool, tier), so a rewritten call is never charged less than it costs
    /// and the trail shows that something else ran. A charge raised this way past what the
    /// overage policy allows is capped to what the budget can take, never refused (the call
    /// already ran). The same call, or none, changes nothing.
    ///
    /// ```
    /// use cycles_core::*;
    /// let auth = Authority::builder()
    ///     .policy(Policy::default()
    ///         .register("read_file", Tier::T0)
    ///         .register("drop_table", Tier::T4)
    ///         .budget(BudgetSpec::new("agent:bot", Unit::RiskPoints, 1_000)))
    ///     .build()
    ///     .unwrap();
    /// let bot = Subject::new().agent("bot");
    /// let read = ToolCall::new("read_file", serde_json::json!({"path": "a"}));
    /// let r = auth.reserve(&ReserveRequest::new(bot, read)).unwrap();
    /// let ran = ToolCall::new("drop_table", serde_json::json!({"table": "users"}));
    /// let costs = auth.policy().assess(&ran, &["agent:bot".into()]).risk_points;
    /// let req = CommitRequest { ran: Some(ran), ..CommitRequest::default() };
    /// let c = auth.commit(&r.reservation_id, &req).unwrap();
    /// assert!(costs > 0);
    /// assert_eq!(c.charged[0].amount, costs);
    /// ```
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran: Option<ToolCall>,
    /// For a call that has run: when its reservation expired while it ran (the commit would
    /// be `RESERVATION_EXPIRED`), charge it anyway, as the commit would have charged it (the
    /// actual amounts, a held unit not listed as held, raised by `ran`, whatever the budgets'
    /// status), but as new spending: the expiry returned the hold and others may have spent
    /// it, so the charge is capped to what the budgets can take (or runs into the overdraft the
    /// reservation allowed, up to its limit), never refused. A call that outlives its hold is
    /// then paid for instead of charged to nobody. The record is an event naming the
    /// reservation, its call and subject (`detail.after_expiry`); the result has status
    /// `EXPIRED` and names the event; the reservation stays `EXPIRED` with what was charged.
    /// Once per reservation: another charge is `RESERVATION_FINALIZED` (a retry with the same
    /// idempotency key replays the result).
    ///
    /// ```
    /// use cycles_core::*;
    /// let clock = ManualClock::new(0);
    /// let auth = Authority::builder()
    ///     .policy(Policy::default()
    ///         .register("deploy", Tier::T3)
    ///         .budget(BudgetSpec::new("agent:bot", Unit::RiskPoints, 1_000)))
    ///     .clock(clock.clone())
    ///     .build()
    ///     .unwrap();
    /// let call = ToolCall::new("deploy", serde_json::json!({}));
    /// let r = auth.reserve(&ReserveRequest::new(Subject::new().agent("bot"), call)).unwrap();
    /// clock.advance(3_600_000); // the deploy ran for an hour
    /// let req = CommitRequest { charge_if_expired: true, ..CommitRequest::default() };
    /// let c = auth.commit(&r.reservation_id, &req).unwrap();
    /// assert_eq!(c.status, ReservationStatus::Expired);
    /// assert!(c.event_id.is_some());
    /// assert_eq!(auth.balances(Some("agent:bot")).unwrap()[0].spent, r.reserved()[0].amount);
    /// ```
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub charge_if_expired: bool,
    /// Makes retries safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl CommitRequest {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        validate_amounts(&self.actual, "actual")?;
        if let Some(ran) = &self.ran {
            ran.action.validate()?;
        }
        validate_idempotency_key(&self.idempotency_key)
    }
}

/// Return a reservation's hold without charging it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// Why (recorded in the audit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Makes retries safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl ReleaseRequest {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if self.reason.as_ref().is_some_and(|r| r.len() > 256) {
            return Err(CyclesError::invalid("reason", "at most 256 characters"));
        }
        validate_idempotency_key(&self.idempotency_key)
    }
}

/// How a call that held a reservation ended, as its caller saw it: what
/// [`Authority::settle`](crate::Authority::settle) does with the hold. The bindings and
/// integrations (guard decorators, framework tools, the MCP gate, the Claude Code hook) only
/// say which of these happened; the rule of what each one costs lives here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallOutcome {
    /// The call returned: charged `actual` (a held unit not listed: what was held), even if
    /// its hold lapsed while it ran.
    Completed,
    /// The call reported an error (raised, returned an error result): the policy's
    /// `[defaults] on_failure` decides, release (the default) or charge what was held.
    Failed,
    /// The call was stopped from outside after it started (cancelled, timed out,
    /// interrupted): it may have acted, so it is charged what was held, even if its hold
    /// lapsed while it ran.
    Interrupted,
    /// The call never started: the hold is released.
    NotStarted,
}

/// Finish a reservation by saying how its call ended ([`CallOutcome`]).
///
/// ```
/// use cycles_core::*;
/// let auth = Authority::builder()
///     .policy(Policy::default()
///         .register("deploy", Tier::T3)
///         .budget(BudgetSpec::new("agent:bot", Unit::RiskPoints, 1_000)))
///     .build()
///     .unwrap();
/// let call = ToolCall::new("deploy", serde_json::json!({}));
/// let r = auth.reserve(&ReserveRequest::new(Subject::new().agent("bot"), call)).unwrap();
/// // The deploy was cancelled half-way: it may have acted, so it is charged what was held.
/// let s = auth.settle(&r.reservation_id, &SettleRequest::new(CallOutcome::Interrupted)).unwrap();
/// assert!(matches!(&s, Settlement::Committed(c) if c.charged == r.reserved()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleRequest {
    /// How the call ended.
    pub outcome: CallOutcome,
    /// What a completed call actually cost ([`CommitRequest::actual`]); only with
    /// [`CallOutcome::Completed`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actual: Vec<Amount>,
    /// The call that actually ran, when it may differ from the one reserved
    /// ([`CommitRequest::ran`]); used when the outcome is charged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran: Option<ToolCall>,
    /// Why (recorded when the hold is released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Makes retries safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl SettleRequest {
    /// A request saying only how the call ended.
    pub fn new(outcome: CallOutcome) -> Self {
        SettleRequest {
            outcome,
            actual: Vec::new(),
            ran: None,
            reason: None,
            idempotency_key: None,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if !self.actual.is_empty() && self.outcome != CallOutcome::Completed {
            return Err(CyclesError::invalid(
                "actual",
                "only a COMPLETED call reports actual amounts",
            ));
        }
        self.as_commit().validate()?;
        self.as_release().validate()
    }

    /// The commit this settlement is when the outcome is charged (at the actual amounts, or
    /// what was held; expired or not).
    pub(crate) fn as_commit(&self) -> CommitRequest {
        CommitRequest {
            actual: self.actual.clone(),
            ran: self.ran.clone(),
            charge_if_expired: true,
            idempotency_key: self.idempotency_key.clone(),
        }
    }

    /// The release this settlement is when the outcome is not charged.
    pub(crate) fn as_release(&self) -> ReleaseRequest {
        ReleaseRequest {
            reason: self.reason.clone(),
            idempotency_key: self.idempotency_key.clone(),
        }
    }
}

/// What [`Authority::settle`](crate::Authority::settle) did: the commit or the release it was.
/// Serialized as that result (both carry `status`: `COMMITTED` or `EXPIRED` for a charge,
/// `RELEASED` for a release).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Settlement {
    /// The call was charged.
    Committed(CommitResult),
    /// The hold was given back.
    Released(ReleaseResult),
}

/// Push a reservation's expiry further, from its current expiry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    /// How far (1 ms to 24 h).
    pub extend_by_ms: i64,
    /// Makes retries safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl ExtendRequest {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_TTL_MS).contains(&self.extend_by_ms) {
            return Err(CyclesError::invalid(
                "extend_by_ms",
                "between 1 and 86400000",
            ));
        }
        validate_idempotency_key(&self.idempotency_key)
    }
}

/// A direct charge without a reservation (usage that already happened).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    /// Who spent.
    pub subject: Subject,
    /// On what.
    pub call: ToolCall,
    /// What it cost.
    pub actual: Vec<Amount>,
    /// What to do when it does not fit; the policy default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overage_policy: Option<CommitOveragePolicy>,
    /// Makes retries safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl EventRequest {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        self.subject.validate()?;
        self.call.action.validate()?;
        validate_amounts(&self.actual, "actual")?;
        if self.actual.is_empty() {
            return Err(CyclesError::invalid(
                "actual",
                "an event charges at least one amount",
            ));
        }
        validate_idempotency_key(&self.idempotency_key)
    }
}

/// Create or change a budget (allocation, overdraft limit, status); spending is kept.
///
/// ```
/// use cycles_core::{BudgetSpec, Unit};
/// let spec = BudgetSpec::new("tenant:acme", Unit::RiskPoints, 100);
/// assert!(spec.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// The scope path.
    pub scope: String,
    /// The unit.
    pub unit: crate::Unit,
    /// What may be spent.
    pub allocated: i64,
    /// Most debt allowed (0: none).
    #[serde(default)]
    pub overdraft_limit: i64,
    /// ACTIVE unless said otherwise.
    #[serde(default)]
    pub status: crate::BudgetStatus,
}

impl BudgetSpec {
    /// An ACTIVE budget without overdraft.
    pub fn new(scope: impl Into<String>, unit: crate::Unit, allocated: i64) -> Self {
        BudgetSpec {
            scope: scope.into(),
            unit,
            allocated,
            overdraft_limit: 0,
            status: crate::BudgetStatus::Active,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        crate::model::validate_scope(&self.scope)?;
        if self.allocated < 0 {
            return Err(CyclesError::invalid("allocated", "must be non-negative"));
        }
        if self.overdraft_limit < 0 {
            return Err(CyclesError::invalid(
                "overdraft_limit",
                "must be non-negative",
            ));
        }
        Ok(())
    }
}

/// The result of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitResult {
    /// The reservation.
    pub reservation_id: String,
    /// Always `COMMITTED`.
    pub status: crate::ReservationStatus,
    /// What was charged per unit.
    pub charged: Vec<Amount>,
    /// What was returned per unit.
    pub released: Vec<Amount>,
    /// Amount charged as overdraft debt per unit (non-zero units only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub debt_incurred: Vec<Amount>,
    /// Balances of the scopes touched, after the commit.
    pub balances: Vec<Balance>,
    /// The event that charged the call because its reservation had expired
    /// ([`CommitRequest::charge_if_expired`]; status `EXPIRED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

/// The result of a release (or of an expiry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseResult {
    /// The reservation.
    pub reservation_id: String,
    /// `RELEASED`.
    pub status: crate::ReservationStatus,
    /// What was returned per unit.
    pub released: Vec<Amount>,
    /// Balances after.
    pub balances: Vec<Balance>,
}

/// The result of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventResult {
    /// The event id (`evt_...`).
    pub event_id: String,
    /// What was charged per unit.
    pub charged: Vec<Amount>,
    /// Overdraft debt created per unit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub debt_incurred: Vec<Amount>,
    /// Balances after.
    pub balances: Vec<Balance>,
}
