//! `CommitRequest::ran`: the call that actually ran, when it may not be the call reserved (a
//! hook rewrote the input, an event names what ran). A different call is charged at least its
//! tier's points and named in the commit record; the same call changes nothing.

use cycles_core::*;
use serde_json::json;

fn authority() -> Authority {
    let policy = Policy::default()
        .register("read_file", Tier::T0)
        .register("write_file", Tier::T1)
        .register("deploy", Tier::T3)
        .budget(BudgetSpec::new("agent:bot", Unit::RiskPoints, 1_000));
    Authority::builder().policy(policy).build().unwrap()
}

fn bot() -> Subject {
    Subject::new().agent("bot")
}

/// A reservation of a tier 1 call.
fn reserve_write(auth: &Authority) -> Reservation {
    auth.reserve(&ReserveRequest::new(
        bot(),
        ToolCall::new("write_file", json!({})),
    ))
    .unwrap()
}

fn points(auth: &Authority, call: &ToolCall) -> i64 {
    auth.policy()
        .assess(call, &["agent:bot".to_string()])
        .risk_points
}

fn spent(auth: &Authority) -> i64 {
    auth.balances(Some("agent:bot")).unwrap()[0].spent
}

fn last_commit(auth: &Authority) -> AuditRecord {
    let q = AuditQuery {
        kinds: vec![AuditKind::Commit],
        ..AuditQuery::default()
    };
    auth.audit(&q).unwrap().pop().unwrap()
}

fn commit_ran(ran: Option<ToolCall>) -> CommitRequest {
    CommitRequest {
        ran,
        ..CommitRequest::default()
    }
}

#[test]
fn the_same_call_is_charged_the_hold_and_recorded_as_before() {
    let auth = authority();
    let call = ToolCall::new("write_file", json!({"path": "a"}));
    let r = auth
        .reserve(&ReserveRequest::new(bot(), call.clone()))
        .unwrap();
    let c = auth
        .commit(&r.reservation_id, &commit_ran(Some(call.clone())))
        .unwrap();
    assert_eq!(c.charged[0].amount, points(&auth, &call));
    assert!(last_commit(&auth).detail.unwrap().get("ran").is_none());
}

#[test]
fn a_costlier_call_that_ran_is_charged_its_points_and_named_in_the_record() {
    let auth = authority();
    let reserved = ToolCall::new("write_file", json!({"path": "a"}));
    let ran = ToolCall::new("deploy", json!({"to": "prod"}));
    assert!(points(&auth, &ran) > points(&auth, &reserved));
    let r = auth.reserve(&ReserveRequest::new(bot(), reserved)).unwrap();
    let c = auth
        .commit(&r.reservation_id, &commit_ran(Some(ran.clone())))
        .unwrap();
    assert_eq!(c.charged[0].amount, points(&auth, &ran));
    assert_eq!(spent(&auth), points(&auth, &ran));
    let detail = last_commit(&auth).detail.unwrap();
    assert_eq!(detail["ran"]["tool"], "deploy");
    assert_eq!(detail["ran"]["tier"], 3);
    assert_eq!(detail["ran"]["call_digest"], ran.digest());
    assert_eq!(detail["ran"]["risk_points"], points(&auth, &ran));
    assert!(auth.verify().unwrap().ok);
}

#[test]
fn a_cheaper_call_that_ran_is_never_charged_less_than_the_hold_or_the_actual_given() {
    let auth = authority();
    let reserved = ToolCall::new("deploy", json!({"to": "prod"}));
    let ran = ToolCall::new("read_file", json!({"path": "a"}));
    let r = auth
        .reserve(&ReserveRequest::new(bot(), reserved.clone()))
        .unwrap();
    let c = auth
        .commit(&r.reservation_id, &commit_ran(Some(ran.clone())))
        .unwrap();
    assert_eq!(c.charged[0].amount, points(&auth, &reserved));
    // The record still says that another call ran.
    assert_eq!(
        last_commit(&auth).detail.unwrap()["ran"]["tool"],
        "read_file"
    );
    // An actual above what the call that ran costs is charged as given.
    let r = reserve_write(&auth);
    let req = CommitRequest {
        actual: vec![Amount::new(Unit::RiskPoints, 2)],
        ran: Some(ran),
        charge_if_expired: false,
        idempotency_key: None,
    };
    assert_eq!(
        auth.commit(&r.reservation_id, &req).unwrap().charged[0].amount,
        2
    );
}

