//! PostgresLedger against a real server (scripts/pg-test.sh starts one): schema and
//! migrations, atomicity of the write transaction (also across mid-transaction flushes),
//! retry after a lost connection without double-applying, fail-closed on a held chain head,
//! tamper detection, and several pools ("hosts") sharing one chain.
#![cfg(feature = "postgres")]

mod postgres_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cycles_core::*;
use postgres_support::{Schema, append, terminate_sessions, url};
use serde_json::json;

fn policy() -> Policy {
    Policy::default()
        .register("read_file", Tier::T0)
        .register("write_file", Tier::T1)
        .register("railway.delete_volume", Tier::T4)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 100))
        .budget(BudgetSpec::new(
            "tenant:acme/agent:bot",
            Unit::RiskPoints,
            30,
        ))
}

fn auth_on(ledger: PostgresLedger, clock: ManualClock) -> Authority {
    Authority::builder()
        .policy(policy())
        .ledger(ledger)
        .clock(clock)
        .build()
        .unwrap()
}

fn bot() -> Subject {
    Subject::new().tenant("acme").agent("bot")
}

fn write_call() -> ToolCall {
    ToolCall::new("write_file", json!({"path": "a.txt"}))
}

fn count(c: &mut postgres::Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0)
}

#[test]
fn reserve_commit_deny_then_reopen_keeps_state() {
    let schema = Schema::new("basic");
    let auth = auth_on(schema.ledger(), ManualClock::new(1_000));
    let r = auth
        .reserve(&ReserveRequest::new(bot(), write_call()))
        .unwrap();
    assert_eq!(r.holds[0].amount, 1);
    assert_eq!(r.holds[0].scopes.len(), 2);
    let c = auth
        .commit(&r.reservation_id, &CommitRequest::default())
        .unwrap();
    assert_eq!(c.charged[0].amount, 1);
    let err = auth
        .reserve(&ReserveRequest::new(
            bot(),
            ToolCall::new("railway.delete_volume", json!({})),
        ))
        .unwrap_err();
    assert_eq!(err.code(), "BUDGET_EXCEEDED");
    assert_eq!(
        err.decision().unwrap().scope.as_deref(),
        Some("tenant:acme/agent:bot")
    );
    assert!(auth.ledger().describe().starts_with("postgres://"));
    drop(auth);

    // A second process opening the same schema: no second migration, budgets not re-created.
    let ledger = schema.ledger();
    assert_eq!(ledger.schema_version().unwrap(), 1);
    let auth = auth_on(ledger, ManualClock::new(2_000));
    let bal = auth.balances(Some("tenant:acme/agent:bot")).unwrap();
    assert_eq!(bal.len(), 1);
    assert_eq!(
        (bal[0].spent, bal[0].reserved, bal[0].remaining),
        (1, 0, 29)
    );
    let stored = auth.reservation(&r.reservation_id).unwrap();
    assert_eq!(stored.status, ReservationStatus::Committed);
    let v = auth.verify().unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.records, 5); // 2 budget_set + reserve + commit + denial
    let mut admin = schema.admin();
    assert_eq!(count(&mut admin, "cycles_audit"), 5);
    let head: i64 = admin
        .query_one("SELECT seq FROM cycles_audit_head", &[])
        .unwrap()
        .get(0);
    assert_eq!(head, 5);
}

#[test]
fn a_newer_schema_is_refused() {
    let schema = Schema::new("newer");
    drop(schema.ledger());
    schema
        .admin()
        .batch_execute("UPDATE cycles_schema_version SET version = 99")
        .unwrap();
    let err =
        PostgresLedger::connect_with(&url(), postgres_support::options(&schema.0)).unwrap_err();
    assert_eq!(err.code(), "LEDGER_CORRUPT", "{err}");
    assert!(err.to_string().contains("99"), "{err}");
}

#[test]
fn the_url_can_name_the_schema() {
    let schema = Schema::new("url");
    let sep = if url().contains('?') { '&' } else { '?' };
    let ledger = PostgresLedger::connect(&format!("{}{sep}schema={}", url(), schema.0)).unwrap();
    assert!(
        ledger
            .describe()
            .ends_with(&format!("?schema={}", schema.0))
    );
    let auth = auth_on(ledger, ManualClock::new(1));
    assert_eq!(auth.balances(None).unwrap().len(), 2);
    // The tables are in that schema, not in public.
    let mut admin = schema.admin();
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
            &[&schema.0],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 7, "six ledger tables and the version table");
    assert_eq!(count(&mut admin, "cycles_budgets"), 2);

    let bad = PostgresLedger::connect(&format!("{}{sep}schema=Bad-Name", url())).unwrap_err();
    assert_eq!(bad.code(), "INVALID_REQUEST");
}

