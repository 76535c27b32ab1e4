//! PostgresLedger under hostile conditions, against a real server (scripts/pg-test.sh):
//! a role without write rights, tampering through SQL (chain head moved, audit rows deleted,
//! budget and reservation rows edited: verify reports them), sessions ending while they hold
//! the chain head, tiny server timeouts, and two processes with different policies on one
//! database.
#![cfg(feature = "postgres")]

mod postgres_support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cycles_core::*;
use postgres_support::{Schema, append, url};
use serde_json::json;

fn policy(acme: i64) -> Policy {
    Policy::default()
        .register("write_file", Tier::T1)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, acme))
}

fn auth_with(ledger: PostgresLedger, acme: i64) -> Authority {
    Authority::builder()
        .policy(policy(acme))
        .ledger(ledger)
        .clock(ManualClock::new(1_000))
        .build()
        .unwrap()
}

fn bot() -> Subject {
    Subject::new().tenant("acme").agent("bot")
}

fn reserve_req() -> ReserveRequest {
    ReserveRequest::new(bot(), ToolCall::new("write_file", json!({"path": "a.txt"})))
}

fn decide_req() -> DecideRequest {
    DecideRequest::new(bot(), ToolCall::new("write_file", json!({"path": "a.txt"})))
}

fn count(c: &mut postgres::Client, sql: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {sql}"), &[])
        .unwrap()
        .get(0)
}

fn url_as(user: &str, password: &str) -> String {
    let u = url();
    let (scheme, rest) = u.split_once("://").expect("a postgres:// URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}:{password}@{host}")
}

/// Three reserve+commit pairs: seven audit records (budget set, then 2 per pair).
fn three_calls(auth: &Authority) {
    for _ in 0..3 {
        let r = auth.reserve(&reserve_req()).unwrap();
        auth.commit(&r.reservation_id, &CommitRequest::default())
            .unwrap();
    }
}

#[test]
fn a_role_that_can_only_read_gets_deny_and_nothing_is_recorded() {
    let schema = Schema::new("ro");
    let role = format!("cycles_ro_{}", std::process::id());
    let mut admin = schema.admin();
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD 'pw'"
        ))
        .unwrap();
    drop(auth_with(schema.ledger(), 100));
    admin
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA {s} TO {role};
             GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {role};",
            s = schema.0
        ))
        .unwrap();
    let before = count(&mut admin, "cycles_audit");
    let opts = || {
        PostgresOptions {
            connect_timeout: Duration::from_secs(2),
            ..PostgresOptions::default()
        }
        .schema(&schema.0)
    };
    // Opening works (nothing to create); an authority whose policy has budgets to create
    // fails to start with a typed error.
    let ledger = PostgresLedger::connect_with(&url_as(&role, "pw"), opts()).unwrap();
    let err = Authority::builder()
        .policy(policy(100))
        .ledger(ledger)
        .build()
        .unwrap_err();
    assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{err}");
    assert!(err.to_string().contains("permission denied"), "{err}");
    // Without budgets to create it starts, and every write is refused by the server.
    let ledger = PostgresLedger::connect_with(&url_as(&role, "pw"), opts()).unwrap();
    let auth = Authority::builder()
        .policy(Policy::default().register("write_file", Tier::T1))
        .ledger(ledger)
        .build()
        .unwrap();
    let d = auth.decide(&decide_req()).unwrap();
    assert_eq!(d.decision, DecisionKind::Deny);
    assert_eq!(d.reason_code, Some(ReasonCode::LedgerUnavailable));
    let err = auth.reserve(&reserve_req()).unwrap_err();
    assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{err}");
    assert_eq!(err.decision().unwrap().decision, DecisionKind::Deny);
    let msg = err.decision().unwrap().message.clone().unwrap_or_default();
    assert!(msg.contains("permission denied"), "{msg}");
    // Reads still work and show that nothing was held or recorded.
    assert_eq!(auth.balances(None).unwrap()[0].reserved, 0);
    assert_eq!(count(&mut admin, "cycles_audit"), before);
    assert_eq!(count(&mut admin, "cycles_reservations"), 0);
    drop(auth);
    admin
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .unwrap();
}

