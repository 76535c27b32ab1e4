//! Caps counters (`[[caps]]` rules: steps counted and cooldown while a budget is low) live in
//! the ledger's key-value store. Whoever can write the ledger could reset a counter to give an
//! agent its steps back, or plant one; the chain is intact either way. Each reserve record now
//! carries the counters it advanced, and `verify` must report a counter that is not what the
//! chain says, also when a later legitimate reservation counted on from the edited value.
//! Memory ledger and SQLite file, and PostgreSQL with the `pg-tests` feature (a server at
//! `CYCLES_PG_URL`, as scripts/pg-test.sh starts).

#[cfg(feature = "pg-tests")]
mod postgres_support;

use std::sync::Arc;

#[path = "support/ledgers.rs"]
mod ledgers;
#[path = "support/state_check.rs"]
mod state_check;

use cycles_core::*;
use ledgers::ledgers;
use serde_json::json;
use state_check::{assert_clean, assert_mismatch};

const POLICY: &str = r#"
[[tools]]
name = "write_file"
tier = 1

[[budgets]]
scope = "tenant:acme/agent:bot"
unit = "RISK_POINTS"
allocated = 100

[[caps]]
id = "low"
scope = "tenant:acme/agent:bot"
remaining_below = 1000
max_steps_remaining = 5
cooldown_ms = 1000
"#;

const KEY: &str = "low@tenant:acme/agent:bot";
const ITEM: &str = "caps low@tenant:acme/agent:bot";

fn bot() -> Subject {
    Subject::new().tenant("acme").agent("bot")
}

fn authority(ledger: Arc<dyn Ledger>, clock: &ManualClock) -> Authority {
    Authority::builder()
        .policy(Policy::from_toml_str(POLICY, "caps.toml").unwrap())
        .shared_ledger(ledger)
        .clock(clock.clone())
        .build()
        .unwrap()
}

/// A reservation under the caps, committed; the clock then passes the cooldown.
fn step(auth: &Authority, clock: &ManualClock) -> Reservation {
    let r = auth
        .reserve(&ReserveRequest::new(
            bot(),
            ToolCall::new("write_file", json!({"path": "x"})),
        ))
        .unwrap();
    assert_eq!(r.decision.decision, DecisionKind::AllowWithCaps);
    auth.commit(&r.reservation_id, &CommitRequest::default())
        .unwrap();
    clock.advance(2_000);
    r
}

fn counter(ledger: &Arc<dyn Ledger>) -> Option<serde_json::Value> {
    let mut out = None;
    ledger
        .read(&mut |txn| {
            out = txn.kv_get("caps", KEY)?;
            Ok(())
        })
        .unwrap();
    out
}

fn put_counter(ledger: &Arc<dyn Ledger>, value: serde_json::Value) {
    ledger
        .write(&mut |txn| txn.kv_put("caps", KEY, &value))
        .unwrap();
}

#[test]
fn counted_steps_and_a_new_allocation_verify_clean_and_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    for under in ledgers(&dir, "caps_clean") {
        let clock = ManualClock::new(10_000);
        let auth = authority(under.ledger.clone(), &clock);
        step(&auth, &clock);
        step(&auth, &clock);
        assert_clean(&auth, "two steps");
        // A new allocation restarts the count.
        auth.set_budget(&BudgetSpec::new(
            "tenant:acme/agent:bot",
            Unit::RiskPoints,
            200,
        ))
        .unwrap();
        step(&auth, &clock);
        assert_clean(&auth, "after a new allocation");
        let reserves: Vec<AuditRecord> = auth
            .audit(&AuditQuery {
                kinds: vec![AuditKind::Reserve],
                ..AuditQuery::default()
            })
            .unwrap();
        let steps: Vec<(i64, i64)> = reserves
            .iter()
            .map(|r| {
                assert_eq!(r.caps.len(), 1, "{r:?}");
                assert_eq!(r.caps[0].key, KEY);
                (r.caps[0].steps, r.caps[0].allocated)
            })
            .collect();
        assert_eq!(steps, [(1, 100), (2, 100), (1, 200)]);
        // The cooldown runs from each reservation's time.
        assert_eq!(
            reserves[2].caps[0].cooldown_until_ms,
            reserves[2].time_ms + 1_000
        );
        // Decisions without caps carry no counters.
        let decides = auth
            .audit(&AuditQuery {
                kinds: vec![AuditKind::Decide, AuditKind::Commit],
                ..AuditQuery::default()
            })
            .unwrap();
        assert!(decides.iter().all(|r| r.caps.is_empty()));
    }
}

#[test]
fn a_reset_counter_is_reported_and_stays_reported_after_the_next_step() {
    let dir = tempfile::tempdir().unwrap();
    for under in ledgers(&dir, "caps_reset") {
        let clock = ManualClock::new(10_000);
        let auth = authority(under.ledger.clone(), &clock);
        for _ in 0..3 {
            step(&auth, &clock);
        }
        assert_clean(&auth, "three steps");
        let mut edited = counter(&under.ledger).expect("a counter");
        assert_eq!(edited["steps"], 3);
        edited["steps"] = json!(0);
        put_counter(&under.ledger, edited);
        assert_mismatch(&auth, ITEM, "record", "reset to 0");
        // The agent takes the steps it was given back: the next reservation counts 1 where
        // the chain says 4, so the edit is reported between the two records.
        step(&auth, &clock);
        assert_mismatch(&auth, ITEM, "makes 4", "laundered by the next step");
    }
}

#[test]
fn a_shortened_cooldown_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    for under in ledgers(&dir, "caps_cooldown") {
        let clock = ManualClock::new(10_000);
        let auth = authority(under.ledger.clone(), &clock);
        step(&auth, &clock);
        let mut edited = counter(&under.ledger).unwrap();
        edited["cooldown_until_ms"] = json!(0);
        put_counter(&under.ledger, edited);
        assert_mismatch(&auth, ITEM, "cooldown until 0", "cooldown cleared");
    }
}

#[test]
fn a_planted_counter_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    for under in ledgers(&dir, "caps_planted") {
        let clock = ManualClock::new(10_000);
        let auth = authority(under.ledger.clone(), &clock);
        step(&auth, &clock);
        under
            .ledger
            .write(&mut |txn| {
                txn.kv_put(
                    "caps",
                    "other@tenant:acme",
                    &json!({"steps": 9, "allocated": 1, "cooldown_until_ms": 0}),
                )
            })
            .unwrap();
        assert_mismatch(
            &auth,
            "caps other@tenant:acme",
            "no record counted it",
            "planted",
        );
    }
}

#[test]
fn a_deleted_counter_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    for under in ledgers(&dir, "caps_deleted") {
        let Some(sqlite) = &under.sqlite else {
            continue;
        };
        let clock = ManualClock::new(10_000);
        let auth = authority(under.ledger.clone(), &clock);
        step(&auth, &clock);
        step(&auth, &clock);
        sqlite
            .execute_raw("DELETE FROM kv WHERE ns = 'caps'")
            .unwrap();
        assert!(counter(&under.ledger).is_none());
        assert_mismatch(&auth, ITEM, "no longer holds it", "deleted");
    }
}
