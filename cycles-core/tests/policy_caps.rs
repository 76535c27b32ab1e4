//! ALLOW_WITH_CAPS rules are enforced, not advisory: denylists and allowlists deny with
//! POLICY_VIOLATION, cooldowns deny with COOLDOWN and `retry_after_ms`, steps run out; the
//! state lives in the ledger (so a second authority on the same SQLite file sees it).

use cycles_core::*;
use serde_json::json;

const POLICY: &str = r#"
[[tools]]
name = "read_file"
tier = 0

[[tools]]
name = "write_file"
tier = 1

[[tools]]
name = "deploy"
tier = 3

[[tools]]
name = "railway.*"
tier = 1

[[budgets]]
scope = "tenant:acme"
unit = "RISK_POINTS"
allocated = 1000

[[budgets]]
scope = "tenant:acme/agent:bot"
unit = "RISK_POINTS"
allocated = 100

[[caps]]
id = "low"
scope = "tenant:acme/agent:bot"
remaining_below = 90
max_steps_remaining = 3
deny_min_tier = 3
tool_denylist = ["railway.*"]
cooldown_ms = 1000
max_tokens = 2000
"#;

fn bot() -> Subject {
    Subject::new().tenant("acme").agent("bot")
}

fn call(tool: &str) -> ToolCall {
    ToolCall::new(tool, json!({"path": "x"}))
}

fn reserve(auth: &Authority, tool: &str) -> std::result::Result<Reservation, CyclesError> {
    auth.reserve(&ReserveRequest::new(bot(), call(tool)))
}

fn reserve_commit(auth: &Authority, tool: &str) -> Reservation {
    let r = reserve(auth, tool).unwrap_or_else(|e| panic!("{tool}: {e} {:?}", e.decision()));
    auth.commit(&r.reservation_id, &CommitRequest::default())
        .unwrap();
    r
}

fn denied(auth: &Authority, tool: &str) -> Decision {
    match reserve(auth, tool) {
        Err(CyclesError::Denied(d)) => *d,
        other => panic!("{tool}: expected a denial, got {other:?}"),
    }
}

fn authorities() -> Vec<(Authority, ManualClock, Option<tempfile::TempDir>)> {
    let policy = Policy::from_toml_str(POLICY, "caps.toml").unwrap();
    let mut out = Vec::new();
    let clock = ManualClock::new(10_000);
    out.push((
        Authority::builder()
            .policy(policy.clone())
            .clock(clock.clone())
            .build()
            .unwrap(),
        clock,
        None,
    ));
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(10_000);
    let ledger = SqliteLedger::open(dir.path().join("caps.db")).unwrap();
    out.push((
        Authority::builder()
            .policy(policy)
            .ledger(ledger)
            .clock(clock.clone())
            .build()
            .unwrap(),
        clock,
        Some(dir),
    ));
    out
}

#[test]
fn caps_apply_only_below_the_threshold() {
    for (auth, _clock, _dir) in authorities() {
        // 100 - 5 (two writes and a 3-point estimate don't matter): 99 >= 90, no caps.
        let r = reserve_commit(&auth, "write_file");
        assert_eq!(r.decision.decision, DecisionKind::Allow);
        assert!(r.decision.caps.is_none());
        // A tier-3 deploy costs 20: 99 - 20 = 79 < 90, so the caps apply and deny tier 3.
        let d = denied(&auth, "deploy");
        assert_eq!(d.reason_code, Some(ReasonCode::PolicyViolation));
        assert_eq!(d.scope.as_deref(), Some("tenant:acme/agent:bot"));
        assert!(
            d.rules
                .contains(&"caps:low@tenant:acme/agent:bot".to_string()),
            "{:?}",
            d.rules
        );
        assert!(d.message.unwrap().contains("tier 3"));
    }
}