#[test]
fn a_role_that_cannot_append_audit_records_gets_deny_and_nothing_is_recorded() {
    let schema = Schema::new("noaudit");
    let role = format!("cycles_na_{}", std::process::id());
    let mut admin = schema.admin();
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD 'pw'"
        ))
        .unwrap();
    drop(auth_with(schema.ledger(), 100));
    // Everything except INSERT on the audit table: the budget writes would go through.
    admin
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA {s} TO {role};
             GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {s} TO {role};
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO {role};
             REVOKE INSERT ON {s}.cycles_audit FROM {role};",
            s = schema.0
        ))
        .unwrap();
    let ledger =
        PostgresLedger::connect_with(&url_as(&role, "pw"), postgres_support::options(&schema.0))
            .unwrap();
    let auth = auth_with(ledger, 100);
    let err = auth.reserve(&reserve_req()).unwrap_err();
    assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{err}");
    let d = auth.decide(&decide_req()).unwrap();
    assert_eq!(d.decision, DecisionKind::Deny);
    assert_eq!(count(&mut admin, "cycles_reservations"), 0);
    assert_eq!(count(&mut admin, "cycles_audit"), 1);
    let reserved: i64 = admin
        .query_one("SELECT reserved FROM cycles_budgets", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        reserved, 0,
        "the budget write was rolled back with the audit"
    );
    drop(auth);
    admin
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .unwrap();
}

/// The chain head and the audit table must agree before anything is appended: a head moved
/// forward (over a gap) or back (under existing records) is LEDGER_CORRUPT, and the gate denies.
#[test]
fn a_moved_chain_head_is_corrupt_on_the_next_write() {
    for (tag, tamper) in [
        (
            "fwd",
            "UPDATE cycles_audit_head SET seq = seq + 1, hash = 'x' WHERE id = 1",
        ),
        (
            "back",
            "UPDATE cycles_audit_head SET seq = 6, hash = (SELECT hash FROM cycles_audit WHERE seq = 6) WHERE id = 1",
        ),
        ("lastgone", "DELETE FROM cycles_audit WHERE seq = 7"),
        (
            "hash",
            "UPDATE cycles_audit_head SET hash = 'forged' WHERE id = 1",
        ),
    ] {
        let schema = Schema::new(&format!("head{tag}"));
        let auth = auth_with(schema.ledger(), 100);
        three_calls(&auth);
        let mut admin = schema.admin();
        assert_eq!(count(&mut admin, "cycles_audit"), 7);
        admin.batch_execute(tamper).unwrap();
        // A fresh process starts (its budgets exist: it writes nothing) and denies every call:
        // the check runs in the statement that writes, under the head lock.
        let auth = Authority::builder()
            .policy(Policy::default().register("write_file", Tier::T1))
            .ledger(schema.ledger())
            .build()
            .unwrap();
        let audit_before = count(&mut admin, "cycles_audit");
        let err = auth.reserve(&reserve_req()).unwrap_err();
        assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{tag}: {err}");
        let msg = err.decision().unwrap().message.clone().unwrap_or_default();
        assert!(msg.contains("audit chain head"), "{tag}: {msg}");
        let d = auth.decide(&decide_req()).unwrap();
        assert_eq!(d.decision, DecisionKind::Deny, "{tag}");
        // Nothing was appended on top of the inconsistent head.
        assert_eq!(count(&mut admin, "cycles_audit"), audit_before, "{tag}");
        assert_eq!(count(&mut admin, "cycles_reservations"), 3, "{tag}");
        // Below the gate too: the ledger itself says LEDGER_CORRUPT.
        let raw = schema.ledger();
        let err = raw
            .write(&mut |txn| append(txn, AuditRecord::new(AuditKind::Event, 1)))
            .unwrap_err();
        assert_eq!(err.code(), "LEDGER_CORRUPT", "{tag}: {err}");
    }
}

