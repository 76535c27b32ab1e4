//! Bad input: every validation rule answers with its exact error code and names the field,
//! and nothing changes (balances, reservations and audit length identical before and after),
//! on both ledgers. Also: an invalid policy stops the authority from starting, tampering is
//! found at the exact record, a schema from the future is refused, and a failing ledger makes
//! the gate DENY with LEDGER_UNAVAILABLE, never ALLOW.

use std::sync::Arc;

use cycles_core::*;
use serde_json::json;
use tempfile::TempDir;

/// One authority on one ledger, with an ACTIVE reservation to point commits at.
struct Fx {
    name: &'static str,
    auth: Authority,
    clock: ManualClock,
    rid: String,
    _dir: Option<TempDir>,
}

const T0: i64 = 1_700_000_000_000;

fn policy() -> Policy {
    Policy::default()
        .register("read_file", Tier::T0)
        .register("write_file", Tier::T1)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 100))
        .budget(BudgetSpec::new("tenant:acme", Unit::UsdMicrocents, 10_000))
        .budget(BudgetSpec::new(
            "tenant:acme/agent:bot",
            Unit::RiskPoints,
            50,
        ))
}

fn bot() -> Subject {
    Subject::new().tenant("acme").agent("bot")
}

fn write_call() -> ToolCall {
    ToolCall::new("write_file", json!({"path": "a.txt"}))
}

fn reserve_req(subject: Subject, call: ToolCall) -> ReserveRequest {
    ReserveRequest::new(subject, call)
}

fn event_req(subject: Subject, call: ToolCall, actual: Vec<Amount>) -> EventRequest {
    EventRequest {
        subject,
        call,
        actual,
        overage_policy: None,
        idempotency_key: None,
    }
}

fn setup(name: &'static str, auth: Authority, clock: ManualClock, dir: Option<TempDir>) -> Fx {
    let mut req = reserve_req(bot(), write_call());
    req.estimate = vec![Amount::new(Unit::UsdMicrocents, 100)];
    let rid = auth.reserve(&req).unwrap().reservation_id;
    Fx {
        name,
        auth,
        clock,
        rid,
        _dir: dir,
    }
}

/// A fresh memory fixture and a fresh SQLite fixture.
fn fixtures() -> Vec<Fx> {
    let clock = ManualClock::new(T0);
    let memory = Authority::builder()
        .policy(policy())
        .clock(clock.clone())
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sclock = ManualClock::new(T0);
    let sqlite = Authority::builder()
        .policy(policy())
        .ledger(SqliteLedger::open(dir.path().join("ledger.db")).unwrap())
        .clock(sclock.clone())
        .build()
        .unwrap();
    vec![
        setup("memory", memory, clock, None),
        setup("sqlite", sqlite, sclock, Some(dir)),
    ]
}

type Snapshot = (Vec<Balance>, Vec<Reservation>, usize);

fn snapshot(a: &Authority) -> Snapshot {
    (
        a.balances(None).unwrap(),
        a.reservations(None, usize::MAX).unwrap(),
        a.audit(&AuditQuery::default()).unwrap().len(),
    )
}

/// Runs `op`, which must fail with `code`; an INVALID_REQUEST must name exactly `field`, any
/// other error must mention it. Nothing may change.
#[track_caller]
fn rejects<T: std::fmt::Debug>(
    fx: &Fx,
    code: &str,
    field: &str,
    op: impl FnOnce(&Authority) -> Result<T>,
) {
    let before = snapshot(&fx.auth);
    let err = match op(&fx.auth) {
        Ok(v) => panic!(
            "[{}] expected {code} naming {field:?}, got Ok({v:?})",
            fx.name
        ),
        Err(e) => e,
    };
    assert_eq!(err.code(), code, "[{}] {err}", fx.name);
    match &err {
        CyclesError::InvalidRequest { field: f, .. } => {
            assert_eq!(f, field, "[{}] {err}", fx.name)
        }
        other => assert!(
            other.to_string().contains(field),
            "[{}] {other} does not name {field:?}",
            fx.name
        ),
    }
    assert_eq!(
        snapshot(&fx.auth),
        before,
        "[{}] state changed after {err}",
        fx.name
    );
    assert!(fx.auth.verify().unwrap().ok);
}