#[test]
fn denylist_cooldown_and_steps_are_enforced() {
    for (auth, clock, _dir) in authorities() {
        // Spend down to 89 remaining with reads? Reads cost 0; use the budget directly.
        auth.set_budget(&BudgetSpec::new(
            "tenant:acme/agent:bot",
            Unit::RiskPoints,
            50,
        ))
        .unwrap();

        // Below the threshold: ALLOW_WITH_CAPS with the caps reported.
        let r = reserve_commit(&auth, "write_file");
        assert_eq!(r.decision.decision, DecisionKind::AllowWithCaps);
        let caps = r.decision.caps.clone().unwrap();
        assert_eq!(caps.max_steps_remaining, Some(2));
        assert_eq!(caps.cooldown_ms, Some(1000));
        assert_eq!(caps.max_tokens, Some(2000));
        let deny = caps.tool_denylist.unwrap();
        assert!(
            deny.contains(&"railway.*".to_string()) && deny.contains(&"deploy".to_string()),
            "{deny:?}"
        );
        assert!(!deny.contains(&"write_file".to_string()));

        // Immediately again: cooling down, with the time left.
        let d = denied(&auth, "read_file");
        assert_eq!(d.reason_code, Some(ReasonCode::Cooldown));
        assert_eq!(d.retry_after_ms, Some(1000));
        // decide says the same and holds nothing.
        let dd = auth
            .decide(&DecideRequest::new(bot(), call("read_file")))
            .unwrap();
        assert_eq!(dd.reason_code, Some(ReasonCode::Cooldown));
        clock.advance(400);
        assert_eq!(denied(&auth, "read_file").retry_after_ms, Some(600));
        clock.advance(600);

        // Cooldown over; a denylisted tool is still denied, and its denial starts no cooldown.
        let d = denied(&auth, "railway.delete_volume");
        assert_eq!(d.reason_code, Some(ReasonCode::PolicyViolation));
        assert!(d.message.unwrap().contains("denylist"));
        assert_eq!(
            denied(&auth, "deploy").reason_code,
            Some(ReasonCode::PolicyViolation)
        );
        // decide does not start a cooldown either.
        let dd = auth
            .decide(&DecideRequest::new(bot(), call("read_file")))
            .unwrap();
        assert_eq!(dd.decision, DecisionKind::AllowWithCaps);
        let r = reserve_commit(&auth, "read_file");
        assert_eq!(r.decision.caps.unwrap().max_steps_remaining, Some(1));

        clock.advance(1000);
        let r = reserve_commit(&auth, "read_file");
        assert_eq!(r.decision.caps.unwrap().max_steps_remaining, Some(0));
        clock.advance(1000);
        let d = denied(&auth, "read_file");
        assert_eq!(d.reason_code, Some(ReasonCode::PolicyViolation));
        assert!(d.message.unwrap().contains("no steps left"));

        // A new allocation restarts the step count (still below the threshold: caps again).
        auth.set_budget(&BudgetSpec::new(
            "tenant:acme/agent:bot",
            Unit::RiskPoints,
            60,
        ))
        .unwrap();
        let r = reserve_commit(&auth, "read_file");
        assert_eq!(r.decision.decision, DecisionKind::AllowWithCaps);
        assert_eq!(r.decision.caps.unwrap().max_steps_remaining, Some(2));

        // Above the threshold again: plain ALLOW, no caps, no cooldown.
        auth.set_budget(&BudgetSpec::new(
            "tenant:acme/agent:bot",
            Unit::RiskPoints,
            500,
        ))
        .unwrap();
        let r = reserve_commit(&auth, "deploy");
        assert_eq!(r.decision.decision, DecisionKind::Allow);
        reserve_commit(&auth, "deploy");
        assert!(auth.verify().unwrap().ok);
    }
}

#[test]
fn cooldown_state_lives_in_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let policy = Policy::from_toml_str(POLICY, "caps.toml").unwrap();
    let clock = ManualClock::new(50_000);
    let open = || {
        Authority::builder()
            .policy(policy.clone())
            .ledger(SqliteLedger::open(&path).unwrap())
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    let first = open();
    first
        .set_budget(&BudgetSpec::new(
            "tenant:acme/agent:bot",
            Unit::RiskPoints,
            50,
        ))
        .unwrap();
    reserve_commit(&first, "write_file");
    // Another authority (another process, in practice) on the same file sees the cooldown.
    let second = open();
    let d = denied(&second, "write_file");
    assert_eq!(d.reason_code, Some(ReasonCode::Cooldown));
    assert_eq!(d.retry_after_ms, Some(1000));
}

