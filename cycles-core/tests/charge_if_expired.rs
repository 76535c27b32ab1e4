//! `CommitRequest::charge_if_expired`: a call that ran past its reservation's expiry is charged
//! as its commit would have charged it (an event record naming the reservation) instead of to
//! nobody; once per reservation; never refused, whatever the budgets' status.

use cycles_core::*;
use serde_json::json;

const BUDGET: i64 = 100;

fn authority(clock: &ManualClock) -> Authority {
    let policy = Policy::default()
        .register("deploy", Tier::T3)
        .register("drop_db", Tier::T4)
        .budget(BudgetSpec::new("agent:bot", Unit::RiskPoints, BUDGET));
    Authority::builder()
        .policy(policy)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn bot() -> Subject {
    Subject::new().agent("bot")
}

fn deploy() -> ToolCall {
    ToolCall::new("deploy", json!({"to": "prod"}))
}

fn balance(auth: &Authority) -> Balance {
    auth.balances(Some("agent:bot")).unwrap().remove(0)
}

fn charge_if_expired() -> CommitRequest {
    CommitRequest {
        charge_if_expired: true,
        ..CommitRequest::default()
    }
}

/// Reserves a deploy and lets it outlive its reservation (TTL and grace).
fn expired_reservation(auth: &Authority, clock: &ManualClock) -> Reservation {
    let r = auth.reserve(&ReserveRequest::new(bot(), deploy())).unwrap();
    clock.advance(r.expires_at_ms - clock.now_ms() + r.grace_ms + 1);
    r
}

#[test]
fn a_call_that_outlived_its_reservation_is_charged_what_was_held() {
    let clock = ManualClock::new(1_000);
    let auth = authority(&clock);
    let r = expired_reservation(&auth, &clock);
    let held = r.reserved()[0].amount;
    assert!(held > 0);

    let c = auth
        .commit(&r.reservation_id, &charge_if_expired())
        .unwrap();
    assert_eq!(c.status, ReservationStatus::Expired);
    assert_eq!(c.charged, vec![Amount::new(Unit::RiskPoints, held)]);
    assert!(c.released.is_empty());
    let event_id = c.event_id.clone().expect("the charging event is named");
    let b = balance(&auth);
    assert_eq!((b.spent, b.reserved, b.remaining), (held, 0, BUDGET - held));

    // The trail holds the event, naming the reservation, its call and subject.
    let events = auth
        .audit(&AuditQuery {
            kinds: vec![AuditKind::Event],
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.action.as_ref().unwrap().name, "deploy");
    assert_eq!(e.reservation_id.as_deref(), Some(r.reservation_id.as_str()));
    assert_eq!(e.call_digest.as_deref(), Some(r.call_digest.as_str()));
    assert_eq!(e.amounts, vec![Amount::new(Unit::RiskPoints, held)]);
    let detail = e.detail.as_ref().unwrap();
    assert_eq!(detail["event_id"], event_id.as_str());
    assert_eq!(detail["after_expiry"], true);
    // The reservation stays EXPIRED, with what was charged.
    let now = auth.reservation(&r.reservation_id).unwrap();
    assert_eq!(now.status, ReservationStatus::Expired);
    assert_eq!(now.charged, vec![Amount::new(Unit::RiskPoints, held)]);
    assert!(auth.verify().unwrap().ok);

    // A second charge (a retry without a key) is refused and charges nothing more.
    let again = auth
        .commit(&r.reservation_id, &charge_if_expired())
        .unwrap_err();
    assert_eq!(again.code(), "RESERVATION_FINALIZED");
    assert_eq!(balance(&auth).spent, held);
}

#[test]
fn a_retry_with_the_same_key_replays_the_charge_and_verify_follows_it() {
    let clock = ManualClock::new(1_000);
    let auth = authority(&clock);
    let r = expired_reservation(&auth, &clock);
    let req = CommitRequest {
        idempotency_key: Some("k1".into()),
        ..charge_if_expired()
    };
    let first = auth.commit(&r.reservation_id, &req).unwrap();
    let again = auth.commit(&r.reservation_id, &req).unwrap();
    assert_eq!(first, again);
    assert_eq!(balance(&auth).spent, r.reserved()[0].amount);
    // The stored result names the event, which the state check follows.
    let report = auth.verify().unwrap();
    assert!(report.ok, "{report:?}");
}

#[test]
fn a_frozen_or_closed_budget_is_charged_as_a_commit_would_charge_it() {
    for status in [BudgetStatus::Frozen, BudgetStatus::Closed] {
        let clock = ManualClock::new(1_000);
        let auth = authority(&clock);
        let r = expired_reservation(&auth, &clock);
        // Frozen during the incident, while the call was still running.
        let mut spec = BudgetSpec::new("agent:bot", Unit::RiskPoints, BUDGET);
        spec.status = status;
        auth.set_budget(&spec).unwrap();
        let c = auth
            .commit(&r.reservation_id, &charge_if_expired())
            .unwrap();
        assert_eq!(c.charged, r.reserved(), "{status:?}");
        assert_eq!(balance(&auth).spent, r.reserved()[0].amount, "{status:?}");
        assert!(auth.verify().unwrap().ok);
    }
}

#[test]
fn a_unit_the_reservation_did_not_hold_is_refused_and_changes_nothing() {
    let clock = ManualClock::new(1_000);
    let auth = authority(&clock);
    let r = expired_reservation(&auth, &clock);
    let before = auth.audit(&AuditQuery::default()).unwrap().len();
    let req = CommitRequest {
        actual: vec![Amount::new(Unit::UsdMicrocents, 5)],
        ..charge_if_expired()
    };
    let err = auth.commit(&r.reservation_id, &req).unwrap_err();
    assert_eq!(err.code(), "UNIT_MISMATCH");
    assert_eq!(balance(&auth).spent, 0);
    assert_eq!(auth.audit(&AuditQuery::default()).unwrap().len(), before);
}

#[test]
fn without_the_flag_an_expired_reservation_is_refused_and_nothing_is_charged() {
    let clock = ManualClock::new(1_000);
    let auth = authority(&clock);
    let r = expired_reservation(&auth, &clock);
    let err = auth
        .commit(&r.reservation_id, &CommitRequest::default())
        .unwrap_err();
    assert_eq!(err.code(), "RESERVATION_EXPIRED");
    assert_eq!(balance(&auth).spent, 0);
}

#[test]
fn a_live_reservation_is_committed_as_usual() {
    let clock = ManualClock::new(1_000);
    let auth = authority(&clock);
    let r = auth.reserve(&ReserveRequest::new(bot(), deploy())).unwrap();
    let c = auth
        .commit(&r.reservation_id, &charge_if_expired())
        .unwrap();
    assert_eq!(c.status, ReservationStatus::Committed);
    assert_eq!(c.event_id, None);
    assert_eq!(balance(&auth).spent, r.reserved()[0].amount);
}

#[test]
fn actual_amounts_and_the_call_that_ran_are_what_is_charged() {
    let clock = ManualClock::new(1_000);
    let auth = authority(&clock);
    let r = expired_reservation(&auth, &clock);
    let req = CommitRequest {
        actual: vec![Amount::new(Unit::RiskPoints, 7)],
        ..charge_if_expired()
    };
    let c = auth.commit(&r.reservation_id, &req).unwrap();
    assert_eq!(c.charged, vec![Amount::new(Unit::RiskPoints, 7)]);

    // A costlier call that ran is charged at least its own points, as within the TTL.
    let r = expired_reservation(&auth, &clock);
    let ran = ToolCall::new("drop_db", json!({"name": "prod"}));
    let costs = auth
        .policy()
        .assess(&ran, &["agent:bot".to_string()])
        .risk_points;
    assert!(costs > r.reserved()[0].amount);
    let req = CommitRequest {
        actual: vec![Amount::new(Unit::RiskPoints, 1)],
        ran: Some(ran),
        ..charge_if_expired()
    };
    let c = auth.commit(&r.reservation_id, &req).unwrap();
    let left = BUDGET - 7;
    assert_eq!(
        c.charged,
        vec![Amount::new(Unit::RiskPoints, costs.min(left))]
    );
    let event = auth
        .audit(&AuditQuery {
            kinds: vec![AuditKind::Event],
            ..AuditQuery::default()
        })
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(event.detail.unwrap()["ran"]["tool"], "drop_db");
    assert!(auth.verify().unwrap().ok);
}

#[test]
fn the_charge_is_capped_never_refused_when_others_spent_the_lapsed_hold() {
    let clock = ManualClock::new(1_000);
    let auth = authority(&clock);
    let req = ReserveRequest {
        overage_policy: Some(CommitOveragePolicy::Reject),
        ..ReserveRequest::new(bot(), deploy())
    };
    let r = auth.reserve(&req).unwrap();
    let held = r.reserved()[0].amount;
    clock.advance(r.expires_at_ms - clock.now_ms() + r.grace_ms + 1);
    // The lapsed hold went to other calls: less than `held` is left.
    auth.sweep_expired().unwrap();
    assert_eq!(balance(&auth).reserved, 0);
    let spend = BUDGET - held / 2;
    auth.event(&EventRequest {
        subject: bot(),
        call: ToolCall::new("deploy", json!({})),
        actual: vec![Amount::new(Unit::RiskPoints, spend)],
        overage_policy: None,
        idempotency_key: None,
    })
    .unwrap();
    let c = auth
        .commit(&r.reservation_id, &charge_if_expired())
        .unwrap();
    assert_eq!(
        c.charged,
        vec![Amount::new(Unit::RiskPoints, BUDGET - spend)]
    );
    let b = balance(&auth);
    assert_eq!((b.spent, b.remaining), (BUDGET, 0));
    assert!(b.is_over_limit, "the capped charge flags the scope");
}

#[test]
fn an_unknown_reservation_is_not_found_whatever_the_flag() {
    let clock = ManualClock::new(1_000);
    let auth = authority(&clock);
    let err = auth
        .commit("rsv_missing", &charge_if_expired())
        .unwrap_err();
    assert_eq!(err.code(), "NOT_FOUND");
    assert_eq!(balance(&auth).spent, 0);
}
