//! The policy: tool registrations and tiers, tier points, budgets, tier limits and defaults.
//!
//! A [`Policy`] is plain data (it deserializes from the policy file); [`Policy::compile`]
//! validates it and builds the [`CompiledPolicy`] the authority consults on every call.

use serde::{Deserialize, Serialize};

use crate::audit::CapsCounter;
use crate::classify::{Classification, ClassifierKind, SqlDialect, ToolIndex};
use crate::error::{CyclesError, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::ledger::LedgerTxn;
use crate::model::{
    Amount, Budget, Caps, CommitOveragePolicy, Decision, DecisionKind, FailurePolicy, ReasonCode,
    Tier, ToolCall, Unit,
};
use crate::request::{BudgetSpec, CallOutcome};

/// Default RISK_POINTS per tier 0..=4.
pub const DEFAULT_TIER_POINTS: [i64; 5] = [0, 1, 5, 20, 50];

/// What happens to a tool the policy does not register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum UnknownTool {
    /// Treat it as this tier (default 3).
    Tier {
        /// The tier given to unknown tools.
        tier: Tier,
    },
    /// Deny it with `TOOL_UNKNOWN`.
    Deny,
}

impl Default for UnknownTool {
    fn default() -> Self {
        UnknownTool::Tier { tier: Tier::T3 }
    }
}

/// A tool registration: an exact name or a glob (`github.*`), its tier and kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRule {
    /// Exact tool name or glob pattern.
    pub name: String,
    /// The registered tier (arguments may raise it, never lower it).
    pub tier: Tier,
    /// `<category>.<operation>` recorded for the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The argument classifier that may raise the tier (`sql`, `shell`, `http`, `graphql`,
    /// `names`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<ClassifierKind>,
    /// Dotted path of the argument the classifier reads (`query`, `input.sql`); each
    /// classifier has defaults (see [`ClassifierKind`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg: Option<String>,
    /// SQL dialect for `classifier = "sql"` (default `generic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialect: Option<SqlDialect>,
    /// Argument holding the HTTP method for `classifier = "http"` (default `method`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_arg: Option<String>,
    /// Argument holding the request body for `classifier = "http"` (default `body`, `json` or
    /// `data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_arg: Option<String>,
}

impl ToolRule {
    /// A registration of `name` (exact or glob) at `tier`, without kind or classifier.
    pub fn new(name: impl Into<String>, tier: Tier) -> Self {
        ToolRule {
            name: name.into(),
            tier,
            kind: None,
            classifier: None,
            arg: None,
            dialect: None,
            method_arg: None,
            body_arg: None,
        }
    }

    /// Sets the kind.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Sets the argument classifier.
    pub fn classifier(mut self, classifier: ClassifierKind) -> Self {
        self.classifier = Some(classifier);
        self
    }

    /// Sets the argument the classifier reads.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.arg = Some(arg.into());
        self
    }

    /// Sets the SQL dialect.
    pub fn dialect(mut self, dialect: SqlDialect) -> Self {
        self.dialect = Some(dialect);
        self
    }
}

/// Highest tier a scope (and every scope below it) may run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxTierRule {
    /// The scope path.
    pub scope: String,
    /// The highest tier permitted.
    pub max_tier: Tier,
}

/// Defaults for reservations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Reservation time to live.
    pub ttl_ms: i64,
    /// Grace after expiry for commits.
    pub grace_period_ms: i64,
    /// Overage policy of commits and events.
    pub overage_policy: CommitOveragePolicy,
    /// What [`Authority::settle`](crate::Authority::settle) does with a call that failed.
    /// Omitted from the JSON when it is the default, so that older policies round-trip
    /// unchanged.
    #[serde(skip_serializing_if = "FailurePolicy::is_default")]
    pub on_failure: FailurePolicy,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            ttl_ms: 60_000,
            grace_period_ms: 5_000,
            overage_policy: CommitOveragePolicy::AllowIfAvailable,
            on_failure: FailurePolicy::Release,
        }
    }
}

/// An ALLOW_WITH_CAPS rule: while a scope's remaining budget in `unit` would fall below
/// `remaining_below` after the call, calls of subjects in that scope are answered
/// `ALLOW_WITH_CAPS` with these caps, and the caps are enforced on every such call: a tool on
/// the denylist (or not on the allowlist) is DENY `POLICY_VIOLATION`, a call during the
/// cooldown is DENY `COOLDOWN` with `retry_after_ms`, and a call after `max_steps_remaining`
/// steps is DENY `POLICY_VIOLATION`.
///
/// ```toml
/// [[caps]]
/// id = "low-risk-budget"
/// scope = "tenant:acme"          # optional: without it, every budgeted scope of the subject
/// remaining_below = 100          # RISK_POINTS unless `unit` says otherwise
/// max_steps_remaining = 10
/// deny_min_tier = 3              # every tool of tier 3 or more is denied
/// tool_denylist = ["railway.*"]
/// cooldown_ms = 30000
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsRule {
    /// Rule id, reported in decisions as `caps:<id>@<scope>`.
    pub id: String,
    /// The scope whose budget is watched; caps then apply to subjects in it. Without a scope,
    /// every scope of the subject that has a budget in `unit` is watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The unit watched (default `RISK_POINTS`).
    #[serde(default = "risk_points")]
    pub unit: Unit,
    /// The caps apply while the remaining budget after the call would be below this.
    pub remaining_below: i64,
    /// Advisory: most tokens the caller should spend per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    /// How many calls (reservations) the scope may make while the caps apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps_remaining: Option<i64>,
    /// Only these tools (names or globs) may run while the caps apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_allowlist: Option<Vec<String>>,
    /// These tools (names or globs) may not run while the caps apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_denylist: Option<Vec<String>>,
    /// Every call of this tier or above is denied while the caps apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_min_tier: Option<Tier>,
    /// Minimum pause between two reservations of the scope while the caps apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_ms: Option<i64>,
}

