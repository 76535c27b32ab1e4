//! A budget or reservation edited outside the state machine must stay visible to `verify`
//! after the next legitimate operation on it. The next record's post-state is whatever the
//! operation left, edit included: compared only with the ledger's final state, any reserve,
//! commit or event on an edited budget made the edit look recorded. `verify` also checks that
//! each post-state follows from the one before by what its record did.

use std::sync::Arc;

#[path = "support/state_check.rs"]
mod state_check;

use cycles_core::*;
use serde_json::json;

const SCOPE: &str = "tenant:acme/agent:bot";

fn authority(ledger: Arc<dyn Ledger>) -> Authority {
    let policy = Policy::default()
        .register("write_file", Tier::T1)
        .register("deploy", Tier::T3)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 1_000))
        .budget(BudgetSpec::new(SCOPE, Unit::RiskPoints, 100));
    Authority::builder()
        .policy(policy)
        .shared_ledger(ledger)
        .clock(ManualClock::new(1_000))
        .build()
        .unwrap()
}

fn bot() -> Subject {
    Subject::new().tenant("acme").agent("bot")
}

fn reserve(auth: &Authority, tool: &str) -> Reservation {
    auth.reserve(&ReserveRequest::new(bot(), ToolCall::new(tool, json!({}))))
        .unwrap()
}

fn edit_budget(ledger: &Arc<dyn Ledger>, edit: impl Fn(&mut Budget)) {
    ledger
        .write(&mut |txn| {
            let mut b = txn.budget(SCOPE, Unit::RiskPoints)?.unwrap();
            edit(&mut b);
            txn.put_budget(&b)
        })
        .unwrap();
}

/// A fresh memory ledger and a fresh SQLite file.
fn ledgers(dir: &tempfile::TempDir, name: &str) -> Vec<Arc<dyn Ledger>> {
    vec![
        Arc::new(MemoryLedger::new()),
        Arc::new(SqliteLedger::open(dir.path().join(format!("{name}.db"))).unwrap()),
    ]
}

fn assert_reported(report: &VerifyReport, what: &str) {
    let item = format!("budget {SCOPE} RISK_POINTS");
    state_check::assert_reports(report, &item, "", what);
}

/// An edit of a budget row.
type Edit = fn(&mut Budget);

#[test]
fn an_edited_budget_stays_reported_after_the_next_operation_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let edits: [(&str, Edit); 5] = [
        ("spent reset", |b| b.spent = 0),
        ("allocation raised", |b| b.allocated = 1_000_000),
        ("debt forgotten", |b| b.debt = 0),
        ("hold dropped", |b| b.reserved = 0),
        ("unfrozen", |b| b.status = BudgetStatus::Active),
    ];
    for (what, edit) in edits {
        for ledger in ledgers(&dir, what) {
            let auth = authority(ledger.clone());
            // Some spending, a hold, and debt or a frozen budget for the edits to undo.
            let mut spec = BudgetSpec::new(SCOPE, Unit::RiskPoints, 100);
            spec.overdraft_limit = 1_000;
            auth.set_budget(&spec).unwrap();
            let r = reserve(&auth, "deploy");
            auth.commit(&r.reservation_id, &CommitRequest::default())
                .unwrap();
            let held = reserve(&auth, "write_file");
            if what == "debt forgotten" {
                auth.event(&EventRequest {
                    subject: bot(),
                    call: ToolCall::new("write_file", json!({})),
                    actual: vec![Amount::new(Unit::RiskPoints, 200)],
                    overage_policy: Some(CommitOveragePolicy::AllowWithOverdraft),
                    idempotency_key: None,
                })
                .unwrap();
                let debt = auth.balances(Some(SCOPE)).unwrap()[0].debt;
                assert!(debt > 0);
            }
            if what == "unfrozen" {
                spec.status = BudgetStatus::Frozen;
                auth.set_budget(&spec).unwrap();
            }
            assert!(auth.verify().unwrap().ok, "{what}");
            edit_budget(&ledger, edit);
            assert_reported(&auth.verify().unwrap(), what);
            // The next legitimate operations on the budget must not hide the edit.
            auth.release(&held.reservation_id, &ReleaseRequest::default())
                .ok();
            if let Ok(r) = auth.reserve(&ReserveRequest::new(
                bot(),
                ToolCall::new("write_file", json!({})),
            )) {
                auth.commit(&r.reservation_id, &CommitRequest::default())
                    .unwrap();
            }
            assert_reported(&auth.verify().unwrap(), what);
        }
    }
}

/// A reservation's hold lowered outside the state machine before its commit: the commit
/// charges (and returns) the edited hold. The reserve record says what was held, so the
/// commit's post-state does not follow from it.
#[test]
fn a_hold_edited_before_its_commit_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    for ledger in ledgers(&dir, "hold") {
        let auth = authority(ledger.clone());
        let r = reserve(&auth, "deploy");
        assert!(r.holds[0].amount > 0);
        ledger
            .write(&mut |txn| {
                let mut edited = txn.reservation(&r.reservation_id)?.unwrap();
                edited.holds[0].amount = 0;
                txn.put_reservation(&edited)
            })
            .unwrap();
        let c = auth
            .commit(&r.reservation_id, &CommitRequest::default())
            .unwrap();
        assert_eq!(c.charged[0].amount, 0, "the edit took effect");
        assert_reported(&auth.verify().unwrap(), "hold lowered");
    }
}

/// A reservation row edited to name the call that will really run (its digest) before the
/// commit: `CommitRequest::ran` then matches it and the costlier call is charged the cheap
/// hold. The finishing record carries the row's call, which its reserve record contradicts.
#[test]
fn a_reservation_edited_to_name_another_call_is_reported_when_it_finishes() {
    let dir = tempfile::tempdir().unwrap();
    for ledger in ledgers(&dir, "digest") {
        let auth = authority(ledger.clone());
        let cheap = reserve(&auth, "write_file");
        let ran = ToolCall::new("deploy", json!({"to": "prod"}));
        ledger
            .write(&mut |txn| {
                let mut edited = txn.reservation(&cheap.reservation_id)?.unwrap();
                edited.call_digest = ran.digest();
                txn.put_reservation(&edited)
            })
            .unwrap();
        let req = CommitRequest {
            ran: Some(ran.clone()),
            ..CommitRequest::default()
        };
        let c = auth.commit(&cheap.reservation_id, &req).unwrap();
        assert_eq!(c.charged, cheap.reserved(), "the edit took effect");
        let report = auth.verify().unwrap();
        assert!(!report.ok && report.first_broken.is_none(), "{report:?}");
        let item = format!("reservation {}", cheap.reservation_id);
        assert!(
            report
                .state_mismatches
                .iter()
                .any(|m| m.item == item && m.reason.contains("call")),
            "{report:?}"
        );
    }
}
