//! `verify` reports no state mismatch where nothing was tampered with, however the ledger is
//! shared and used: two authorities with different policies (as two processes would be) on
//! one SQLite file, each through its own connection, creating their policies' budgets at
//! build; idempotent replays; a reserve that first expires stale holds to make room; lazy
//! expiry inside commit and extend; a capped commit; a commit whose `ran` costs more than is
//! left; debt and its repayment; budget changes. Both authorities verify clean.

use cycles_core::*;
use serde_json::json;

fn policy(agent_allocation: i64) -> Policy {
    Policy::default()
        .register("write_file", Tier::T1)
        .register("deploy", Tier::T3)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 10_000))
        .budget(BudgetSpec::new(
            "tenant:acme/agent:bot",
            Unit::RiskPoints,
            agent_allocation,
        ))
}

fn open(path: &std::path::Path, p: Policy, clock: &ManualClock) -> Authority {
    Authority::builder()
        .policy(p)
        .ledger(SqliteLedger::open(path).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn bot() -> Subject {
    Subject::new().tenant("acme").agent("bot")
}

fn call(tool: &str, n: u32) -> ToolCall {
    ToolCall::new(tool, json!({ "n": n }))
}

#[test]
fn two_policies_on_one_file_and_every_legitimate_path_verify_clean() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let clock = ManualClock::new(1_000);
    let a = open(&path, policy(60), &clock);
    // The second policy also budgets a scope the first does not; the shared one exists.
    let b = open(
        &path,
        policy(999).budget(BudgetSpec::new("tenant:acme", Unit::Credits, 50)),
        &clock,
    );
    let verify_both = |what: &str| {
        for auth in [&a, &b] {
            let report = auth.verify().unwrap();
            assert!(report.ok, "{what}: {report:?}");
        }
    };
    verify_both("built");

    // Idempotent reserve, replayed from the other authority.
    let mut req = ReserveRequest::new(bot(), call("deploy", 1));
    req.idempotency_key = Some("k1".into());
    let r1 = a.reserve(&req).unwrap();
    assert_eq!(b.reserve(&req).unwrap(), r1);
    // Idempotent commit, replayed.
    let commit = CommitRequest {
        idempotency_key: Some("c1".into()),
        ..CommitRequest::default()
    };
    let c1 = b.commit(&r1.reservation_id, &commit).unwrap();
    assert_eq!(a.commit(&r1.reservation_id, &commit).unwrap(), c1);
    verify_both("replays");

    // Holds that fill the agent's budget, left to go stale; a later reserve expires them to
    // make room (inside its own transaction), a commit and an extend find theirs expired.
    let mut stale = Vec::new();
    while let Ok(r) = a.reserve(&ReserveRequest::new(bot(), call("write_file", 2))) {
        stale.push(r);
    }
    assert!(stale.len() >= 2);
    clock.advance(24 * 3_600_000);
    let err = b
        .commit(&stale[0].reservation_id, &CommitRequest::default())
        .unwrap_err();
    assert_eq!(err.code(), "RESERVATION_EXPIRED", "{err}");
    let err = a
        .extend(
            &stale[1].reservation_id,
            &ExtendRequest {
                extend_by_ms: 1,
                idempotency_key: None,
            },
        )
        .unwrap_err();
    assert_eq!(err.code(), "RESERVATION_EXPIRED", "{err}");
    let fresh = b
        .reserve(&ReserveRequest::new(bot(), call("deploy", 3)))
        .unwrap();
    verify_both("stale holds expired");

    // A capped commit, and a commit whose `ran` costs more than the budget has left.
    let mut capped = ReserveRequest::new(bot(), call("write_file", 4));
    capped.overage_policy = Some(CommitOveragePolicy::AllowIfAvailable);
    let capped = a.reserve(&capped).unwrap();
    a.commit(
        &capped.reservation_id,
        &CommitRequest {
            actual: vec![Amount::new(Unit::RiskPoints, 5_000)],
            ..CommitRequest::default()
        },
    )
    .unwrap();
    let mut rejecting = ReserveRequest::new(bot(), call("write_file", 5));
    rejecting.overage_policy = Some(CommitOveragePolicy::Reject);
    if let Ok(r) = b.reserve(&rejecting) {
        let ran = CommitRequest {
            ran: Some(call("deploy", 99)),
            ..CommitRequest::default()
        };
        b.commit(&r.reservation_id, &ran).unwrap();
    }
    b.release(&fresh.reservation_id, &ReleaseRequest::default())
        .unwrap();
    verify_both("charges");

    // Debt on the second policy's budget, repaid; a budget changed; a denied reserve.
    b.event(&EventRequest {
        subject: bot(),
        call: call("write_file", 6),
        actual: vec![Amount::new(Unit::Credits, 70)],
        overage_policy: Some(CommitOveragePolicy::AllowWithOverdraft),
        idempotency_key: None,
    })
    .map(|_| ())
    .or_else(|e| {
        // No overdraft allowed yet: allow some, then charge.
        assert_eq!(e.code(), "OVERDRAFT_LIMIT_EXCEEDED", "{e}");
        let mut spec = BudgetSpec::new("tenant:acme", Unit::Credits, 50);
        spec.overdraft_limit = 100;
        a.set_budget(&spec).unwrap();
        b.event(&EventRequest {
            subject: bot(),
            call: call("write_file", 6),
            actual: vec![Amount::new(Unit::Credits, 70)],
            overage_policy: Some(CommitOveragePolicy::AllowWithOverdraft),
            idempotency_key: None,
        })
        .map(|_| ())
    })
    .unwrap();
    a.repay_debt("tenant:acme", Unit::Credits, 15).unwrap();
    // A unit no scope budgets: denied (and recorded) without touching any budget.
    let mut denied = ReserveRequest::new(bot(), call("write_file", 7));
    denied.estimate = vec![Amount::new(Unit::Tokens, 10)];
    let err = b.reserve(&denied).unwrap_err();
    assert_eq!(err.code(), "BUDGET_NOT_FOUND", "{err}");
    a.sweep_expired().unwrap();
    verify_both("debt, repayment, denial");
    let records = a.audit(&AuditQuery::default()).unwrap();
    for kind in [
        AuditKind::Expire,
        AuditKind::Commit,
        AuditKind::Release,
        AuditKind::Event,
        AuditKind::BudgetSet,
        AuditKind::Denial,
    ] {
        assert!(records.iter().any(|r| r.kind == kind), "{kind:?}");
    }
}