fn risk_points() -> Unit {
    Unit::RiskPoints
}

/// Approval settings: calls at or above `threshold_tier` need an Ed25519-signed grant from an
/// approver whose public key is listed; a request nobody decides within `request_ttl_ms`
/// expires. Parsed and validated here; enforced by approvals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalPolicy {
    /// Calls of this tier or above need approval (default 4).
    pub threshold_tier: Tier,
    /// Approver Ed25519 public keys, 32 bytes as 64 hex characters.
    pub public_keys: Vec<String>,
    /// How long a new approval request stays open for a decision, in milliseconds of ledger
    /// time (default 1 hour; 1 s to 7 days).
    pub request_ttl_ms: i64,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        ApprovalPolicy {
            threshold_tier: Tier::T4,
            public_keys: Vec::new(),
            request_ttl_ms: crate::approval::DEFAULT_REQUEST_TTL_MS,
        }
    }
}

impl ApprovalPolicy {
    fn is_default(&self) -> bool {
        *self == ApprovalPolicy::default()
    }

    /// The approver public keys, decoded (validated when the policy compiles).
    pub fn keys(&self) -> Vec<[u8; 32]> {
        self.public_keys
            .iter()
            .filter_map(|k| hex::decode(k).ok()?.try_into().ok())
            .collect()
    }
}

/// The policy as written.
///
/// ```
/// use cycles_core::{Policy, Tier};
/// let policy = Policy::default().register("read_file", Tier::T0).register("railway.*", Tier::T3);
/// let compiled = policy.compile().unwrap();
/// let c = compiled.classify(&cycles_core::ToolCall::new("read_file", serde_json::json!({})));
/// assert_eq!(c.tier, Tier::T0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// RISK_POINTS per tier 0..=4.
    pub tier_points: [i64; 5],
    /// Tool registrations, first match wins for globs; exact names take precedence.
    pub tools: Vec<ToolRule>,
    /// Behaviour for unregistered tools.
    pub unknown_tool: UnknownTool,
    /// Budgets created when the authority starts, if the ledger does not have them yet.
    pub budgets: Vec<BudgetSpec>,
    /// Highest tier per scope.
    pub max_tier: Vec<MaxTierRule>,
    /// Reservation defaults.
    pub defaults: Defaults,
    /// ALLOW_WITH_CAPS rules: caps that apply while a scope's remaining budget is low.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<CapsRule>,
    /// Approval settings (threshold tier, approver keys, request lifetime), used by approvals.
    #[serde(skip_serializing_if = "ApprovalPolicy::is_default")]
    pub approval: ApprovalPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            tier_points: DEFAULT_TIER_POINTS,
            tools: Vec::new(),
            unknown_tool: UnknownTool::default(),
            budgets: Vec::new(),
            max_tier: Vec::new(),
            defaults: Defaults::default(),
            caps: Vec::new(),
            approval: ApprovalPolicy::default(),
        }
    }
}

impl Policy {
    /// Adds a tool registration.
    pub fn register(mut self, name: impl Into<String>, tier: Tier) -> Self {
        self.tools.push(ToolRule::new(name, tier));
        self
    }

    /// Adds a tool registration with kind or classifier.
    ///
    /// ```
    /// use cycles_core::{Policy, Tier, ToolCall};
    /// use cycles_core::classify::{ClassifierKind, SqlDialect};
    /// use cycles_core::policy::ToolRule;
    /// let policy = Policy::default().tool(
    ///     ToolRule::new("run_sql", Tier::T0).classifier(ClassifierKind::Sql).dialect(SqlDialect::Postgres),
    /// );
    /// let c = policy.compile().unwrap().classify(&ToolCall::new("run_sql", serde_json::json!({"query": "DROP TABLE users"})));
    /// assert_eq!(c.tier, Tier::T4);
    /// assert_eq!(c.rules, ["tool:run_sql", "sql.drop"]);
    /// ```
    pub fn tool(mut self, rule: ToolRule) -> Self {
        self.tools.push(rule);
        self
    }

    /// Adds a budget created at start.
    pub fn budget(mut self, spec: BudgetSpec) -> Self {
        self.budgets.push(spec);
        self
    }

    /// Sets the unknown-tool behaviour.
    pub fn unknown_tool(mut self, u: UnknownTool) -> Self {
        self.unknown_tool = u;
        self
    }

    /// Limits the tier of a scope.
    pub fn max_tier(mut self, scope: impl Into<String>, tier: Tier) -> Self {
        self.max_tier.push(MaxTierRule {
            scope: scope.into(),
            max_tier: tier,
        });
        self
    }

    /// Parses a policy file's text (TOML) and validates it.
    ///
    /// `origin` names the text in error messages (usually the file path). Every error is a
    /// [`CyclesError::Policy`] whose message names the origin, the line and column, and the
    /// field, e.g. `policy.toml: line 7, column 8: tools[1].tier: tiers are 0 to 4`.
    ///
    /// ```
    /// use cycles_core::{Policy, Tier};
    /// let p = Policy::from_toml_str("[[tools]]\nname = \"read_file\"\ntier = 0\n", "inline").unwrap();
    /// assert_eq!(p.tools[0].tier, Tier::T0);
    /// let err = Policy::from_toml_str("[[tools]]\nname = \"x\"\ntier = 5\n", "p.toml").unwrap_err();
    /// assert!(err.to_string().contains("p.toml: line 3"), "{err}");
    /// ```
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Policy> {
        toml_file::parse(text, origin)
    }

