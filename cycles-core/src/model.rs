//! The data model: subjects, actions, amounts, decisions, budgets and reservations.
//!
//! Names and serialized strings follow the open Cycles protocol (`ALLOW_WITH_CAPS`,
//! `RISK_POINTS`, `USD_MICROCENTS`, ...), so a user can move between it and this library.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{CyclesError, Result};

/// Longest subject field, dimension key or id accepted.
pub const MAX_ID_LEN: usize = 128;
/// Most dimensions a subject may carry.
pub const MAX_DIMENSIONS: usize = 16;
/// Shortest reservation TTL (1 s).
pub const MIN_TTL_MS: i64 = 1_000;
/// Longest reservation TTL, and longest single extension (24 h).
pub const MAX_TTL_MS: i64 = 86_400_000;
/// Longest grace period after expiry during which a commit is still accepted.
pub const MAX_GRACE_MS: i64 = 60_000;
/// How many times a reservation may be extended.
pub const MAX_EXTENSIONS: u32 = 10;

/// A unit of account. Risk is its own axis, never converted to or from money.
///
/// ```
/// use cycles_core::Unit;
/// assert_eq!(serde_json::to_string(&Unit::RiskPoints).unwrap(), "\"RISK_POINTS\"");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Unit {
    /// 1 USD = 10^8 microcents.
    UsdMicrocents,
    /// Model tokens.
    Tokens,
    /// Abstract credits.
    Credits,
    /// Authority spent by tool calls according to their tier.
    RiskPoints,
}

