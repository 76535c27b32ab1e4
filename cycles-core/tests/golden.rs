//! Golden scenarios: every `fixtures/scenarios/*.json` runs against `MemoryLedger` and against
//! `SqliteLedger` (a real file in a temp dir) on a `ManualClock`, and every listed expectation
//! must hold. The format is documented in `fixtures/README.md`; the Python and Node bindings
//! run the same files with the same rules, so the comparison logic here is deliberately plain
//! (partial match of JSON objects, exact arrays and scalars) and lives in this test, not in
//! the library.

#[path = "support/scenario.rs"]
mod scenario;

use std::collections::BTreeSet;
use std::path::Path;

use cycles_core::*;
use scenario::{Outcome, Run, Scenario, Step, fixtures_dir, load_fixtures};
use serde_json::{Map, Value, json};

/// Fewer scenarios than this means the fixtures went missing: fail rather than pass vacuously.
const MIN_SCENARIOS: usize = 30;

/// Keys a step's `expect` may hold; anything else is a typo in the scenario.
const EXPECT_KEYS: [&str; 12] = [
    "error",
    "decision",
    "reason_code",
    "tier",
    "risk_points",
    "decision_scope",
    "rules",
    "result",
    "same_as",
    "balances",
    "budget_count",
    "reservations",
];

/// Operations a step may name.
const OPS: [&str; 12] = [
    "decide",
    "reserve",
    "commit",
    "release",
    "settle",
    "extend",
    "event",
    "sweep_expired",
    "set_budget",
    "advance_clock",
    "balances",
    "verify",
];

/// Partial match: objects compare only the keys `expected` lists (a missing key matches only
/// `null` or `[]`), arrays compare element by element and must have the same length, scalars
/// must be equal.
fn partial_match(expected: &Value, actual: &Value, path: &str, errs: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = format!("{path}.{k}");
                match a.get(k) {
                    Some(av) => partial_match(ev, av, &p, errs),
                    None if ev.is_null() || ev.as_array().is_some_and(|x| x.is_empty()) => {}
                    None => errs.push(format!("{p}: expected {ev}, but it is absent")),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                errs.push(format!(
                    "{path}: expected {} elements, got {}: {actual}",
                    e.len(),
                    a.len()
                ));
                return;
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                partial_match(ev, av, &format!("{path}[{i}]"), errs);
            }
        }
        (Value::Array(e), Value::Null) if e.is_empty() => {}
        (e, a) => {
            if e != a {
                errs.push(format!("{path}: expected {e}, got {a}"));
            }
        }
    }
}

fn balance_key(v: &Value) -> Option<(String, String)> {
    Some((
        v.get("scope")?.as_str()?.to_string(),
        v.get("unit")?.as_str()?.to_string(),
    ))
}