    /// Reads, parses and validates a policy file (TOML). Errors name the file, line and field.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Policy> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            CyclesError::Policy(format!(
                "{}: cannot read the policy file: {e}",
                path.display()
            ))
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Validates and builds the policy the authority runs on.
    pub fn compile(self) -> Result<CompiledPolicy> {
        self.compile_checked()
            .map_err(|issue| CyclesError::Policy(issue.to_string()))
    }

    /// Like [`Policy::compile`], keeping the field path of a failure apart from its message
    /// (the file loader turns the path into a line and column).
    pub(crate) fn compile_checked(self) -> std::result::Result<CompiledPolicy, Issue> {
        let bad = |field: &str, msg: String| Issue::new(field, msg);
        for (i, p) in self.tier_points.iter().enumerate() {
            if *p < 0 {
                return Err(bad(
                    &format!("tier_points[{i}]"),
                    "must be non-negative".into(),
                ));
            }
        }
        if self.tier_points.windows(2).any(|w| w[0] > w[1]) {
            return Err(bad("tier_points", "must not decrease with the tier".into()));
        }
        for (i, b) in self.budgets.iter().enumerate() {
            b.validate()
                .map_err(|e| Issue::from_error(&format!("budgets[{i}]"), e))?;
        }
        for (i, m) in self.max_tier.iter().enumerate() {
            crate::model::validate_scope(&m.scope)
                .map_err(|e| Issue::from_error(&format!("max_tier[{i}]"), e))?;
        }
        let d = &self.defaults;
        if !(crate::model::MIN_TTL_MS..=crate::model::MAX_TTL_MS).contains(&d.ttl_ms) {
            return Err(bad("defaults.ttl_ms", "between 1000 and 86400000".into()));
        }
        if !(0..=crate::model::MAX_GRACE_MS).contains(&d.grace_period_ms) {
            return Err(bad(
                "defaults.grace_period_ms",
                "between 0 and 60000".into(),
            ));
        }
        let index = ToolIndex::build(&self.tools)?;
        let mut caps = Vec::with_capacity(self.caps.len());
        for (i, rule) in self.caps.iter().enumerate() {
            if self.caps[..i].iter().any(|r| r.id == rule.id) {
                return Err(Issue::new(
                    format!("caps[{i}].id"),
                    format!("{:?} is used twice", rule.id),
                ));
            }
            caps.push(CompiledCaps::build(i, rule, &self.tools)?);
        }
        let a = &self.approval;
        let ttl = crate::approval::MIN_REQUEST_TTL_MS..=crate::approval::MAX_REQUEST_TTL_MS;
        if !ttl.contains(&a.request_ttl_ms) {
            return Err(bad(
                "approval.request_ttl_ms",
                "between 1000 (1 s) and 604800000 (7 days)".into(),
            ));
        }
        for (i, key) in a.public_keys.iter().enumerate() {
            let ok = key.len() == 64 && hex::decode(key).is_ok();
            if !ok {
                return Err(Issue::new(
                    format!("approval.public_keys[{i}]"),
                    "an Ed25519 public key is 32 bytes written as 64 hex characters",
                ));
            }
            // Not a point on the curve, or of small order (a key every signature verifies
            // under without strict checking): a typo or a trap, never an approver.
            let bytes: [u8; 32] = hex::decode(key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .expect("checked above");
            let usable =
                ed25519_dalek::VerifyingKey::from_bytes(&bytes).is_ok_and(|k| !k.is_weak());
            if !usable {
                return Err(Issue::new(
                    format!("approval.public_keys[{i}]"),
                    "not a usable Ed25519 public key (not a curve point, or of small order)",
                ));
            }
            if let Some((name, _)) = PUBLISHED_TEST_KEYS
                .iter()
                .find(|(_, public)| public.eq_ignore_ascii_case(key))
            {
                return Err(Issue::new(
                    format!("approval.public_keys[{i}]"),
                    format!(
                        "{name}'s public key: its secret key is published, so anyone (the \
                         agent included) could sign grants with it; make a key pair of your own \
                         with `cycles keygen`"
                    ),
                ));
            }
            if a.public_keys[..i]
                .iter()
                .any(|k| k.eq_ignore_ascii_case(key))
            {
                return Err(Issue::new(
                    format!("approval.public_keys[{i}]"),
                    "the same key is listed twice",
                ));
            }
        }
        let gapped = GappedScopes::of(&self);
        Ok(CompiledPolicy {
            policy: self,
            index,
            caps,
            gapped,
        })
    }
}

/// Ed25519 public keys whose secret keys are published (RFC 8032's test vectors, section
/// 7.1): documentation and tests use them, so an approver key copied from an example would let
/// anyone who knows the RFC sign grants. Refused as approver keys; the test below derives each
/// from its published secret.
const PUBLISHED_TEST_KEYS: [(&str, &str); 5] = [
    (
        "RFC 8032 TEST 1",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    ),
    (
        "RFC 8032 TEST 2",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
    ),
    (
        "RFC 8032 TEST 3",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
    ),
    (
        "RFC 8032 TEST 1024",
        "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
    ),
    (
        "RFC 8032 TEST SHA(abc)",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
    ),
];

/// A validation failure: the dotted field path (`tools[2].tier`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    /// Dotted path of the offending field, with array indices.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Issue {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Issue {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An issue from a validation error of the item at `prefix` (`budgets[2]`): an invalid
    /// field keeps its own name under the prefix (`budgets[2].scope`).
    pub(crate) fn from_error(prefix: &str, e: CyclesError) -> Self {
        match e {
            CyclesError::InvalidRequest { field, message } => {
                Issue::new(format!("{prefix}.{field}"), message)
            }
            other => Issue::new(prefix, other.to_string()),
        }
    }
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// What the policy says about one call before budgets are consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// Tier, kind and rules from classification.
    pub classification: Classification,
    /// RISK_POINTS for the tier.
    pub risk_points: i64,
    /// A policy denial (unknown tool, tier not permitted), before any budget.
    pub deny: Option<(ReasonCode, String)>,
}