/// The same bad subject must be refused by decide, reserve and event.
#[track_caller]
fn rejects_subject(fx: &Fx, subject: Subject, field: &str) {
    const BAD: &str = "INVALID_REQUEST";
    rejects(fx, BAD, field, |a| {
        a.decide(&DecideRequest::new(subject.clone(), write_call()))
    });
    rejects(fx, BAD, field, |a| {
        a.reserve(&reserve_req(subject.clone(), write_call()))
    });
    rejects(fx, BAD, field, |a| {
        a.event(&event_req(
            subject.clone(),
            write_call(),
            vec![Amount::new(Unit::RiskPoints, 1)],
        ))
    });
}

/// The same bad call must be refused by decide, reserve and event.
#[track_caller]
fn rejects_call(fx: &Fx, call: ToolCall, field: &str) {
    const BAD: &str = "INVALID_REQUEST";
    rejects(fx, BAD, field, |a| {
        a.decide(&DecideRequest::new(bot(), call.clone()))
    });
    rejects(fx, BAD, field, |a| {
        a.reserve(&reserve_req(bot(), call.clone()))
    });
    rejects(fx, BAD, field, |a| {
        a.event(&event_req(
            bot(),
            call.clone(),
            vec![Amount::new(Unit::RiskPoints, 1)],
        ))
    });
}

fn long(n: usize) -> String {
    "a".repeat(n)
}

#[test]
fn subject_rules() {
    for fx in fixtures() {
        rejects_subject(&fx, Subject::new(), "subject");
        rejects_subject(&fx, Subject::new().tenant("ac me"), "subject.tenant");
        rejects_subject(&fx, Subject::new().tenant("açme"), "subject.tenant");
        rejects_subject(
            &fx,
            Subject::new().tenant("acme").agent("bot/1"),
            "subject.agent",
        );
        rejects_subject(&fx, Subject::new().workspace(""), "subject.workspace");
        rejects_subject(&fx, Subject::new().app("a:b"), "subject.app");
        rejects_subject(&fx, Subject::new().workflow("w\n"), "subject.workflow");
        rejects_subject(&fx, Subject::new().toolset(long(129)), "subject.toolset");
        rejects_subject(&fx, Subject::new().agent(long(129)), "subject.agent");

        let mut many = bot();
        for i in 0..17 {
            many.dimensions.insert(format!("k{i}"), "v".into());
        }
        rejects_subject(&fx, many, "subject.dimensions");

        let mut bad_key = bot();
        bad_key.dimensions.insert("bad key".into(), "v".into());
        rejects_subject(&fx, bad_key, "subject.dimensions key");

        let mut empty_key = bot();
        empty_key.dimensions.insert(String::new(), "v".into());
        rejects_subject(&fx, empty_key, "subject.dimensions key");

        let mut long_key = bot();
        long_key.dimensions.insert(long(129), "v".into());
        rejects_subject(&fx, long_key, "subject.dimensions key");

        let mut long_value = bot();
        long_value.dimensions.insert("region".into(), long(257));
        rejects_subject(&fx, long_value, "subject.dimensions.region");
    }
}

#[test]
fn subject_limits_are_exact() {
    // One past each limit is refused above; the limit itself is accepted.
    for fx in fixtures() {
        let mut s = Subject::new().tenant("acme").agent(long(128));
        for i in 0..16 {
            s.dimensions.insert(format!("k{i}"), long(256));
        }
        s.dimensions.insert("k0".into(), "é".repeat(256)); // 256 chars, 512 bytes
        let d = fx
            .auth
            .decide(&DecideRequest::new(s, write_call()))
            .unwrap();
        assert_eq!(d.decision, DecisionKind::Allow, "[{}] {d:?}", fx.name);
    }
}

