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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cycles_core::*;
use postgres_support::{Normalizer, Schema, audit_trail};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// golden.rs holds at least this many; fewer means the fixtures went missing.
const MIN_SCENARIOS: usize = 30;

#[derive(Deserialize)]
struct Scenario {
    name: String,
    policy: Value,
    start_ms: i64,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    op: String,
    #[serde(default)]
    request: Option<Value>,
    #[serde(default, rename = "as")]
    bind: Option<String>,
    #[serde(default)]
    reservation: Option<String>,
    #[serde(default)]
    reservation_id: Option<String>,
    #[serde(default)]
    by_ms: Option<i64>,
    #[serde(default)]
    to_ms: Option<i64>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    expect: Map<String, Value>,
}

/// One scenario in progress on one ledger.
struct Side {
    auth: Authority,
    clock: ManualClock,
    names: BTreeMap<String, String>,
    norm: Normalizer,
}

fn req<T: serde::de::DeserializeOwned>(step: &Step) -> T {
    serde_json::from_value(step.request.clone().expect("step has a request"))
        .expect("request deserializes")
}

fn req_or_default<T: serde::de::DeserializeOwned + Default>(step: &Step) -> T {
    step.request.as_ref().map_or_else(T::default, |_| req(step))
}

fn ok<T: serde::Serialize>(v: T) -> Value {
    json!({ "ok": serde_json::to_value(v).unwrap() })
}

fn err(e: &CyclesError) -> Value {
    json!({
        "error": e.code(),
        "message": e.to_string(),
        "decision": e.decision(),
    })
}

fn outcome<T: serde::Serialize>(r: Result<T>) -> Value {
    match r {
        Ok(v) => ok(v),
        Err(e) => err(&e),
    }
}

impl Side {
    fn start(s: &Scenario, ledger: impl Ledger + 'static) -> Side {
        let policy: Policy = serde_json::from_value(s.policy.clone()).expect("policy");
        let clock = ManualClock::new(s.start_ms);
        let auth = Authority::builder()
            .policy(policy)
            .ledger(ledger)
            .clock(clock.clone())
            .build()
            .expect("authority builds");
        Side {
            auth,
            clock,
            names: BTreeMap::new(),
            norm: Normalizer::default(),
        }
    }

    fn id(&self, step: &Step) -> String {
        match (&step.reservation, &step.reservation_id) {
            (Some(name), _) => self.names[name].clone(),
            (None, Some(id)) => id.clone(),
            (None, None) => panic!("step {} names no reservation", step.op),
        }
    }

    /// Performs a step; returns its raw outcome and the id it created.
    fn perform(&mut self, step: &Step) -> (Value, Option<String>) {
        let a = &self.auth;
        let (out, id) = match step.op.as_str() {
            "decide" => (outcome(a.decide(&req(step))), None),
            "reserve" => match a.reserve(&req(step)) {
                Ok(r) => {
                    let id = r.reservation_id.clone();
                    (ok(r), Some(id))
                }
                Err(e) => (err(&e), None),
            },
            "commit" => (
                outcome(a.commit(&self.id(step), &req_or_default(step))),
                None,
            ),
            "release" => (
                outcome(a.release(&self.id(step), &req_or_default(step))),
                None,
            ),
            "extend" => (outcome(a.extend(&self.id(step), &req(step))), None),
            "event" => match a.event(&req(step)) {
                Ok(e) => {
                    let id = e.event_id.clone();
                    (ok(e), Some(id))
                }
                Err(e) => (err(&e), None),
            },
            "sweep_expired" => (outcome(a.sweep_expired()), None),
            "set_budget" => (outcome(a.set_budget(&req(step))), None),
            "advance_clock" => {
                match (step.by_ms, step.to_ms) {
                    (Some(by), None) => self.clock.advance(by),
                    (None, Some(to)) => self.clock.set(to),
                    _ => panic!("advance_clock takes one of by_ms, to_ms"),
                }
                (json!({ "now_ms": self.clock.now_ms() }), None)
            }
            "balances" => (outcome(a.balances(step.scope.as_deref())), None),
            "verify" => (outcome(a.verify()), None),
            other => panic!("unknown op {other:?}: this runner needs to learn it"),
        };
        if let (Some(name), Some(id)) = (&step.bind, &id) {
            self.names.insert(name.clone(), id.clone());
        }
        (out, id)
    }

    /// Everything observable at the end, normalised.
    fn final_state(&mut self) -> Value {
        let reservations = serde_json::to_value(
            self.auth
                .reservations(None, usize::MAX)
                .expect("reservations"),
        )
        .unwrap();
        let approvals =
            serde_json::to_value(self.auth.approvals(None).expect("approvals")).unwrap();
        let audit = audit_trail(&self.auth, &mut self.norm);
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

fn fixtures() -> Vec<(String, Scenario)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let s: Scenario = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, s)
        })
        .collect()
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
    let mut mem = Side::start(s, MemoryLedger::new());
    let pg_scenario = Scenario {
        name: s.name.clone(),
        policy: pg_policy.clone(),
        start_ms: s.start_ms,
        steps: Vec::new(),
    };
    let mut pg = Side::start(&pg_scenario, schema.ledger());
    let mut errs = Vec::new();
    for (i, step) in s.steps.iter().enumerate() {
        let at = format!("{file} ({}) step {} {}", s.name, i + 1, step.op);
        let (m, _) = mem.perform(step);
        let (p, _) = pg.perform(step);
        let (m, p) = (mem.norm.apply(&m), pg.norm.apply(&p));
        if m != p {
            errs.push(format!("{at}: memory {m}\n    postgres {p}"));
        }
        errs.extend(
            check_expect(step, &p)
                .into_iter()
                .map(|e| format!("{at}: {e}")),
        );
        let mb = mem
            .norm
            .apply(&serde_json::to_value(mem.auth.balances(None).unwrap()).unwrap());
        let pb = pg
            .norm
            .apply(&serde_json::to_value(pg.auth.balances(None).unwrap()).unwrap());
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
    let v = pg.auth.verify().unwrap();
    if !v.ok {
        errs.push(format!("{file}: chain does not verify on postgres: {v:?}"));
    }
    errs
}

#[test]
fn golden_scenarios_give_identical_results_on_postgres() {
    let all = fixtures();
    assert!(all.len() >= MIN_SCENARIOS, "only {} scenarios", all.len());
    let mut failures = Vec::new();
    let mut steps = 0;
    for (file, s) in &all {
        steps += s.steps.len();
        failures.extend(run(file, s, &s.policy));
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
    let (file, s) = fixtures()
        .into_iter()
        .find(|(_, s)| s.steps.iter().any(|st| st.op == "reserve"))
        .unwrap();
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
