//! `Authority::settle`: a reservation finished by how its call ended. Completed and
//! interrupted calls are charged (also after their hold lapsed), a call that never started is
//! released, and a failed one follows the policy's `[defaults] on_failure`.

use cycles_core::*;
use serde_json::json;

const BUDGET: i64 = 1_000;

fn authority(clock: &ManualClock, on_failure: FailurePolicy) -> Authority {
    let mut policy = Policy::default()
        .register("deploy", Tier::T3)
        .register("drop_db", Tier::T4)
        .budget(BudgetSpec::new("agent:bot", Unit::RiskPoints, BUDGET));
    policy.defaults.on_failure = on_failure;
    Authority::builder()
        .policy(policy)
        .clock(clock.clone())
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

fn balance(auth: &Authority) -> Balance {
    auth.balances(Some("agent:bot")).unwrap().remove(0)
}

fn audit_len(auth: &Authority) -> usize {
    auth.audit(&AuditQuery::default()).unwrap().len()
}

fn settle(auth: &Authority, r: &Reservation, outcome: CallOutcome) -> Settlement {
    auth.settle(&r.reservation_id, &SettleRequest::new(outcome))
        .unwrap()
}

fn committed(s: Settlement) -> CommitResult {
    match s {
        Settlement::Committed(c) => c,
        Settlement::Released(r) => panic!("released, expected a charge: {r:?}"),
    }
}

fn released(s: Settlement) -> ReleaseResult {
    match s {
        Settlement::Released(r) => r,
        Settlement::Committed(c) => panic!("charged, expected a release: {c:?}"),
    }
}

#[test]
fn a_completed_call_is_charged_its_actual_amounts() {
    let clock = ManualClock::new(1_000);
    let auth = authority(&clock, FailurePolicy::Release);
    let r = reserve(&auth);
    let held = r.reserved()[0].amount;
    assert!(held > 1);
    let req = SettleRequest {
        actual: vec![Amount::new(Unit::RiskPoints, 1)],
        ..SettleRequest::new(CallOutcome::Completed)
    };
    let c = committed(auth.settle(&r.reservation_id, &req).unwrap());
    assert_eq!(c.status, ReservationStatus::Committed);
    assert_eq!(c.charged, vec![Amount::new(Unit::RiskPoints, 1)]);
    assert_eq!(c.released, vec![Amount::new(Unit::RiskPoints, held - 1)]);
    let b = balance(&auth);
    assert_eq!((b.spent, b.reserved), (1, 0));
}

#[test]
fn an_interrupted_call_is_charged_what_was_held() {
    let clock = ManualClock::new(1_000);
    let auth = authority(&clock, FailurePolicy::Release);
    let r = reserve(&auth);
    let c = committed(settle(&auth, &r, CallOutcome::Interrupted));
    assert_eq!(c.charged, r.reserved());
    assert!(c.released.iter().all(|a| a.amount == 0), "{:?}", c.released);
    let b = balance(&auth);
    assert_eq!((b.spent, b.reserved), (r.reserved()[0].amount, 0));
}

#[test]
fn a_call_that_never_started_is_released_whatever_the_failure_policy() {
    for policy in [FailurePolicy::Release, FailurePolicy::Charge] {
        let clock = ManualClock::new(1_000);
        let auth = authority(&clock, policy);
        let r = reserve(&auth);
        let req = SettleRequest {
            reason: Some("the user declined".into()),
            ..SettleRequest::new(CallOutcome::NotStarted)
        };
        let rel = released(auth.settle(&r.reservation_id, &req).unwrap());
        assert_eq!(rel.status, ReservationStatus::Released);
        assert_eq!(rel.released, r.reserved());
        let b = balance(&auth);
        assert_eq!((b.spent, b.reserved, b.remaining), (0, 0, BUDGET));
        // The reason is in the release record.
        let last = auth.audit(&AuditQuery::default()).unwrap().pop().unwrap();
        assert_eq!(last.kind, AuditKind::Release);
        assert!(
            serde_json::to_string(&last)
                .unwrap()
                .contains("the user declined")
        );
    }
}

#[test]
fn a_failed_call_follows_the_policy() {
    // RELEASE (the default): the hold goes back.
    let clock = ManualClock::new(1_000);
    let auth = authority(&clock, FailurePolicy::default());
    let r = reserve(&auth);
    released(settle(&auth, &r, CallOutcome::Failed));
    assert_eq!(balance(&auth).spent, 0);

    // CHARGE: the call may have acted before it failed; it pays what was held.
    let auth = authority(&clock, FailurePolicy::Charge);
    let r = reserve(&auth);
    let c = committed(settle(&auth, &r, CallOutcome::Failed));
    assert_eq!(c.charged, r.reserved());
    assert_eq!(balance(&auth).spent, r.reserved()[0].amount);
}

#[test]
fn charged_outcomes_are_charged_after_the_hold_lapsed() {
    for (outcome, policy) in [
        (CallOutcome::Completed, FailurePolicy::Release),
        (CallOutcome::Interrupted, FailurePolicy::Release),
        (CallOutcome::Failed, FailurePolicy::Charge),
    ] {
        let clock = ManualClock::new(1_000);
        let auth = authority(&clock, policy);
        let r = reserve(&auth);
        clock.advance(r.expires_at_ms - clock.now_ms() + r.grace_ms + 1);
        let c = committed(settle(&auth, &r, outcome));
        assert_eq!(c.status, ReservationStatus::Expired, "{outcome:?}");
        assert!(c.event_id.is_some(), "{outcome:?}");
        assert_eq!(c.charged, r.reserved(), "{outcome:?}");
        assert_eq!(balance(&auth).spent, r.reserved()[0].amount, "{outcome:?}");
    }
}

#[test]
fn a_release_after_the_hold_lapsed_is_reservation_expired_and_changes_nothing() {
    let clock = ManualClock::new(1_000);
    let auth = authority(&clock, FailurePolicy::Release);
    let r = reserve(&auth);
    clock.advance(r.expires_at_ms - clock.now_ms() + r.grace_ms + 1);
    let err = auth
        .settle(&r.reservation_id, &SettleRequest::new(CallOutcome::Failed))
        .unwrap_err();
    assert_eq!(err.code(), "RESERVATION_EXPIRED");
    assert_eq!(balance(&auth).spent, 0);
}

#[test]
fn a_charged_call_that_ran_as_something_else_is_charged_as_what_ran() {
    let clock = ManualClock::new(1_000);
    let auth = authority(&clock, FailurePolicy::Release);
    let r = reserve(&auth);
    let ran = ToolCall::new("drop_db", json!({"name": "prod"}));
    let t4 = auth
        .policy()
        .assess(&ran, &["agent:bot".into()])
        .risk_points;
    assert!(t4 > r.reserved()[0].amount);
    let req = SettleRequest {
        ran: Some(ran),
        ..SettleRequest::new(CallOutcome::Interrupted)
    };
    let c = committed(auth.settle(&r.reservation_id, &req).unwrap());
    assert_eq!(c.charged, vec![Amount::new(Unit::RiskPoints, t4)]);
}

#[test]
fn actual_amounts_on_an_outcome_other_than_completed_are_invalid_and_change_nothing() {
    let clock = ManualClock::new(1_000);
    let auth = authority(&clock, FailurePolicy::Charge);
    let r = reserve(&auth);
    let before = (balance(&auth), audit_len(&auth));
    for outcome in [
        CallOutcome::Failed,
        CallOutcome::Interrupted,
        CallOutcome::NotStarted,
    ] {
        let req = SettleRequest {
            actual: vec![Amount::new(Unit::RiskPoints, 1)],
            ..SettleRequest::new(outcome)
        };
        let err = auth.settle(&r.reservation_id, &req).unwrap_err();
        assert_eq!(err.code(), "INVALID_REQUEST", "{outcome:?}");
    }
    // Negative amounts and long reasons are refused before anything is written.
    let bad = [
        SettleRequest {
            actual: vec![Amount::new(Unit::RiskPoints, -1)],
            ..SettleRequest::new(CallOutcome::Completed)
        },
        SettleRequest {
            reason: Some("x".repeat(257)),
            ..SettleRequest::new(CallOutcome::NotStarted)
        },
        SettleRequest {
            idempotency_key: Some(String::new()),
            ..SettleRequest::new(CallOutcome::Interrupted)
        },
    ];
    for req in bad {
        let err = auth.settle(&r.reservation_id, &req).unwrap_err();
        assert_eq!(err.code(), "INVALID_REQUEST", "{req:?}");
    }
    assert_eq!((balance(&auth), audit_len(&auth)), before);
    // The reservation is still held and settles normally afterwards.
    committed(settle(&auth, &r, CallOutcome::Interrupted));
}

#[test]
fn a_keyed_retry_replays_and_an_unkeyed_second_settle_is_finalized() {
    let clock = ManualClock::new(1_000);
    let auth = authority(&clock, FailurePolicy::Release);
    let r = reserve(&auth);
    let req = SettleRequest {
        idempotency_key: Some("settle-1".into()),
        ..SettleRequest::new(CallOutcome::Interrupted)
    };
    let first = auth.settle(&r.reservation_id, &req).unwrap();
    let again = auth.settle(&r.reservation_id, &req).unwrap();
    assert_eq!(first, again);
    assert_eq!(balance(&auth).spent, r.reserved()[0].amount);
    let err = auth
        .settle(
            &r.reservation_id,
            &SettleRequest::new(CallOutcome::NotStarted),
        )
        .unwrap_err();
    assert_eq!(err.code(), "RESERVATION_FINALIZED");
    assert_eq!(balance(&auth).spent, r.reserved()[0].amount);
}

#[test]
fn the_policy_file_sets_on_failure_and_refuses_unknown_values() {
    let text = "[defaults]\non_failure = \"CHARGE\"\n";
    let p = Policy::from_toml_str(text, "test").unwrap();
    assert_eq!(p.defaults.on_failure, FailurePolicy::Charge);
    // Written out only when it is not the default, and read back.
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["defaults"]["on_failure"], "CHARGE");
    assert_eq!(serde_json::from_value::<Policy>(v).unwrap(), p);
    assert!(
        serde_json::to_value(Policy::default()).unwrap()["defaults"]
            .get("on_failure")
            .is_none()
    );
    assert_eq!(
        Policy::from_toml_str("", "test")
            .unwrap()
            .defaults
            .on_failure,
        FailurePolicy::Release
    );
    let err = Policy::from_toml_str("[defaults]\non_failure = \"MAYBE\"\n", "test").unwrap_err();
    assert_eq!(err.code(), "POLICY_INVALID");
}

#[test]
fn requests_and_results_use_the_protocol_spelling() {
    let req: SettleRequest = serde_json::from_value(json!({
        "outcome": "NOT_STARTED", "reason": "declined"
    }))
    .unwrap();
    assert_eq!(req.outcome, CallOutcome::NotStarted);
    assert!(
        serde_json::from_value::<SettleRequest>(json!({"outcome": "DONE"}))
            .unwrap_err()
            .to_string()
            .contains("unknown variant")
    );
    let clock = ManualClock::new(1_000);
    let auth = authority(&clock, FailurePolicy::Release);
    let r = reserve(&auth);
    let s = auth.settle(&r.reservation_id, &req).unwrap();
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["status"], "RELEASED");
    assert_eq!(serde_json::from_value::<Settlement>(v).unwrap(), s);
}