#[test]
fn amount_rules() {
    const BAD: &str = "INVALID_REQUEST";
    for fx in fixtures() {
        let neg = vec![Amount::new(Unit::UsdMicrocents, -1)];
        let dup = vec![Amount::new(Unit::Tokens, 1), Amount::new(Unit::Tokens, 2)];
        rejects(&fx, BAD, "estimate[0].amount", |a| {
            let mut r = DecideRequest::new(bot(), write_call());
            r.estimate = neg.clone();
            a.decide(&r)
        });
        rejects(&fx, BAD, "estimate[0].amount", |a| {
            let mut r = reserve_req(bot(), write_call());
            r.estimate = neg.clone();
            a.reserve(&r)
        });
        rejects(&fx, BAD, "estimate[1].unit", |a| {
            let mut r = DecideRequest::new(bot(), write_call());
            r.estimate = dup.clone();
            a.decide(&r)
        });
        rejects(&fx, BAD, "estimate[1].unit", |a| {
            let mut r = reserve_req(bot(), write_call());
            r.estimate = dup.clone();
            a.reserve(&r)
        });
        let commit = |actual: Vec<Amount>| CommitRequest {
            actual,
            ran: None,
            charge_if_expired: false,
            idempotency_key: None,
        };
        rejects(&fx, BAD, "actual[0].amount", |a| {
            a.commit(&fx.rid, &commit(neg.clone()))
        });
        rejects(&fx, BAD, "actual[1].unit", |a| {
            a.commit(&fx.rid, &commit(dup.clone()))
        });
        // A negative amount after a valid one is still found, at its own index.
        rejects(&fx, BAD, "actual[1].amount", |a| {
            a.commit(
                &fx.rid,
                &commit(vec![
                    Amount::new(Unit::RiskPoints, 1),
                    Amount::new(Unit::UsdMicrocents, i64::MIN),
                ]),
            )
        });
        rejects(&fx, BAD, "actual[0].amount", |a| {
            a.event(&event_req(bot(), write_call(), neg.clone()))
        });
        rejects(&fx, BAD, "actual[1].unit", |a| {
            a.event(&event_req(bot(), write_call(), dup.clone()))
        });
        rejects(&fx, BAD, "actual", |a| {
            a.event(&event_req(bot(), write_call(), vec![]))
        });
    }
}

#[test]
fn action_rules() {
    for fx in fixtures() {
        rejects_call(&fx, ToolCall::new("", json!({})), "tool");
        rejects_call(&fx, ToolCall::new(long(257), json!({})), "tool");
        rejects_call(&fx, ToolCall::new("rm -rf", json!({})), "tool");
        rejects_call(&fx, ToolCall::new("tool\u{0}", json!({})), "tool");
        rejects_call(&fx, ToolCall::new("outil_é", json!({})), "tool");
        for kind in ["dbadmin", "db.", ".admin", "db.ad-min", "db admin.x"] {
            let mut call = write_call();
            call.action.kind = Some(kind.into());
            rejects_call(&fx, call, "kind");
        }
        let mut call = write_call();
        call.action.kind = Some(format!("db.{}", long(126)));
        rejects_call(&fx, call, "kind");
        let mut call = write_call();
        call.action.tags = (0..33).map(|i| format!("t{i}")).collect();
        rejects_call(&fx, call, "tags");
        let mut call = write_call();
        call.action.tags = vec!["ok".into(), long(65)];
        rejects_call(&fx, call, "tags");
        let mut call = write_call();
        call.action.tags = vec![String::new()];
        rejects_call(&fx, call, "tags");

        // The limits themselves are accepted.
        let mut call = write_call();
        call.action.kind = Some(format!("db.{}", long(125)));
        call.action.tags = (0..32).map(|_| long(64)).collect();
        let d = fx.auth.decide(&DecideRequest::new(bot(), call)).unwrap();
        assert_eq!(d.decision, DecisionKind::Allow, "[{}] {d:?}", fx.name);
        let d = fx
            .auth
            .decide(&DecideRequest::new(
                bot(),
                ToolCall::new(long(256), json!({})),
            ))
            .unwrap();
        assert_eq!(d.tier, Tier::T3, "[{}] unknown tool tier", fx.name);
    }
}

