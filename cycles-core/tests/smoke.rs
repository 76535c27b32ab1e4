use cycles_core::*;
use serde_json::json;

fn auth_on(ledger: impl Ledger + 'static, clock: ManualClock) -> Authority {
    let policy = Policy::default()
        .register("read_file", Tier::T0)
        .register("write_file", Tier::T1)
        .register("railway.delete_volume", Tier::T4)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 100))
        .budget(BudgetSpec::new(
            "tenant:acme/agent:bot",
            Unit::RiskPoints,
            30,
        ));
    Authority::builder()
        .policy(policy)
        .ledger(ledger)
        .clock(clock)
        .build()
        .unwrap()
}

#[test]
fn reserve_commit_deny() {
    let dir = tempfile::tempdir().unwrap();
    for auth in [
        auth_on(MemoryLedger::new(), ManualClock::new(1_000)),
        auth_on(
            SqliteLedger::open(dir.path().join("l.db")).unwrap(),
            ManualClock::new(1_000),
        ),
    ] {
        let bot = Subject::new().tenant("acme").agent("bot");
        let w = ReserveRequest::new(bot.clone(), ToolCall::new("write_file", json!({"p": 1})));
        let r = auth.reserve(&w).unwrap();
        assert_eq!(r.holds[0].amount, 1);
        assert_eq!(r.holds[0].scopes.len(), 2);
        let c = auth
            .commit(&r.reservation_id, &CommitRequest::default())
            .unwrap();
        assert_eq!(c.charged[0].amount, 1);
        let err = auth
            .reserve(&ReserveRequest::new(
                bot.clone(),
                ToolCall::new("railway.delete_volume", json!({})),
            ))
            .unwrap_err();
        assert_eq!(err.code(), "BUDGET_EXCEEDED");
        assert_eq!(
            err.decision().unwrap().scope.as_deref(),
            Some("tenant:acme/agent:bot")
        );
        let bal = auth.balances(Some("tenant:acme/agent:bot")).unwrap();
        assert_eq!(bal[0].spent, 1);
        assert_eq!(bal[0].remaining, 29);
        let v = auth.verify().unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!(v.records, 5); // 2 budget_set + reserve + commit + denial
    }
}

#[test]
fn debt_blocks_reservations_until_repaid() {
    let dir = tempfile::tempdir().unwrap();
    for auth in [
        auth_on(MemoryLedger::new(), ManualClock::new(1_000)),
        auth_on(
            SqliteLedger::open(dir.path().join("d.db")).unwrap(),
            ManualClock::new(1_000),
        ),
    ] {
        let scope = "tenant:acme/agent:bot";
        let mut spec = BudgetSpec::new(scope, Unit::Credits, 10);
        spec.overdraft_limit = 20;
        auth.set_budget(&spec).unwrap();
        let bot = Subject::new().tenant("acme").agent("bot");
        let ev = EventRequest {
            subject: bot.clone(),
            call: ToolCall::new("read_file", json!({})),
            actual: vec![Amount::new(Unit::Credits, 25)],
            overage_policy: Some(CommitOveragePolicy::AllowWithOverdraft),
            idempotency_key: None,
        };
        let r = auth.event(&ev).unwrap();
        assert_eq!(r.debt_incurred, vec![Amount::new(Unit::Credits, 15)]);
        let mut res = ReserveRequest::new(bot.clone(), ToolCall::new("read_file", json!({})));
        res.estimate = vec![Amount::new(Unit::Credits, 1)];
        assert_eq!(auth.reserve(&res).unwrap_err().code(), "DEBT_OUTSTANDING");

        // Repaying more than the debt is refused and changes nothing.
        let before = auth.balances(Some(scope)).unwrap();
        let audit_len = auth.verify().unwrap().records;
        let err = auth.repay_debt(scope, Unit::Credits, 16).unwrap_err();
        assert_eq!(err.code(), "INVALID_REQUEST");
        assert_eq!(auth.balances(Some(scope)).unwrap(), before);
        assert_eq!(auth.verify().unwrap().records, audit_len);

        let b = auth.repay_debt(scope, Unit::Credits, 5).unwrap();
        assert_eq!(
            (b.allocated, b.spent, b.debt, b.remaining),
            (15, 15, 10, -10)
        );
        assert_eq!(auth.reserve(&res).unwrap_err().code(), "DEBT_OUTSTANDING");
        let b = auth.repay_debt(scope, Unit::Credits, 10).unwrap();
        assert_eq!((b.allocated, b.spent, b.debt, b.remaining), (25, 25, 0, 0));
        // Paid off but nothing left: the next credit reservation is over budget, not in debt.
        assert_eq!(auth.reserve(&res).unwrap_err().code(), "BUDGET_EXCEEDED");
        spec.allocated = 30;
        auth.set_budget(&spec).unwrap();
        assert!(auth.reserve(&res).is_ok());
        assert!(auth.verify().unwrap().ok);
    }
}