/// Compares an outcome and the ledger after the step with `step.expect`.
/// Returns the mismatches; `Err` is a malformed expectation.
fn check(run: &Run, step: &Step, out: &Outcome) -> Result<Vec<String>, String> {
    let exp = &step.expect;
    for k in exp.keys() {
        if !EXPECT_KEYS.contains(&k.as_str()) {
            return Err(format!("unknown expect key {k:?}"));
        }
    }
    let mut errs = Vec::new();
    match (exp.get("error"), &out.error) {
        (None | Some(Value::Null), None) => {}
        (None | Some(Value::Null), Some(e)) => {
            errs.push(format!("unexpected error {}: {e}", e.code()));
        }
        (Some(Value::String(code)), None) => {
            errs.push(format!(
                "expected error {code}, but the step succeeded with {}",
                out.result.as_ref().unwrap_or(&Value::Null)
            ));
        }
        (Some(Value::String(code)), Some(e)) => {
            if e.code() != code {
                errs.push(format!("expected error {code}, got {}: {e}", e.code()));
            }
        }
        (Some(other), _) => return Err(format!("expect.error must be a code, not {other}")),
    }

    let decision_keys = [
        ("decision", "decision"),
        ("reason_code", "reason_code"),
        ("tier", "tier"),
        ("risk_points", "risk_points"),
        ("decision_scope", "scope"),
        ("rules", "rules"),
    ];
    for (key, field) in decision_keys {
        let Some(ev) = exp.get(key) else { continue };
        match &out.decision {
            None => errs.push(format!("expect.{key}: the step produced no decision")),
            Some(d) => {
                let dv = serde_json::to_value(d).unwrap();
                let mut want = Map::new();
                want.insert(field.to_string(), ev.clone());
                partial_match(&Value::Object(want), &dv, "decision", &mut errs);
            }
        }
    }

    if let Some(ev) = exp.get("result") {
        match &out.result {
            Some(av) => partial_match(ev, av, "result", &mut errs),
            None => errs.push("expect.result: the step produced no result".into()),
        }
    }

    if let Some(name) = exp.get("same_as") {
        let name = name.as_str().ok_or("expect.same_as must be a name")?;
        let bound = run
            .names
            .get(name)
            .ok_or_else(|| format!("expect.same_as: no id is bound to {name:?}"))?;
        if out.id.as_ref() != Some(bound) {
            errs.push(format!(
                "same_as {name}: expected id {bound}, got {:?}",
                out.id
            ));
        }
    }

    if exp.contains_key("balances") || exp.contains_key("budget_count") {
        let filter = if step.op == "balances" {
            step.scope.as_deref()
        } else {
            None
        };
        let actual = run
            .auth
            .balances(filter)
            .map_err(|e| format!("balances: {e}"))?;
        let actual: Vec<Value> = actual
            .iter()
            .map(|b| serde_json::to_value(b).unwrap())
            .collect();
        if let Some(n) = exp.get("budget_count") {
            let n = n.as_u64().ok_or("expect.budget_count must be a number")? as usize;
            if actual.len() != n {
                errs.push(format!("budget_count: expected {n}, got {}", actual.len()));
            }
        }
        if let Some(list) = exp.get("balances") {
            let list = list.as_array().ok_or("expect.balances must be a list")?;
            for eb in list {
                let key = balance_key(eb).ok_or("each expected balance names scope and unit")?;
                match actual
                    .iter()
                    .find(|a| balance_key(a).as_ref() == Some(&key))
                {
                    Some(ab) => {
                        partial_match(eb, ab, &format!("balances[{} {}]", key.0, key.1), &mut errs)
                    }
                    None => errs.push(format!("balances: no budget {} {}", key.0, key.1)),
                }
            }
        }
    }

    if let Some(map) = exp.get("reservations") {
        let map = map
            .as_object()
            .ok_or("expect.reservations must be an object")?;
        for (name, ev) in map {
            let id = run
                .names
                .get(name)
                .ok_or_else(|| format!("expect.reservations: no reservation bound to {name:?}"))?;
            match run.auth.reservation(id) {
                Ok(r) => partial_match(
                    ev,
                    &serde_json::to_value(&r).unwrap(),
                    &format!("reservations.{name}"),
                    &mut errs,
                ),
                Err(e) => errs.push(format!("reservation {name}: {e}")),
            }
        }
    }
    Ok(errs)
}

/// `remaining = allocated - spent - reserved - debt` on every budget, nothing negative.
fn check_invariant(run: &Run) -> Vec<String> {
    let mut errs = Vec::new();
    match run.auth.balances(None) {
        Err(e) => errs.push(format!("balances unreadable: {e}")),
        Ok(list) => {
            for b in list {
                let want =
                    b.allocated as i128 - b.spent as i128 - b.reserved as i128 - b.debt as i128;
                if b.remaining as i128 != want || b.spent < 0 || b.reserved < 0 || b.debt < 0 {
                    errs.push(format!("invariant broken on {} {}: {b:?}", b.scope, b.unit));
                }
            }
        }
    }
    errs
}

type LedgerFactory = fn(&Path) -> Box<dyn Ledger>;

fn memory_ledger(_: &Path) -> Box<dyn Ledger> {
    Box::new(MemoryLedger::new())
}

fn sqlite_ledger(dir: &Path) -> Box<dyn Ledger> {
    Box::new(SqliteLedger::open(dir.join("ledger.db")).expect("sqlite ledger opens"))
}