/// How a policy rates one call before any budget is looked at ([`CompiledPolicy::explain`]):
/// for writing and testing a policy (`cycles policy explain`). Serializes to the JSON the CLI
/// prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The tool name.
    pub tool: String,
    /// The call's tier.
    pub tier: Tier,
    /// The action kind from the registration (or the call).
    pub kind: Option<String>,
    /// Ids of the rules that fired, in order.
    pub rules: Vec<String>,
    /// The tool is not registered.
    pub unknown: bool,
    /// RISK_POINTS the call reserves.
    pub risk_points: i64,
    /// The policy denies the call by itself (unknown tool, tier above the scope's maximum).
    pub deny: Option<PolicyDenial>,
    /// Not denied, and the tier needs an approver's grant.
    pub approval_required: bool,
}

/// A denial by the policy itself, before any budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyDenial {
    /// `TOOL_UNKNOWN` or `TIER_NOT_PERMITTED`.
    pub reason_code: ReasonCode,
    /// Why, for people.
    pub message: String,
}

/// A validated policy with its lookup structures.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    policy: Policy,
    index: ToolIndex,
    caps: Vec<CompiledCaps>,
    gapped: GappedScopes,
}

impl CompiledPolicy {
    /// The policy as written.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether a call that ended with `outcome` is charged: completed and interrupted calls
    /// are, a call that never started is not, and a failed one as `[defaults] on_failure`
    /// says. [`Authority::settle`](crate::Authority::settle) applies it; a client that charges
    /// a call it holds no reservation for (the Claude Code hook) asks it too.
    ///
    /// ```
    /// use cycles_core::{CallOutcome, FailurePolicy, Policy};
    /// let mut policy = Policy::default();
    /// assert!(!policy.clone().compile().unwrap().charges(CallOutcome::Failed));
    /// policy.defaults.on_failure = FailurePolicy::Charge;
    /// let policy = policy.compile().unwrap();
    /// assert!(policy.charges(CallOutcome::Failed));
    /// assert!(policy.charges(CallOutcome::Interrupted));
    /// assert!(!policy.charges(CallOutcome::NotStarted));
    /// ```
    pub fn charges(&self, outcome: CallOutcome) -> bool {
        match outcome {
            CallOutcome::Completed | CallOutcome::Interrupted => true,
            CallOutcome::NotStarted => false,
            CallOutcome::Failed => self.policy.defaults.on_failure == FailurePolicy::Charge,
        }
    }

    /// Whether a call of `tier` needs an approver's grant (`approval.threshold_tier`).
    ///
    /// ```
    /// use cycles_core::{Policy, Tier};
    /// let policy = Policy::default().compile().unwrap();
    /// assert!(policy.approval_needed(Tier::T4));
    /// assert!(!policy.approval_needed(Tier::T3));
    /// ```
    pub fn approval_needed(&self, tier: Tier) -> bool {
        tier >= self.policy.approval.threshold_tier
    }

    /// How this policy rates `call` for a subject at `scope` (for `[[max_tier]]` rules; none:
    /// no such rule applies): tier, rules, points, and whether the policy denies it or needs
    /// approval before any budget. Reads no ledger. Errors: an invalid tool name or scope.
    ///
    /// ```
    /// use cycles_core::{Policy, ToolCall};
    /// let policy = Policy::from_toml_str(
    ///     "[[tools]]\nname = \"run_sql\"\ntier = 0\nclassifier = \"sql\"\narg = \"query\"\n",
    ///     "policy.toml",
    /// ).unwrap().compile().unwrap();
    /// let call = ToolCall::new("run_sql", serde_json::json!({"query": "DROP DATABASE prod"}));
    /// let e = policy.explain(&call, None).unwrap();
    /// assert_eq!(e.tier.get(), 4);
    /// assert!(e.approval_required && e.deny.is_none());
    /// assert!(e.rules.iter().any(|r| r == "sql.drop"));
    /// ```
    pub fn explain(&self, call: &ToolCall, scope: Option<&str>) -> Result<Explanation> {
        call.action.validate()?;
        // The scopes of a subject whose own scope this is: its path prefixes, shallowest
        // first, as `decide` sees them (`[[max_tier]]` rules apply to a scope and every scope
        // below it; a scope gap is judged against the whole path).
        let scopes = match scope {
            Some(s) => {
                crate::model::validate_scope(s)?;
                s.match_indices('/')
                    .map(|(i, _)| s[..i].to_string())
                    .chain(std::iter::once(s.to_string()))
                    .collect()
            }
            None => Vec::new(),
        };
        let Assessment {
            classification: c,
            risk_points,
            deny,
        } = self.assess(call, &scopes);
        Ok(Explanation {
            tool: call.action.name.clone(),
            tier: c.tier,
            approval_required: deny.is_none() && self.approval_needed(c.tier),
            kind: c.kind,
            rules: c.rules,
            unknown: c.unknown,
            risk_points,
            deny: deny.map(|(reason_code, message)| PolicyDenial {
                reason_code,
                message,
            }),
        })
    }

    /// Tier, kind and rule ids of a call.
    pub fn classify(&self, call: &ToolCall) -> Classification {
        self.index.classify(call, &self.policy.unknown_tool)
    }