impl Unit {
    /// The protocol string of this unit.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::UsdMicrocents => "USD_MICROCENTS",
            Unit::Tokens => "TOKENS",
            Unit::Credits => "CREDITS",
            Unit::RiskPoints => "RISK_POINTS",
        }
    }

    /// Parses a protocol string.
    pub fn parse(s: &str) -> Result<Unit> {
        match s {
            "USD_MICROCENTS" => Ok(Unit::UsdMicrocents),
            "TOKENS" => Ok(Unit::Tokens),
            "CREDITS" => Ok(Unit::Credits),
            "RISK_POINTS" => Ok(Unit::RiskPoints),
            other => Err(CyclesError::invalid(
                "unit",
                format!("unknown unit {other:?}"),
            )),
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A quantity in a unit. Amounts are non-negative; arithmetic on them is checked.
///
/// ```
/// use cycles_core::{Amount, Unit};
/// let a = Amount::new(Unit::Tokens, 1_000);
/// assert!(a.validate("estimate").is_ok());
/// assert!(Amount::new(Unit::Tokens, -1).validate("estimate").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Amount {
    // Fields in alphabetical order: serialization is then canonical JSON (audit hashes).
    /// The quantity, never negative.
    pub amount: i64,
    /// The unit.
    pub unit: Unit,
}

impl Amount {
    /// A new amount (not yet validated).
    pub fn new(unit: Unit, amount: i64) -> Self {
        Amount { unit, amount }
    }

    /// Checks the amount is non-negative.
    pub fn validate(&self, field: &str) -> Result<()> {
        if self.amount < 0 {
            return Err(CyclesError::invalid(
                format!("{field}.amount"),
                "amounts must be non-negative",
            ));
        }
        Ok(())
    }
}

/// Validates a list of amounts: each non-negative, each unit at most once.
pub(crate) fn validate_amounts(list: &[Amount], field: &str) -> Result<()> {
    for (i, a) in list.iter().enumerate() {
        a.validate(&format!("{field}[{i}]"))?;
        if list[..i].iter().any(|b| b.unit == a.unit) {
            return Err(CyclesError::invalid(
                format!("{field}[{i}].unit"),
                format!("unit {} appears more than once", a.unit),
            ));
        }
    }
    Ok(())
}

/// Checked addition that names what overflowed.
pub(crate) fn add(a: i64, b: i64, what: &str) -> Result<i64> {
    a.checked_add(b)
        .ok_or_else(|| CyclesError::AmountOverflow(what.to_string()))
}

/// Checked subtraction that names what overflowed.
pub(crate) fn sub(a: i64, b: i64, what: &str) -> Result<i64> {
    a.checked_sub(b)
        .ok_or_else(|| CyclesError::AmountOverflow(what.to_string()))
}

/// Who is acting: the hierarchy `tenant > workspace > app > workflow > agent > toolset`.
///
/// Scopes derive from the fields present, in that order; every scope with a budget in a unit
/// must pass.
///
/// ```
/// use cycles_core::Subject;
/// let s = Subject::new().tenant("acme").agent("bot");
/// assert_eq!(s.scopes().unwrap(), vec!["tenant:acme", "tenant:acme/agent:bot"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    // Fields in alphabetical order: serialization is then canonical JSON (audit hashes).
    /// Agent id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// App id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Free-form dimensions, recorded but not budgeted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimensions: BTreeMap<String, String>,
    /// Tenant id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Toolset id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolset: Option<String>,
    /// Workflow id (a session, a run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Workspace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

/// The subject levels in scope order.
pub const SUBJECT_LEVELS: [&str; 6] =
    ["tenant", "workspace", "app", "workflow", "agent", "toolset"];

impl Subject {
    /// An empty subject; set at least one level.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the tenant.
    pub fn tenant(mut self, v: impl Into<String>) -> Self {
        self.tenant = Some(v.into());
        self
    }
    /// Sets the workspace.
    pub fn workspace(mut self, v: impl Into<String>) -> Self {
        self.workspace = Some(v.into());
        self
    }
    /// Sets the app.
    pub fn app(mut self, v: impl Into<String>) -> Self {
        self.app = Some(v.into());
        self
    }
    /// Sets the workflow.
    pub fn workflow(mut self, v: impl Into<String>) -> Self {
        self.workflow = Some(v.into());
        self
    }
    /// Sets the agent.
    pub fn agent(mut self, v: impl Into<String>) -> Self {
        self.agent = Some(v.into());
        self
    }
    /// Sets the toolset.
    pub fn toolset(mut self, v: impl Into<String>) -> Self {
        self.toolset = Some(v.into());
        self
    }

    fn levels(&self) -> [(&'static str, Option<&String>); 6] {
        [
            ("tenant", self.tenant.as_ref()),
            ("workspace", self.workspace.as_ref()),
            ("app", self.app.as_ref()),
            ("workflow", self.workflow.as_ref()),
            ("agent", self.agent.as_ref()),
            ("toolset", self.toolset.as_ref()),
        ]
    }

    /// Checks every field: pattern `^[a-zA-Z0-9_.-]+$`, at most 128 chars, at least one level,
    /// at most 16 dimensions.
    pub fn validate(&self) -> Result<()> {
        let mut any = false;
        for (name, value) in self.levels() {
            if let Some(v) = value {
                // The field name is only formatted on failure: this runs on every call.
                validate_id(v, "").map_err(|e| match e {
                    CyclesError::InvalidRequest { message, .. } => {
                        CyclesError::invalid(format!("subject.{name}"), message)
                    }
                    other => other,
                })?;
                any = true;
            }
        }
        if !any {
            return Err(CyclesError::invalid(
                "subject",
                "at least one of tenant, workspace, app, workflow, agent, toolset is required",
            ));
        }
        if self.dimensions.len() > MAX_DIMENSIONS {
            return Err(CyclesError::invalid(
                "subject.dimensions",
                format!("at most {MAX_DIMENSIONS} dimensions"),
            ));
        }
        for (k, v) in &self.dimensions {
            validate_id(k, "subject.dimensions key")?;
            if v.chars().count() > 256 {
                return Err(CyclesError::invalid(
                    format!("subject.dimensions.{k}"),
                    "dimension values are at most 256 chars",
                ));
            }
        }
        Ok(())
    }

    /// The scopes of this subject, outermost first (validated first).
    pub fn scopes(&self) -> Result<Vec<String>> {
        self.validate()?;
        Ok(self.scopes_of_valid())
    }

    /// The scopes of a subject already validated.
    pub(crate) fn scopes_of_valid(&self) -> Vec<String> {
        let levels = self.levels();
        let mut out = Vec::with_capacity(levels.iter().filter(|(_, v)| v.is_some()).count());
        // Sized once: the deepest path, so building the prefixes never reallocates.
        let full: usize = levels
            .iter()
            .filter_map(|(n, v)| v.map(|v| n.len() + v.len() + 2))
            .sum();
        let mut path = String::with_capacity(full);
        for (name, value) in levels {
            if let Some(v) = value {
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(name);
                path.push(':');
                path.push_str(v);
                out.push(path.clone());
            }
        }
        out
    }
}

/// Checks an id: non-empty, at most 128 chars, `^[a-zA-Z0-9_.-]+$`.
pub(crate) fn validate_id(v: &str, field: &str) -> Result<()> {
    if v.is_empty() {
        return Err(CyclesError::invalid(field, "must not be empty"));
    }
    if v.len() > MAX_ID_LEN {
        return Err(CyclesError::invalid(
            field,
            format!("at most {MAX_ID_LEN} characters"),
        ));
    }
    if !v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(CyclesError::invalid(
            field,
            "only letters, digits, '_', '.' and '-' are allowed",
        ));
    }
    Ok(())
}

/// Checks a scope path such as `tenant:acme/agent:bot`: levels in hierarchy order.
pub fn validate_scope(scope: &str) -> Result<()> {
    let mut last = None;
    if scope.is_empty() {
        return Err(CyclesError::invalid("scope", "must not be empty"));
    }
    for part in scope.split('/') {
        let (level, id) = part
            .split_once(':')
            .ok_or_else(|| CyclesError::invalid("scope", format!("{part:?} is not level:id")))?;
        let idx = SUBJECT_LEVELS
            .iter()
            .position(|l| *l == level)
            .ok_or_else(|| CyclesError::invalid("scope", format!("unknown level {level:?}")))?;
        if last.is_some_and(|l| idx <= l) {
            return Err(CyclesError::invalid(
                "scope",
                "levels must follow tenant > workspace > app > workflow > agent > toolset",
            ));
        }
        last = Some(idx);
        validate_id(id, "scope")?;
    }
    Ok(())
}

/// What is being done: `kind` (`<category>.<operation>`), `name` (the tool), `tags`.
///
/// It serializes through `ActionView` (crate-private; canonical JSON, as in audit records).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// `<category>.<operation>`, e.g. `db.admin`; taken from the tool's registration when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The tool's name, e.g. `railway.delete_volume`.
    pub name: String,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// An action borrowed, as audit records name it: the one definition of its JSON.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct ActionView<'a> {
    // Fields in alphabetical order: serialization is then canonical JSON (audit hashes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'a str>,
    pub name: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub tags: &'a [String],
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.view().serialize(s)
    }
}