#[test]
fn deleted_audit_records_are_reported_by_verify_and_anchors() {
    let schema = Schema::new("auddel");
    let auth = auth_with(schema.ledger(), 100);
    three_calls(&auth);
    let anchor = auth.audit_anchor().unwrap().expect("a head");
    assert_eq!(anchor.seq, 7);
    let mut admin = schema.admin();
    // A record in the middle: the chain no longer links.
    admin
        .batch_execute("DELETE FROM cycles_audit WHERE seq = 3")
        .unwrap();
    let v = auth.verify().unwrap();
    assert!(!v.ok);
    assert_eq!(v.first_broken.as_ref().map(|b| b.seq), Some(3), "{v:?}");
    assert!(!auth.verify_with_anchors(&[anchor]).unwrap().ok);

    // The last records removed, with the head moved back to match.
    let schema = Schema::new("audtail");
    let auth = auth_with(schema.ledger(), 100);
    three_calls(&auth);
    let anchor = auth.audit_anchor().unwrap().unwrap();
    let mut admin = schema.admin();
    admin
        .batch_execute(
            "DELETE FROM cycles_audit WHERE seq >= 6;
             UPDATE cycles_audit_head SET seq = 5,
               hash = (SELECT hash FROM cycles_audit WHERE seq = 5) WHERE id = 1",
        )
        .unwrap();
    // The chain alone is a consistent prefix, but the budget still holds what the removed
    // commit charged: the state check reports it, and the anchor shows the removal itself.
    let v = auth.verify().unwrap();
    assert!(!v.ok && v.first_broken.is_none(), "{v:?}");
    assert_eq!(v.records, 5);
    assert!(
        v.state_mismatches
            .iter()
            .any(|m| m.item == "budget tenant:acme RISK_POINTS" && m.reason.contains("record 5")),
        "{v:?}"
    );
    let v = auth.verify_with_anchors(&[anchor]).unwrap();
    assert!(!v.ok, "{v:?}");
    assert_eq!(v.first_broken.as_ref().map(|b| b.seq), Some(6), "{v:?}");
}

#[test]
fn edited_budget_and_deleted_reservation_rows() {
    let schema = Schema::new("rows");
    let auth = auth_with(schema.ledger(), 3);
    three_calls(&auth);
    // The budget is spent: the gate denies.
    let err = auth.reserve(&reserve_req()).unwrap_err();
    assert_eq!(err.code(), "BUDGET_EXCEEDED", "{err}");
    let mut admin = schema.admin();
    // Someone with table access resets the spending. The ledger follows the table (the gate
    // allows again), but verify compares the budgets with the post-states the records carry
    // and reports the edit, though every record is intact.
    admin
        .batch_execute("UPDATE cycles_budgets SET spent = 0")
        .unwrap();
    let fresh = auth_with(schema.ledger(), 3);
    let report = fresh.verify().unwrap();
    assert!(!report.ok && report.first_broken.is_none(), "{report:?}");
    assert_eq!(report.state_mismatches.len(), 1, "{report:?}");
    assert_eq!(
        report.state_mismatches[0].item,
        "budget tenant:acme RISK_POINTS"
    );
    assert!(
        report.state_mismatches[0].reason.contains("spent 0"),
        "{report:?}"
    );
    let r = fresh.reserve(&reserve_req()).unwrap();
    // An active reservation's row deleted: committing it is a typed error and changes nothing;
    // its hold stays on the budget (what the table says), and verify names the reservation.
    admin
        .batch_execute("DELETE FROM cycles_reservations WHERE status = 'ACTIVE'")
        .unwrap();
    let audit_before = count(&mut admin, "cycles_audit");
    let err = fresh
        .commit(&r.reservation_id, &CommitRequest::default())
        .unwrap_err();
    assert_eq!(err.code(), "NOT_FOUND", "{err}");
    assert_eq!(count(&mut admin, "cycles_audit"), audit_before);
    let reserved: i64 = admin
        .query_one("SELECT reserved FROM cycles_budgets", &[])
        .unwrap()
        .get(0);
    assert_eq!(reserved, 1);
    let report = fresh.verify().unwrap();
    assert!(
        report
            .state_mismatches
            .iter()
            .any(|m| m.item == format!("reservation {}", r.reservation_id)
                && m.reason.contains("not ACTIVE in the ledger")),
        "{report:?}"
    );
}