    /// Classification, points and policy-level denials for `call` by a subject with `scopes`.
    pub fn assess(&self, call: &ToolCall, scopes: &[String]) -> Assessment {
        let mut classification = self.classify(call);
        let risk_points = self.policy.tier_points[classification.tier.get() as usize];
        let mut deny = None;
        if classification.unknown && self.policy.unknown_tool == UnknownTool::Deny {
            deny = Some((
                ReasonCode::ToolUnknown,
                format!("tool {:?} is not registered", call.action.name),
            ));
        }
        if deny.is_none() {
            for rule in &self.policy.max_tier {
                let applies = scopes
                    .iter()
                    .any(|s| crate::ledger::scope_within(s, &rule.scope));
                if applies && classification.tier > rule.max_tier {
                    classification
                        .rules
                        .push(format!("max_tier:{}", rule.scope));
                    deny = Some((
                        ReasonCode::TierNotPermitted,
                        format!(
                            "tier {} is above the maximum {} of {}",
                            classification.tier.get(),
                            rule.max_tier.get(),
                            rule.scope
                        ),
                    ));
                    break;
                }
            }
        }
        if deny.is_none()
            && let Some(gap) = self.gapped.skipped_by(scopes)
        {
            classification
                .rules
                .push(format!("scope_gap:{}", gap.scope));
            deny = Some((ReasonCode::PolicyViolation, gap.message(scopes)));
        }
        Assessment {
            classification,
            risk_points,
            deny,
        }
    }
}

/// The policy's scopes (of budgets, `[[max_tier]]` and `[[caps]]`) that skip a subject level
/// (`tenant:acme/agent:coder` skips workspace, app and workflow), by their last `level:id`.
///
/// A scope applies to the subjects whose levels make exactly its path (DESIGN.md: a subject's
/// scopes are the prefixes of its levels in order), so a subject that also sets a skipped
/// level (`{tenant: acme, workflow: w1, agent: coder}`) is outside it: the budget, ceiling or
/// caps written for that agent would silently not apply to it. Such a call is denied
/// `POLICY_VIOLATION` instead (fail closed), naming the rule's scope and the subject's own,
/// unless the policy also names the subject's own scope at that level (its author covered
/// that path explicitly).
/// Scopes without a gap (`tenant:acme`, `tenant:acme/workspace:w`) are on the path of every
/// subject that has their levels, so only gapped ones are kept, and a policy without any costs
/// the hot path nothing.
#[derive(Debug, Clone, Default)]
struct GappedScopes {
    by_last: rustc_hash::FxHashMap<String, Vec<GappedScope>>,
    /// Every scope the policy names (gapped or not).
    named: rustc_hash::FxHashSet<String>,
}

#[derive(Debug, Clone)]
struct GappedScope {
    scope: String,
    /// What names it in the policy (`budgets[0]`, `max_tier[1]`, `caps[0] (low)`).
    rule: String,
}

impl GappedScope {
    fn message(&self, scopes: &[String]) -> String {
        let own = scopes.last().map_or("", String::as_str);
        format!(
            "the policy's {} names scope {} but this subject's scope is {own}: a scope applies \
             only to subjects whose levels are exactly its own, so that rule would not apply \
             to this call; write it for {own} (or a prefix of it), or leave the extra levels \
             out of the subject",
            self.rule, self.scope
        )
    }
}

impl GappedScopes {
    fn of(policy: &Policy) -> GappedScopes {
        let mut gapped = GappedScopes::default();
        let named = policy
            .budgets
            .iter()
            .enumerate()
            .map(|(i, b)| (b.scope.as_str(), format!("budgets[{i}]")))
            .chain(
                policy
                    .max_tier
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.scope.as_str(), format!("max_tier[{i}]"))),
            )
            .chain(policy.caps.iter().enumerate().filter_map(|(i, c)| {
                c.scope
                    .as_deref()
                    .map(|s| (s, format!("caps[{i}] ({})", c.id)))
            }));
        for (scope, rule) in named {
            gapped.named.insert(scope.to_string());
            let gapless = scope
                .split('/')
                .zip(crate::model::SUBJECT_LEVELS)
                .all(|(part, level)| part.split_once(':').is_some_and(|(l, _)| l == level));
            if gapless {
                continue;
            }
            let last = scope.rsplit('/').next().unwrap_or(scope).to_string();
            let entry = gapped.by_last.entry(last).or_default();
            if !entry.iter().any(|g| g.scope == scope) {
                entry.push(GappedScope {
                    scope: scope.to_string(),
                    rule,
                });
            }
        }
        gapped
    }

    /// The first gapped scope whose every `level:id` the subject has, without it being one of
    /// the subject's `scopes` (its path prefixes, shallowest first).
    fn skipped_by(&self, scopes: &[String]) -> Option<&GappedScope> {
        if self.by_last.is_empty() {
            return None;
        }
        let deepest = scopes.last()?;
        let has = |part: &str| deepest.split('/').any(|p| p == part);
        scopes.iter().find_map(|s| {
            let last = s.rfind('/').map_or(s.as_str(), |i| &s[i + 1..]);
            // The usual candidate is this very scope (a rule written for the subject's own
            // path): one comparison, before the subset test.
            let candidates = self.by_last.get(last)?;
            // The policy also names this very scope: its author wrote rules for the subject's
            // own path as well, so the gapped one is not this subject's.
            if self.named.contains(s.as_str()) {
                return None;
            }
            candidates.iter().find(|g| {
                g.scope != *s && g.scope.split('/').all(has) && !scopes.contains(&g.scope)
            })
        })
    }
}

/// Key-value namespace of caps state in the ledger.
pub(crate) const CAPS_NS: &str = "caps";

/// Per rule and scope state, stored in the ledger (`kv` namespace `caps`, key `<id>@<scope>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct CapsState {
    /// Reservations made while the caps applied.
    steps: i64,
    /// The budget's allocation when `steps` started counting: a new allocation restarts them.
    allocated: i64,
    /// No reservation before this ledger time.
    cooldown_until_ms: i64,
}

