//! `verify` checks the ledger's state against its chain: every record that changes budgets
//! carries their post-state, so a budget or reservation edited outside the state machine (a
//! row updated in SQL, a write through the raw `Ledger` API) is reported even though every
//! record is intact.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "support/state_check.rs"]
mod state_check;

use cycles_core::*;
use serde_json::json;

const SCOPE: &str = "tenant:acme/agent:bot";

fn authority(ledger: Arc<dyn Ledger>, clock: ManualClock) -> Authority {
    let policy = Policy::default()
        .register("read_file", Tier::T0)
        .register("write_file", Tier::T1)
        .register("deploy", Tier::T3)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 1_000))
        .budget(BudgetSpec::new(SCOPE, Unit::RiskPoints, 100));
    Authority::builder()
        .policy(policy)
        .shared_ledger(ledger)
        .clock(clock)
        .build()
        .unwrap()
}

fn bot() -> Subject {
    Subject::new().tenant("acme").agent("bot")
}

fn reserve(auth: &Authority, tool: &str) -> Reservation {
    auth.reserve(&ReserveRequest::new(
        bot(),
        ToolCall::new(tool, json!({"path": "a"})),
    ))
    .unwrap()
}

/// A memory ledger and a SQLite file, each behind an authority on a manual clock.
fn ledgers(dir: &tempfile::TempDir) -> Vec<(Arc<dyn Ledger>, ManualClock)> {
    vec![
        (Arc::new(MemoryLedger::new()), ManualClock::new(1_000)),
        (
            Arc::new(SqliteLedger::open(dir.path().join("state.db")).unwrap()),
            ManualClock::new(1_000),
        ),
    ]
}

/// Every operation that changes state, once each: reserve, commit under each overage policy,
/// release, extend, expiry (lazy and swept), event, budget set, debt and its repayment.
fn every_operation(auth: &Authority, clock: &ManualClock) {
    let r = reserve(auth, "write_file");
    auth.commit(&r.reservation_id, &CommitRequest::default())
        .unwrap();
    for policy in [
        CommitOveragePolicy::Reject,
        CommitOveragePolicy::AllowIfAvailable,
        CommitOveragePolicy::AllowWithOverdraft,
    ] {
        let mut req = ReserveRequest::new(bot(), ToolCall::new("deploy", json!({"to": "x"})));
        req.overage_policy = Some(policy);
        let r = auth.reserve(&req).unwrap();
        let commit = CommitRequest {
            actual: vec![Amount::new(Unit::RiskPoints, 12)],
            ..CommitRequest::default()
        };
        let _ = auth.commit(&r.reservation_id, &commit);
    }
    let r = reserve(auth, "deploy");
    auth.release(&r.reservation_id, &ReleaseRequest::default())
        .unwrap();
    let r = reserve(auth, "write_file");
    auth.extend(
        &r.reservation_id,
        &ExtendRequest {
            extend_by_ms: 60_000,
            idempotency_key: None,
        },
    )
    .unwrap();
    reserve(auth, "write_file");
    clock.advance(10 * 60_000);
    auth.sweep_expired().unwrap();
    let r = reserve(auth, "write_file");
    clock.advance(10 * 60_000);
    let _ = auth.commit(&r.reservation_id, &CommitRequest::default());
    let mut credits = BudgetSpec::new(SCOPE, Unit::Credits, 10);
    credits.overdraft_limit = 50;
    auth.set_budget(&credits).unwrap();
    auth.event(&EventRequest {
        subject: bot(),
        call: ToolCall::new("read_file", json!({})),
        actual: vec![Amount::new(Unit::Credits, 25)],
        overage_policy: Some(CommitOveragePolicy::AllowWithOverdraft),
        idempotency_key: None,
    })
    .unwrap();
    auth.repay_debt(SCOPE, Unit::Credits, 5).unwrap();
    // Still active at the end, so the check of active reservations has something to see.
    reserve(auth, "deploy");
}

fn budget(ledger: &Arc<dyn Ledger>, scope: &str, unit: Unit) -> Budget {
    let mut out = None;
    ledger
        .read(&mut |txn| {
            out = txn.budget(scope, unit)?;
            Ok(())
        })
        .unwrap();
    out.unwrap()
}

fn put_budget(ledger: &Arc<dyn Ledger>, b: &Budget) {
    ledger.write(&mut |txn| txn.put_budget(b)).unwrap();
}

fn assert_mismatch(report: &VerifyReport, item: &str, reason_part: &str) {
    state_check::assert_reports(report, item, reason_part, "");
}

