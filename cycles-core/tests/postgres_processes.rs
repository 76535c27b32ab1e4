//! Eight OS processes, each with its own PostgresLedger (its own pool, as separate hosts
//! would have), hammer one hot tenant budget and their own agent budgets. Afterwards: no
//! overspend on any scope, every result of every process accounted for in the budgets and
//! in the audit trail, and the chain verifies as one total order.
#![cfg(feature = "postgres")]

mod postgres_support;

use std::collections::BTreeMap;
use std::process::Command;

use cycles_core::*;
use postgres_support::Schema;
use serde_json::{Value, json};

const PROCESSES: usize = 8;
const OPS_PER_PROCESS: usize = 150;
const TENANT_POINTS: i64 = 700;
const AGENT_POINTS: i64 = 120;

fn policy() -> Policy {
    let mut p = Policy::default()
        .register("write_file", Tier::T1)
        .budget(BudgetSpec::new(
            "tenant:hot",
            Unit::RiskPoints,
            TENANT_POINTS,
        ));
    for i in 0..PROCESSES {
        p = p.budget(BudgetSpec::new(
            format!("tenant:hot/agent:p{i}"),
            Unit::RiskPoints,
            AGENT_POINTS,
        ));
    }
    p
}

/// The worker, run in a child process by `hot_budget_across_processes`. It is `#[ignore]`d so
/// that a plain test run does not count it as a passing test.
#[test]
#[ignore = "child process of hot_budget_across_processes"]
fn child_worker() {
    let schema = std::env::var("CYCLES_PG_CHILD_SCHEMA").expect("run by the parent test");
    let index: usize = std::env::var("CYCLES_PG_CHILD_INDEX")
        .unwrap()
        .parse()
        .unwrap();
    let ledger = PostgresLedger::connect_with(
        &postgres_support::url(),
        PostgresOptions {
            pool_size: 2,
            ..postgres_support::options(&schema)
        },
    )
    .unwrap();
    let auth = Authority::builder()
        .policy(policy())
        .ledger(ledger)
        .build()
        .unwrap();
    let subject = Subject::new().tenant("hot").agent(format!("p{index}"));
    let mut committed = Vec::new();
    let mut denied: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors = Vec::new();
    for op in 0..OPS_PER_PROCESS {
        let mut req = ReserveRequest::new(
            subject.clone(),
            ToolCall::new("write_file", json!({"op": op})),
        );
        req.idempotency_key = Some(format!("p{index}-op{op}"));
        match auth.reserve(&req) {
            Ok(r) => match auth.commit(&r.reservation_id, &CommitRequest::default()) {
                Ok(c) if c.charged == vec![Amount::new(Unit::RiskPoints, 1)] => {
                    committed.push(r.reservation_id)
                }
                Ok(c) => errors.push(format!("op {op}: commit charged {:?}", c.charged)),
                Err(e) => errors.push(format!("op {op}: commit: {e}")),
            },
            Err(e) if e.code() == "BUDGET_EXCEEDED" => {
                let scope = e
                    .decision()
                    .and_then(|d| d.scope.clone())
                    .unwrap_or_default();
                *denied.entry(scope).or_default() += 1;
            }
            Err(e) => errors.push(format!("op {op}: reserve: {e}")),
        }
    }
    let summary = json!({"committed": committed, "denied": denied, "errors": errors});
    println!("CHILD-SUMMARY {summary}");
}

#[test]
fn hot_budget_across_processes() {
    let schema = Schema::new("procs");
    // Create the schema and budgets once, so the children start on an existing ledger.
    let auth = Authority::builder()
        .policy(policy())
        .ledger(schema.ledger())
        .build()
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            Command::new(&exe)
                .args(["child_worker", "--exact", "--ignored", "--nocapture"])
                .args(["--test-threads", "1"])
                .env("CYCLES_PG_CHILD_SCHEMA", &schema.0)
                .env("CYCLES_PG_CHILD_INDEX", i.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut all_committed = Vec::new();
    let mut per_agent_allowed = Vec::new();
    let (mut denied_tenant, mut denied_agent) = (0u64, 0u64);
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child {i} failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("CHILD-SUMMARY ").map(|(_, json)| json))
            .unwrap_or_else(|| panic!("child {i} printed no summary: {stdout}"));
        let s: Value = serde_json::from_str(line).unwrap();
        assert_eq!(s["errors"], json!([]), "child {i}");
        let committed: Vec<String> = serde_json::from_value(s["committed"].clone()).unwrap();
        let mut denied = 0;
        for (scope, n) in s["denied"].as_object().unwrap() {
            let n = n.as_u64().unwrap();
            denied += n;
            match scope.as_str() {
                "tenant:hot" => denied_tenant += n,
                sc if sc == format!("tenant:hot/agent:p{i}") => denied_agent += n,
                other => panic!("child {i} denied on {other:?}"),
            }
        }
        // Every operation is either committed or denied.
        assert_eq!(
            committed.len() as u64 + denied,
            OPS_PER_PROCESS as u64,
            "child {i}"
        );
        assert!(
            committed.len() as i64 <= AGENT_POINTS,
            "child {i} overspent its agent"
        );
        per_agent_allowed.push(committed.len() as i64);
        all_committed.extend(committed);
    }
    let total = (PROCESSES * OPS_PER_PROCESS) as u64;
    // The agents together could take 8 x 120 = 960 > 700, so the tenant runs out: exactly
    // its allocation gets through, never more.
    assert_eq!(all_committed.len() as i64, TENANT_POINTS);
    assert_eq!(denied_tenant + denied_agent + TENANT_POINTS as u64, total);
    all_committed.sort();
    all_committed.dedup();
    assert_eq!(
        all_committed.len() as i64,
        TENANT_POINTS,
        "reservation ids are unique"
    );

    let balances = auth.balances(None).unwrap();
    for b in &balances {
        assert_eq!(b.reserved, 0, "{b:?}");
        assert!(b.spent <= b.allocated, "overspent: {b:?}");
        assert_eq!(b.remaining, b.allocated - b.spent, "{b:?}");
    }
    let tenant = balances.iter().find(|b| b.scope == "tenant:hot").unwrap();
    assert_eq!(tenant.spent, TENANT_POINTS);
    for (i, allowed) in per_agent_allowed.iter().enumerate() {
        let agent = balances
            .iter()
            .find(|b| b.scope == format!("tenant:hot/agent:p{i}"))
            .unwrap();
        assert_eq!(agent.spent, *allowed, "agent p{i}");
    }
    for id in &all_committed {
        assert_eq!(
            auth.reservation(id).unwrap().status,
            ReservationStatus::Committed
        );
    }

    let v = auth.verify().unwrap();
    assert!(v.ok, "{v:?}");
    let records = auth.audit(&AuditQuery::default()).unwrap();
    let kinds = records.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.kind.as_str()).or_insert(0u64) += 1;
        m
    });
    let budgets = 1 + PROCESSES as u64;
    assert_eq!(kinds.get("budget_set"), Some(&budgets), "{kinds:?}");
    assert_eq!(kinds.get("reserve"), Some(&(TENANT_POINTS as u64)));
    assert_eq!(kinds.get("commit"), Some(&(TENANT_POINTS as u64)));
    assert_eq!(kinds.get("denial"), Some(&(total - TENANT_POINTS as u64)));
    assert_eq!(v.records, budgets + total + TENANT_POINTS as u64);
    // One total order: consecutive sequence numbers, each linked to the one before.
    for w in records.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
}