#[test]
fn an_unreachable_server_is_ledger_unavailable() {
    // A port nothing listens on (bound and released by us, so it is free right now).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = PostgresOptions {
        connect_timeout: Duration::from_millis(300),
        ..PostgresOptions::default()
    };
    let err =
        PostgresLedger::connect_with(&format!("postgres://postgres@127.0.0.1:{port}/x"), opts)
            .unwrap_err();
    assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{err}");
}

#[test]
fn tampering_is_named_by_verify() {
    let schema = Schema::new("tamper");
    let ledger = schema.ledger();
    let auth = auth_on(schema.ledger(), ManualClock::new(1_000));
    for _ in 0..3 {
        let r = auth
            .reserve(&ReserveRequest::new(bot(), write_call()))
            .unwrap();
        auth.commit(&r.reservation_id, &CommitRequest::default())
            .unwrap();
    }
    assert!(auth.verify().unwrap().ok);
    // Rewrite the amount charged by the commit at seq 4 (its hash no longer matches).
    ledger
        .execute_raw(
            "UPDATE cycles_audit SET body = replace(body, '\"amount\":1', '\"amount\":0') WHERE seq = 4",
        )
        .unwrap();
    let v = auth.verify().unwrap();
    assert!(!v.ok);
    assert_eq!(v.first_broken.as_ref().map(|b| b.seq), Some(4), "{v:?}");
    // An unreadable body is named too (the page holding it cannot be read).
    ledger
        .execute_raw("UPDATE cycles_audit SET body = '{' WHERE seq = 2")
        .unwrap();
    let v = auth.verify().unwrap();
    assert!(!v.ok);
    let broken = v.first_broken.expect("a broken record");
    assert!(broken.reason.contains("audit record 2"), "{broken:?}");
}

fn sample_reservation() -> Reservation {
    let auth = Authority::builder().policy(policy()).build().unwrap();
    auth.reserve(&ReserveRequest::new(bot(), write_call()))
        .unwrap()
}

#[test]
fn a_failed_write_changes_nothing_even_after_a_mid_transaction_flush() {
    let schema = Schema::new("atomic");
    let ledger = schema.ledger();
    let reservation = sample_reservation();
    let err = ledger
        .write(&mut |txn| {
            txn.put_budget(&Budget::new("tenant:x", Unit::Tokens, 10))?;
            txn.put_reservation(&reservation)?;
            txn.put_idempotency(
                "reserve",
                "k1",
                &cycles_core::ledger::IdempotencyEntry {
                    request_digest: "d".into(),
                    result: json!({"x": 1}),
                },
            )?;
            txn.kv_put("approvals", "a1", &json!({"state": "pending"}))?;
            append(txn, AuditRecord::new(AuditKind::BudgetSet, 5))?;
            // List queries see the pending writes (they are flushed into the transaction).
            assert_eq!(txn.budgets(Some("tenant:x"))?.len(), 1);
            assert_eq!(txn.reservations(None, 10)?.len(), 1);
            assert_eq!(txn.audit_page(0, 10)?.len(), 1);
            assert_eq!(txn.kv_list("approvals")?.len(), 1);
            // More writes after the flush, then the operation fails.
            txn.put_budget(&Budget::new("tenant:y", Unit::Tokens, 10))?;
            Err(CyclesError::invalid("test", "the operation fails"))
        })
        .unwrap_err();
    assert_eq!(err.code(), "INVALID_REQUEST");
    let mut admin = schema.admin();
    for table in [
        "cycles_budgets",
        "cycles_reservations",
        "cycles_idempotency",
        "cycles_audit",
        "cycles_kv",
    ] {
        assert_eq!(count(&mut admin, table), 0, "{table}");
    }
    let head: i64 = admin
        .query_one("SELECT seq FROM cycles_audit_head", &[])
        .unwrap()
        .get(0);
    assert_eq!(head, 0);
}