#[test]
fn every_operation_leaves_state_that_its_records_account_for() {
    let dir = tempfile::tempdir().unwrap();
    for (ledger, clock) in ledgers(&dir) {
        let auth = authority(ledger.clone(), clock.clone());
        every_operation(&auth, &clock);
        let report = auth.verify().unwrap();
        assert!(report.ok, "{}: {report:?}", ledger.describe());
        assert!(report.state_mismatches.is_empty());
        // Each record that changed budgets says how it left them.
        let records = auth.audit(&AuditQuery::default()).unwrap();
        for r in &records {
            assert_eq!(!r.budgets.is_empty(), r.kind.changes_budgets(), "{r:?}");
        }
        // Every kind that changes budgets occurred (so the loop above saw each of them).
        for kind in [
            AuditKind::Reserve,
            AuditKind::Commit,
            AuditKind::Release,
            AuditKind::Expire,
            AuditKind::Event,
            AuditKind::BudgetSet,
        ] {
            assert!(records.iter().any(|r| r.kind == kind), "{kind:?}");
        }
        let last_commit = records
            .iter()
            .rev()
            .find(|r| r.kind == AuditKind::Event)
            .unwrap();
        assert_eq!(last_commit.budgets[0].debt, 15, "{last_commit:?}");
    }
}

#[test]
fn a_budget_edited_outside_the_state_machine_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    for (ledger, clock) in ledgers(&dir) {
        let auth = authority(ledger.clone(), clock.clone());
        let r = reserve(&auth, "deploy");
        auth.commit(&r.reservation_id, &CommitRequest::default())
            .unwrap();
        let honest = budget(&ledger, SCOPE, Unit::RiskPoints);
        assert!(honest.spent > 0);
        // What an agent with write access to the ledger would do: forget what it spent.
        let mut edited = honest.clone();
        edited.spent = 0;
        put_budget(&ledger, &edited);
        let report = auth.verify().unwrap();
        assert_mismatch(
            &report,
            &format!("budget {SCOPE} RISK_POINTS"),
            &format!(
                "the ledger holds allocated 100 spent 0 reserved 0 debt 0 overdraft_limit 0 ACTIVE but record 4 left allocated 100 spent {}",
                honest.spent
            ),
        );
        assert_eq!(report.state_mismatches.len(), 1, "{report:?}");
        // Put back, it verifies again.
        put_budget(&ledger, &honest);
        assert!(auth.verify().unwrap().ok);
        // A larger allocation is just as visible.
        let mut edited = honest.clone();
        edited.allocated = 1_000_000;
        put_budget(&ledger, &edited);
        assert_mismatch(
            &auth.verify().unwrap(),
            &format!("budget {SCOPE} RISK_POINTS"),
            "allocated 1000000",
        );
        put_budget(&ledger, &honest);
        // A budget no record created.
        put_budget(
            &ledger,
            &Budget::new("tenant:acme/agent:eve", Unit::Credits, 5),
        );
        assert_mismatch(
            &auth.verify().unwrap(),
            "budget tenant:acme/agent:eve CREDITS",
            "no record created it",
        );
    }
}

#[test]
fn rows_deleted_or_reservations_edited_in_sqlite_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteLedger::open(dir.path().join("edit.db")).unwrap());
    let auth = authority(sqlite.clone(), ManualClock::new(1_000));
    let held = reserve(&auth, "deploy");
    let r = reserve(&auth, "write_file");
    auth.commit(&r.reservation_id, &CommitRequest::default())
        .unwrap();
    assert!(auth.verify().unwrap().ok);

    // An active reservation deleted: its hold would stay on the budget for ever.
    sqlite
        .execute_raw(&format!(
            "DELETE FROM reservations WHERE id = '{}'",
            held.reservation_id
        ))
        .unwrap();
    assert_mismatch(
        &auth.verify().unwrap(),
        &format!("reservation {}", held.reservation_id),
        "not ACTIVE in the ledger",
    );
    let dir2 = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteLedger::open(dir2.path().join("edit.db")).unwrap());
    let auth = authority(sqlite.clone(), ManualClock::new(1_000));
    let held = reserve(&auth, "deploy");
    // A finished reservation brought back to ACTIVE (to commit it a second time, say).
    let done = reserve(&auth, "write_file");
    auth.commit(&done.reservation_id, &CommitRequest::default())
        .unwrap();
    sqlite
        .execute_raw(&format!(
            "UPDATE reservations SET status = 'ACTIVE' WHERE id = '{}'",
            done.reservation_id
        ))
        .unwrap();
    assert_mismatch(
        &auth.verify().unwrap(),
        &format!("reservation {}", done.reservation_id),
        "no record left it active",
    );
    sqlite
        .execute_raw(&format!(
            "UPDATE reservations SET status = 'COMMITTED' WHERE id = '{}'",
            done.reservation_id
        ))
        .unwrap();
    assert!(auth.verify().unwrap().ok);
    // A budget row deleted, and one reset in SQL.
    sqlite
        .execute_raw("DELETE FROM budgets WHERE scope = 'tenant:acme'")
        .unwrap();
    sqlite
        .execute_raw(&format!(
            "UPDATE budgets SET reserved = 0 WHERE scope = '{SCOPE}'"
        ))
        .unwrap();
    let report = auth.verify().unwrap();
    assert_mismatch(
        &report,
        "budget tenant:acme RISK_POINTS",
        "no longer holds it",
    );
    assert_mismatch(
        &report,
        &format!("budget {SCOPE} RISK_POINTS"),
        "reserved 0",
    );
    assert_eq!(report.state_mismatches.len(), 2, "{report:?}");
    drop(held);
}