impl Action {
    /// The action borrowed (what it serializes as).
    pub(crate) fn view(&self) -> ActionView<'_> {
        ActionView {
            kind: self.kind.as_deref(),
            name: &self.name,
            tags: &self.tags,
        }
    }

    /// Checks name (1..=256 chars of `[A-Za-z0-9_.:/-]`), kind and tags.
    pub fn validate(&self) -> Result<()> {
        let n = &self.name;
        if n.is_empty() || n.len() > 256 {
            return Err(CyclesError::invalid(
                "tool",
                "tool names are 1 to 256 characters",
            ));
        }
        if !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':' | b'/'))
        {
            return Err(CyclesError::invalid(
                "tool",
                "tool names use letters, digits and '_', '.', '-', ':', '/'",
            ));
        }
        if let Some(k) = &self.kind {
            let ok = k.split_once('.').is_some_and(|(c, o)| {
                !c.is_empty()
                    && !o.is_empty()
                    && k.len() <= 128
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            });
            if !ok {
                return Err(CyclesError::invalid(
                    "kind",
                    "kind must be <category>.<operation>",
                ));
            }
        }
        if self.tags.len() > 32 || self.tags.iter().any(|t| t.is_empty() || t.len() > 64) {
            return Err(CyclesError::invalid(
                "tags",
                "at most 32 tags of 1 to 64 chars",
            ));
        }
        Ok(())
    }
}