/// A validated caps rule with its glob sets.
#[derive(Debug, Clone)]
struct CompiledCaps {
    rule: CapsRule,
    deny: Option<GlobSet>,
    allow: Option<GlobSet>,
    /// The denylist as reported in `caps.tool_denylist`: the rule's list plus every registered
    /// tool at or above `deny_min_tier`.
    reported_denylist: Option<Vec<String>>,
}

/// The glob set of a caps list; `case_insensitive` for denylists, which also match the
/// canonical form of a name (so `Railway..Delete_Volume` is on a `railway.*` denylist).
fn glob_set(
    field: &str,
    names: &[String],
    case_insensitive: bool,
) -> std::result::Result<GlobSet, Issue> {
    let mut b = GlobSetBuilder::new();
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() {
            return Err(Issue::new(format!("{field}[{i}]"), "must not be empty"));
        }
        let glob = GlobBuilder::new(n)
            .case_insensitive(case_insensitive)
            .build()
            .map_err(|e| Issue::new(format!("{field}[{i}]"), e.to_string()))?;
        b.add(glob);
    }
    b.build().map_err(|e| Issue::new(field, e.to_string()))
}

impl CompiledCaps {
    fn build(i: usize, rule: &CapsRule, tools: &[ToolRule]) -> std::result::Result<Self, Issue> {
        let f = |name: &str| format!("caps[{i}].{name}");
        crate::model::validate_id(&rule.id, "id")
            .map_err(|e| Issue::from_error(&format!("caps[{i}]"), e))?;
        if let Some(scope) = &rule.scope {
            crate::model::validate_scope(scope)
                .map_err(|e| Issue::from_error(&format!("caps[{i}]"), e))?;
        }
        if rule.remaining_below < 0 {
            return Err(Issue::new(f("remaining_below"), "must be non-negative"));
        }
        for (name, v) in [
            ("max_tokens", rule.max_tokens),
            ("max_steps_remaining", rule.max_steps_remaining),
            ("cooldown_ms", rule.cooldown_ms),
        ] {
            if v.is_some_and(|v| v < 0) {
                return Err(Issue::new(f(name), "must be non-negative"));
            }
        }
        if rule
            .cooldown_ms
            .is_some_and(|c| c > crate::model::MAX_TTL_MS)
        {
            return Err(Issue::new(f("cooldown_ms"), "at most 86400000 (24 h)"));
        }
        let sets_nothing = rule.max_tokens.is_none()
            && rule.max_steps_remaining.is_none()
            && rule.tool_allowlist.is_none()
            && rule.tool_denylist.is_none()
            && rule.deny_min_tier.is_none()
            && rule.cooldown_ms.is_none();
        if sets_nothing {
            return Err(Issue::new(
                f("id"),
                "the rule sets no cap (max_tokens, max_steps_remaining, tool_allowlist, tool_denylist, deny_min_tier or cooldown_ms)",
            ));
        }
        let deny = match &rule.tool_denylist {
            Some(list) if !list.is_empty() => Some(glob_set(&f("tool_denylist"), list, true)?),
            _ => None,
        };
        let allow = match &rule.tool_allowlist {
            Some(list) => Some(glob_set(&f("tool_allowlist"), list, false)?),
            None => None,
        };
        let reported_denylist = if rule.tool_denylist.is_some() || rule.deny_min_tier.is_some() {
            let mut list = rule.tool_denylist.clone().unwrap_or_default();
            if let Some(min) = rule.deny_min_tier {
                for t in tools.iter().filter(|t| t.tier >= min) {
                    if !list.contains(&t.name) {
                        list.push(t.name.clone());
                    }
                }
            }
            Some(list)
        } else {
            None
        };
        Ok(CompiledCaps {
            rule: rule.clone(),
            deny,
            allow,
            reported_denylist,
        })
    }

    fn key(&self, scope: &str) -> String {
        format!("{}@{}", self.rule.id, scope)
    }
}

/// The state of a caps rule on one scope, read from the ledger.
fn caps_state(txn: &mut dyn LedgerTxn, key: &str) -> Result<CapsState> {
    match txn.kv_get(CAPS_NS, key)? {
        None => Ok(CapsState::default()),
        Some(v) => parse_caps_state(key, v),
    }
}

fn parse_caps_state(key: &str, value: serde_json::Value) -> Result<CapsState> {
    serde_json::from_value(value)
        .map_err(|e| CyclesError::LedgerCorrupt(format!("caps state {key}: {e}")))
}

/// A stored caps state (namespace [`CAPS_NS`]) as the counter an audit record carries.
pub(crate) fn caps_counter(key: &str, value: &serde_json::Value) -> Result<CapsCounter> {
    let state = parse_caps_state(key, value.clone())?;
    Ok(CapsCounter {
        allocated: state.allocated,
        cooldown_until_ms: state.cooldown_until_ms,
        key: key.to_string(),
        steps: state.steps,
    })
}

/// Merges `b` into `a`: the tighter limit wins, denylists add up, allowlists intersect.
fn merge_caps(a: &mut Caps, b: Caps) {
    fn min(a: Option<i64>, b: Option<i64>) -> Option<i64> {
        match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }
    a.max_tokens = min(a.max_tokens, b.max_tokens);
    a.max_steps_remaining = min(a.max_steps_remaining, b.max_steps_remaining);
    a.cooldown_ms = match (a.cooldown_ms, b.cooldown_ms) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    a.tool_denylist = match (a.tool_denylist.take(), b.tool_denylist) {
        (Some(mut x), Some(y)) => {
            for n in y {
                if !x.contains(&n) {
                    x.push(n);
                }
            }
            Some(x)
        }
        (x, y) => x.or(y),
    };
    a.tool_allowlist = match (a.tool_allowlist.take(), b.tool_allowlist) {
        (Some(x), Some(y)) => Some(x.into_iter().filter(|n| y.contains(n)).collect()),
        (x, y) => x.or(y),
    };
}