#[test]
fn ttl_and_grace_ranges() {
    const BAD: &str = "INVALID_REQUEST";
    for fx in fixtures() {
        for ttl in [i64::MIN, -1, 0, 999, 86_400_001, i64::MAX] {
            rejects(&fx, BAD, "ttl_ms", |a| {
                let mut r = reserve_req(bot(), write_call());
                r.ttl_ms = Some(ttl);
                a.reserve(&r)
            });
        }
        for grace in [i64::MIN, -1, 60_001, i64::MAX] {
            rejects(&fx, BAD, "grace_period_ms", |a| {
                let mut r = reserve_req(bot(), write_call());
                r.grace_period_ms = Some(grace);
                a.reserve(&r)
            });
        }
        for by in [i64::MIN, -5, 0, 86_400_001] {
            rejects(&fx, BAD, "extend_by_ms", |a| {
                a.extend(
                    &fx.rid,
                    &ExtendRequest {
                        extend_by_ms: by,
                        idempotency_key: None,
                    },
                )
            });
        }
        // Both ends of every range are accepted.
        for (ttl, grace) in [(1_000, 0), (86_400_000, 60_000)] {
            let mut r = reserve_req(bot(), ToolCall::new("read_file", json!({})));
            r.ttl_ms = Some(ttl);
            r.grace_period_ms = Some(grace);
            let res = fx.auth.reserve(&r).unwrap();
            assert_eq!(res.expires_at_ms, T0 + ttl, "[{}]", fx.name);
            assert_eq!(res.grace_ms, grace, "[{}]", fx.name);
        }
        for by in [1, 86_400_000] {
            fx.auth
                .extend(
                    &fx.rid,
                    &ExtendRequest {
                        extend_by_ms: by,
                        idempotency_key: None,
                    },
                )
                .unwrap();
        }
    }
}

#[test]
fn idempotency_key_rules() {
    const BAD: &str = "INVALID_REQUEST";
    let bad_keys = [
        String::new(),
        long(257),
        "a\nb".into(),
        "tab\there".into(),
        "\u{7f}".into(),
    ];
    for fx in fixtures() {
        for key in &bad_keys {
            let key = Some(key.clone());
            rejects(&fx, BAD, "idempotency_key", |a| {
                let mut r = reserve_req(bot(), write_call());
                r.idempotency_key = key.clone();
                a.reserve(&r)
            });
            rejects(&fx, BAD, "idempotency_key", |a| {
                a.commit(
                    &fx.rid,
                    &CommitRequest {
                        actual: vec![],
                        ran: None,
                        charge_if_expired: false,
                        idempotency_key: key.clone(),
                    },
                )
            });
            rejects(&fx, BAD, "idempotency_key", |a| {
                a.release(
                    &fx.rid,
                    &ReleaseRequest {
                        reason: None,
                        idempotency_key: key.clone(),
                    },
                )
            });
            rejects(&fx, BAD, "idempotency_key", |a| {
                a.extend(
                    &fx.rid,
                    &ExtendRequest {
                        extend_by_ms: 1_000,
                        idempotency_key: key.clone(),
                    },
                )
            });
            rejects(&fx, BAD, "idempotency_key", |a| {
                let mut e = event_req(bot(), write_call(), vec![Amount::new(Unit::RiskPoints, 1)]);
                e.idempotency_key = key.clone();
                a.event(&e)
            });
        }
        // 256 printable characters are fine.
        let mut r = reserve_req(bot(), write_call());
        r.idempotency_key = Some("k".repeat(256));
        fx.auth.reserve(&r).unwrap();
    }
}

#[test]
fn release_reason_too_long() {
    for fx in fixtures() {
        rejects(&fx, "INVALID_REQUEST", "reason", |a| {
            a.release(
                &fx.rid,
                &ReleaseRequest {
                    reason: Some(long(257)),
                    idempotency_key: None,
                },
            )
        });
        let r = fx
            .auth
            .release(
                &fx.rid,
                &ReleaseRequest {
                    reason: Some(long(256)),
                    idempotency_key: None,
                },
            )
            .unwrap();
        assert_eq!(r.status, ReservationStatus::Released);
    }
}