/// A proposed tool call: the action and its JSON arguments.
///
/// ```
/// use cycles_core::ToolCall;
/// let call = ToolCall::new("run_sql", serde_json::json!({"query": "SELECT 1"}));
/// assert_eq!(call.action.name, "run_sql");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    /// The action (tool name, kind, tags).
    #[serde(flatten)]
    pub action: Action,
    /// The call's arguments.
    #[serde(default)]
    pub args: serde_json::Value,
}

impl ToolCall {
    /// A call of `tool` with `args`.
    pub fn new(tool: impl Into<String>, args: serde_json::Value) -> Self {
        ToolCall {
            action: Action {
                name: tool.into(),
                kind: None,
                tags: Vec::new(),
            },
            args,
        }
    }

    /// SHA-256 (hex) of the canonical JSON of this call (`{"args","kind","name","tags"}`,
    /// keys sorted): binds approvals and audit records to the exact call.
    pub fn digest(&self) -> String {
        #[derive(Serialize)]
        struct Canonical<'a> {
            args: &'a serde_json::Value,
            #[serde(skip_serializing_if = "Option::is_none")]
            kind: &'a Option<String>,
            name: &'a str,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            tags: &'a [String],
        }
        let view = Canonical {
            args: &self.args,
            kind: &self.action.kind,
            name: &self.action.name,
            tags: &self.action.tags,
        };
        // `Value` objects keep sorted keys (BTreeMap), so this is canonical JSON.
        crate::audit::sha256_json_hex(&view)
    }
}

/// Blast radius of a call, 0 (none) to 4 (irreversible).
///
/// ```
/// use cycles_core::Tier;
/// assert!(Tier::new(4).is_ok());
/// assert!(Tier::new(5).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Tier(u8);

impl Tier {
    /// No blast radius (reads).
    pub const T0: Tier = Tier(0);
    /// Local, reversible write.
    pub const T1: Tier = Tier(1);
    /// External side effect, reversible.
    pub const T2: Tier = Tier(2);
    /// Destructive but recoverable.
    pub const T3: Tier = Tier(3);
    /// Irreversible or unbounded.
    pub const T4: Tier = Tier(4);

    /// A tier from 0 to 4.
    pub fn new(v: u8) -> Result<Tier> {
        if v <= 4 {
            Ok(Tier(v))
        } else {
            Err(CyclesError::invalid("tier", "tiers are 0 to 4"))
        }
    }
    /// The numeric tier.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Tier {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = u8::deserialize(d)?;
        Tier::new(v).map_err(serde::de::Error::custom)
    }
}

/// The answer of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DecisionKind {
    /// Go ahead.
    Allow,
    /// Go ahead within the caps returned.
    AllowWithCaps,
    /// Do not run the call.
    Deny,
}

impl DecisionKind {
    /// The protocol string.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Allow => "ALLOW",
            DecisionKind::AllowWithCaps => "ALLOW_WITH_CAPS",
            DecisionKind::Deny => "DENY",
        }
    }
}

