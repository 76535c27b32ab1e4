//! The golden scenarios of `fixtures/scenarios/*.json` on PostgreSQL.
//!
//! golden.rs checks every scenario's expectations on MemoryLedger and SqliteLedger. Here each
//! scenario runs step by step on a MemoryLedger and on a PostgresLedger (a fresh schema per
//! scenario) and every output must be identical: each step's result or error (code, message
//! and decision), every balance after each step, and at the end every reservation, every
//! approval request and the whole audit trail (generated ids are compared by their order of
//! appearance; hashes differ with the ids and are checked by `verify`). The error code and
//! reason code a step expects are also checked directly on the PostgreSQL outcome.
#![cfg(feature = "postgres")]

mod postgres_support;
#[path = "support/scenario.rs"]
mod scenario;

use cycles_core::*;
use postgres_support::{Normalizer, Schema, audit_trail};
use scenario::{Outcome, Run, Scenario, Step, load_fixtures};
use serde_json::{Value, json};

/// golden.rs holds at least this many; fewer means the fixtures went missing.
const MIN_SCENARIOS: usize = 30;

/// One scenario in progress on one ledger, and the names its generated ids normalise to.
struct Side {
    run: Run,
    norm: Normalizer,
}

/// A step's outcome as compared between ledgers: the result, or the error's code, message
/// and decision.
fn comparable(out: &Outcome) -> Value {
    match &out.error {
        Some(e) => json!({
            "error": e.code(),
            "message": e.to_string(),
            "decision": e.decision(),
        }),
        None => json!({ "ok": out.result }),
    }
}

impl Side {
    fn start(s: &Scenario, policy: &Value, ledger: impl Ledger + 'static) -> Side {
        Side {
            run: Run::with_policy(policy, s.start_ms, Box::new(ledger)).expect("run starts"),
            norm: Normalizer::default(),
        }
    }

    /// Performs a step; returns its outcome, comparable and normalised.
    fn perform(&mut self, step: &Step) -> Value {
        let out = self.run.perform(step).expect("well-formed step");
        self.norm.apply(&comparable(&out))
    }

    /// Every balance now, normalised.
    fn balances(&mut self) -> Value {
        let balances = self.run.auth.balances(None).expect("balances");
        self.norm.apply(&serde_json::to_value(balances).unwrap())
    }

    /// Everything observable at the end, normalised.
    fn final_state(&mut self) -> Value {
        let auth = &self.run.auth;
        let reservations =
            serde_json::to_value(auth.reservations(None, usize::MAX).expect("reservations"))
                .unwrap();
        let approvals = serde_json::to_value(auth.approvals(None).expect("approvals")).unwrap();
        let audit = audit_trail(auth, &mut self.norm);
        // Approvals are listed by request id, which is random: compare them as a set.
        let mut approvals = match self.norm.apply(&approvals) {
            Value::Array(a) => a,
            other => panic!("approvals: {other}"),
        };
        approvals.sort_by_key(|a| a["request_id"].to_string());
        json!({
            "reservations": self.norm.apply(&reservations),
            "approvals": approvals,
            "audit": audit,
        })
    }
}

/// The code and reason code a step expects, checked on the PostgreSQL outcome itself.
fn check_expect(step: &Step, out: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    if let Some(code) = step.expect.get("error") {
        if out.get("error") != Some(code) {
            errs.push(format!("expected error {code}, got {out}"));
        }
    } else if step.expect.contains_key("decision") && out.get("error").is_some() {
        let denied = out["decision"]["decision"] == json!("DENY");
        if step.expect["decision"] != json!("DENY") || !denied {
            errs.push(format!("unexpected error {out}"));
        }
    }
    if let Some(reason) = step.expect.get("reason_code") {
        let got = out
            .get("decision")
            .filter(|d| !d.is_null())
            .or_else(|| out.get("ok"))
            .and_then(|d| {
                d.get("reason_code")
                    .or_else(|| d.get("decision")?.get("reason_code"))
            });
        if got.unwrap_or(&Value::Null) != reason {
            errs.push(format!("expected reason_code {reason}, got {out}"));
        }
    }
    errs
}

/// Runs `s` on both ledgers (the PostgreSQL side with `pg_policy`); returns the differences.
fn run(file: &str, s: &Scenario, pg_policy: &Value) -> Vec<String> {
    let schema = Schema::new("golden");
    let mut mem = Side::start(s, &s.policy, MemoryLedger::new());
    let mut pg = Side::start(s, pg_policy, schema.ledger());
    let mut errs = Vec::new();
    for (i, step) in s.steps.iter().enumerate() {
        let at = format!("{file} ({}) step {} {}", s.name, i + 1, step.op);
        let (m, p) = (mem.perform(step), pg.perform(step));
        if m != p {
            errs.push(format!("{at}: memory {m}\n    postgres {p}"));
        }
        errs.extend(
            check_expect(step, &p)
                .into_iter()
                .map(|e| format!("{at}: {e}")),
        );
        let (mb, pb) = (mem.balances(), pg.balances());
        if mb != pb {
            errs.push(format!(
                "{at}: balances differ\n    memory {mb}\n    postgres {pb}"
            ));
        }
        if !errs.is_empty() {
            return errs; // later steps would only repeat the difference
        }
    }
    let (mf, pf) = (mem.final_state(), pg.final_state());
    for key in ["reservations", "approvals", "audit"] {
        if mf[key] != pf[key] {
            errs.push(format!(
                "{file} ({}): final {key} differ\n    memory {}\n    postgres {}",
                s.name, mf[key], pf[key]
            ));
        }
    }
    let v = pg.run.auth.verify().unwrap();
    if !v.ok {
        errs.push(format!("{file}: chain does not verify on postgres: {v:?}"));
    }
    errs
}

#[test]
fn golden_scenarios_give_identical_results_on_postgres() {
    let all = load_fixtures();
    assert!(all.len() >= MIN_SCENARIOS, "only {} scenarios", all.len());
    let mut failures = Vec::new();
    let mut steps = 0;
    for f in &all {
        let s = &f.scenario;
        steps += s.steps.len();
        failures.extend(run(&f.file, s, &s.policy));
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} scenarios, {steps} steps: identical on postgres",
        all.len()
    );
}

#[test]
fn the_comparison_can_fail() {
    // The same scenario with one more point on the PostgreSQL side must be reported.
    let fixture = load_fixtures()
        .into_iter()
        .find(|f| f.scenario.steps.iter().any(|st| st.op == "reserve"))
        .unwrap();
    let (file, s) = (fixture.file, fixture.scenario);
    let mut changed = s.policy.clone();
    let budgets = changed["budgets"].as_array_mut().expect("budgets");
    budgets[0]["allocated"] = json!(budgets[0]["allocated"].as_i64().unwrap() + 1);
    let errs = run(&file, &s, &changed);
    assert!(
        !errs.is_empty(),
        "{file}: a different budget went unnoticed"
    );
    // Ids are normalised by order of appearance, also inside messages, not erased.
    let mut n = Normalizer::default();
    let a = n.apply(&json!(["rsv_0123456789abcdef0123456789abcdef", "x"]));
    let b = n.apply(&json!(
        "reservation rsv_fedcba9876543210fedcba9876543210 has expired"
    ));
    assert_eq!(a, json!(["rsv#0", "x"]));
    assert_eq!(b, json!("reservation rsv#1 has expired"));
}