#[test]
fn budget_spec_rules() {
    const BAD: &str = "INVALID_REQUEST";
    for fx in fixtures() {
        for scope in [
            "",
            "acme",
            "tenant:",
            "tenant:ac me",
            "planet:earth",
            "agent:bot/tenant:acme",
            "tenant:acme/tenant:other",
            "tenant:acme/",
            "tenant:acme//agent:bot",
        ] {
            rejects(&fx, BAD, "scope", |a| {
                a.set_budget(&BudgetSpec::new(scope, Unit::Tokens, 10))
            });
        }
        rejects(&fx, BAD, "allocated", |a| {
            a.set_budget(&BudgetSpec::new("tenant:acme", Unit::Tokens, -1))
        });
        rejects(&fx, BAD, "overdraft_limit", |a| {
            let mut spec = BudgetSpec::new("tenant:acme", Unit::Tokens, 10);
            spec.overdraft_limit = -1;
            a.set_budget(&spec)
        });
        // An existing budget is not touched by a refused change either.
        rejects(&fx, BAD, "allocated", |a| {
            a.set_budget(&BudgetSpec::new("tenant:acme", Unit::RiskPoints, i64::MIN))
        });
    }
}

#[test]
fn unit_mismatch_and_not_found() {
    for fx in fixtures() {
        let commit = |actual: Vec<Amount>| CommitRequest {
            actual,
            ran: None,
            charge_if_expired: false,
            idempotency_key: None,
        };
        // The reservation holds RISK_POINTS and USD_MICROCENTS only.
        rejects(&fx, "UNIT_MISMATCH", "actual[0]", |a| {
            a.commit(&fx.rid, &commit(vec![Amount::new(Unit::Tokens, 1)]))
        });
        rejects(&fx, "UNIT_MISMATCH", "actual[1]", |a| {
            a.commit(
                &fx.rid,
                &commit(vec![
                    Amount::new(Unit::UsdMicrocents, 1),
                    Amount::new(Unit::Credits, 1),
                ]),
            )
        });
        let id = "rsv_00000000000000000000000000000000";
        rejects(&fx, "NOT_FOUND", id, |a| a.commit(id, &commit(vec![])));
        rejects(&fx, "NOT_FOUND", id, |a| {
            a.release(id, &ReleaseRequest::default())
        });
        rejects(&fx, "NOT_FOUND", id, |a| {
            a.extend(
                id,
                &ExtendRequest {
                    extend_by_ms: 1_000,
                    idempotency_key: None,
                },
            )
        });
        rejects(&fx, "NOT_FOUND", id, |a| a.reservation(id));
        // An event needs a budget for what it charges (TOKENS has none here).
        rejects(&fx, "NOT_FOUND", "TOKENS", |a| {
            a.event(&event_req(
                bot(),
                write_call(),
                vec![
                    Amount::new(Unit::RiskPoints, 1),
                    Amount::new(Unit::Tokens, 1),
                ],
            ))
        });
        // The reservation is still intact and commits normally afterwards.
        let c = fx
            .auth
            .commit(&fx.rid, &commit(vec![Amount::new(Unit::UsdMicrocents, 60)]))
            .unwrap();
        assert_eq!(c.charged.len(), 2);
    }
}