/// Why a call was denied. Protocol codes first, then ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReasonCode {
    /// A budgeted scope has not enough remaining.
    BudgetExceeded,
    /// No scope of the subject has a budget in a unit the call needs (fail closed).
    BudgetNotFound,
    /// A budget is frozen.
    BudgetFrozen,
    /// A budget is closed.
    BudgetClosed,
    /// A scope's debt is past its overdraft limit.
    OverdraftLimitExceeded,
    /// A scope has debt; new reservations wait until it is repaid.
    DebtOutstanding,
    /// The call's tier is above what the scope may do.
    TierNotPermitted,
    /// The call needs an out-of-band approval.
    ApprovalRequired,
    /// The approval grant presented is not valid for this call.
    ApprovalInvalid,
    /// The tool is not registered and the policy denies unknown tools.
    ToolUnknown,
    /// A policy rule (e.g. a denylist cap) forbids the call.
    PolicyViolation,
    /// The scope is cooling down; retry after `retry_after_ms`.
    Cooldown,
    /// The ledger could not be reached: fail closed.
    LedgerUnavailable,
}

impl ReasonCode {
    /// The protocol string.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::BudgetExceeded => "BUDGET_EXCEEDED",
            ReasonCode::BudgetNotFound => "BUDGET_NOT_FOUND",
            ReasonCode::BudgetFrozen => "BUDGET_FROZEN",
            ReasonCode::BudgetClosed => "BUDGET_CLOSED",
            ReasonCode::OverdraftLimitExceeded => "OVERDRAFT_LIMIT_EXCEEDED",
            ReasonCode::DebtOutstanding => "DEBT_OUTSTANDING",
            ReasonCode::TierNotPermitted => "TIER_NOT_PERMITTED",
            ReasonCode::ApprovalRequired => "APPROVAL_REQUIRED",
            ReasonCode::ApprovalInvalid => "APPROVAL_INVALID",
            ReasonCode::ToolUnknown => "TOOL_UNKNOWN",
            ReasonCode::PolicyViolation => "POLICY_VIOLATION",
            ReasonCode::Cooldown => "COOLDOWN",
            ReasonCode::LedgerUnavailable => "LEDGER_UNAVAILABLE",
        }
    }
}

/// Limits returned with `ALLOW_WITH_CAPS`. Unlike the protocol's advisory caps, the
/// denylist and the cooldown are enforced on later calls of the same scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caps {
    /// Most tokens the caller should spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    /// Steps the agent has left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps_remaining: Option<i64>,
    /// Only these tools may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_allowlist: Option<Vec<String>>,
    /// These tools may not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_denylist: Option<Vec<String>>,
    /// Minimum pause between calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_ms: Option<i64>,
}

/// The state of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BudgetStatus {
    /// Spending allowed.
    #[default]
    Active,
    /// No new spending; open reservations may still commit or release.
    Frozen,
    /// Closed for good.
    Closed,
}

impl BudgetStatus {
    /// The protocol string.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetStatus::Active => "ACTIVE",
            BudgetStatus::Frozen => "FROZEN",
            BudgetStatus::Closed => "CLOSED",
        }
    }
    /// Parses the protocol string.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "ACTIVE" => Ok(BudgetStatus::Active),
            "FROZEN" => Ok(BudgetStatus::Frozen),
            "CLOSED" => Ok(BudgetStatus::Closed),
            other => Err(CyclesError::invalid(
                "status",
                format!("unknown status {other:?}"),
            )),
        }
    }
}

/// What a commit does when the actual amount exceeds the reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommitOveragePolicy {
    /// Fail the commit with `BUDGET_EXCEEDED` if the overage does not fit the remaining budget.
    Reject,
    /// Charge what is available, flag the scope over-limit, never create debt.
    #[default]
    AllowIfAvailable,
    /// Charge in full; what does not fit becomes debt, up to the overdraft limit.
    AllowWithOverdraft,
}

