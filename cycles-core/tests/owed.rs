//! `Authority::settle_or_owe`: a settlement the ledger cannot take while it is unreachable
//! (here a SQLite file another connection holds locked past the busy timeout) is kept owed and
//! made once the ledger answers again, exactly once.

use std::path::Path;
use std::time::Duration;

use cycles_core::*;
use serde_json::json;

const BUDGET: i64 = 1_000;
/// Tier 3's default risk points: what a `deploy` holds.
const HELD: i64 = 20;

fn authority(path: &Path, clock: &ManualClock) -> Authority {
    let options = SqliteOptions {
        busy_timeout: Duration::from_millis(100),
        ..Default::default()
    };
    let policy = Policy::default()
        .register("deploy", Tier::T3)
        .register("read", Tier::T0)
        .budget(BudgetSpec::new("agent:bot", Unit::RiskPoints, BUDGET));
    Authority::builder()
        .policy(policy)
        .clock(clock.clone())
        .ledger(SqliteLedger::open_with(path, options).unwrap())
        .build()
        .unwrap()
}

fn bot() -> Subject {
    Subject::new().agent("bot")
}

fn reserve(auth: &Authority) -> Reservation {
    let call = ToolCall::new("deploy", json!({"to": "prod"}));
    auth.reserve(&ReserveRequest::new(bot(), call)).unwrap()
}

fn budget(auth: &Authority) -> Balance {
    auth.balances(Some("agent:bot")).unwrap().remove(0)
}

fn kinds(auth: &Authority) -> Vec<AuditKind> {
    auth.audit(&AuditQuery::default())
        .unwrap()
        .into_iter()
        .map(|r| r.kind)
        .collect()
}

/// Another connection holding the file's write lock: the ledger is unreachable to writers
/// until it is dropped.
struct Lock(rusqlite::Connection);

fn lock(path: &Path) -> Lock {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("BEGIN EXCLUSIVE; INSERT INTO kv (ns, key, value) VALUES ('t', 'k', '1');")
        .unwrap();
    Lock(c)
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.0.execute_batch("ROLLBACK").unwrap();
    }
}

fn completed() -> SettleRequest {
    SettleRequest::new(CallOutcome::Completed)
}

#[test]
fn a_settlement_refused_while_the_ledger_is_down_is_made_after_the_next_operation_that_reaches_it()
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let clock = ManualClock::new(1_000_000);
    let auth = authority(&path, &clock);
    let r = reserve(&auth);

    let held = lock(&path);
    // `settle` alone would lose it: the caller gets the error and nothing remembers the call.
    let err = auth.settle(&r.reservation_id, &completed()).unwrap_err();
    assert_eq!(err.code(), "LEDGER_UNAVAILABLE");
    assert!(auth.owed_settlements().is_empty());
    // `settle_or_owe` keeps it.
    let outcome = auth.settle_or_owe(&r.reservation_id, &completed()).unwrap();
    assert!(outcome.is_none(), "owed, not settled: {outcome:?}");
    let owed = auth.owed_settlements();
    assert_eq!(owed.len(), 1);
    assert_eq!(owed[0].reservation_id, r.reservation_id);
    assert_eq!(owed[0].request, completed());
    assert_eq!((owed[0].attempts, owed[0].since_ms), (1, 1_000_000));
    assert!(
        owed[0].last_error.contains("locked"),
        "{}",
        owed[0].last_error
    );

    // Still down: an explicit retry keeps it and counts the try.
    let left = auth.retry_owed();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].attempts, 2);
    // An operation the ledger refuses does not retry (and does not lose it).
    let d = auth
        .decide(&DecideRequest::new(bot(), ToolCall::new("read", json!({}))))
        .unwrap();
    assert_eq!(d.reason_code, Some(ReasonCode::LedgerUnavailable));
    assert_eq!(auth.owed_settlements()[0].attempts, 2);
    assert_eq!(budget(&auth).reserved, HELD);

    drop(held);
    // The first operation that reaches the ledger makes the owed settlement.
    let d = auth
        .decide(&DecideRequest::new(bot(), ToolCall::new("read", json!({}))))
        .unwrap();
    assert_eq!(d.decision, DecisionKind::Allow);
    assert!(auth.owed_settlements().is_empty());
    let b = budget(&auth);
    assert_eq!(
        (b.spent, b.reserved),
        (HELD, 0),
        "charged what was held, once"
    );
    assert_eq!(
        auth.reservation(&r.reservation_id).unwrap().status,
        ReservationStatus::Committed
    );
    let commits = kinds(&auth)
        .into_iter()
        .filter(|k| *k == AuditKind::Commit)
        .count();
    assert_eq!(commits, 1);
    assert!(auth.verify().unwrap().ok);
}