#[test]
fn amount_overflow() {
    for fx in fixtures() {
        let huge = vec![Amount::new(Unit::RiskPoints, i64::MAX)];
        // Tier 1 costs one point; one more than i64::MAX extra points overflows.
        rejects(&fx, "AMOUNT_OVERFLOW", "risk points", |a| {
            let mut r = DecideRequest::new(bot(), write_call());
            r.estimate = huge.clone();
            a.decide(&r)
        });
        rejects(&fx, "AMOUNT_OVERFLOW", "risk points", |a| {
            let mut r = reserve_req(bot(), write_call());
            r.estimate = huge.clone();
            a.reserve(&r)
        });

        // Debt that would pass i64::MAX: the first event takes a huge debt, the second
        // overflows and must leave the first one's result exactly as it was.
        let mut spec = BudgetSpec::new("tenant:acme", Unit::UsdMicrocents, 10_000);
        spec.overdraft_limit = i64::MAX;
        fx.auth.set_budget(&spec).unwrap();
        let mut e = event_req(
            bot(),
            write_call(),
            vec![Amount::new(Unit::UsdMicrocents, i64::MAX)],
        );
        e.overage_policy = Some(CommitOveragePolicy::AllowWithOverdraft);
        let first = fx.auth.event(&e).unwrap();
        assert!(first.debt_incurred[0].amount > 0);
        rejects(&fx, "AMOUNT_OVERFLOW", "debt", |a| a.event(&e));

        // Time itself: an expiry past the end of i64.
        fx.clock.set(i64::MAX - 1_500);
        rejects(&fx, "AMOUNT_OVERFLOW", "expires_at_ms", |a| {
            let mut r = reserve_req(bot(), ToolCall::new("read_file", json!({})));
            r.ttl_ms = Some(2_000);
            a.reserve(&r)
        });
        let mut r = reserve_req(bot(), ToolCall::new("read_file", json!({})));
        r.ttl_ms = Some(1_000);
        let late = fx.auth.reserve(&r).unwrap();
        rejects(&fx, "AMOUNT_OVERFLOW", "expires_at_ms", |a| {
            a.extend(
                &late.reservation_id,
                &ExtendRequest {
                    extend_by_ms: 1_000,
                    idempotency_key: None,
                },
            )
        });
    }
}

/// Policies that must not start an authority, and must not touch the ledger trying.
#[test]
fn invalid_policy_is_refused() {
    let bad: Vec<(Policy, &str)> = vec![
        (
            {
                let mut p = policy();
                p.tier_points[1] = -1;
                p
            },
            "tier_points[1]",
        ),
        (
            {
                let mut p = policy();
                p.tier_points = [0, 5, 1, 20, 50];
                p
            },
            "tier_points",
        ),
        (
            policy().budget(BudgetSpec::new("tenant:x", Unit::Tokens, -5)),
            "budgets[3]",
        ),
        (
            policy().budget(BudgetSpec::new("nonsense", Unit::Tokens, 5)),
            "budgets[3]",
        ),
        (policy().max_tier("tenant acme", Tier::T2), "max_tier[0]"),
        (policy().register("read_file", Tier::T2), "tools[2]"),
        (
            {
                let mut p = policy();
                p.defaults.ttl_ms = 999;
                p
            },
            "defaults.ttl_ms",
        ),
        (
            {
                let mut p = policy();
                p.defaults.grace_period_ms = 60_001;
                p
            },
            "defaults.grace_period_ms",
        ),
    ];
    for (p, field) in bad {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let err = Authority::builder()
            .policy(p)
            .ledger(SqliteLedger::open(&path).unwrap())
            .build()
            .unwrap_err();
        assert_eq!(err.code(), "POLICY_INVALID", "{err}");
        assert!(
            err.to_string().contains(field),
            "{err} does not name {field}"
        );
        // The valid budgets of the refused policy were not created.
        let auth = Authority::builder()
            .ledger(SqliteLedger::open(&path).unwrap())
            .build()
            .unwrap();
        assert!(auth.balances(None).unwrap().is_empty(), "{field}");
        assert_eq!(auth.verify().unwrap().records, 0, "{field}");
    }
}

/// A few operations so the chain has several kinds of record.
fn some_history(auth: &Authority) {
    let r = auth.reserve(&reserve_req(bot(), write_call())).unwrap();
    auth.commit(&r.reservation_id, &CommitRequest::default())
        .unwrap();
    let r = auth.reserve(&reserve_req(bot(), write_call())).unwrap();
    auth.release(&r.reservation_id, &ReleaseRequest::default())
        .unwrap();
    auth.decide(&DecideRequest::new(bot(), write_call()))
        .unwrap();
}