#[test]
fn pending_writes_are_read_back_and_committed_together() {
    let schema = Schema::new("rw");
    let ledger = schema.ledger();
    let mut reservation = sample_reservation();
    ledger
        .write(&mut |txn| {
            let mut b = Budget::new("tenant:x", Unit::Tokens, 10);
            txn.put_budget(&b)?;
            b.spent = 4;
            txn.put_budget(&b)?;
            assert_eq!(txn.budget("tenant:x", Unit::Tokens)?.unwrap().spent, 4);
            txn.put_reservation(&reservation)?;
            txn.kv_put("ns", "b", &json!(2))?;
            txn.kv_put("ns", "a", &json!(1))?;
            assert_eq!(txn.kv_get("ns", "a")?, Some(json!(1)));
            Ok(())
        })
        .unwrap();
    reservation.status = ReservationStatus::Released;
    ledger
        .write(&mut |txn| txn.put_reservation(&reservation))
        .unwrap();
    ledger
        .read(&mut |txn| {
            assert_eq!(txn.budget("tenant:x", Unit::Tokens)?.unwrap().spent, 4);
            assert_eq!(txn.budget("tenant:x", Unit::UsdMicrocents)?, None);
            let r = txn.reservation(&reservation.reservation_id)?.unwrap();
            assert_eq!(r.status, ReservationStatus::Released);
            assert_eq!(
                txn.reservations(Some(ReservationStatus::Active), 10)?.len(),
                0
            );
            assert_eq!(txn.reservations(None, 10)?.len(), 1);
            assert_eq!(
                txn.kv_list("ns")?,
                vec![("a".to_string(), json!(1)), ("b".to_string(), json!(2))]
            );
            assert_eq!(txn.kv_list("other")?, vec![]);
            assert_eq!(txn.audit_head()?, None);
            // A read transaction refuses writes.
            let e = txn.kv_put("ns", "c", &json!(3)).unwrap_err();
            assert_eq!(e.code(), "LEDGER_UNAVAILABLE");
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_connection_lost_before_commit_is_retried_and_applied_once() {
    lost_before_commit(true);
}

#[test]
fn without_group_commit_a_connection_lost_before_commit_is_retried_and_applied_once() {
    lost_before_commit(false);
}

fn lost_before_commit(group_commit: bool) {
    let schema = Schema::new("lost");
    let app = format!("cycles-lost-{}-{group_commit}", std::process::id());
    let opts = PostgresOptions {
        application_name: app.clone(),
        group_commit,
        ..postgres_support::options(&schema.0)
    };
    let ledger = PostgresLedger::connect_with(&url(), opts).unwrap();
    ledger
        .write(&mut |txn| txn.put_budget(&Budget::new("tenant:x", Unit::Tokens, 10)))
        .unwrap();
    let mut admin = schema.admin();
    let attempts = AtomicU32::new(0);
    ledger
        .write(&mut |txn| {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            let mut b = txn.budget("tenant:x", Unit::Tokens)?.unwrap();
            b.spent += 1;
            txn.put_budget(&b)?;
            append(txn, AuditRecord::new(AuditKind::Event, 1))?;
            if n == 0 {
                // Kill our own session (and any other of this ledger) mid-transaction.
                let killed = terminate_sessions(&mut admin, &app);
                assert!(killed >= 1);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        2,
        "one retry after the lost session"
    );
    ledger
        .read(&mut |txn| {
            assert_eq!(txn.budget("tenant:x", Unit::Tokens)?.unwrap().spent, 1);
            assert_eq!(txn.audit_page(0, 10)?.len(), 1);
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_session_lost_during_commit_is_resolved_from_the_chain() {
    lost_during_commit(true);
}

#[test]
fn without_group_commit_a_session_lost_during_commit_is_resolved_from_the_chain() {
    lost_during_commit(false);
}

fn lost_during_commit(group_commit: bool) {
    let schema = Schema::new("commitloss");
    let opts = PostgresOptions {
        group_commit,
        ..postgres_support::options(&schema.0)
    };
    let ledger = PostgresLedger::connect_with(&url(), opts).unwrap();
    ledger
        .write(&mut |txn| txn.put_budget(&Budget::new("tenant:x", Unit::Tokens, 10)))
        .unwrap();
    // A deferred trigger runs inside COMMIT: the first time, it ends its own session there,
    // so the client loses the connection while committing (and the transaction aborts).
    schema
        .admin()
        .batch_execute(
            "CREATE SEQUENCE oneshot;
             CREATE FUNCTION die_once() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF nextval('oneshot') = 1 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
               RETURN NULL;
             END $$;
             CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON cycles_audit
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die_once();",
        )
        .unwrap();
    let attempts = AtomicU32::new(0);
    ledger
        .write(&mut |txn| {
            attempts.fetch_add(1, Ordering::SeqCst);
            let mut b = txn.budget("tenant:x", Unit::Tokens)?.unwrap();
            b.spent += 1;
            txn.put_budget(&b)?;
            append(txn, AuditRecord::new(AuditKind::Event, 1))
        })
        .unwrap();
    // The lookup on a new session found the record absent, so the operation ran again.
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let mut admin = schema.admin();
    let seq: i64 = admin
        .query_one("SELECT nextval('oneshot')", &[])
        .unwrap()
        .get(0);
    assert_eq!(seq, 3, "the trigger fired on both attempts");
    ledger
        .read(&mut |txn| {
            assert_eq!(txn.budget("tenant:x", Unit::Tokens)?.unwrap().spent, 1);
            assert_eq!(txn.audit_page(0, 10)?.len(), 1);
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_write_refused_in_the_pipelined_commit_changes_nothing() {
    let schema = Schema::new("refused");
    let opts = PostgresOptions {
        pool_size: 1,
        ..postgres_support::options(&schema.0)
    };
    let ledger = PostgresLedger::connect_with(&url(), opts).unwrap();
    // The server refuses one kv row: the error comes back for the statement sent together
    // with COMMIT, which then ends the transaction with a rollback.
    schema
        .admin()
        .batch_execute(
            "CREATE FUNCTION no_boom() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.key = 'boom' THEN RAISE EXCEPTION 'refused by test trigger'; END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER no_boom BEFORE INSERT ON cycles_kv
               FOR EACH ROW EXECUTE FUNCTION no_boom();",
        )
        .unwrap();
    let write = |key: &'static str| {
        ledger.write(&mut |txn| {
            txn.put_budget(&Budget::new("tenant:x", Unit::Tokens, 10))?;
            append(txn, AuditRecord::new(AuditKind::BudgetSet, 1))?;
            txn.kv_put("ns", key, &json!(1))
        })
    };
    let err = write("boom").unwrap_err();
    assert_eq!(err.code(), "LEDGER_UNAVAILABLE");
    assert!(err.to_string().contains("refused by test trigger"), "{err}");
    let mut admin = schema.admin();
    for table in ["cycles_budgets", "cycles_audit", "cycles_kv"] {
        assert_eq!(count(&mut admin, table), 0, "{table}");
    }
    // The one pooled session is still usable and the chain continues from the same head.
    write("fine").unwrap();
    assert_eq!(count(&mut admin, "cycles_audit"), 1);
    let seq: i64 = admin
        .query_one("SELECT seq FROM cycles_audit", &[])
        .unwrap()
        .get(0);
    assert_eq!(seq, 1);
}

#[test]
fn a_held_chain_head_makes_the_gate_deny_then_recovers() {
    let schema = Schema::new("held");
    let opts = PostgresOptions {
        lock_timeout: Duration::from_millis(300),
        ..postgres_support::options(&schema.0)
    };
    let auth = auth_on(
        PostgresLedger::connect_with(&url(), opts).unwrap(),
        ManualClock::new(1_000),
    );
    // Another session holds the head, as a hung client in the middle of a write would.
    let mut holder = schema.admin();
    let mut tx = holder.transaction().unwrap();
    tx.query_one(
        "SELECT seq FROM cycles_audit_head WHERE id = 1 FOR UPDATE",
        &[],
    )
    .unwrap();
    let err = auth
        .reserve(&ReserveRequest::new(bot(), write_call()))
        .unwrap_err();
    assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{err}");
    assert_eq!(err.decision().unwrap().decision, DecisionKind::Deny);
    let d = auth
        .decide(&DecideRequest::new(bot(), write_call()))
        .unwrap();
    assert_eq!(d.decision, DecisionKind::Deny);
    assert_eq!(d.reason_code, Some(ReasonCode::LedgerUnavailable));
    // Reads do not need the head.
    assert_eq!(auth.balances(None).unwrap()[0].reserved, 0);
    tx.commit().unwrap();
    let r = auth
        .reserve(&ReserveRequest::new(bot(), write_call()))
        .unwrap();
    assert_eq!(r.status, ReservationStatus::Active);
    let v = auth.verify().unwrap();
    assert!(v.ok);
    assert_eq!(v.records, 3, "the failed attempts left no record");
}

#[test]
fn several_pools_share_one_budget_and_one_chain() {
    let schema = Schema::new("hosts");
    let allocated = 60;
    let policy = Policy::default()
        .register("write_file", Tier::T1)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, allocated));
    // Three "hosts": three ledgers with their own pools, four threads each.
    let auths: Vec<Authority> = (0..3)
        .map(|_| {
            Authority::builder()
                .policy(policy.clone())
                .ledger(schema.ledger())
                .build()
                .unwrap()
        })
        .collect();
    let allowed = Arc::new(AtomicU32::new(0));
    let denied = Arc::new(AtomicU32::new(0));
    std::thread::scope(|s| {
        for (h, auth) in auths.iter().enumerate() {
            for t in 0..4 {
                let (allowed, denied) = (allowed.clone(), denied.clone());
                s.spawn(move || {
                    let subject = Subject::new().tenant("acme").agent(format!("h{h}t{t}"));
                    for _ in 0..10 {
                        match auth.reserve(&ReserveRequest::new(subject.clone(), write_call())) {
                            Ok(r) => {
                                auth.commit(&r.reservation_id, &CommitRequest::default())
                                    .unwrap();
                                allowed.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => {
                                assert_eq!(e.code(), "BUDGET_EXCEEDED", "{e}");
                                denied.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                });
            }
        }
    });
    // 120 attempts on 60 points, each holding and then spending 1: exactly 60 get through.
    assert_eq!(allowed.load(Ordering::SeqCst), 60);
    assert_eq!(denied.load(Ordering::SeqCst), 60);
    let auth = &auths[0];
    let b = &auth.balances(Some("tenant:acme")).unwrap()[0];
    assert_eq!((b.spent, b.reserved, b.remaining), (60, 0, 0));
    let v = auth.verify().unwrap();
    assert!(v.ok, "{v:?}");
    // One budget_set (the other hosts found the budget), then reserve+commit or a denial.
    assert_eq!(v.records, 1 + 60 * 2 + 60);
}

/// `url()` with another user and password.
fn url_as(user: &str, password: &str) -> String {
    let u = url();
    let (scheme, rest) = u.split_once("://").expect("a postgres:// URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}:{password}@{host}")
}

#[test]
fn a_user_without_create_rights_uses_a_ledger_created_for_it() {
    let schema = Schema::new("rights");
    let role = format!("cycles_app_{}", std::process::id());
    let mut admin = schema.admin();
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD 'pw'"
        ))
        .unwrap();
    let opts = |s: &str| {
        PostgresOptions {
            connect_timeout: Duration::from_secs(2),
            ..PostgresOptions::default()
        }
        .schema(s)
    };
    // It cannot create a ledger...
    let err = PostgresLedger::connect_with(&url_as(&role, "pw"), opts(&schema.0)).unwrap_err();
    assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{err}");
    assert!(err.to_string().contains("permission denied"), "{err}");
    // ...but uses one the owner created, with only the rights docs/postgres.md lists.
    drop(schema.ledger());
    admin
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA {s} TO {role};
             GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {s} TO {role};
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO {role};",
            s = schema.0
        ))
        .unwrap();
    let ledger = PostgresLedger::connect_with(&url_as(&role, "pw"), opts(&schema.0)).unwrap();
    let auth = auth_on(ledger, ManualClock::new(1_000));
    let r = auth
        .reserve(&ReserveRequest::new(bot(), write_call()))
        .unwrap();
    auth.commit(&r.reservation_id, &CommitRequest::default())
        .unwrap();
    assert!(auth.verify().unwrap().ok);
    drop(auth);
    admin
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .unwrap();
}

#[test]
fn what_a_process_keeps_between_writes_is_dropped_when_another_writes() {
    // Each ledger (process) reuses what it read in its last write transaction while nobody
    // else has written since; a write by another must make it read again.
    let schema = Schema::new("carry");
    let (a, b) = (schema.ledger(), schema.ledger());
    let spend = |ledger: &PostgresLedger, by: i64| {
        let mut seen = 0;
        ledger
            .write(&mut |txn| {
                // The first read of a transaction always goes to the server (with BEGIN);
                // the budget is the second, which may come from what the process kept.
                txn.kv_get("probe", "first")?;
                let mut budget = txn
                    .budget("tenant:x", Unit::Tokens)?
                    .unwrap_or_else(|| Budget::new("tenant:x", Unit::Tokens, 1_000));
                seen = budget.spent;
                budget.spent += by;
                txn.put_budget(&budget)?;
                // The budget as the operation left it, as the state machine's records carry.
                let mut rec = AuditRecord::new(AuditKind::Event, 1);
                rec.budgets = vec![budget.clone()];
                append(txn, rec)
            })
            .unwrap();
        seen
    };
    assert_eq!(spend(&a, 1), 0);
    assert_eq!(spend(&a, 1), 1); // a reused its own knowledge, correctly
    assert_eq!(spend(&b, 5), 2); // b never saw the budget: reads it
    assert_eq!(spend(&a, 1), 7); // a must not use its stale copy (spent = 2)
    assert_eq!(spend(&b, 1), 8);
    let auth = Authority::builder().ledger(a).build().unwrap();
    let v = auth.verify().unwrap();
    assert!(v.ok && v.records == 5, "{v:?}");
}