impl CompiledPolicy {
    /// Applies the ALLOW_WITH_CAPS rules to an allowed `decision` for a call of `tool` at
    /// `tier` holding `amounts` (with `budgets[i]` the budgets of `amounts[i]`'s unit on the
    /// subject's `scopes`). Turns the decision into `ALLOW_WITH_CAPS`, or into a DENY when the
    /// call breaks an active cap. Reads caps state from the ledger; writes nothing.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply_caps(
        &self,
        txn: &mut dyn LedgerTxn,
        decision: &mut Decision,
        scopes: &[String],
        tool: &str,
        tier: Tier,
        amounts: &[Amount],
        budgets: &[Vec<Budget>],
        now_ms: i64,
    ) -> Result<()> {
        if self.caps.is_empty() || decision.decision == DecisionKind::Deny {
            return Ok(());
        }
        let mut caps: Option<Caps> = None;
        let mut fired = Vec::new();
        for c in &self.caps {
            let r = &c.rule;
            for scope in scopes {
                if r.scope.as_ref().is_some_and(|s| s != scope) {
                    continue;
                }
                let held = amounts.iter().position(|a| a.unit == r.unit);
                let budget = match held.and_then(|i| budgets.get(i)) {
                    Some(list) => list.iter().find(|b| &b.scope == scope).cloned(),
                    None => txn.budget(scope, r.unit)?,
                };
                let Some(budget) = budget else { continue };
                let amount = held.map_or(0, |i| amounts[i].amount);
                if budget.remaining().saturating_sub(amount) >= r.remaining_below {
                    continue;
                }
                let id = format!("caps:{}", c.key(scope));
                let state = caps_state(txn, &c.key(scope))?;
                let steps = if state.allocated == budget.allocated {
                    state.steps
                } else {
                    0
                };
                let deny = |reason: ReasonCode, message: String| (reason, message);
                let violation = if c.allow.as_ref().is_some_and(|a| !a.is_match(tool)) {
                    Some(deny(
                        ReasonCode::PolicyViolation,
                        format!(
                            "{tool:?} is not on the tool allowlist of caps rule {:?} on {scope}",
                            r.id
                        ),
                    ))
                } else if c.deny.as_ref().is_some_and(|d| {
                    d.is_match(tool) || d.is_match(crate::classify::canonical_name(tool))
                }) {
                    Some(deny(
                        ReasonCode::PolicyViolation,
                        format!(
                            "{tool:?} is on the tool denylist of caps rule {:?} on {scope}",
                            r.id
                        ),
                    ))
                } else if r.deny_min_tier.is_some_and(|m| tier >= m) {
                    Some(deny(
                        ReasonCode::PolicyViolation,
                        format!(
                            "tier {} tools are denied by caps rule {:?} on {scope}",
                            tier.get(),
                            r.id
                        ),
                    ))
                } else if state.cooldown_until_ms > now_ms {
                    decision.retry_after_ms = Some(state.cooldown_until_ms - now_ms);
                    Some(deny(
                        ReasonCode::Cooldown,
                        format!("caps rule {:?} on {scope} is cooling down", r.id),
                    ))
                } else if r.max_steps_remaining.is_some_and(|m| steps >= m) {
                    Some(deny(
                        ReasonCode::PolicyViolation,
                        format!("caps rule {:?} on {scope} has no steps left", r.id),
                    ))
                } else {
                    None
                };
                fired.push(id);
                if let Some((reason, message)) = violation {
                    decision.decision = DecisionKind::Deny;
                    decision.reason_code = Some(reason);
                    decision.message = Some(message);
                    decision.scope = Some(scope.clone());
                    decision.caps = None;
                    decision.rules.extend(fired);
                    return Ok(());
                }
                let these = Caps {
                    max_tokens: r.max_tokens,
                    max_steps_remaining: r.max_steps_remaining.map(|m| (m - steps - 1).max(0)),
                    tool_allowlist: r.tool_allowlist.clone(),
                    tool_denylist: c.reported_denylist.clone(),
                    cooldown_ms: r.cooldown_ms,
                };
                match &mut caps {
                    Some(all) => merge_caps(all, these),
                    None => caps = Some(these),
                }
            }
        }
        if let Some(caps) = caps {
            decision.decision = DecisionKind::AllowWithCaps;
            decision.caps = Some(caps);
            decision.rules.extend(fired);
        }
        Ok(())
    }

    /// Records a reservation made under caps (in the reservation's transaction): counts the
    /// step and starts the cooldown of every caps rule in `decision.rules`.
    pub(crate) fn record_caps(
        &self,
        txn: &mut dyn LedgerTxn,
        decision: &Decision,
        now_ms: i64,
    ) -> Result<()> {
        if decision.decision != DecisionKind::AllowWithCaps {
            return Ok(());
        }
        for id in decision
            .rules
            .iter()
            .filter_map(|r| r.strip_prefix("caps:"))
        {
            let Some((rule_id, scope)) = id.split_once('@') else {
                continue;
            };
            let Some(c) = self.caps.iter().find(|c| c.rule.id == rule_id) else {
                continue;
            };
            let allocated = txn.budget(scope, c.rule.unit)?.map_or(0, |b| b.allocated);
            let mut state = caps_state(txn, id)?;
            if state.allocated != allocated {
                state.steps = 0;
                state.allocated = allocated;
            }
            state.steps = state.steps.saturating_add(1);
            if let Some(cd) = c.rule.cooldown_ms {
                state.cooldown_until_ms = now_ms.saturating_add(cd);
            }
            let value = serde_json::to_value(state).expect("caps state serializes");
            txn.kv_put(CAPS_NS, id, &value)?;
        }
        Ok(())
    }
}

