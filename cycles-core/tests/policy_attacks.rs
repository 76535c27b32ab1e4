//! The agent shapes a call (tool name, arguments, `kind`, `tags`, estimates, ttl, idempotency
//! key) to get it rated lower, charged less or past a cap. Every attack here must fail: the
//! tier never drops below what the registration and the arguments justify, bad input is
//! INVALID_REQUEST with nothing recorded, and caps hold under look-alike names and concurrency.

use std::sync::{Arc, Barrier};

use cycles_core::classify::canonical_name;
use cycles_core::policy::UnknownTool;
use cycles_core::*;
use serde_json::json;

const POLICY: &str = r#"
[[tools]]
name = "ops.*"
tier = 1

[[tools]]
name = "ops.reap"
tier = 4

[[tools]]
name = "run_sql"
tier = 0
kind = "db.query"
classifier = "sql"

[[tools]]
name = "read_file"
tier = 0

[[tools]]
name = "deploy"
tier = 3

[[budgets]]
scope = "tenant:acme"
unit = "RISK_POINTS"
allocated = 100000
"#;

fn policy() -> Policy {
    Policy::from_toml_str(POLICY, "attacks.toml").unwrap()
}

fn auth_with(policy: Policy) -> Authority {
    Authority::builder()
        .policy(policy)
        .clock(ManualClock::new(10_000))
        .build()
        .unwrap()
}

fn acme() -> Subject {
    Subject::new().tenant("acme").agent("bot")
}

fn tier_of(p: &CompiledPolicy, name: &str, args: serde_json::Value) -> Tier {
    p.classify(&ToolCall::new(name, args)).tier
}

fn audit_len(auth: &Authority) -> usize {
    auth.audit(&AuditQuery::default()).unwrap().len()
}

