//! Property test: random operation sequences run against the real [`Authority`] and against a
//! small reference model written here from DESIGN.md §4 (plain structs and integer arithmetic,
//! nothing shared with `machine.rs`). After every step the two must agree on the outcome
//! (success payload, error code, decision and reason), on every budget, on the status of every
//! reservation and on the audit records the step appended; the ledger's own invariants are
//! checked independently of the model.

use std::collections::{BTreeMap, HashMap};

use cycles_core::*;
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestCaseError, TestRunner};

// ------------------------------------------------------------------------------------------
// The reference model. Its types are its own; the library is only touched by the driver.
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum U {
    Rp,
    Usd,
    Tok,
    Cred,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Active,
    Frozen,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ov {
    Reject,
    IfAvail,
    Overdraft,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rs {
    Active,
    Committed,
    Released,
    Expired,
}

/// Scope 0 is the tenant, 1 and 2 are the two agents below it.
const SCOPES: [&str; 3] = ["tenant:t", "tenant:t/agent:a", "tenant:t/agent:b"];
/// Tool names and their registered tiers; the last one is not registered (unknown => tier 3).
const TOOLS: [&str; 6] = [
    "op_zero",
    "op_one",
    "op_two",
    "op_three",
    "op_four",
    "op_unregistered",
];
const TOOL_TIER: [usize; 6] = [0, 1, 2, 3, 4, 3];
const POINTS: [i64; 5] = [0, 1, 5, 20, 50];
/// Agent b may not run anything above tier 2.
const B_MAX_TIER: usize = 2;
const DEFAULT_TTL: i64 = 60_000;
const DEFAULT_GRACE: i64 = 5_000;
const MAX_EXT: u32 = 10;
/// Calls of this tier that pass every other check need an out-of-band approval.
const APPROVAL_TIER: usize = 4;
/// How long an approval request stays pending.
const APPROVAL_TTL: i64 = 3_600_000;

fn subject_scopes(agent_b: bool) -> [usize; 2] {
    [0, if agent_b { 2 } else { 1 }]
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct MBudget {
    allocated: i64,
    spent: i64,
    reserved: i64,
    debt: i64,
    overdraft: i64,
    status: St,
    over_limit: bool,
}

impl MBudget {
    fn left(&self) -> i64 {
        self.allocated - self.spent - self.reserved - self.debt
    }
}

#[derive(Clone, Debug)]
struct MRes {
    status: Rs,
    /// (unit, amount held on each scope, scopes holding it)
    holds: Vec<(U, i64, Vec<usize>)>,
    expires: i64,
    grace: i64,
    extensions: u32,
    policy: Ov,
}

/// What one step produced, in a form both sides can be reduced to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Obs {
    Decision {
        allowed: bool,
        reason: Option<String>,
        scope: Option<String>,
    },
    Reserved {
        rid: usize,
        holds: Vec<(U, i64, Vec<String>)>,
        expires_at: i64,
    },
    Committed {
        charged: Vec<(U, i64)>,
        released: Vec<(U, i64)>,
        debt: Vec<(U, i64)>,
    },
    Released {
        released: Vec<(U, i64)>,
    },
    Extended {
        expires_at: i64,
        extensions: u32,
    },
    Event {
        charged: Vec<(U, i64)>,
        debt: Vec<(U, i64)>,
    },
    Swept(usize),
    BudgetSet,
    Error(String),
}

fn err(code: &str) -> Obs {
    Obs::Error(code.to_string())
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ReservePayload {
    agent_b: bool,
    tool: usize,
    est: Vec<(U, i64)>,
    ttl: Option<i64>,
    grace: Option<i64>,
    policy: Option<Ov>,
}

/// A commit remembered under its idempotency key: the amounts it was asked for, its outcome.
type CommitMemo = (Vec<(U, i64)>, Obs);

struct Model {
    now: i64,
    budgets: BTreeMap<(usize, U), MBudget>,
    res: Vec<MRes>,
    reserve_keys: HashMap<u8, (ReservePayload, Obs)>,
    commit_keys: HashMap<(usize, u8), CommitMemo>,
    /// Audit records appended by the current step: kind and reservation index.
    step_audit: Vec<(&'static str, Option<usize>)>,
    total_audit: u64,
    /// Expiry of the pending approval request per agent (a, b) for the tier-4 tool.
    approvals: [Option<i64>; 2],
}

type Denial = (String, Option<String>);

impl Model {
    fn log(&mut self, kind: &'static str, rid: Option<usize>) {
        self.step_audit.push((kind, rid));
        self.total_audit += 1;
    }

    fn give_back(budgets: &mut BTreeMap<(usize, U), MBudget>, r: &MRes) {
        for (u, amount, scopes) in &r.holds {
            for s in scopes {
                budgets.get_mut(&(*s, *u)).unwrap().reserved -= amount;
            }
        }
    }

    fn expire(&mut self, i: usize) {
        let r = self.res[i].clone();
        Self::give_back(&mut self.budgets, &r);
        self.res[i].status = Rs::Expired;
        self.log("expire", Some(i));
    }

    fn overdue(&self, i: usize) -> bool {
        let r = &self.res[i];
        r.status == Rs::Active && r.expires + r.grace < self.now
    }

    fn sweep(&mut self) -> usize {
        let due: Vec<usize> = (0..self.res.len()).filter(|&i| self.overdue(i)).collect();
        for &i in &due {
            self.expire(i);
        }
        due.len()
    }

    /// The amounts a call holds: its tier's points (plus any extra risk estimate) first,
    /// then the other estimated units in the order given.
    fn amounts(tool: usize, est: &[(U, i64)]) -> Vec<(U, i64)> {
        let extra: i64 = est
            .iter()
            .filter(|(u, _)| *u == U::Rp)
            .map(|(_, a)| a)
            .sum();
        let mut out = vec![(U::Rp, POINTS[TOOL_TIER[tool]] + extra)];
        out.extend(est.iter().copied().filter(|(u, _)| *u != U::Rp));
        out
    }

    fn budgeted(&self, agent_b: bool, u: U) -> Vec<usize> {
        subject_scopes(agent_b)
            .into_iter()
            .filter(|s| self.budgets.contains_key(&(*s, u)))
            .collect()
    }

    fn budget_denial(&self, agent_b: bool, amounts: &[(U, i64)]) -> Option<Denial> {
        for (u, need) in amounts {
            let scopes = self.budgeted(agent_b, *u);
            if scopes.is_empty() {
                return Some(("BUDGET_NOT_FOUND".into(), None));
            }
            for s in scopes {
                let b = &self.budgets[&(s, *u)];
                let why = match b.status {
                    St::Closed => "BUDGET_CLOSED",
                    St::Frozen => "BUDGET_FROZEN",
                    St::Active if b.debt > b.overdraft => "OVERDRAFT_LIMIT_EXCEEDED",
                    St::Active if b.debt > 0 => "DEBT_OUTSTANDING",
                    St::Active if b.left() < *need => "BUDGET_EXCEEDED",
                    St::Active => continue,
                };
                return Some((why.into(), Some(SCOPES[s].to_string())));
            }
        }
        None
    }

    fn evaluate(
        &mut self,
        agent_b: bool,
        tool: usize,
        est: &[(U, i64)],
    ) -> (Option<Denial>, Vec<(U, i64)>) {
        let amounts = Self::amounts(tool, est);
        if agent_b && TOOL_TIER[tool] > B_MAX_TIER {
            return (Some(("TIER_NOT_PERMITTED".into(), None)), amounts);
        }
        let mut denial = self.budget_denial(agent_b, &amounts);
        // A shortfall first frees the holds of overdue reservations, then looks again.
        if denial.as_ref().is_some_and(|d| d.0 == "BUDGET_EXCEEDED") && self.sweep() > 0 {
            denial = self.budget_denial(agent_b, &amounts);
        }
        (denial, amounts)
    }

    /// An allowed call at the approval tier becomes DENY APPROVAL_REQUIRED; its request is
    /// recorded once and reused while pending (a new one after it expired).
    fn approval_gate(
        &mut self,
        agent_b: bool,
        tool: usize,
        denial: Option<Denial>,
    ) -> Option<Denial> {
        if denial.is_some() || TOOL_TIER[tool] < APPROVAL_TIER {
            return denial;
        }
        let slot = usize::from(agent_b);
        match self.approvals[slot] {
            Some(expires) if self.now <= expires => {}
            pending => {
                if pending.is_some() {
                    self.log("approval_expired", None);
                }
                self.approvals[slot] = Some(self.now + APPROVAL_TTL);
                self.log("approval_requested", None);
            }
        }
        Some(("APPROVAL_REQUIRED".into(), None))
    }

    fn decide(&mut self, agent_b: bool, tool: usize, est: &[(U, i64)]) -> Obs {
        let (denial, _) = self.evaluate(agent_b, tool, est);
        let denial = self.approval_gate(agent_b, tool, denial);
        self.log("decide", None);
        match denial {
            None => Obs::Decision {
                allowed: true,
                reason: None,
                scope: None,
            },
            Some((reason, scope)) => Obs::Decision {
                allowed: false,
                reason: Some(reason),
                scope,
            },
        }
    }

    fn reserve(&mut self, p: &ReservePayload, key: Option<u8>) -> Obs {
        if let Some(k) = key
            && let Some((old, outcome)) = self.reserve_keys.get(&k)
        {
            return if *old == *p {
                outcome.clone()
            } else {
                err("IDEMPOTENCY_MISMATCH")
            };
        }
        let (denial, amounts) = self.evaluate(p.agent_b, p.tool, &p.est);
        let denial = self.approval_gate(p.agent_b, p.tool, denial);
        let out = match denial {
            Some((reason, scope)) => {
                self.log("denial", None);
                Obs::Decision {
                    allowed: false,
                    reason: Some(reason),
                    scope,
                }
            }
            None => {
                let mut holds = Vec::new();
                for (u, a) in amounts {
                    let scopes = self.budgeted(p.agent_b, u);
                    for s in &scopes {
                        self.budgets.get_mut(&(*s, u)).unwrap().reserved += a;
                    }
                    holds.push((u, a, scopes));
                }
                let i = self.res.len();
                let expires = self.now + p.ttl.unwrap_or(DEFAULT_TTL);
                self.res.push(MRes {
                    status: Rs::Active,
                    holds: holds.clone(),
                    expires,
                    grace: p.grace.unwrap_or(DEFAULT_GRACE),
                    extensions: 0,
                    policy: p.policy.unwrap_or(Ov::IfAvail),
                });
                self.log("reserve", Some(i));
                Obs::Reserved {
                    rid: i,
                    holds: holds
                        .into_iter()
                        .map(|(u, a, s)| (u, a, s.iter().map(|s| SCOPES[*s].to_string()).collect()))
                        .collect(),
                    expires_at: expires,
                }
            }
        };
        if let Some(k) = key {
            self.reserve_keys.insert(k, (p.clone(), out.clone()));
        }
        out
    }

    /// An ACTIVE reservation that may be acted on, or the outcome that says why not
    /// (an overdue one is expired on the spot). `strict`: no grace (extensions).
    fn usable(&mut self, sel: Option<usize>, strict: bool) -> Result<usize, Obs> {
        let Some(i) = sel else {
            return Err(err("NOT_FOUND"));
        };
        match self.res[i].status {
            Rs::Committed | Rs::Released => Err(err("RESERVATION_FINALIZED")),
            Rs::Expired => Err(err("RESERVATION_EXPIRED")),
            Rs::Active if self.overdue(i) => {
                self.expire(i);
                Err(err("RESERVATION_EXPIRED"))
            }
            Rs::Active if strict && self.res[i].expires < self.now => {
                Err(err("RESERVATION_EXPIRED"))
            }
            Rs::Active => Ok(i),
        }
    }

    /// Charges `actual` against budgets that no longer hold `held` (it was returned first).
    /// Returns (charged, debt taken) or an error code; on error the caller drops `budgets`.
    fn charge(
        budgets: &mut BTreeMap<(usize, U), MBudget>,
        scopes: &[usize],
        u: U,
        held: i64,
        actual: i64,
        policy: Ov,
    ) -> Result<(i64, i64), &'static str> {
        if actual <= held {
            for s in scopes {
                budgets.get_mut(&(*s, u)).unwrap().spent += actual;
            }
            return Ok((actual, 0));
        }
        let over = actual - held;
        // Room for the overage on each scope: what was left before the hold came back.
        let room: Vec<i64> = scopes
            .iter()
            .map(|s| (budgets[&(*s, u)].left() - held).max(0))
            .collect();
        match policy {
            Ov::Reject => {
                if room.iter().any(|r| *r < over) {
                    return Err("BUDGET_EXCEEDED");
                }
                for s in scopes {
                    budgets.get_mut(&(*s, u)).unwrap().spent += actual;
                }
                Ok((actual, 0))
            }
            Ov::IfAvail => {
                // Every scope is charged the same: what the tightest one can take. Only a scope
                // that could not cover the whole overage itself is flagged over its limit.
                let take = room.iter().copied().min().unwrap().min(over);
                for (s, r) in scopes.iter().zip(&room) {
                    let b = budgets.get_mut(&(*s, u)).unwrap();
                    b.spent += held + take;
                    if *r < over {
                        b.over_limit = true;
                    }
                }
                Ok((held + take, 0))
            }
            Ov::Overdraft => {
                for (s, r) in scopes.iter().zip(&room) {
                    let b = &budgets[&(*s, u)];
                    if b.debt + (over - over.min(*r)) > b.overdraft {
                        return Err("OVERDRAFT_LIMIT_EXCEEDED");
                    }
                }
                let mut most = 0;
                for (s, r) in scopes.iter().zip(&room) {
                    let b = budgets.get_mut(&(*s, u)).unwrap();
                    let fits = over.min(*r);
                    b.spent += held + fits;
                    b.debt += over - fits;
                    most = most.max(over - fits);
                }
                Ok((actual, most))
            }
        }
    }

    fn commit(&mut self, sel: Option<usize>, actual: &[(U, i64)], key: Option<u8>) -> Obs {
        if let (Some(k), Some(i)) = (key, sel)
            && let Some((old, outcome)) = self.commit_keys.get(&(i, k))
        {
            return if old.as_slice() == actual {
                outcome.clone()
            } else {
                err("IDEMPOTENCY_MISMATCH")
            };
        }
        let i = match self.usable(sel, false) {
            Ok(i) => i,
            Err(o) => return o,
        };
        let r = self.res[i].clone();
        if actual
            .iter()
            .any(|(u, _)| !r.holds.iter().any(|(h, _, _)| h == u))
        {
            return err("UNIT_MISMATCH");
        }
        let mut budgets = self.budgets.clone();
        Self::give_back(&mut budgets, &r);
        let (mut charged, mut released, mut debt) = (Vec::new(), Vec::new(), Vec::new());
        for (u, held, scopes) in &r.holds {
            let want = actual
                .iter()
                .find(|(a, _)| a == u)
                .map_or(*held, |(_, x)| *x);
            match Self::charge(&mut budgets, scopes, *u, *held, want, r.policy) {
                Err(code) => return err(code),
                Ok((c, d)) => {
                    charged.push((*u, c));
                    released.push((*u, (held - c).max(0)));
                    if d > 0 {
                        debt.push((*u, d));
                    }
                }
            }
        }
        self.budgets = budgets;
        self.res[i].status = Rs::Committed;
        self.log("commit", Some(i));
        let out = Obs::Committed {
            charged,
            released,
            debt,
        };
        if let Some(k) = key {
            self.commit_keys
                .insert((i, k), (actual.to_vec(), out.clone()));
        }
        out
    }

    fn release(&mut self, sel: Option<usize>) -> Obs {
        let i = match self.usable(sel, false) {
            Ok(i) => i,
            Err(o) => return o,
        };
        let r = self.res[i].clone();
        Self::give_back(&mut self.budgets, &r);
        self.res[i].status = Rs::Released;
        self.log("release", Some(i));
        Obs::Released {
            released: r.holds.iter().map(|(u, a, _)| (*u, *a)).collect(),
        }
    }

    fn extend(&mut self, sel: Option<usize>, by: i64) -> Obs {
        let i = match self.usable(sel, true) {
            Ok(i) => i,
            Err(o) => return o,
        };
        if self.res[i].extensions >= MAX_EXT {
            return err("MAX_EXTENSIONS_EXCEEDED");
        }
        let r = &mut self.res[i];
        r.expires += by;
        r.extensions += 1;
        let out = Obs::Extended {
            expires_at: r.expires,
            extensions: r.extensions,
        };
        self.log("extend", Some(i));
        out
    }

    fn event(&mut self, agent_b: bool, actual: &[(U, i64)], policy: Option<Ov>) -> Obs {
        let policy = policy.unwrap_or(Ov::IfAvail);
        let mut budgets = self.budgets.clone();
        let (mut charged, mut debt) = (Vec::new(), Vec::new());
        for (u, x) in actual {
            let scopes = self.budgeted(agent_b, *u);
            if scopes.is_empty() {
                return err("NOT_FOUND");
            }
            for s in &scopes {
                match budgets[&(*s, *u)].status {
                    St::Frozen => return err("BUDGET_FROZEN"),
                    St::Closed => return err("BUDGET_CLOSED"),
                    St::Active => {}
                }
            }
            match Self::charge(&mut budgets, &scopes, *u, 0, *x, policy) {
                Err(code) => return err(code),
                Ok((c, d)) => {
                    charged.push((*u, c));
                    if d > 0 {
                        debt.push((*u, d));
                    }
                }
            }
        }
        self.budgets = budgets;
        self.log("event", None);
        Obs::Event { charged, debt }
    }

    fn set_budget(
        &mut self,
        scope: usize,
        u: U,
        allocated: i64,
        overdraft: i64,
        status: St,
    ) -> Obs {
        let b = self.budgets.entry((scope, u)).or_insert(MBudget {
            allocated: 0,
            spent: 0,
            reserved: 0,
            debt: 0,
            overdraft: 0,
            status: St::Active,
            over_limit: false,
        });
        b.allocated = allocated;
        b.overdraft = overdraft;
        b.status = status;
        b.over_limit = b.debt > b.overdraft;
        self.log("budget_set", None);
        Obs::BudgetSet
    }

    fn apply(&mut self, op: &Op) -> Obs {
        self.step_audit.clear();
        match op {
            Op::Decide { agent_b, tool, est } => self.decide(*agent_b, *tool, est),
            Op::Reserve { payload, key } => self.reserve(payload, *key),
            Op::Commit { sel, actual, key } => {
                let s = self.resolve(*sel);
                self.commit(s, actual, *key)
            }
            Op::Release { sel } => {
                let s = self.resolve(*sel);
                self.release(s)
            }
            Op::Extend { sel, by } => {
                let s = self.resolve(*sel);
                self.extend(s, *by)
            }
            Op::Event {
                agent_b,
                tool: _,
                actual,
                policy,
            } => self.event(*agent_b, actual, *policy),
            Op::Advance(ms) => {
                self.now += ms;
                Obs::BudgetSet
            }
            Op::Sweep => Obs::Swept(self.sweep()),
            Op::SetBudget {
                scope,
                unit,
                allocated,
                overdraft,
                status,
            } => self.set_budget(*scope, *unit, *allocated, *overdraft, *status),
        }
    }

    fn resolve(&self, sel: Sel) -> Option<usize> {
        sel.resolve(self.res.len())
    }
}

// ------------------------------------------------------------------------------------------
// Operations and their generators.
// ------------------------------------------------------------------------------------------

/// Which reservation an operation targets, resolved against how many exist at that moment.
#[derive(Clone, Copy, Debug)]
enum Sel {
    /// One of the three most recent.
    Recent(u8),
    /// Any.
    Any(u16),
    /// An id that was never issued.
    Unknown,
}

impl Sel {
    fn resolve(self, n: usize) -> Option<usize> {
        match self {
            _ if n == 0 => None,
            Sel::Recent(k) => Some(n - 1 - (k as usize % n.min(3))),
            Sel::Any(k) => Some(k as usize % n),
            Sel::Unknown => None,
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Decide {
        agent_b: bool,
        tool: usize,
        est: Vec<(U, i64)>,
    },
    Reserve {
        payload: ReservePayload,
        key: Option<u8>,
    },
    Commit {
        sel: Sel,
        actual: Vec<(U, i64)>,
        key: Option<u8>,
    },
    Release {
        sel: Sel,
    },
    Extend {
        sel: Sel,
        by: i64,
    },
    Event {
        agent_b: bool,
        tool: usize,
        actual: Vec<(U, i64)>,
        policy: Option<Ov>,
    },
    Advance(i64),
    Sweep,
    SetBudget {
        scope: usize,
        unit: U,
        allocated: i64,
        overdraft: i64,
        status: St,
    },
}

fn unit_s() -> impl Strategy<Value = U> {
    prop_oneof![
        3 => Just(U::Rp),
        3 => Just(U::Usd),
        3 => Just(U::Tok),
        1 => Just(U::Cred),
    ]
}

fn amount_s() -> impl Strategy<Value = i64> {
    prop_oneof![2 => Just(0i64), 5 => 0i64..=40, 3 => 0i64..=400]
}

/// Up to `max` amounts with distinct units, in random order.
fn amounts_s(min: usize, max: usize) -> impl Strategy<Value = Vec<(U, i64)>> {
    prop::collection::vec((unit_s(), amount_s()), min..=max).prop_map(|v| {
        let mut out: Vec<(U, i64)> = Vec::new();
        for (u, a) in v {
            if !out.iter().any(|(x, _)| *x == u) {
                out.push((u, a));
            }
        }
        out
    })
}

fn sel_s() -> impl Strategy<Value = Sel> {
    prop_oneof![
        12 => any::<u8>().prop_map(Sel::Recent),
        6 => any::<u16>().prop_map(Sel::Any),
        1 => Just(Sel::Unknown),
    ]
}

fn policy_s() -> impl Strategy<Value = Option<Ov>> {
    prop_oneof![
        Just(None),
        Just(Some(Ov::Reject)),
        Just(Some(Ov::IfAvail)),
        Just(Some(Ov::Overdraft)),
    ]
}

fn key_s() -> impl Strategy<Value = Option<u8>> {
    prop_oneof![3 => Just(None), 1 => (0u8..3).prop_map(Some)]
}

fn agent_s() -> impl Strategy<Value = bool> {
    // Agent b (max tier 2) mostly gets TIER_NOT_PERMITTED; a quarter of calls is plenty.
    prop::bool::weighted(0.25)
}

fn tool_s() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(0usize), 3 => Just(1), 2 => Just(2), 2 => Just(3), 1 => Just(4), 1 => Just(5)]
}

fn reserve_s() -> impl Strategy<Value = Op> {
    (
        agent_s(),
        tool_s(),
        amounts_s(0, 3),
        prop::option::of(prop_oneof![Just(1_000i64), Just(3_000), Just(20_000)]),
        prop::option::of(prop_oneof![Just(0i64), Just(1_000), Just(5_000)]),
        policy_s(),
        key_s(),
    )
        .prop_map(
            |(agent_b, tool, est, ttl, grace, policy, key)| Op::Reserve {
                payload: ReservePayload {
                    agent_b,
                    tool,
                    est,
                    ttl,
                    grace,
                    policy,
                },
                key,
            },
        )
}

fn set_budget_s() -> impl Strategy<Value = Op> {
    (
        0usize..3,
        unit_s(),
        prop_oneof![0i64..=60, 0i64..=600],
        prop_oneof![2 => Just(0i64), 1 => 0i64..=100],
        prop_oneof![6 => Just(St::Active), 2 => Just(St::Frozen), 1 => Just(St::Closed)],
    )
        .prop_map(
            |(scope, unit, allocated, overdraft, status)| Op::SetBudget {
                scope,
                unit,
                allocated,
                overdraft,
                status,
            },
        )
}

/// One step, or a short burst of steps that reaches a rule single random steps rarely reach.
fn op_s() -> impl Strategy<Value = Vec<Op>> {
    let decide = (agent_s(), tool_s(), amounts_s(0, 3))
        .prop_map(|(agent_b, tool, est)| Op::Decide { agent_b, tool, est });
    let commit = (sel_s(), amounts_s(0, 3), key_s()).prop_map(|(sel, actual, key)| Op::Commit {
        sel,
        actual,
        key,
    });
    let release = sel_s().prop_map(|sel| Op::Release { sel });
    let by_s = prop_oneof![Just(1i64), Just(500), Just(2_000), Just(30_000)];
    let extend = (sel_s(), by_s.clone()).prop_map(|(sel, by)| Op::Extend { sel, by });
    let event = (agent_s(), tool_s(), amounts_s(1, 2), policy_s()).prop_map(
        |(agent_b, tool, actual, policy)| Op::Event {
            agent_b,
            tool,
            actual,
            policy,
        },
    );
    let advance = prop_oneof![
        Just(0i64),
        Just(500),
        Just(999),
        Just(1_000),
        Just(2_500),
        Just(7_000),
        Just(30_000),
        Just(65_000),
    ]
    .prop_map(Op::Advance);
    // A reservation, then eleven extensions of it in a row: the last one is over the limit.
    let extend_burst = (reserve_s(), by_s).prop_map(|(first, by)| {
        let mut v = vec![first];
        v.extend(std::iter::repeat_n(
            Op::Extend {
                sel: Sel::Recent(0),
                by,
            },
            11,
        ));
        v
    });
    // Overdraft debt on agent a's tokens, then its limit lowered, then another call by a.
    let debt = (
        1i64..=50,
        50i64..=1_200,
        prop_oneof![Just(0i64), 1i64..=200],
        0i64..=1_500,
        0i64..=100,
        any::<bool>(),
    )
        .prop_map(|(held, actual, new_limit, new_alloc, next, reserve)| {
            let est = vec![(U::Tok, next)];
            let then = if reserve {
                Op::Reserve {
                    payload: ReservePayload {
                        agent_b: false,
                        tool: 0,
                        est,
                        ttl: None,
                        grace: None,
                        policy: None,
                    },
                    key: None,
                }
            } else {
                Op::Decide {
                    agent_b: false,
                    tool: 0,
                    est,
                }
            };
            vec![
                Op::Reserve {
                    payload: ReservePayload {
                        agent_b: false,
                        tool: 1,
                        est: vec![(U::Tok, held)],
                        ttl: None,
                        grace: None,
                        policy: Some(Ov::Overdraft),
                    },
                    key: None,
                },
                Op::Commit {
                    sel: Sel::Recent(0),
                    actual: vec![(U::Tok, actual)],
                    key: None,
                },
                Op::SetBudget {
                    scope: 1,
                    unit: U::Tok,
                    allocated: new_alloc,
                    overdraft: new_limit,
                    status: St::Active,
                },
                then,
            ]
        });
    prop_oneof![
        2 => decide.prop_map(|o| vec![o]),
        8 => reserve_s().prop_map(|o| vec![o]),
        6 => commit.prop_map(|o| vec![o]),
        2 => release.prop_map(|o| vec![o]),
        2 => extend.prop_map(|o| vec![o]),
        2 => event.prop_map(|o| vec![o]),
        3 => advance.prop_map(|o| vec![o]),
        2 => Just(vec![Op::Sweep]),
        2 => set_budget_s().prop_map(|o| vec![o]),
        1 => extend_burst,
        1 => debt,
    ]
}

fn ops_s() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op_s(), 1..16).prop_map(|v| v.into_iter().flatten().collect())
}

/// Starting budgets: (scope, unit, allocated, overdraft limit).
fn init_s() -> impl Strategy<Value = Vec<(usize, U, i64, i64)>> {
    (
        0i64..=300,
        prop_oneof![Just(0i64), 0i64..=60],
        0i64..=120,
        0i64..=30,
        0i64..=80,
        0i64..=2_000,
        0i64..=1_000,
        0i64..=200,
    )
        .prop_map(|(t_rp, t_od, a_rp, a_od, b_rp, t_usd, a_tok, a_tok_od)| {
            vec![
                (0, U::Rp, t_rp, t_od),
                (1, U::Rp, a_rp, a_od),
                (2, U::Rp, b_rp, 0),
                (0, U::Usd, t_usd, 0),
                (1, U::Tok, a_tok, a_tok_od),
            ]
        })
}

// ------------------------------------------------------------------------------------------
// The driver: translates operations for the real library and reduces its answers to `Obs`.
// ------------------------------------------------------------------------------------------

fn to_unit(u: U) -> Unit {
    match u {
        U::Rp => Unit::RiskPoints,
        U::Usd => Unit::UsdMicrocents,
        U::Tok => Unit::Tokens,
        U::Cred => Unit::Credits,
    }
}

fn from_unit(u: Unit) -> U {
    match u {
        Unit::RiskPoints => U::Rp,
        Unit::UsdMicrocents => U::Usd,
        Unit::Tokens => U::Tok,
        Unit::Credits => U::Cred,
    }
}

fn to_policy(p: Ov) -> CommitOveragePolicy {
    match p {
        Ov::Reject => CommitOveragePolicy::Reject,
        Ov::IfAvail => CommitOveragePolicy::AllowIfAvailable,
        Ov::Overdraft => CommitOveragePolicy::AllowWithOverdraft,
    }
}

fn to_status(s: St) -> BudgetStatus {
    match s {
        St::Active => BudgetStatus::Active,
        St::Frozen => BudgetStatus::Frozen,
        St::Closed => BudgetStatus::Closed,
    }
}

fn from_status(s: BudgetStatus) -> St {
    match s {
        BudgetStatus::Active => St::Active,
        BudgetStatus::Frozen => St::Frozen,
        BudgetStatus::Closed => St::Closed,
    }
}

fn amounts(v: &[(U, i64)]) -> Vec<Amount> {
    v.iter()
        .map(|(u, a)| Amount::new(to_unit(*u), *a))
        .collect()
}

fn pairs(v: &[Amount]) -> Vec<(U, i64)> {
    v.iter().map(|a| (from_unit(a.unit), a.amount)).collect()
}

fn subject(agent_b: bool) -> Subject {
    Subject::new()
        .tenant("t")
        .agent(if agent_b { "b" } else { "a" })
}

fn call(tool: usize) -> ToolCall {
    ToolCall::new(TOOLS[tool], serde_json::json!({}))
}

fn scope_index(s: &str) -> usize {
    SCOPES.iter().position(|x| *x == s).expect("known scope")
}

fn policy(init: &[(usize, U, i64, i64)]) -> Policy {
    let mut p = Policy::default().max_tier(SCOPES[2], Tier::new(B_MAX_TIER as u8).unwrap());
    for (i, name) in TOOLS.iter().enumerate().take(5) {
        p = p.register(*name, Tier::new(TOOL_TIER[i] as u8).unwrap());
    }
    for (s, u, alloc, od) in init {
        let mut spec = BudgetSpec::new(SCOPES[*s], to_unit(*u), *alloc);
        spec.overdraft_limit = *od;
        p = p.budget(spec);
    }
    p
}

struct Real {
    auth: Authority,
    clock: ManualClock,
    ids: Vec<String>,
    seen_seq: u64,
}

fn denial_obs(e: CyclesError) -> Obs {
    match e {
        CyclesError::Denied(d) => Obs::Decision {
            allowed: d.is_allowed(),
            reason: d.reason_code.map(|r| r.as_str().to_string()),
            scope: d.scope.clone(),
        },
        other => Obs::Error(other.code().to_string()),
    }
}

impl Real {
    fn id(&self, sel: Sel) -> String {
        match sel.resolve(self.ids.len()) {
            Some(i) => self.ids[i].clone(),
            None => "rsv_never_issued".to_string(),
        }
    }

    fn index_of(&mut self, id: &str) -> usize {
        match self.ids.iter().position(|x| x == id) {
            Some(i) => i,
            None => {
                self.ids.push(id.to_string());
                self.ids.len() - 1
            }
        }
    }

    fn apply(&mut self, op: &Op) -> Obs {
        match op {
            Op::Decide { agent_b, tool, est } => {
                let mut req = DecideRequest::new(subject(*agent_b), call(*tool));
                req.estimate = amounts(est);
                match self.auth.decide(&req) {
                    Ok(d) => Obs::Decision {
                        allowed: d.is_allowed(),
                        reason: d.reason_code.map(|r| r.as_str().to_string()),
                        scope: d.scope.clone(),
                    },
                    Err(e) => Obs::Error(format!("decide failed: {e}")),
                }
            }
            Op::Reserve { payload: p, key } => {
                let mut req = ReserveRequest::new(subject(p.agent_b), call(p.tool));
                req.estimate = amounts(&p.est);
                req.ttl_ms = p.ttl;
                req.grace_period_ms = p.grace;
                req.overage_policy = p.policy.map(to_policy);
                req.idempotency_key = key.map(|k| format!("key-{k}"));
                match self.auth.reserve(&req) {
                    Ok(r) => {
                        if r.status != ReservationStatus::Active {
                            return Obs::Error(format!("reserve returned {:?}", r.status));
                        }
                        Obs::Reserved {
                            rid: self.index_of(&r.reservation_id),
                            holds: r
                                .holds
                                .iter()
                                .map(|h| (from_unit(h.unit), h.amount, h.scopes.clone()))
                                .collect(),
                            expires_at: r.expires_at_ms,
                        }
                    }
                    Err(e) => denial_obs(e),
                }
            }
            Op::Commit { sel, actual, key } => {
                let id = self.id(*sel);
                let req = CommitRequest {
                    actual: amounts(actual),
                    ran: None,
                    charge_if_expired: false,
                    idempotency_key: key.map(|k| format!("key-{k}")),
                };
                match self.auth.commit(&id, &req) {
                    Ok(c) => Obs::Committed {
                        charged: pairs(&c.charged),
                        released: pairs(&c.released),
                        debt: pairs(&c.debt_incurred),
                    },
                    Err(e) => denial_obs(e),
                }
            }
            Op::Release { sel } => {
                let id = self.id(*sel);
                match self.auth.release(&id, &ReleaseRequest::default()) {
                    Ok(r) => Obs::Released {
                        released: pairs(&r.released),
                    },
                    Err(e) => denial_obs(e),
                }
            }
            Op::Extend { sel, by } => {
                let id = self.id(*sel);
                let req = ExtendRequest {
                    extend_by_ms: *by,
                    idempotency_key: None,
                };
                match self.auth.extend(&id, &req) {
                    Ok(r) => Obs::Extended {
                        expires_at: r.expires_at_ms,
                        extensions: r.extensions,
                    },
                    Err(e) => denial_obs(e),
                }
            }
            Op::Event {
                agent_b,
                tool,
                actual,
                policy,
            } => {
                let req = EventRequest {
                    subject: subject(*agent_b),
                    call: call(*tool),
                    actual: amounts(actual),
                    overage_policy: policy.map(to_policy),
                    idempotency_key: None,
                };
                match self.auth.event(&req) {
                    Ok(e) => Obs::Event {
                        charged: pairs(&e.charged),
                        debt: pairs(&e.debt_incurred),
                    },
                    Err(e) => denial_obs(e),
                }
            }
            Op::Advance(ms) => {
                self.clock.advance(*ms);
                Obs::BudgetSet
            }
            Op::Sweep => match self.auth.sweep_expired() {
                Ok(n) => Obs::Swept(n),
                Err(e) => denial_obs(e),
            },
            Op::SetBudget {
                scope,
                unit,
                allocated,
                overdraft,
                status,
            } => {
                let mut spec = BudgetSpec::new(SCOPES[*scope], to_unit(*unit), *allocated);
                spec.overdraft_limit = *overdraft;
                spec.status = to_status(*status);
                match self.auth.set_budget(&spec) {
                    Ok(_) => Obs::BudgetSet,
                    Err(e) => denial_obs(e),
                }
            }
        }
    }

    /// Every budget, after checking `remaining = allocated - spent - reserved - debt` on each.
    fn budgets(&self) -> Result<BTreeMap<(usize, U), MBudget>, TestCaseError> {
        let balances = self.auth.balances(None).unwrap();
        for b in &balances {
            prop_assert_eq!(
                b.remaining,
                b.allocated - b.spent - b.reserved - b.debt,
                "remaining of {} {}",
                &b.scope,
                b.unit
            );
        }
        Ok(balances
            .into_iter()
            .map(|b| {
                (
                    (scope_index(&b.scope), from_unit(b.unit)),
                    MBudget {
                        allocated: b.allocated,
                        spent: b.spent,
                        reserved: b.reserved,
                        debt: b.debt,
                        overdraft: b.overdraft_limit,
                        status: from_status(b.status),
                        over_limit: b.is_over_limit,
                    },
                )
            })
            .collect())
    }

    /// Audit records appended since the last call: (kind, reservation index), sorted because
    /// one sweep may expire several reservations in any order.
    fn new_audit(&mut self) -> Vec<(String, Option<usize>)> {
        let q = AuditQuery {
            after_seq: Some(self.seen_seq),
            ..Default::default()
        };
        let recs = self.auth.audit(&q).unwrap();
        if let Some(last) = recs.last() {
            self.seen_seq = last.seq;
        }
        let mut out: Vec<(String, Option<usize>)> = recs
            .iter()
            .map(|r| {
                let rid = r
                    .reservation_id
                    .as_ref()
                    .map(|id| self.ids.iter().position(|x| x == id).unwrap_or(usize::MAX));
                (r.kind.as_str().to_string(), rid)
            })
            .collect();
        out.sort();
        out
    }
}

fn from_rstatus(s: ReservationStatus) -> Rs {
    match s {
        ReservationStatus::Active => Rs::Active,
        ReservationStatus::Committed => Rs::Committed,
        ReservationStatus::Released => Rs::Released,
        ReservationStatus::Expired => Rs::Expired,
    }
}

/// Runs one sequence on `ledger`, checking every step.
fn run_case(
    ledger: impl Ledger + 'static,
    init: &[(usize, U, i64, i64)],
    ops: &[Op],
    seen: &mut BTreeMap<String, u64>,
) -> Result<(), TestCaseError> {
    const START: i64 = 1_700_000_000_000;
    let clock = ManualClock::new(START);
    let auth = Authority::builder()
        .policy(policy(init))
        .ledger(ledger)
        .clock(clock.clone())
        .build()
        .unwrap();
    let built = auth.verify().unwrap();
    prop_assert!(built.ok);
    prop_assert_eq!(built.records, init.len() as u64);
    let mut real = Real {
        auth,
        clock,
        ids: Vec::new(),
        seen_seq: built.records,
    };
    let mut model = Model {
        now: START,
        budgets: init
            .iter()
            .map(|(s, u, alloc, od)| {
                (
                    (*s, *u),
                    MBudget {
                        allocated: *alloc,
                        spent: 0,
                        reserved: 0,
                        debt: 0,
                        overdraft: *od,
                        status: St::Active,
                        over_limit: false,
                    },
                )
            })
            .collect(),
        res: Vec::new(),
        reserve_keys: HashMap::new(),
        commit_keys: HashMap::new(),
        step_audit: Vec::new(),
        total_audit: init.len() as u64,
        approvals: [None, None],
    };
    let mut before = real.budgets()?;
    let mut budget_changed = false;
    for (step, op) in ops.iter().enumerate() {
        let expected = model.apply(op);
        let got = real.apply(op);
        prop_assert_eq!(&got, &expected, "step {} {:?}", step, op);
        if !matches!(op, Op::Advance(_)) {
            *seen.entry(label(&got)).or_default() += 1;
        }
        prop_assert_eq!(
            real.ids.len(),
            model.res.len(),
            "step {}: reservation count",
            step
        );

        let after = real.budgets()?;
        prop_assert_eq!(&after, &model.budgets, "step {} {:?}: budgets", step, op);
        let is_set = matches!(op, Op::SetBudget { .. });
        budget_changed |= is_set;
        for (key, b) in &after {
            prop_assert!(b.spent >= 0 && b.reserved >= 0 && b.debt >= 0);
            if !budget_changed {
                prop_assert!(
                    b.spent + b.reserved <= b.allocated,
                    "step {}: {:?} overspent {:?}",
                    step,
                    key,
                    b
                );
                prop_assert!(
                    b.debt <= b.overdraft,
                    "step {}: {:?} debt {:?}",
                    step,
                    key,
                    b
                );
            }
            if !is_set {
                // Once an operator lowers an allocation below what is used, no later operation
                // may push usage up again; otherwise usage stays within the allocation.
                let prev = before.get(key).unwrap();
                let (use_now, use_then) = (b.spent + b.reserved, prev.spent + prev.reserved);
                prop_assert!(
                    use_now <= b.allocated || use_now <= use_then,
                    "step {} {:?}: usage of {:?} rose past its allocation: {:?} -> {:?}",
                    step,
                    op,
                    key,
                    prev,
                    b
                );
                prop_assert!(
                    b.debt <= b.overdraft || b.debt <= prev.debt,
                    "step {} {:?}: debt of {:?} rose past its limit: {:?} -> {:?}",
                    step,
                    op,
                    key,
                    prev,
                    b
                );
            }
        }

        // Every reservation's status, and `reserved` = the holds of ACTIVE reservations.
        let all = real.auth.reservations(None, usize::MAX).unwrap();
        prop_assert_eq!(all.len(), model.res.len());
        let mut held: BTreeMap<(usize, U), i64> = BTreeMap::new();
        for r in &all {
            let i = real
                .ids
                .iter()
                .position(|x| *x == r.reservation_id)
                .unwrap();
            prop_assert_eq!(
                from_rstatus(r.status),
                model.res[i].status,
                "step {}: status of reservation {}",
                step,
                i
            );
            if r.status == ReservationStatus::Active {
                for h in &r.holds {
                    for s in &h.scopes {
                        *held.entry((scope_index(s), from_unit(h.unit))).or_default() += h.amount;
                    }
                }
            }
        }
        for (key, b) in &after {
            prop_assert_eq!(
                b.reserved,
                held.get(key).copied().unwrap_or(0),
                "step {}: reserved of {:?} is not the sum of active holds",
                step,
                key
            );
        }

        let mut expected_audit: Vec<(String, Option<usize>)> = model
            .step_audit
            .iter()
            .map(|(k, r)| (k.to_string(), *r))
            .collect();
        expected_audit.sort();
        prop_assert_eq!(
            real.new_audit(),
            expected_audit,
            "step {} {:?}: audit",
            step,
            op
        );
        before = after;
    }
    let v = real.auth.verify().unwrap();
    prop_assert!(v.ok, "chain broken: {:?}", v);
    prop_assert_eq!(v.records, model.total_audit);
    Ok(())
}

/// A label per kind of outcome, to check the generator reaches every rule.
fn label(o: &Obs) -> String {
    match o {
        Obs::Decision { allowed: true, .. } => "ALLOW".into(),
        Obs::Decision { reason, .. } => format!("DENY {}", reason.as_deref().unwrap_or("-")),
        Obs::Reserved { holds, .. } => format!("RESERVED {} units", holds.len()),
        Obs::Committed {
            charged,
            released,
            debt,
        } => {
            let capped = charged
                .iter()
                .zip(released)
                .any(|(c, r)| c.1 > 0 && r.1 == 0);
            format!(
                "COMMITTED{}",
                if !debt.is_empty() {
                    " with debt"
                } else if capped {
                    " all held"
                } else {
                    ""
                }
            )
        }
        Obs::Released { .. } => "RELEASED".into(),
        Obs::Extended { .. } => "EXTENDED".into(),
        Obs::Event { debt, .. } if !debt.is_empty() => "EVENT with debt".into(),
        Obs::Event { .. } => "EVENT".into(),
        Obs::Swept(0) => "SWEPT none".into(),
        Obs::Swept(_) => "SWEPT some".into(),
        Obs::BudgetSet => "OK".into(),
        Obs::Error(code) => format!("ERROR {code}"),
    }
}

/// Outcomes every run of the memory property must have produced at least once.
const MUST_SEE: &[&str] = &[
    "ALLOW",
    "DENY BUDGET_EXCEEDED",
    "DENY BUDGET_NOT_FOUND",
    "DENY BUDGET_FROZEN",
    "DENY BUDGET_CLOSED",
    "DENY DEBT_OUTSTANDING",
    "DENY OVERDRAFT_LIMIT_EXCEEDED",
    "DENY TIER_NOT_PERMITTED",
    "DENY APPROVAL_REQUIRED",
    "RESERVED 1 units",
    "RESERVED 3 units",
    "COMMITTED",
    "COMMITTED with debt",
    "RELEASED",
    "EXTENDED",
    "EVENT",
    "EVENT with debt",
    "SWEPT none",
    "SWEPT some",
    "ERROR NOT_FOUND",
    "ERROR RESERVATION_FINALIZED",
    "ERROR RESERVATION_EXPIRED",
    "ERROR IDEMPOTENCY_MISMATCH",
    "ERROR MAX_EXTENSIONS_EXCEEDED",
    "ERROR UNIT_MISMATCH",
    "ERROR BUDGET_EXCEEDED",
    "ERROR OVERDRAFT_LIMIT_EXCEEDED",
    "ERROR BUDGET_FROZEN",
    "ERROR BUDGET_CLOSED",
];

/// Runs `cases` random sequences on ledgers made by `make`; returns how often each outcome
/// was seen.
fn run_property<L: Ledger + 'static>(
    cases: u32,
    make: impl Fn() -> (L, Option<tempfile::TempDir>),
) -> BTreeMap<String, u64> {
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        // ChaCha dominates the run time of an unoptimised test build; XorShift is plenty here.
        rng_algorithm: RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    });
    let seen = std::cell::RefCell::new(BTreeMap::new());
    let strategy = (init_s(), ops_s());
    let result = runner.run(&strategy, |(init, ops)| {
        let (ledger, _dir) = make();
        run_case(ledger, &init, &ops, &mut seen.borrow_mut())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    seen.into_inner()
}

#[test]
fn memory_ledger_matches_model() {
    let seen = run_property(10_000, || (MemoryLedger::new(), None));
    let missing: Vec<&&str> = MUST_SEE
        .iter()
        .filter(|l| !seen.contains_key(**l))
        .collect();
    assert!(
        missing.is_empty(),
        "never produced {missing:?}; saw {seen:#?}"
    );
    if std::env::var_os("CYCLES_PROPERTY_STATS").is_some() {
        eprintln!("{seen:#?}");
    }
}

#[test]
fn sqlite_ledger_matches_model() {
    let seen = run_property(250, || {
        let dir = tempfile::tempdir().unwrap();
        // Durability is crash.rs's subject; NORMAL keeps this test fast with the same code path.
        let opts = SqliteOptions {
            synchronous: Synchronous::Normal,
            ..SqliteOptions::default()
        };
        let ledger = SqliteLedger::open_with(dir.path().join("ledger.db"), opts).unwrap();
        (ledger, Some(dir))
    });
    assert!(seen.contains_key("COMMITTED") && seen.contains_key("DENY BUDGET_EXCEEDED"));
}