/// What `settle` does with the hold of a call that reported a failure
/// ([`CallOutcome::Failed`](crate::CallOutcome::Failed)): the policy's `[defaults] on_failure`.
///
/// A failed call may have acted before it failed (a timeout after the request was sent, a
/// script that deleted half its files): `CHARGE` counts it against the budgets as if it had
/// completed without reporting a cost (what was held); `RELEASE` (the default, as the
/// protocol's clients release on error) gives the hold back.
///
/// ```
/// use cycles_core::FailurePolicy;
/// assert_eq!(serde_json::to_string(&FailurePolicy::Charge).unwrap(), "\"CHARGE\"");
/// assert_eq!(FailurePolicy::default(), FailurePolicy::Release);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailurePolicy {
    /// Give the hold back.
    #[default]
    Release,
    /// Charge what was held (raised by the call that ran, when given).
    Charge,
}

impl FailurePolicy {
    /// Whether this is the default, [`FailurePolicy::Release`].
    pub fn is_default(&self) -> bool {
        *self == FailurePolicy::Release
    }
}

/// A budget: one scope, one unit. `remaining = allocated - spent - reserved - debt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// The scope path, e.g. `tenant:acme/agent:bot`.
    pub scope: String,
    /// The unit.
    pub unit: Unit,
    /// What may be spent.
    pub allocated: i64,
    /// What has been charged (never more than allocated).
    pub spent: i64,
    /// What is held by active reservations.
    pub reserved: i64,
    /// Charges beyond the allocation (overdraft).
    pub debt: i64,
    /// Most debt allowed.
    pub overdraft_limit: i64,
    /// ACTIVE, FROZEN or CLOSED.
    pub status: BudgetStatus,
    /// Set when a commit was capped (`ALLOW_IF_AVAILABLE`) or debt exceeds the limit.
    pub is_over_limit: bool,
}

impl Budget {
    /// A fresh ACTIVE budget.
    pub fn new(scope: impl Into<String>, unit: Unit, allocated: i64) -> Self {
        Budget {
            scope: scope.into(),
            unit,
            allocated,
            spent: 0,
            reserved: 0,
            debt: 0,
            overdraft_limit: 0,
            status: BudgetStatus::Active,
            is_over_limit: false,
        }
    }

    /// `allocated - spent - reserved - debt` (negative only with debt).
    pub fn remaining(&self) -> i64 {
        self.allocated
            .saturating_sub(self.spent)
            .saturating_sub(self.reserved)
            .saturating_sub(self.debt)
    }

    /// The public view of this budget.
    pub fn balance(&self) -> Balance {
        Balance {
            scope: self.scope.clone(),
            unit: self.unit,
            allocated: self.allocated,
            spent: self.spent,
            reserved: self.reserved,
            debt: self.debt,
            remaining: self.remaining(),
            overdraft_limit: self.overdraft_limit,
            is_over_limit: self.is_over_limit,
            status: self.status,
        }
    }
}

/// A budget's balance as reported to callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// The scope path.
    pub scope: String,
    /// The unit.
    pub unit: Unit,
    /// What may be spent.
    pub allocated: i64,
    /// What has been charged.
    pub spent: i64,
    /// What is held.
    pub reserved: i64,
    /// Overdraft debt.
    pub debt: i64,
    /// `allocated - spent - reserved - debt`.
    pub remaining: i64,
    /// Most debt allowed.
    pub overdraft_limit: i64,
    /// Over its limit (capped commit or debt past the limit).
    pub is_over_limit: bool,
    /// ACTIVE, FROZEN or CLOSED.
    pub status: BudgetStatus,
}

