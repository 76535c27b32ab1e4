//! Tier classification: from the tool's registration, then from its arguments and name.
//!
//! Arguments and names can only raise a registered tier, never lower it.

use std::collections::HashMap;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::model::{Tier, ToolCall};
use crate::policy::{Issue, ToolRule, UnknownTool};

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

/// Registered tools: exact names in a hash map, globs in a set (first match wins).
#[derive(Debug, Clone)]
pub(crate) struct ToolIndex {
    exact: HashMap<String, usize>,
    globs: GlobSet,
    glob_rules: Vec<usize>,
    rules: Vec<ToolRule>,
    rule_ids: Vec<String>,
}

fn is_glob(name: &str) -> bool {
    name.contains(['*', '?', '[', '{'])
}

impl ToolIndex {
    pub(crate) fn build(rules: &[ToolRule]) -> std::result::Result<ToolIndex, Issue> {
        let mut exact = HashMap::new();
        let mut builder = GlobSetBuilder::new();
        let mut glob_rules = Vec::new();
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
        }
        let globs = builder
            .build()
            .map_err(|e| Issue::new("tools", e.to_string()))?;
        Ok(ToolIndex {
            exact,
            globs,
            glob_rules,
            rule_ids: rules.iter().map(|r| format!("tool:{}", r.name)).collect(),
            rules: rules.to_vec(),
        })
    }

    fn lookup(&self, name: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(name) {
            return Some(*i);
        }
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

    pub(crate) fn classify(&self, call: &ToolCall, unknown: &UnknownTool) -> Classification {
        match self.lookup(&call.action.name) {
            Some(i) => {
                let rule = &self.rules[i];
                Classification {
                    tier: rule.tier,
                    kind: rule.kind.clone().or_else(|| call.action.kind.clone()),
                    rules: vec![self.rule_ids[i].clone()],
                    unknown: false,
                }
            }
            None => Classification {
                tier: match unknown {
                    UnknownTool::Tier { tier } => *tier,
                    UnknownTool::Deny => Tier::T4,
                },
                kind: call.action.kind.clone(),
                rules: vec!["unknown_tool".to_string()],
                unknown: true,
            },
        }
    }
}