#[test]
fn a_malformed_call_that_ran_is_invalid_and_changes_nothing() {
    let auth = authority();
    let r = reserve_write(&auth);
    let records = auth.audit(&AuditQuery::default()).unwrap().len();
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    for ran in [ToolCall::new("", json!({})), ToolCall::new("deploy", deep)] {
        let err = auth
            .commit(&r.reservation_id, &commit_ran(Some(ran)))
            .unwrap_err();
        assert_eq!(err.code(), "INVALID_REQUEST", "{err}");
    }
    assert_eq!(auth.audit(&AuditQuery::default()).unwrap().len(), records);
    assert_eq!(
        auth.reservation(&r.reservation_id).unwrap().status,
        ReservationStatus::Active
    );
}

#[test]
fn the_call_that_ran_is_part_of_the_idempotent_request() {
    let auth = authority();
    let r = reserve_write(&auth);
    let keyed = |ran: ToolCall| CommitRequest {
        ran: Some(ran),
        idempotency_key: Some("k".into()),
        ..CommitRequest::default()
    };
    let deploy = ToolCall::new("deploy", json!({}));
    let first = auth
        .commit(&r.reservation_id, &keyed(deploy.clone()))
        .unwrap();
    let again = auth.commit(&r.reservation_id, &keyed(deploy)).unwrap();
    assert_eq!(first, again);
    let err = auth
        .commit(
            &r.reservation_id,
            &keyed(ToolCall::new("read_file", json!({}))),
        )
        .unwrap_err();
    assert_eq!(err.code(), "IDEMPOTENCY_MISMATCH", "{err}");
}

/// A call that ran and costs more than the budget can take under the reservation's overage
/// policy (REJECT, or an overdraft past its limit) must still be charged: it already ran. A
/// commit that failed instead left the reservation ACTIVE until it expired, and an expiry
/// returns the hold without charge: the call that ran otherwise cost nothing at all, less
/// than the hold a commit without `ran` charges.
#[test]
fn a_costlier_call_that_ran_past_the_budget_is_charged_what_is_left_not_refused() {
    for policy in [
        CommitOveragePolicy::Reject,
        CommitOveragePolicy::AllowWithOverdraft,
    ] {
        let reserved = ToolCall::new("write_file", json!({"path": "a"}));
        let ran = ToolCall::new("deploy", json!({"to": "prod"}));
        let auth = Authority::builder()
            .policy(
                Policy::default()
                    .register("write_file", Tier::T1)
                    .register("deploy", Tier::T3)
                    .budget(BudgetSpec::new("agent:bot", Unit::RiskPoints, 10)),
            )
            .build()
            .unwrap();
        let hold = points(&auth, &reserved);
        assert!(hold <= 10 && points(&auth, &ran) > 10, "{policy:?}");
        let mut req = ReserveRequest::new(bot(), reserved);
        req.overage_policy = Some(policy);
        let r = auth.reserve(&req).unwrap();
        let c = auth
            .commit(&r.reservation_id, &commit_ran(Some(ran)))
            .unwrap_or_else(|e| panic!("{policy:?}: {e}"));
        // Everything the budget had, never less than the hold.
        assert_eq!(c.charged[0].amount, 10, "{policy:?}");
        assert_eq!(spent(&auth), 10, "{policy:?}");
        assert_eq!(
            auth.reservation(&r.reservation_id).unwrap().status,
            ReservationStatus::Committed
        );
        assert!(auth.balances(Some("agent:bot")).unwrap()[0].is_over_limit);
        assert_eq!(last_commit(&auth).detail.unwrap()["ran"]["tool"], "deploy");
        assert!(auth.verify().unwrap().ok);
    }
    // An actual the caller gives past the budget is still refused under REJECT, as before.
    let auth = Authority::builder()
        .policy(
            Policy::default()
                .register("write_file", Tier::T1)
                .budget(BudgetSpec::new("agent:bot", Unit::RiskPoints, 10)),
        )
        .build()
        .unwrap();
    let mut req = ReserveRequest::new(bot(), ToolCall::new("write_file", json!({})));
    req.overage_policy = Some(CommitOveragePolicy::Reject);
    let r = auth.reserve(&req).unwrap();
    let over = CommitRequest {
        actual: vec![Amount::new(Unit::RiskPoints, 11)],
        ..CommitRequest::default()
    };
    let err = auth.commit(&r.reservation_id, &over).unwrap_err();
    assert_eq!(err.code(), "BUDGET_EXCEEDED", "{err}");
}