#[test]
fn a_broken_chain_is_reported_as_broken_and_state_is_not_compared() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteLedger::open(dir.path().join("broken.db")).unwrap());
    let auth = authority(sqlite.clone(), ManualClock::new(1_000));
    let r = reserve(&auth, "deploy");
    auth.commit(&r.reservation_id, &CommitRequest::default())
        .unwrap();
    sqlite
        .execute_raw(
            "UPDATE budgets SET spent = 0; \
             UPDATE audit SET body = replace(body, 'deploy', 'deplox') WHERE seq = 3",
        )
        .unwrap();
    let report = auth.verify().unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_broken.as_ref().unwrap().seq, 3, "{report:?}");
    assert!(report.state_mismatches.is_empty(), "{report:?}");
}

/// Records written before records carried post-states (simulated: a budget created and a
/// record appended through the raw ledger API) leave their budgets unchecked, not reported;
/// the first operation that records a post-state makes them checked again.
#[test]
fn budgets_changed_by_records_without_post_states_are_checked_from_the_next_record_on() {
    let dir = tempfile::tempdir().unwrap();
    for (ledger, clock) in ledgers(&dir) {
        let auth = authority(ledger.clone(), clock);
        let scope = "tenant:acme/agent:old";
        ledger
            .write(&mut |txn| {
                let b = Budget::new(scope, Unit::RiskPoints, 40);
                txn.put_budget(&b)?;
                let mut rec = AuditRecord::new(AuditKind::BudgetSet, 1_000);
                rec.scopes = vec![scope.to_string()];
                rec.detail = Some(json!({"scope": scope, "unit": "RISK_POINTS"}));
                let head = txn.audit_head()?;
                txn.append_audit(rec.seal_after(head))
            })
            .unwrap();
        let report = auth.verify().unwrap();
        assert!(report.ok, "{report:?}");
        let old = Subject::new().tenant("acme").agent("old");
        let r = auth
            .reserve(&ReserveRequest::new(
                old,
                ToolCall::new("write_file", json!({})),
            ))
            .unwrap();
        auth.commit(&r.reservation_id, &CommitRequest::default())
            .unwrap();
        assert!(auth.verify().unwrap().ok);
        let mut b = budget(&ledger, scope, Unit::RiskPoints);
        b.spent = 0;
        put_budget(&ledger, &b);
        assert_mismatch(
            &auth.verify().unwrap(),
            &format!("budget {scope} RISK_POINTS"),
            "spent 0",
        );
    }
}