/// Loading the policy file: TOML text to a validated [`Policy`], with errors located by line,
/// column and field.
mod toml_file {
    use std::ops::Range;

    use serde::Deserialize;
    use toml::Spanned;
    use toml::de::{DeTable, DeValue};

    use super::{Issue, Policy};
    use crate::error::{CyclesError, Result};

    /// 1-based line and column (in characters) of a byte offset.
    pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let mut offset = offset;
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    fn located(
        origin: &str,
        text: &str,
        span: Option<Range<usize>>,
        field: &str,
        msg: &str,
    ) -> CyclesError {
        let msg = msg.trim_end();
        match span {
            Some(span) => {
                let (line, col) = line_col(text, span.start);
                CyclesError::Policy(format!(
                    "{origin}: line {line}, column {col}: {field}: {msg}"
                ))
            }
            None => CyclesError::Policy(format!("{origin}: {field}: {msg}")),
        }
    }

    /// One step of a field path: a key or an array index.
    enum Step<'a> {
        Key(&'a str),
        Index(usize),
    }

    fn steps(path: &str) -> Vec<Step<'_>> {
        let mut out = Vec::new();
        for part in path.split('.') {
            let (key, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !key.is_empty() {
                out.push(Step::Key(key));
            }
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(end) = stripped.find(']') else { break };
                if let Ok(i) = stripped[..end].parse() {
                    out.push(Step::Index(i));
                }
                rest = &stripped[end + 1..];
            }
        }
        out
    }

    /// A table entry: its key and its value, both with spans.
    type Entry<'t, 'i> = (
        &'t Spanned<toml::de::DeString<'i>>,
        &'t Spanned<DeValue<'i>>,
    );

    fn get<'t, 'i>(table: &'t DeTable<'i>, key: &str) -> Option<Entry<'t, 'i>> {
        table.iter().find(|(k, _)| k.get_ref().as_ref() == key)
    }

    /// The span of the deepest existing node on `path` (a value's key when it has one, so a
    /// missing field points at its table).
    pub(super) fn span_of(root: &Spanned<DeTable<'_>>, path: &str) -> Option<Range<usize>> {
        let mut span = None;
        let mut value: Option<&Spanned<DeValue<'_>>> = None;
        let mut table = Some(root.get_ref());
        for step in steps(path) {
            let next = match (step, value.map(|v| v.get_ref())) {
                (Step::Key(k), None) => table
                    .and_then(|t| get(t, k))
                    .map(|(key, v)| (Some(key.span()), v)),
                (Step::Key(k), Some(DeValue::Table(t))) => {
                    get(t, k).map(|(key, v)| (Some(key.span()), v))
                }
                (Step::Index(i), Some(DeValue::Array(a))) => a.get(i).map(|v| (None, v)),
                _ => None,
            };
            let Some((key_span, v)) = next else { break };
            span = Some(key_span.unwrap_or_else(|| v.span()));
            value = Some(v);
            table = None;
        }
        span
    }

    /// The dotted path of the deepest node whose key or value contains `offset`.
    pub(super) fn path_at(root: &Spanned<DeTable<'_>>, offset: usize) -> Option<String> {
        fn walk_value(v: &Spanned<DeValue<'_>>, offset: usize, path: &mut String) -> bool {
            match v.get_ref() {
                DeValue::Table(t) => walk_table(t, offset, path),
                DeValue::Array(a) => {
                    for (i, item) in a.iter().enumerate() {
                        let len = path.len();
                        path.push_str(&format!("[{i}]"));
                        if walk_value(item, offset, path) || item.span().contains(&offset) {
                            return true;
                        }
                        path.truncate(len);
                    }
                    false
                }
                _ => false,
            }
        }
        fn walk_table(t: &DeTable<'_>, offset: usize, path: &mut String) -> bool {
            for (k, v) in t.iter() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k.get_ref().as_ref());
                if k.span().contains(&offset) {
                    return true;
                }
                if walk_value(v, offset, path) || v.span().contains(&offset) {
                    return true;
                }
                path.truncate(len);
            }
            false
        }
        let mut path = String::new();
        if walk_table(root.get_ref(), offset, &mut path) && !path.is_empty() {
            Some(path)
        } else {
            None
        }
    }

    /// The key written on the line of `offset`, if any (for syntax errors the parser could
    /// not attach to a node).
    fn key_on_line(text: &str, offset: usize) -> Option<String> {
        let offset = offset.min(text.len());
        let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
        let line = text[start..end].trim();
        if let Some(header) = line.strip_prefix('[') {
            return Some(
                header
                    .trim_matches(|c| c == '[' || c == ']')
                    .trim()
                    .to_string(),
            );
        }
        let key = line.split('=').next()?.trim();
        (!key.is_empty() && line.contains('=')).then(|| key.to_string())
    }

    pub(super) fn parse(text: &str, origin: &str) -> Result<Policy> {
        let root = match DeTable::parse(text) {
            Ok(root) => root,
            Err(e) => {
                let field = e
                    .span()
                    .and_then(|s| key_on_line(text, s.start))
                    .unwrap_or_else(|| "(document)".to_string());
                return Err(located(
                    origin,
                    text,
                    e.span(),
                    &field,
                    &format!("invalid TOML: {}", e.message()),
                ));
            }
        };
        let policy =
            Policy::deserialize(toml::de::Deserializer::from(root.clone())).map_err(|e| {
                let field = e
                    .span()
                    .and_then(|s| path_at(&root, s.start))
                    .unwrap_or_else(|| "(document)".to_string());
                located(origin, text, e.span(), &field, e.message())
            })?;
        match policy.clone().compile_checked() {
            Ok(_) => Ok(policy),
            Err(Issue { field, message }) => Err(located(
                origin,
                text,
                span_of(&root, &field),
                &field,
                &message,
            )),
        }
    }
}