/// Runs the first `upto` steps (all when `None`) of a scenario. `Err` names the failing step.
fn run_scenario(
    scenario: &Scenario,
    ledger: LedgerFactory,
    upto: Option<usize>,
) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut run = Run::start(scenario, ledger(dir.path()))?;
    let n = upto
        .unwrap_or(scenario.steps.len())
        .min(scenario.steps.len());
    for (i, step) in scenario.steps[..n].iter().enumerate() {
        let label = format!(
            "step {} ({}{}{})",
            i + 1,
            step.op,
            step.reservation
                .as_deref()
                .map(|r| format!(" {r}"))
                .unwrap_or_default(),
            step.note
                .as_deref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        );
        let out = run
            .perform(step)
            .map_err(|e| format!("{label}: malformed step: {e}"))?;
        let mut errs =
            check(&run, step, &out).map_err(|e| format!("{label}: malformed expect: {e}"))?;
        errs.extend(check_invariant(&run));
        if !errs.is_empty() {
            return Err(format!("{label}:\n    {}", errs.join("\n    ")));
        }
    }
    let report = run.auth.verify().map_err(|e| format!("verify: {e}"))?;
    if !report.ok {
        return Err(format!("audit chain does not verify: {report:?}"));
    }
    Ok(())
}

fn run_all(ledger: LedgerFactory, label: &str) {
    let fixtures = load_fixtures();
    assert!(
        fixtures.len() >= MIN_SCENARIOS,
        "only {} scenarios in {}",
        fixtures.len(),
        fixtures_dir().display()
    );
    let mut failures = Vec::new();
    for f in &fixtures {
        if let Err(e) = run_scenario(&f.scenario, ledger, None) {
            failures.push(format!("[{label}] {} ({}) {e}", f.file, f.scenario.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

#[test]
fn golden_scenarios_on_memory_ledger() {
    run_all(memory_ledger, "memory");
}

#[test]
fn golden_scenarios_on_sqlite_ledger() {
    run_all(sqlite_ledger, "sqlite");
}

/// Collects every string found under `key` anywhere in `v`.
fn strings_under(v: &Value, key: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == key
                    && let Some(s) = x.as_str()
                {
                    out.insert(s.to_string());
                }
                strings_under(x, key, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| strings_under(x, key, out)),
        _ => {}
    }
}

/// The fixtures cover the whole contract: enough scenarios, names matching files, every op,
/// every error and reason code the core produces today, every overage policy.
#[test]
fn fixtures_cover_the_contract() {
    let fixtures = load_fixtures();
    assert!(
        fixtures.len() >= MIN_SCENARIOS,
        "need at least {MIN_SCENARIOS} scenarios, found {}",
        fixtures.len()
    );
    let mut names = BTreeSet::new();
    let mut errors = BTreeSet::new();
    let mut reasons = BTreeSet::new();
    let mut ops = BTreeSet::new();
    let mut overage = BTreeSet::new();
    for f in &fixtures {
        let s = &f.scenario;
        let stem = f.file.trim_end_matches(".json");
        let (num, rest) = stem.split_once('_').expect("files are NNN_name.json");
        assert!(
            num.len() == 3 && num.bytes().all(|b| b.is_ascii_digit()),
            "{}: file names start with three digits",
            f.file
        );
        assert_eq!(rest, s.name, "{}: name must match the file name", f.file);
        assert!(names.insert(s.name.clone()), "duplicate name {}", s.name);
        assert!(
            !s.description.trim().is_empty(),
            "{}: no description",
            f.file
        );
        assert!(!s.steps.is_empty(), "{}: no steps", f.file);
        for step in &s.steps {
            assert!(
                OPS.contains(&step.op.as_str()),
                "{}: op {}",
                f.file,
                step.op
            );
            ops.insert(step.op.clone());
            if let Some(Value::String(e)) = step.expect.get("error") {
                errors.insert(e.clone());
            }
            if let Some(Value::String(r)) = step.expect.get("reason_code") {
                reasons.insert(r.clone());
            }
        }
        strings_under(&f.raw, "overage_policy", &mut overage);
    }
    let missing = |want: &[&str], have: &BTreeSet<String>| -> Vec<String> {
        want.iter()
            .filter(|w| !have.contains(**w))
            .map(|w| w.to_string())
            .collect()
    };
    let want_errors = [
        "INVALID_REQUEST",
        "NOT_FOUND",
        "RESERVATION_FINALIZED",
        "RESERVATION_EXPIRED",
        "IDEMPOTENCY_MISMATCH",
        "MAX_EXTENSIONS_EXCEEDED",
        "UNIT_MISMATCH",
        "BUDGET_EXCEEDED",
        "OVERDRAFT_LIMIT_EXCEEDED",
        "BUDGET_FROZEN",
        "BUDGET_CLOSED",
        "DEBT_OUTSTANDING",
        "BUDGET_NOT_FOUND",
        "TIER_NOT_PERMITTED",
        "TOOL_UNKNOWN",
        "AMOUNT_OVERFLOW",
        "APPROVAL_REQUIRED",
        "APPROVAL_INVALID",
    ];
    let want_reasons = [
        "BUDGET_EXCEEDED",
        "BUDGET_NOT_FOUND",
        "BUDGET_FROZEN",
        "BUDGET_CLOSED",
        "OVERDRAFT_LIMIT_EXCEEDED",
        "DEBT_OUTSTANDING",
        "TIER_NOT_PERMITTED",
        "TOOL_UNKNOWN",
        "APPROVAL_REQUIRED",
        "APPROVAL_INVALID",
    ];
    assert_eq!(
        missing(&want_errors, &errors),
        Vec::<String>::new(),
        "error codes never expected"
    );
    assert_eq!(
        missing(&want_reasons, &reasons),
        Vec::<String>::new(),
        "reason codes never expected"
    );
    assert_eq!(missing(&OPS, &ops), Vec::<String>::new(), "ops never used");
    assert_eq!(
        missing(
            &["REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"],
            &overage
        ),
        Vec::<String>::new(),
        "overage policies never used"
    );
}

/// Every leaf of every expectation is live: changing any one of them makes its scenario fail
/// (so a key the runner silently ignored, or a comparison that cannot fail, is caught).
#[test]
fn every_expectation_can_fail() {
    fn mutate_leaves(v: &Value, path: Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let mut p = path.clone();
                    p.push(k.clone());
                    mutate_leaves(x, p, out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    let mut p = path.clone();
                    p.push(i.to_string());
                    mutate_leaves(x, p, out);
                }
            }
            Value::Number(n) => {
                let m = match n.as_i64() {
                    Some(i64::MAX) => json!(i64::MAX - 1),
                    Some(i) => json!(i + 1),
                    None => json!(n.as_u64().unwrap_or(0).wrapping_sub(1)),
                };
                out.push((path, m));
            }
            Value::String(s) => out.push((path, json!(format!("{s}_changed")))),
            Value::Bool(b) => out.push((path, json!(!b))),
            Value::Null => out.push((path, json!("not null"))),
        }
    }
    fn set(v: &mut Value, path: &[String], new: Value) {
        let mut cur = v;
        for p in path {
            cur = match cur {
                Value::Object(m) => m.get_mut(p).unwrap(),
                Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
                _ => unreachable!(),
            };
        }
        *cur = new;
    }

    let mut checked = 0usize;
    let mut survivors = Vec::new();
    for f in load_fixtures() {
        for (i, step) in f.scenario.steps.iter().enumerate() {
            let mut leaves = Vec::new();
            mutate_leaves(&Value::Object(step.expect.clone()), Vec::new(), &mut leaves);
            for (path, new) in leaves {
                let mut scenario = f.scenario.clone();
                let mut expect = Value::Object(step.expect.clone());
                set(&mut expect, &path, new.clone());
                scenario.steps[i].expect = expect.as_object().unwrap().clone();
                checked += 1;
                if run_scenario(&scenario, memory_ledger, Some(i + 1)).is_ok() {
                    survivors.push(format!(
                        "{} step {}: expect.{} = {new} still passes",
                        f.file,
                        i + 1,
                        path.join(".")
                    ));
                }
            }
        }
    }
    assert!(checked > 0, "no expectations found");
    assert!(
        survivors.is_empty(),
        "{} of {checked} mutated expectations were not detected:\n{}",
        survivors.len(),
        survivors.join("\n")
    );
}

#[test]
fn partial_match_rules() {
    let mut errs = Vec::new();
    let actual = json!({"a": 1, "b": [1, 2], "c": {"d": "x", "e": true}});
    partial_match(&json!({"a": 1, "c": {"d": "x"}}), &actual, "r", &mut errs);
    assert!(errs.is_empty(), "{errs:?}");
    partial_match(&json!({"z": null, "y": []}), &actual, "r", &mut errs);
    assert!(errs.is_empty(), "absent keys match null and []: {errs:?}");
    partial_match(&json!({"b": [1]}), &actual, "r", &mut errs);
    assert_eq!(errs.len(), 1, "arrays must have the same length");
    errs.clear();
    partial_match(&json!({"a": 2}), &actual, "r", &mut errs);
    assert_eq!(errs, vec!["r.a: expected 2, got 1".to_string()]);
    errs.clear();
    partial_match(&json!({"z": 0}), &actual, "r", &mut errs);
    assert_eq!(errs.len(), 1, "an absent key does not match 0");
}