/// `verify` compares the chain up to the head of one snapshot with that snapshot's state:
/// writes that land while it walks the chain are never reported as mismatches.
#[test]
fn verify_while_other_threads_write_reports_no_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    for (ledger, clock) in ledgers(&dir) {
        let auth = authority(ledger.clone(), clock);
        auth.set_budget(&BudgetSpec::new(SCOPE, Unit::RiskPoints, 1 << 40))
            .unwrap();
        auth.set_budget(&BudgetSpec::new("tenant:acme", Unit::RiskPoints, 1 << 40))
            .unwrap();
        let running = Arc::new(AtomicUsize::new(3));
        let writers: Vec<_> = (0..3)
            .map(|_| {
                let (auth, running) = (auth.clone(), running.clone());
                std::thread::spawn(move || {
                    for _ in 0..300 {
                        let r = reserve(&auth, "write_file");
                        auth.commit(&r.reservation_id, &CommitRequest::default())
                            .unwrap();
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        let mut verified_during_writes = 0;
        while running.load(Ordering::SeqCst) > 0 {
            let report = auth.verify().unwrap();
            assert!(report.ok, "{}: {report:?}", ledger.describe());
            verified_during_writes += 1;
        }
        writers.into_iter().for_each(|w| w.join().unwrap());
        assert!(verified_during_writes > 0);
        assert!(auth.verify().unwrap().ok);
    }
}

/// Expiries are applied, and recorded, earliest deadline first (then by id) on every ledger:
/// each expire record carries the budgets as that expiry left them, so an order that differed
/// between backends would give them different trails. The reservation created first here
/// expires last.
#[test]
fn expiries_are_applied_in_deadline_order_on_every_ledger() {
    let dir = tempfile::tempdir().unwrap();
    for (ledger, clock) in ledgers(&dir) {
        let auth = authority(ledger.clone(), clock.clone());
        let mut ids = Vec::new();
        for ttl_ms in [9_000, 3_000, 6_000, 3_000] {
            let mut req = ReserveRequest::new(bot(), ToolCall::new("deploy", json!({})));
            req.ttl_ms = Some(ttl_ms);
            ids.push(auth.reserve(&req).unwrap().reservation_id);
        }
        // Extended, the second reservation's deadline moves behind the third's.
        auth.extend(
            &ids[1],
            &ExtendRequest {
                extend_by_ms: 4_000,
                idempotency_key: None,
            },
        )
        .unwrap();
        clock.advance(60_000);
        assert_eq!(auth.sweep_expired().unwrap(), 4);
        let q = AuditQuery {
            kinds: vec![AuditKind::Expire],
            ..AuditQuery::default()
        };
        let expired: Vec<String> = auth
            .audit(&q)
            .unwrap()
            .into_iter()
            .map(|r| r.reservation_id.unwrap())
            .collect();
        // Deadlines: 9 s, 7 s (extended), 6 s, 3 s.
        assert_eq!(
            expired,
            vec![
                ids[3].clone(),
                ids[2].clone(),
                ids[1].clone(),
                ids[0].clone()
            ],
            "{}",
            ledger.describe()
        );
        // Each record's post-state has one hold fewer than the one before.
        let reserved: Vec<i64> = auth
            .audit(&q)
            .unwrap()
            .iter()
            .map(|r| r.budgets[0].reserved)
            .collect();
        assert!(reserved.windows(2).all(|w| w[0] > w[1]), "{reserved:?}");
        assert!(auth.verify().unwrap().ok);
    }
}

/// A reservation made with a grant appends the consumed approval before its own record: the
/// budgets belong to the reserve record, so a budget edited afterwards is still reported (an
/// approval record carrying them left the reserve record without, and the budget unchecked).
#[test]
fn an_approved_reservation_records_its_budgets_on_the_reserve_record() {
    let dir = tempfile::tempdir().unwrap();
    for (ledger, clock) in ledgers(&dir) {
        let key = ApproverKey::from_secret("alice", [1; 32]).unwrap();
        let mut policy = Policy::default()
            .register("drop_database", Tier::T4)
            .budget(BudgetSpec::new(SCOPE, Unit::RiskPoints, 1_000));
        policy.approval.public_keys = vec![key.public_key_hex()];
        let auth = Authority::builder()
            .policy(policy)
            .shared_ledger(ledger.clone())
            .clock(clock)
            .build()
            .unwrap();
        let call = ToolCall::new("drop_database", json!({"name": "scratch"}));
        let err = auth
            .reserve(&ReserveRequest::new(bot(), call.clone()))
            .unwrap_err();
        let id = err.decision().unwrap().approval_request_id.clone().unwrap();
        let grant = key
            .grant(&auth.approval(&id).unwrap(), 1_000 + 60_000)
            .unwrap();
        let mut req = ReserveRequest::new(bot(), call);
        req.grant = Some(serde_json::to_value(&grant).unwrap());
        auth.reserve(&req).unwrap();
        let records = auth.audit(&AuditQuery::default()).unwrap();
        let consumed = records
            .iter()
            .find(|r| r.kind == AuditKind::ApprovalConsumed)
            .unwrap();
        assert!(consumed.budgets.is_empty(), "{consumed:?}");
        let reserve = records
            .iter()
            .find(|r| r.kind == AuditKind::Reserve)
            .unwrap();
        assert_eq!(reserve.budgets.len(), 1, "{reserve:?}");
        assert!(reserve.budgets[0].reserved > 0);
        assert!(auth.verify().unwrap().ok);
        let mut b = budget(&ledger, SCOPE, Unit::RiskPoints);
        b.reserved = 0;
        put_budget(&ledger, &b);
        assert_mismatch(
            &auth.verify().unwrap(),
            &format!("budget {SCOPE} RISK_POINTS"),
            "reserved 0",
        );
    }
}