/// The gate's answer for one call.
///
/// ```
/// use cycles_core::{Decision, DecisionKind, Tier};
/// let d = Decision::allow(Tier::T0, 0);
/// assert_eq!(d.decision, DecisionKind::Allow);
/// assert!(d.is_allowed());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// `ALLOW`, `ALLOW_WITH_CAPS` or `DENY`.
    pub decision: DecisionKind,
    /// Why, on DENY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<ReasonCode>,
    /// The call's tier.
    pub tier: Tier,
    /// RISK_POINTS the call costs.
    pub risk_points: i64,
    /// Ids of the rules that determined the tier and the decision.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Caps, only on `ALLOW_WITH_CAPS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Caps>,
    /// The scope that caused a denial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Balances of the budgeted scopes at decision time.
    #[serde(default)]
    pub balances: Vec<Balance>,
    /// When a retry may succeed (cooldowns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<i64>,
    /// The approval request to present to an approver (`APPROVAL_REQUIRED`), the request a
    /// rejected grant named (`APPROVAL_INVALID`), or the request whose grant allowed the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_request_id: Option<String>,
    /// Why a presented grant was rejected (`APPROVAL_INVALID` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_invalid_reason: Option<crate::approval::ApprovalInvalidReason>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Decision {
    /// An ALLOW for a call of this tier and cost.
    pub fn allow(tier: Tier, risk_points: i64) -> Self {
        Decision {
            decision: DecisionKind::Allow,
            reason_code: None,
            tier,
            risk_points,
            rules: Vec::new(),
            caps: None,
            scope: None,
            balances: Vec::new(),
            retry_after_ms: None,
            approval_request_id: None,
            approval_invalid_reason: None,
            message: None,
        }
    }

    /// A DENY with its reason.
    pub fn deny(reason: ReasonCode, tier: Tier, risk_points: i64) -> Self {
        Decision {
            decision: DecisionKind::Deny,
            reason_code: Some(reason),
            ..Decision::allow(tier, risk_points)
        }
    }

    /// ALLOW or ALLOW_WITH_CAPS.
    pub fn is_allowed(&self) -> bool {
        self.decision != DecisionKind::Deny
    }
}

/// The life of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationStatus {
    /// Holding its amounts.
    Active,
    /// Charged and finished.
    Committed,
    /// Returned without charge.
    Released,
    /// Timed out; its hold was returned.
    Expired,
}

impl ReservationStatus {
    /// The protocol string.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Active => "ACTIVE",
            ReservationStatus::Committed => "COMMITTED",
            ReservationStatus::Released => "RELEASED",
            ReservationStatus::Expired => "EXPIRED",
        }
    }
}

/// What a reservation holds of one unit, and on which budgeted scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The unit.
    pub unit: Unit,
    /// The amount held on each scope.
    pub amount: i64,
    /// The budgeted scopes holding it.
    pub scopes: Vec<String>,
}

/// A reservation: authority held for one call until it is committed, released or expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Its id (`rsv_...`).
    pub reservation_id: String,
    /// ACTIVE, COMMITTED, RELEASED or EXPIRED.
    pub status: ReservationStatus,
    /// Who reserved.
    pub subject: Subject,
    /// For what.
    pub action: Action,
    /// SHA-256 of the canonical call.
    pub call_digest: String,
    /// The call's tier.
    pub tier: Tier,
    /// The amounts held, per unit.
    pub holds: Vec<Hold>,
    /// The decision that allowed it (ALLOW or ALLOW_WITH_CAPS, with caps).
    pub decision: Decision,
    /// Ledger time of creation.
    pub created_at_ms: i64,
    /// Ledger time it expires.
    pub expires_at_ms: i64,
    /// Commit still accepted this long after expiry.
    pub grace_ms: i64,
    /// Times extended.
    pub extensions: u32,
    /// What a commit does with overage.
    pub overage_policy: CommitOveragePolicy,
    /// What was charged, once committed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charged: Vec<Amount>,
    /// When it was finalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized_at_ms: Option<i64>,
}

impl Reservation {
    /// The amounts held, one per unit.
    pub fn reserved(&self) -> Vec<Amount> {
        self.holds
            .iter()
            .map(|h| Amount::new(h.unit, h.amount))
            .collect()
    }
}