#[test]
fn rules_without_scope_watch_every_budgeted_scope() {
    let text = r#"
[[tools]]
name = "write_file"
tier = 1

[[budgets]]
scope = "tenant:acme"
unit = "RISK_POINTS"
allocated = 10

[[budgets]]
scope = "tenant:acme/agent:bot"
unit = "RISK_POINTS"
allocated = 1000

[[caps]]
id = "any"
remaining_below = 20
tool_allowlist = ["read_*"]
"#;
    let auth = Authority::builder()
        .policy(Policy::from_toml_str(text, "t.toml").unwrap())
        .build()
        .unwrap();
    // The tenant budget (10) is low though the agent's (1000) is not: the tenant's caps apply.
    let d = denied(&auth, "write_file");
    assert_eq!(d.reason_code, Some(ReasonCode::PolicyViolation));
    assert_eq!(d.scope.as_deref(), Some("tenant:acme"));
    assert!(d.message.unwrap().contains("allowlist"));
    // An unregistered tool on the allowlist passes the caps (unknown tier 3 = 20 points > 10).
    let d = denied(&auth, "read_mail");
    assert_eq!(d.reason_code, Some(ReasonCode::BudgetExceeded));
}

fn load_err(text: &str) -> String {
    let err = Policy::from_toml_str(text, "bad.toml").unwrap_err();
    assert_eq!(err.code(), "POLICY_INVALID");
    err.to_string()
}

#[test]
fn invalid_caps_and_approval_sections() {
    let base = "[[caps]]\nid = \"c\"\nremaining_below = 5\ncooldown_ms = 10\n";
    assert!(Policy::from_toml_str(base, "ok.toml").is_ok());
    let m = load_err(&base.replace("= 5", "= -5"));
    assert!(
        m.contains("line 3") && m.contains("caps[0].remaining_below"),
        "{m}"
    );
    let m = load_err(&format!("{base}scope = \"agent:x/tenant:y\"\n"));
    assert!(m.contains("line 5") && m.contains("caps[0].scope"), "{m}");
    let m = load_err(&format!("{base}tool_denylist = [\"a\", \"b[\"]\n"));
    assert!(
        m.contains("line 5") && m.contains("caps[0].tool_denylist[1]"),
        "{m}"
    );
    let m = load_err(&format!("{base}{base}"));
    assert!(
        m.contains("line 6") && m.contains("caps[1].id") && m.contains("twice"),
        "{m}"
    );
    let m = load_err("[[caps]]\nid = \"c\"\nremaining_below = 5\n");
    assert!(m.contains("line 2") && m.contains("sets no cap"), "{m}");
    let m = load_err(&format!("{base}deny_min_tier = 5\n"));
    assert!(
        m.contains("line 5") && m.contains("caps[0].deny_min_tier"),
        "{m}"
    );

    let key = "a".repeat(64);
    let ok = format!("[approval]\nthreshold_tier = 3\npublic_keys = [\"{key}\"]\n");
    let p = Policy::from_toml_str(&ok, "ok.toml").unwrap();
    assert_eq!(p.approval.threshold_tier, Tier::T3);
    assert_eq!(p.approval.keys(), vec![[0xaa; 32]]);
    assert_eq!(Policy::default().approval.threshold_tier, Tier::T4);
    let m = load_err(&ok.replace(&key, "abc"));
    assert!(
        m.contains("line 3") && m.contains("approval.public_keys[0]"),
        "{m}"
    );
    let m = load_err(&ok.replace(&key, &"zz".repeat(32)));
    assert!(m.contains("approval.public_keys[0]"), "{m}");
    let m = load_err(&ok.replace("threshold_tier = 3", "threshold_tier = 9"));
    assert!(
        m.contains("line 2") && m.contains("approval.threshold_tier"),
        "{m}"
    );
    let m = load_err(&ok.replace("public_keys", "keys"));
    assert!(
        m.contains("approval.keys") && m.contains("unknown field"),
        "{m}"
    );
}

#[test]
fn policies_without_the_new_sections_keep_their_json_shape() {
    // Golden fixtures embed policies as JSON: the new sections are optional and omitted when
    // unused, so an old policy round-trips to the same JSON.
    let old = json!({
        "tier_points": [0, 1, 5, 20, 50],
        "tools": [{"name": "read_file", "tier": 0}],
        "unknown_tool": {"action": "deny"},
        "budgets": [],
        "max_tier": [],
        "defaults": {"ttl_ms": 60000, "grace_period_ms": 5000, "overage_policy": "ALLOW_IF_AVAILABLE"}
    });
    let p: Policy = serde_json::from_value(old.clone()).unwrap();
    assert_eq!(serde_json::to_value(&p).unwrap(), old);
}