#[test]
fn tampering_in_memory_is_found_at_its_record() {
    let ledger = Arc::new(MemoryLedger::new());
    let auth = Authority::builder()
        .policy(policy())
        .shared_ledger(ledger.clone())
        .build()
        .unwrap();
    some_history(&auth);
    let total = auth.verify().unwrap();
    assert!(total.ok);
    assert_eq!(total.records, 8);
    ledger.tamper_audit(5, |r| r.amounts.push(Amount::new(Unit::Tokens, 1)));
    let report = auth.verify().unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_broken.unwrap().seq, 5);

    // A record re-sealed after the change breaks the link to the next one.
    let ledger = Arc::new(MemoryLedger::new());
    let auth = Authority::builder()
        .policy(policy())
        .shared_ledger(ledger.clone())
        .build()
        .unwrap();
    some_history(&auth);
    ledger.tamper_audit(6, |r| {
        r.time_ms += 1;
        r.hash = r.compute_hash();
    });
    let report = auth.verify().unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_broken.unwrap().seq, 7);
}

#[test]
fn tampering_in_sqlite_is_found_at_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let auth = Authority::builder()
        .policy(policy())
        .ledger(SqliteLedger::open(&path).unwrap())
        .build()
        .unwrap();
    some_history(&auth);
    assert!(auth.verify().unwrap().ok);
    // Another connection edits one record's body behind the authority's back.
    let raw = SqliteLedger::open(&path).unwrap();
    raw.execute_raw("UPDATE audit SET body = json_set(body, '$.time_ms', 1) WHERE seq = 4")
        .unwrap();
    let report = auth.verify().unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_broken.as_ref().unwrap().seq, 4, "{report:?}");

    // A deleted record: the gap is named.
    raw.execute_raw("UPDATE audit SET body = json_set(body, '$.time_ms', time_ms) WHERE seq = 4; DELETE FROM audit WHERE seq = 6")
        .unwrap();
    let report = auth.verify().unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_broken.as_ref().unwrap().seq, 6, "{report:?}");

    // A record that no longer parses is named too, not the start of its page.
    raw.execute_raw("INSERT INTO audit (seq, time_ms, kind, hash, body) VALUES (6, 0, 'decide', 'x', 'not json')")
        .unwrap();
    let report = auth.verify().unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_broken.as_ref().unwrap().seq, 6, "{report:?}");
}

#[test]
fn schema_from_the_future_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = SqliteLedger::open(&path).unwrap();
    let future = cycles_core::ledger::sqlite::SCHEMA_VERSION + 1;
    ledger
        .execute_raw(&format!("PRAGMA user_version = {future}"))
        .unwrap();
    drop(ledger);
    let err = SqliteLedger::open(&path).unwrap_err();
    assert_eq!(err.code(), "LEDGER_CORRUPT", "{err}");
    assert!(err.to_string().contains(&future.to_string()), "{err}");
    // Refusing did not rewrite the version.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, future);
}

/// Reserve fails with Denied/LEDGER_UNAVAILABLE (never a reservation); with `decide_too`,
/// decide answers DENY LEDGER_UNAVAILABLE (never ALLOW).
#[track_caller]
fn fails_closed(auth: &Authority, decide_too: bool, sql: &str) {
    for call in [
        ToolCall::new("read_file", json!({})),
        write_call(),
        ToolCall::new("unregistered", json!({})),
    ] {
        if decide_too {
            let d = auth
                .decide(&DecideRequest::new(bot(), call.clone()))
                .unwrap();
            assert_eq!(d.decision, DecisionKind::Deny, "{sql}: {d:?}");
            assert_eq!(
                d.reason_code,
                Some(ReasonCode::LedgerUnavailable),
                "{sql}: {d:?}"
            );
        }
        let mut req = reserve_req(bot(), call);
        req.idempotency_key = Some("retry-safe".into());
        let err = auth.reserve(&req).unwrap_err();
        assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{sql}: {err}");
        let d = err.decision().expect("a denial carries its decision");
        assert_eq!(d.decision, DecisionKind::Deny, "{sql}");
        assert_eq!(d.reason_code, Some(ReasonCode::LedgerUnavailable), "{sql}");
    }
}