#[test]
fn an_owed_charge_whose_hold_lapsed_meanwhile_is_still_charged_and_an_owed_release_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let clock = ManualClock::new(1_000_000);
    let auth = authority(&path, &clock);
    let ran = reserve(&auth);
    let never_ran = reserve(&auth);

    let held = lock(&path);
    let not_started = SettleRequest::new(CallOutcome::NotStarted);
    assert!(
        auth.settle_or_owe(&ran.reservation_id, &completed())
            .unwrap()
            .is_none()
    );
    assert!(
        auth.settle_or_owe(&never_ran.reservation_id, &not_started)
            .unwrap()
            .is_none()
    );
    assert_eq!(auth.owed_settlements().len(), 2);
    drop(held);

    // Both holds lapse (TTL and grace) before the ledger is reached again; the sweep returns
    // them and then makes what is owed.
    clock.advance(24 * 3_600_000);
    assert_eq!(auth.sweep_expired().unwrap(), 2);
    assert_eq!(budget(&auth).reserved, 0);
    let left = auth.retry_owed();
    assert!(left.is_empty(), "{left:?}");
    let b = budget(&auth);
    assert_eq!(
        b.spent, HELD,
        "the call that ran is charged after its expiry (as an event), the one that never \
         started is not (its release found nothing to give back)"
    );
    assert_eq!(
        auth.reservation(&never_ran.reservation_id).unwrap().status,
        ReservationStatus::Expired
    );
    assert_eq!(
        kinds(&auth)
            .into_iter()
            .filter(|k| *k == AuditKind::Event)
            .count(),
        1
    );
    // Nothing is made twice: a later retry has nothing to do, and charging again is refused.
    assert!(auth.retry_owed().is_empty());
    let again = auth.settle(&ran.reservation_id, &completed()).unwrap_err();
    assert_eq!(again.code(), "RESERVATION_FINALIZED");
    assert_eq!(budget(&auth).spent, HELD);
}

#[test]
fn owed_settlements_are_shared_by_clones_and_bad_requests_are_never_owed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let clock = ManualClock::new(1_000_000);
    let auth = authority(&path, &clock);
    let r = reserve(&auth);
    let twin = auth.clone();

    let held = lock(&path);
    // Refused before the ledger: an error, not owed (a retry could never succeed).
    let bad = SettleRequest {
        actual: vec![Amount::new(Unit::RiskPoints, 1)],
        ..SettleRequest::new(CallOutcome::Failed)
    };
    let err = auth.settle_or_owe(&r.reservation_id, &bad).unwrap_err();
    assert_eq!(err.code(), "INVALID_REQUEST");
    assert!(auth.owed_settlements().is_empty());

    assert!(
        auth.settle_or_owe(&r.reservation_id, &completed())
            .unwrap()
            .is_none()
    );
    assert_eq!(twin.owed_settlements().len(), 1);
    drop(held);
    // The clone's own operation reaches the ledger and makes it.
    twin.reserve(&ReserveRequest::new(
        bot(),
        ToolCall::new("read", json!({})),
    ))
    .unwrap();
    assert!(auth.owed_settlements().is_empty());
    assert_eq!(budget(&auth).spent, HELD);
}

#[test]
fn an_owed_settlement_whose_amounts_the_ledger_refuses_later_is_made_by_its_outcome_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let clock = ManualClock::new(1_000_000);
    let auth = authority(&path, &clock);
    let r = reserve(&auth);
    // TOKENS: a unit this reservation does not hold. Only the ledger can tell (it knows the
    // holds), so while it is down the settlement is owed as asked...
    let completed_with_tokens = SettleRequest {
        actual: vec![Amount::new(Unit::Tokens, 10)],
        ..completed()
    };
    let held = lock(&path);
    assert!(
        auth.settle_or_owe(&r.reservation_id, &completed_with_tokens)
            .unwrap()
            .is_none()
    );
    drop(held);
    // ...and once it answers UNIT_MISMATCH, the call (it ran) is settled COMPLETED with what
    // was held instead of being dropped and left to expire uncharged.
    assert!(auth.retry_owed().is_empty());
    let b = budget(&auth);
    assert_eq!((b.spent, b.reserved), (HELD, 0));
    assert_eq!(
        auth.reservation(&r.reservation_id).unwrap().status,
        ReservationStatus::Committed
    );
    // The same request made directly is refused, as before: the fallback is the retry's.
    let r2 = reserve(&auth);
    let err = auth
        .settle(&r2.reservation_id, &completed_with_tokens)
        .unwrap_err();
    assert_eq!(err.code(), "UNIT_MISMATCH");
}