#[test]
fn a_session_ended_while_holding_the_chain_head_is_applied_once_and_releases_it() {
    let schema = Schema::new("idle");
    let opts = PostgresOptions {
        idle_in_transaction_timeout: Duration::from_millis(100),
        application_name: "cycles_idle".into(),
        group_commit: false,
        ..postgres_support::options(&schema.0)
    };
    let ledger = PostgresLedger::connect_with(&url(), opts).unwrap();
    ledger
        .write(&mut |txn| txn.put_budget(&Budget::new("tenant:x", Unit::Tokens, 10)))
        .unwrap();
    // The first attempt stalls holding the head past the server's idle-in-transaction
    // timeout: the server ends that session; the operation runs again and is applied once.
    let attempts = AtomicU32::new(0);
    ledger
        .write(&mut |txn| {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            let mut b = txn.budget("tenant:x", Unit::Tokens)?.unwrap();
            if n == 0 {
                std::thread::sleep(Duration::from_millis(400));
            }
            b.spent += 1;
            txn.put_budget(&b)?;
            append(txn, AuditRecord::new(AuditKind::Event, 1))
        })
        .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    // A stall on every attempt: a typed error, nothing applied, the head free afterwards.
    let err = ledger
        .write(&mut |txn| {
            let mut b = txn.budget("tenant:x", Unit::Tokens)?.unwrap();
            std::thread::sleep(Duration::from_millis(250));
            b.spent += 100;
            txn.put_budget(&b)?;
            append(txn, AuditRecord::new(AuditKind::Event, 1))
        })
        .unwrap_err();
    assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{err}");
    let mut admin = schema.admin();
    let spent: i64 = admin
        .query_one("SELECT spent FROM cycles_budgets", &[])
        .unwrap()
        .get(0);
    assert_eq!(spent, 1);
    assert_eq!(count(&mut admin, "cycles_audit"), 1);
    // The head is free: another session takes it at once.
    admin
        .batch_execute(
            "SET lock_timeout = '1s'; BEGIN;
             SELECT seq FROM cycles_audit_head WHERE id = 1 FOR UPDATE; COMMIT",
        )
        .unwrap();
}

#[test]
fn a_tiny_statement_timeout_fails_typed_and_applies_nothing() {
    let schema = Schema::new("stmt");
    drop(auth_with(schema.ledger(), 100));
    // Every statement of this process is cancelled while it sleeps in a trigger.
    let mut admin = schema.admin();
    admin
        .batch_execute(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END $$;
             CREATE TRIGGER slow BEFORE INSERT ON cycles_reservations
               FOR EACH ROW EXECUTE FUNCTION slow();",
        )
        .unwrap();
    let sep = if url().contains('?') { '&' } else { '?' };
    let u = format!("{}{sep}options=-c%20statement_timeout%3D50", url());
    let ledger = PostgresLedger::connect_with(&u, postgres_support::options(&schema.0)).unwrap();
    let auth = auth_with(ledger, 100);
    let err = auth.reserve(&reserve_req()).unwrap_err();
    assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{err}");
    let msg = err.decision().unwrap().message.clone().unwrap_or_default();
    assert!(msg.contains("statement timeout"), "{msg}");
    assert_eq!(count(&mut admin, "cycles_reservations"), 0);
    assert_eq!(count(&mut admin, "cycles_audit"), 1);
    let reserved: i64 = admin
        .query_one("SELECT reserved FROM cycles_budgets", &[])
        .unwrap()
        .get(0);
    assert_eq!(reserved, 0);
    // The head is not held, and the same process goes on once the trigger is gone.
    admin
        .batch_execute("DROP TRIGGER slow ON cycles_reservations")
        .unwrap();
    auth.reserve(&reserve_req()).unwrap();
    assert!(auth.verify().unwrap().ok);
}

/// Budgets are ledger state: the first process creates them from its policy; a later process
/// with another allocation for the same scope does not change them (docs/postgres.md).
#[test]
fn two_policies_on_one_database_the_first_budget_stays() {
    let schema = Schema::new("twopol");
    let a = auth_with(schema.ledger(), 2);
    let b = auth_with(schema.ledger(), 100);
    let bal = b.balances(Some("tenant:acme")).unwrap();
    assert_eq!(bal[0].allocated, 2);
    for auth in [&a, &b] {
        let r = auth.reserve(&reserve_req()).unwrap();
        auth.commit(&r.reservation_id, &CommitRequest::default())
            .unwrap();
    }
    // B's larger allocation does not apply: the shared budget is spent for both.
    for auth in [&a, &b] {
        let err = auth.reserve(&reserve_req()).unwrap_err();
        assert_eq!(err.code(), "BUDGET_EXCEEDED", "{err}");
    }
}