fn sqlite_auth(path: &std::path::Path) -> (Authority, Arc<SqliteLedger>) {
    let ledger = Arc::new(SqliteLedger::open(path).unwrap());
    let auth = Authority::builder()
        .policy(policy())
        .shared_ledger(ledger.clone())
        .build()
        .unwrap();
    (auth, ledger)
}

#[test]
fn failing_ledger_denies() {
    // Each sabotage on a fresh file, and whether decide (which writes only budgets' reads and
    // an audit record) is affected too.
    let sabotage = [
        ("DROP TABLE budgets", true),
        ("DROP TABLE audit", true),
        ("PRAGMA query_only = 1", true),
        ("UPDATE budgets SET status = 'MELTED'", true),
        ("UPDATE budgets SET reserved = 'lots'", true),
        ("DROP TABLE reservations", false),
        ("DROP TABLE idempotency", false),
    ];
    for (sql, decide_too) in sabotage {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let (auth, ledger) = sqlite_auth(&path);
        let before = auth.balances(None).unwrap();
        let records = auth.verify().unwrap().records;
        // The authority's own connection, so the read-only switch applies to it.
        ledger.execute_raw(sql).unwrap();
        fails_closed(&auth, decide_too, sql);
        // Whatever the failed operations wrote before failing was rolled back.
        if !sql.contains("budgets") {
            ledger.execute_raw("PRAGMA query_only = 0").unwrap();
            assert_eq!(auth.balances(None).unwrap(), before, "{sql}");
        }
        if !sql.contains("audit") {
            ledger.execute_raw("PRAGMA query_only = 0").unwrap();
            let after = auth.audit(&AuditQuery::default()).unwrap().len() as u64;
            assert_eq!(
                after, records,
                "{sql}: a failed operation left an audit record"
            );
        }
    }
}

#[test]
fn failing_ledger_fails_commit_without_charging() {
    let dir = tempfile::tempdir().unwrap();
    let (auth, ledger) = sqlite_auth(&dir.path().join("ledger.db"));
    let r = auth.reserve(&reserve_req(bot(), write_call())).unwrap();
    let before = auth.balances(None).unwrap();
    ledger.execute_raw("PRAGMA query_only = 1").unwrap();
    let err = auth
        .commit(&r.reservation_id, &CommitRequest::default())
        .unwrap_err();
    assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{err}");
    ledger.execute_raw("PRAGMA query_only = 0").unwrap();
    assert_eq!(auth.balances(None).unwrap(), before);
    assert_eq!(
        auth.reservation(&r.reservation_id).unwrap().status,
        ReservationStatus::Active
    );
    // With the ledger back, the same commit goes through once.
    auth.commit(&r.reservation_id, &CommitRequest::default())
        .unwrap();
    assert!(auth.verify().unwrap().ok);
}

/// The parsers bindings use for protocol strings name the field they reject.
#[test]
fn protocol_strings_and_tiers() {
    let field = |e: CyclesError| match e {
        CyclesError::InvalidRequest { field, .. } => field,
        other => panic!("expected INVALID_REQUEST, got {other:?}"),
    };
    assert_eq!(field(Unit::parse("BEANS").unwrap_err()), "unit");
    assert_eq!(field(Unit::parse("risk_points").unwrap_err()), "unit");
    assert_eq!(Unit::parse("RISK_POINTS").unwrap(), Unit::RiskPoints);
    assert_eq!(field(BudgetStatus::parse("OPEN").unwrap_err()), "status");
    assert_eq!(BudgetStatus::parse("FROZEN").unwrap(), BudgetStatus::Frozen);
    assert_eq!(field(Tier::new(5).unwrap_err()), "tier");
    assert_eq!(Tier::new(4).unwrap(), Tier::T4);
    // The same rule holds when a tier arrives as JSON.
    assert!(serde_json::from_value::<Tier>(json!(5)).is_err());
    assert_eq!(serde_json::from_value::<Tier>(json!(4)).unwrap(), Tier::T4);
}
