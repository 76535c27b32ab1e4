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
