//! The policy: tool registrations and tiers, tier points, budgets, tier limits and defaults.
//!
//! A [`Policy`] is plain data (it deserializes from the policy file); [`Policy::compile`]
//! validates it and builds the [`CompiledPolicy`] the authority consults on every call.

use serde::{Deserialize, Serialize};

use crate::classify::{Classification, ToolIndex};
use crate::error::{CyclesError, Result};
use crate::model::{CommitOveragePolicy, ReasonCode, Tier, ToolCall};
use crate::request::BudgetSpec;

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
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            ttl_ms: 60_000,
            grace_period_ms: 5_000,
            overage_policy: CommitOveragePolicy::AllowIfAvailable,
        }
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
        }
    }
}

impl Policy {
    /// Adds a tool registration.
    pub fn register(mut self, name: impl Into<String>, tier: Tier) -> Self {
        self.tools.push(ToolRule {
            name: name.into(),
            tier,
            kind: None,
        });
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

    /// Validates and builds the policy the authority runs on.
    pub fn compile(self) -> Result<CompiledPolicy> {
        let bad = |field: &str, msg: String| CyclesError::Policy(format!("{field}: {msg}"));
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
                .map_err(|e| bad(&format!("budgets[{i}]"), e.to_string()))?;
        }
        for (i, m) in self.max_tier.iter().enumerate() {
            crate::model::validate_scope(&m.scope)
                .map_err(|e| bad(&format!("max_tier[{i}].scope"), e.to_string()))?;
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
        Ok(CompiledPolicy {
            policy: self,
            index,
        })
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

/// A validated policy with its lookup structures.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    policy: Policy,
    index: ToolIndex,
}

impl CompiledPolicy {
    /// The policy as written.
    pub fn policy(&self) -> &Policy {
        &self.policy
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
        Assessment {
            classification,
            risk_points,
            deny,
        }
    }
}