fn code<T: std::fmt::Debug>(r: Result<T>) -> String {
    match r {
        Err(e) => e.code().to_string(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

// ---- 1. tool name tricks -------------------------------------------------------------------

#[test]
fn names_outside_the_strict_charset_are_invalid_and_record_nothing() {
    let auth = auth_with(policy());
    let long = format!("ops.{}", "a".repeat(253));
    let bad = [
        "",
        " ops.reap",
        "ops.reap ",
        "ops. reap",
        "ops.reap\n",
        "ops.re\u{200b}ap", // zero-width space
        "ops.re\u{00AD}ap", // soft hyphen
        "ｏｐｓ.ｒｅａｐ",  // full-width letters
        "оps.reap",         // Cyrillic о
        "ops.reap\u{0}",    // NUL
        "ops.*",            // a glob is not a tool name
        "ops.reap;rm",
        long.as_str(),
    ];
    let before = audit_len(&auth);
    for name in bad {
        let call = ToolCall::new(name, json!({}));
        assert_eq!(
            code(auth.reserve(&ReserveRequest::new(acme(), call.clone()))),
            "INVALID_REQUEST",
            "{name:?}"
        );
        assert_eq!(
            code(auth.decide(&DecideRequest::new(acme(), call))),
            "INVALID_REQUEST",
            "{name:?}"
        );
    }
    assert_eq!(audit_len(&auth), before, "bad input must leave no record");
    // 256 characters is the longest valid name, and it is rated (here by the `ops.*` glob).
    let ok = format!("ops.{}", "a".repeat(252));
    assert_eq!(ok.len(), 256);
    let r = auth
        .reserve(&ReserveRequest::new(acme(), ToolCall::new(&ok, json!({}))))
        .unwrap();
    assert_eq!(r.tier, Tier::T1);
}

#[test]
fn look_alike_names_are_never_rated_below_the_registered_tool() {
    let p = policy().compile().unwrap();
    assert_eq!(tier_of(&p, "ops.reap", json!({})), Tier::T4);
    // Each of these reaches `ops.reap` on a case-insensitive or normalising executor; before,
    // those matching `ops.*` were tier 1 and the others the unknown tier 3.
    for name in [
        "OPS.REAP",
        "ops.Reap",
        "Ops.reap",
        "ops..reap",
        "ops.reap.",
        "ops.reap..",
        ".ops.reap",
        "ops.reap_",
        "ops.reap-",
    ] {
        let c = p.classify(&ToolCall::new(name, json!({})));
        assert_eq!(c.tier, Tier::T4, "{name}: {:?}", c.rules);
        assert!(
            c.rules.iter().any(|r| r == "name.look_alike:ops.reap"),
            "{name}: {:?}",
            c.rules
        );
    }
    // Other `ops.*` names keep the glob's tier: the look-alike rule is not "everything max".
    assert_eq!(tier_of(&p, "ops.list", json!({})), Tier::T1);
    assert_eq!(tier_of(&p, "OPS.LIST", json!({})), Tier::T3); // unknown (3) and `ops.*` (1)
}

#[test]
fn a_look_alike_of_a_classified_tool_runs_its_classifier() {
    let drop = json!({"query": "DROP DATABASE prod"});
    let p = policy().compile().unwrap();
    assert_eq!(tier_of(&p, "run_sql", drop.clone()), Tier::T4);
    assert_eq!(
        tier_of(&p, "run_sql", json!({"query": "SELECT 1"})),
        Tier::T0
    );
    // A lenient unknown tier (0) must not make `RUN_SQL` a free pass for DROP DATABASE.
    let lenient = policy()
        .unknown_tool(UnknownTool::Tier { tier: Tier::T0 })
        .compile()
        .unwrap();
    for name in ["RUN_SQL", "Run_Sql", "run__sql", "run_sql."] {
        let c = lenient.classify(&ToolCall::new(name, drop.clone()));
        assert_eq!(c.tier, Tier::T4, "{name}: {:?}", c.rules);
        assert!(c.rules.iter().any(|r| r == "sql.drop"), "{:?}", c.rules);
        assert_eq!(
            tier_of(&lenient, name, json!({"query": "SELECT 1"})),
            Tier::T0,
            "{name}: a read stays a read"
        );
    }
}

#[test]
fn a_look_alike_is_still_an_unknown_tool_when_unknown_tools_are_denied() {
    let auth = auth_with(policy().unknown_tool(UnknownTool::Deny));
    for name in ["OPS.REAP", "Read_File", "read_file."] {
        let call = ToolCall::new(name, json!({}));
        match auth.reserve(&ReserveRequest::new(acme(), call)) {
            Err(CyclesError::Denied(d)) => {
                assert_eq!(d.reason_code, Some(ReasonCode::ToolUnknown), "{name}")
            }
            other => panic!("{name}: expected TOOL_UNKNOWN, got {other:?}"),
        }
    }
    auth.reserve(&ReserveRequest::new(
        acme(),
        ToolCall::new("read_file", json!({})),
    ))
    .unwrap();
}

#[test]
fn an_exact_registration_beats_any_glob_whatever_the_order() {
    // Glob first, exact second (POLICY) and exact first, glob second: both rate ops.reap 4.
    let reversed = Policy::default()
        .register("ops.reap", Tier::T4)
        .register("ops.*", Tier::T1)
        .compile()
        .unwrap();
    for p in [policy().compile().unwrap(), reversed] {
        assert_eq!(tier_of(&p, "ops.reap", json!({})), Tier::T4);
        assert_eq!(tier_of(&p, "ops.other", json!({})), Tier::T1);
    }
}

#[test]
fn a_look_alike_of_a_glob_registration_gets_the_glob_tier() {
    let p = Policy::default()
        .register("railway.*", Tier::T4)
        .unknown_tool(UnknownTool::Tier { tier: Tier::T2 })
        .compile()
        .unwrap();
    assert_eq!(tier_of(&p, "railway.status", json!({})), Tier::T4);
    // Case-variant of the namespace: not matched by the case-sensitive glob, so unknown (2);
    // it must not be rated below the namespace's 4.
    assert_eq!(tier_of(&p, "Railway.status", json!({})), Tier::T4);
    assert_eq!(tier_of(&p, "RAILWAY..status", json!({})), Tier::T4);
    assert_eq!(tier_of(&p, "other.status", json!({})), Tier::T2);
}

#[test]
fn the_mcp_gate_prefix_does_not_open_a_gap() {
    // The MCP gate classifies `<prefix><upstream name>`; the upstream name is the agent's.
    let p = Policy::default()
        .register("railway.*", Tier::T1)
        .register("railway.delete_volume", Tier::T4)
        .compile()
        .unwrap();
    for upstream in [
        "delete_volume",
        "Delete_Volume",
        "DELETE_VOLUME",
        "delete_volume.",
        ".delete_volume",
        "_delete_volume",
    ] {
        let tool = format!("railway.{upstream}");
        assert_eq!(tier_of(&p, &tool, json!({})), Tier::T4, "{tool}");
    }
    // An empty upstream name gives `railway.`, which the glob matches: tier 1, but it names
    // no upstream tool (the upstream refuses it).
    assert_eq!(tier_of(&p, "railway.", json!({})), Tier::T1);
}

#[test]
fn an_unregistered_name_without_case_keeps_its_heuristic_tier() {
    // `railway.volumeDelete` is 4 by the name heuristics (tier 4 needs an approval); spelled
    // without case, which a case-insensitive executor runs as the same tool, it was one
    // unknown word and only the unknown tier 3.
    let p = Policy::default().compile().unwrap();
    for name in [
        "railway.volumeDelete",
        "railway.volumedelete",
        "RAILWAY.VOLUMEDELETE",
        "deletebackup",
        "DROPDATABASE",
    ] {
        assert_eq!(tier_of(&p, name, json!({})), Tier::T4, "{name}");
    }
    for name in ["ui.dropdown", "productionstatus", "listvolumes"] {
        assert_eq!(
            tier_of(&p, name, json!({})),
            Tier::T3,
            "{name}: the unknown tier"
        );
    }
}

#[test]
fn canonical_names() {
    assert_eq!(
        canonical_name("Railway..Delete_Volume."),
        "railway.delete_volume"
    );
    assert_eq!(canonical_name("__a--b__"), "a-b");
    assert_eq!(canonical_name("a._b"), "a.b");
    assert_eq!(canonical_name("..."), "");
    assert_eq!(canonical_name("a/b:c"), "a/b:c");
}

// ---- 2. caller-supplied kind and tags ------------------------------------------------------

#[test]
fn caller_kind_and_tags_never_lower_the_tier() {
    let p = policy().compile().unwrap();
    let mut call = ToolCall::new("run_sql", json!({"query": "DROP DATABASE prod"}));
    call.action.kind = Some("fs.read".into());
    call.action.tags = vec!["read-only".into(), "tier:0".into(), "safe".into()];
    let c = p.classify(&call);
    assert_eq!(c.tier, Tier::T4);
    // The registration's kind is the one classification reports.
    assert_eq!(c.kind.as_deref(), Some("db.query"));

    let mut reap = ToolCall::new("ops.reap", json!({}));
    reap.action.kind = Some("read.only".into());
    assert_eq!(p.classify(&reap).tier, Tier::T4);

    // An unknown tool with a harmless kind is still the unknown tier.
    let mut unknown = ToolCall::new("mystery", json!({}));
    unknown.action.kind = Some("fs.read".into());
    unknown.action.tags = vec!["tier:0".into()];
    assert_eq!(p.classify(&unknown).tier, Tier::T3);

    // Reserved with a lying kind: still tier 4 (50 points), so it needs an approval.
    let auth = auth_with(policy());
    match auth.reserve(&ReserveRequest::new(acme(), call)) {
        Err(CyclesError::Denied(d)) => {
            assert_eq!(d.tier, Tier::T4);
            assert_eq!(d.risk_points, 50);
            assert_eq!(d.reason_code, Some(ReasonCode::ApprovalRequired));
        }
        other => panic!("expected an approval requirement, got {other:?}"),
    }
}

#[test]
fn the_audit_trail_and_the_reservation_record_the_registrations_kind_not_the_callers() {
    let auth = auth_with(policy());
    let mut call = ToolCall::new("run_sql", json!({"query": "SELECT 1"}));
    call.action.kind = Some("fs.read".into());
    let r = auth
        .reserve(&ReserveRequest::new(acme(), call.clone()))
        .unwrap();
    assert_eq!(r.action.kind.as_deref(), Some("db.query"));
    auth.decide(&DecideRequest::new(acme(), call)).unwrap();
    let records = auth.audit(&AuditQuery::default()).unwrap();
    let kinds: Vec<_> = records
        .iter()
        .filter_map(|rec| rec.action.as_ref())
        .map(|a| a.kind.as_deref())
        .collect();
    assert!(kinds.len() >= 2, "{kinds:?}");
    assert!(kinds.iter().all(|k| *k == Some("db.query")), "{kinds:?}");
    assert!(auth.verify().unwrap().ok);
}

// ---- 3. estimates, points, ttl, idempotency, extend ----------------------------------------

fn reserve_req(tool: &str) -> ReserveRequest {
    ReserveRequest::new(acme(), ToolCall::new(tool, json!({})))
}

#[test]
fn estimates_cannot_lower_or_dodge_the_charge() {
    let auth = auth_with(policy());
    let before = audit_len(&auth);
    let mut neg = reserve_req("ops.reap");
    neg.estimate = vec![Amount::new(Unit::RiskPoints, -50)];
    assert_eq!(code(auth.reserve(&neg)), "INVALID_REQUEST");
    let mut twice = reserve_req("ops.reap");
    twice.estimate = vec![
        Amount::new(Unit::RiskPoints, 0),
        Amount::new(Unit::RiskPoints, 0),
    ];
    assert_eq!(code(auth.reserve(&twice)), "INVALID_REQUEST");
    // An estimate overflowing i64 with the tier's points is an error, never an allow.
    let mut huge = reserve_req("ops.reap");
    huge.estimate = vec![Amount::new(Unit::RiskPoints, i64::MAX)];
    assert_eq!(code(auth.reserve(&huge)), "AMOUNT_OVERFLOW");
    assert_eq!(audit_len(&auth), before);

    // A RISK_POINTS estimate adds to the tier's points.
    let mut extra = reserve_req("deploy");
    extra.estimate = vec![Amount::new(Unit::RiskPoints, 7)];
    let r = auth.reserve(&extra).unwrap();
    assert_eq!(r.reserved(), vec![Amount::new(Unit::RiskPoints, 27)]);

    // A unit nobody budgets is BUDGET_NOT_FOUND, not a free pass.
    let mut usd = reserve_req("read_file");
    usd.estimate = vec![Amount::new(Unit::UsdMicrocents, 1)];
    match auth.reserve(&usd) {
        Err(CyclesError::Denied(d)) => {
            assert_eq!(d.reason_code, Some(ReasonCode::BudgetNotFound))
        }
        other => panic!("expected BUDGET_NOT_FOUND, got {other:?}"),
    }
}

#[test]
fn tier_points_cannot_be_negative_decreasing_or_overflow() {
    let mut p = policy();
    p.tier_points = [0, 1, 5, 20, -1];
    assert_eq!(p.compile().unwrap_err().code(), "POLICY_INVALID");
    let mut p = policy();
    p.tier_points = [0, 10, 5, 20, 50];
    assert_eq!(p.compile().unwrap_err().code(), "POLICY_INVALID");
    let mut p = policy();
    p.tier_points = [0, 1, 5, 20, i64::MAX];
    let auth = auth_with(p);
    let mut req = reserve_req("ops.reap");
    req.estimate = vec![Amount::new(Unit::RiskPoints, 1)];
    assert_eq!(code(auth.reserve(&req)), "AMOUNT_OVERFLOW");
    // Without the extra point it is simply more than any budget holds.
    match auth.reserve(&reserve_req("ops.reap")) {
        Err(CyclesError::Denied(d)) => {
            assert_eq!(d.reason_code, Some(ReasonCode::BudgetExceeded))
        }
        other => panic!("expected BUDGET_EXCEEDED, got {other:?}"),
    }
}

#[test]
fn ttl_and_grace_extremes_are_invalid() {
    let auth = auth_with(policy());
    for ttl in [0, -1, 999, 86_400_001, i64::MAX, i64::MIN] {
        let mut req = reserve_req("read_file");
        req.ttl_ms = Some(ttl);
        assert_eq!(code(auth.reserve(&req)), "INVALID_REQUEST", "ttl {ttl}");
    }
    for grace in [-1, 60_001, i64::MAX, i64::MIN] {
        let mut req = reserve_req("read_file");
        req.grace_period_ms = Some(grace);
        assert_eq!(code(auth.reserve(&req)), "INVALID_REQUEST", "grace {grace}");
    }
    let mut req = reserve_req("read_file");
    req.ttl_ms = Some(86_400_000);
    req.grace_period_ms = Some(60_000);
    let r = auth.reserve(&req).unwrap();
    assert_eq!(r.expires_at_ms, 10_000 + 86_400_000);
}

#[test]
fn idempotency_keys_bind_the_call_and_the_subject() {
    let auth = auth_with(policy());
    let mut first = reserve_req("read_file");
    first.idempotency_key = Some("k1".into());
    let r1 = auth.reserve(&first).unwrap();
    // The same request replays the same reservation.
    assert_eq!(
        auth.reserve(&first).unwrap().reservation_id,
        r1.reservation_id
    );
    // The same key with another call: mismatch, not the earlier (cheap) reservation.
    let mut other_call = reserve_req("ops.reap");
    other_call.idempotency_key = Some("k1".into());
    assert_eq!(code(auth.reserve(&other_call)), "IDEMPOTENCY_MISMATCH");
    // The same key and call by another subject: never the first subject's reservation.
    let mut other_subject = first.clone();
    other_subject.subject = Subject::new().tenant("acme").agent("intruder");
    match auth.reserve(&other_subject) {
        Err(e) => assert_eq!(e.code(), "IDEMPOTENCY_MISMATCH"),
        Ok(r) => panic!("replayed {} to another subject", r.reservation_id),
    }
    // Another estimate or ttl with the same key is also another request.
    let mut other_ttl = first.clone();
    other_ttl.ttl_ms = Some(1_000);
    assert_eq!(code(auth.reserve(&other_ttl)), "IDEMPOTENCY_MISMATCH");
}

#[test]
fn extend_is_capped_and_not_after_expiry() {
    let clock = ManualClock::new(10_000);
    let auth = Authority::builder()
        .policy(policy())
        .clock(clock.clone())
        .build()
        .unwrap();
    let r = auth.reserve(&reserve_req("read_file")).unwrap();
    for bad in [0, -1, 86_400_001, i64::MAX] {
        let req = ExtendRequest {
            extend_by_ms: bad,
            idempotency_key: None,
        };
        assert_eq!(
            code(auth.extend(&r.reservation_id, &req)),
            "INVALID_REQUEST"
        );
    }
    let by = ExtendRequest {
        extend_by_ms: 1_000,
        idempotency_key: None,
    };
    for _ in 0..10 {
        auth.extend(&r.reservation_id, &by).unwrap();
    }
    assert_eq!(
        code(auth.extend(&r.reservation_id, &by)),
        "MAX_EXTENSIONS_EXCEEDED"
    );
    assert_eq!(
        auth.reservation(&r.reservation_id).unwrap().expires_at_ms,
        r.expires_at_ms + 10_000
    );
    // After expiry no extension brings it back.
    let r2 = auth.reserve(&reserve_req("read_file")).unwrap();
    clock.advance(r2.expires_at_ms - 10_000 + 1);
    assert_eq!(
        code(auth.extend(&r2.reservation_id, &by)),
        "RESERVATION_EXPIRED"
    );
}

// ---- 4. caps -------------------------------------------------------------------------------

const CAPS: &str = r#"
[[tools]]
name = "read_file"
tier = 0

[[tools]]
name = "write_file"
tier = 1

[[tools]]
name = "railway.*"
tier = 1

[[budgets]]
scope = "tenant:acme"
unit = "RISK_POINTS"
allocated = 100

[[caps]]
id = "low"
scope = "tenant:acme"
remaining_below = 1000
max_steps_remaining = 3
tool_denylist = ["railway.*"]
"#;

fn caps_authorities() -> Vec<(Authority, Option<tempfile::TempDir>)> {
    let policy = Policy::from_toml_str(CAPS, "caps.toml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = SqliteLedger::open(dir.path().join("caps.db")).unwrap();
    vec![
        (
            Authority::builder()
                .policy(policy.clone())
                .clock(ManualClock::new(10_000))
                .build()
                .unwrap(),
            None,
        ),
        (
            Authority::builder()
                .policy(policy)
                .ledger(ledger)
                .clock(ManualClock::new(10_000))
                .build()
                .unwrap(),
            Some(dir),
        ),
    ]
}

fn caps_reserve(auth: &Authority, tool: &str) -> Result<Reservation> {
    auth.reserve(&ReserveRequest::new(
        Subject::new().tenant("acme").agent("bot"),
        ToolCall::new(tool, json!({})),
    ))
}

#[test]
fn a_caps_denylist_catches_look_alike_names() {
    for (auth, _dir) in caps_authorities() {
        for tool in [
            "railway.status",
            "Railway.status",
            "RAILWAY.STATUS",
            "railway..status",
            ".railway.status",
        ] {
            match caps_reserve(&auth, tool) {
                Err(CyclesError::Denied(d)) => {
                    assert_eq!(d.reason_code, Some(ReasonCode::PolicyViolation), "{tool}")
                }
                other => panic!("{tool}: expected the denylist, got {other:?}"),
            }
        }
    }
}

#[test]
fn steps_count_across_tools_and_subjects_of_the_scope() {
    for (auth, _dir) in caps_authorities() {
        // Alternating tools, agents and deeper dimensions of the same tenant: one count of 3.
        let subjects = [
            Subject::new().tenant("acme").agent("bot"),
            Subject::new().tenant("acme").agent("other"),
            Subject::new()
                .tenant("acme")
                .workspace("w")
                .agent("bot")
                .toolset("x"),
        ];
        for (s, tool) in subjects
            .iter()
            .zip(["read_file", "write_file", "read_file"])
        {
            auth.reserve(&ReserveRequest::new(
                s.clone(),
                ToolCall::new(tool, json!({})),
            ))
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        }
        for (s, tool) in subjects
            .iter()
            .zip(["write_file", "read_file", "Read_File"])
        {
            match auth.reserve(&ReserveRequest::new(
                s.clone(),
                ToolCall::new(tool, json!({})),
            )) {
                Err(CyclesError::Denied(_)) => {}
                other => panic!("{tool}: a 4th step got through: {other:?}"),
            }
        }
    }
}

#[test]
fn concurrent_calls_do_not_exceed_a_steps_cap() {
    for (auth, _dir) in caps_authorities() {
        let auth = Arc::new(auth);
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let auth = Arc::clone(&auth);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let subject = Subject::new().tenant("acme").agent(format!("a{i}"));
                    barrier.wait();
                    auth.reserve(&ReserveRequest::new(
                        subject,
                        ToolCall::new("read_file", json!({})),
                    ))
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 3, "{results:?}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(
                r.decision().and_then(|d| d.reason_code),
                Some(ReasonCode::PolicyViolation),
                "{r}"
            );
        }
    }
}

// ---- 5. max_tier ---------------------------------------------------------------------------

#[test]
fn the_strictest_applicable_max_tier_wins() {
    let base = || {
        Policy::default()
            .register("deploy", Tier::T3)
            .register("read_file", Tier::T0)
            .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 1000))
    };
    let shallow_first = base()
        .max_tier("tenant:acme", Tier::T1)
        .max_tier("tenant:acme/agent:bot", Tier::T4);
    let deep_first = base()
        .max_tier("tenant:acme/agent:bot", Tier::T4)
        .max_tier("tenant:acme", Tier::T1);
    for p in [shallow_first, deep_first] {
        let auth = auth_with(p);
        match auth.reserve(&reserve_req("deploy")) {
            Err(CyclesError::Denied(d)) => {
                assert_eq!(d.reason_code, Some(ReasonCode::TierNotPermitted));
                assert!(d.rules.iter().any(|r| r == "max_tier:tenant:acme"), "{d:?}");
            }
            other => panic!("expected TIER_NOT_PERMITTED, got {other:?}"),
        }
        auth.reserve(&reserve_req("read_file")).unwrap();
    }
    // A deeper, stricter limit applies to its subjects only.
    let auth = auth_with(base().max_tier("tenant:acme/agent:bot", Tier::T2));
    assert!(auth.reserve(&reserve_req("deploy")).is_err());
    let other = ReserveRequest::new(
        Subject::new().tenant("acme").agent("other"),
        ToolCall::new("deploy", json!({})),
    );
    assert_eq!(auth.reserve(&other).unwrap().tier, Tier::T3);
    // A look-alike name is limited like the registered tool.
    let auth = auth_with(base().max_tier("tenant:acme", Tier::T2));
    let mut rule_variant = reserve_req("Deploy");
    rule_variant.call.action.kind = Some("fs.read".into());
    assert!(auth.reserve(&rule_variant).is_err());
}
