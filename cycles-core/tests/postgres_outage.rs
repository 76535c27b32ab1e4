//! The server goes away: while it is down the gate answers DENY `LEDGER_UNAVAILABLE` and
//! recovers by itself when the server is back; a restart (clean, then a crash) in the middle
//! of a load loses no acknowledged operation and leaves no operation half-applied or applied
//! twice.
//!
//! These tests stop and start the server, so they need the one scripts/pg-test.sh manages
//! (it exports `CYCLES_PG_MANAGED` and how to run `pg_ctl`). Without it they fail; the
//! script does not run this file against a server it does not manage.
#![cfg(feature = "postgres")]

mod postgres_support;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cycles_core::*;
use postgres_support::{Schema, url};
use serde_json::json;

/// The tests of this file share one server and stop it: one at a time.
static SERVER: Mutex<()> = Mutex::new(());

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: this test stops and starts the server; run scripts/pg-test.sh")
    })
}

fn pg_ctl(args: &[&str]) {
    let out = pg_ctl_output(args);
    assert!(
        out.status.success(),
        "pg_ctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pg_ctl_output(args: &[&str]) -> std::process::Output {
    assert_eq!(env("CYCLES_PG_MANAGED"), "1");
    let run_as = env("CYCLES_PG_RUN_AS");
    let mut words: Vec<String> = run_as.split_whitespace().map(str::to_string).collect();
    words.push(format!("{}/pg_ctl", env("CYCLES_PG_BIN")));
    words.extend(["-D".to_string(), env("CYCLES_PG_DATA")]);
    words.extend(args.iter().map(|s| s.to_string()));
    Command::new(&words[0]).args(&words[1..]).output().unwrap()
}

fn stop_server(mode: &str) {
    pg_ctl(&["-m", mode, "-w", "-t", "60", "stop"]);
}

fn start_server() {
    let log = format!("{}/server.log", env("CYCLES_PG_DATA"));
    pg_ctl(&[
        "-o",
        &env("CYCLES_PG_OPTS"),
        "-l",
        &log,
        "-w",
        "-t",
        "60",
        "start",
    ]);
}

/// Restarts the server if a test panics while it is down, so later tests still have one.
struct ServerUp;
impl Drop for ServerUp {
    fn drop(&mut self) {
        // `pg_ctl status` exits with 3 when no server runs.
        if std::thread::panicking() && pg_ctl_output(&["status"]).status.code() == Some(3) {
            let _ = std::panic::catch_unwind(start_server);
        }
    }
}

fn policy() -> Policy {
    Policy::default()
        .register("write_file", Tier::T1)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 1_000_000))
}

fn ledger(schema: &str, connect_timeout_ms: u64) -> PostgresLedger {
    let opts = PostgresOptions {
        pool_size: 2,
        connect_timeout: Duration::from_millis(connect_timeout_ms),
        ..postgres_support::options(schema)
    };
    PostgresLedger::connect_with(&url(), opts).unwrap()
}

fn call() -> ToolCall {
    ToolCall::new("write_file", json!({"path": "a"}))
}

#[test]
fn deny_while_the_server_is_down_then_recover() {
    let _one = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    let schema = Schema::new("down");
    let auth = Authority::builder()
        .policy(policy())
        .ledger(ledger(&schema.0, 500))
        .build()
        .unwrap();
    let bot = Subject::new().tenant("acme").agent("bot");
    let held = auth
        .reserve(&ReserveRequest::new(bot.clone(), call()))
        .unwrap();

    let _guard = ServerUp;
    stop_server("fast");
    let err = auth
        .reserve(&ReserveRequest::new(bot.clone(), call()))
        .unwrap_err();
    assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{err}");
    let d = err.decision().expect("a denial carries its decision");
    assert_eq!(d.decision, DecisionKind::Deny);
    assert_eq!(d.tier, Tier::T1);
    let d = auth
        .decide(&DecideRequest::new(bot.clone(), call()))
        .unwrap();
    assert_eq!(d.decision, DecisionKind::Deny);
    assert_eq!(d.reason_code, Some(ReasonCode::LedgerUnavailable));
    let e = auth
        .commit(&held.reservation_id, &CommitRequest::default())
        .unwrap_err();
    assert_eq!(e.code(), "LEDGER_UNAVAILABLE");
    assert_eq!(
        auth.balances(None).unwrap_err().code(),
        "LEDGER_UNAVAILABLE"
    );
    start_server();

    // The same Authority recovers: its pool reconnects, no restart of the process.
    let r = auth
        .reserve(&ReserveRequest::new(bot.clone(), call()))
        .unwrap();
    auth.commit(&held.reservation_id, &CommitRequest::default())
        .unwrap();
    let b = &auth.balances(Some("tenant:acme")).unwrap()[0];
    assert_eq!((b.spent, b.reserved), (1, 1));
    assert_eq!(
        auth.reservation(&r.reservation_id).unwrap().status,
        ReservationStatus::Active
    );
    let v = auth.verify().unwrap();
    assert!(v.ok, "{v:?}");
    // budget_set, reserve, reserve, commit: the denied attempts left nothing behind.
    assert_eq!(v.records, 4);
}

/// One worker's acknowledged operations.
#[derive(Default)]
struct Acked {
    reservations: Vec<String>,
    failures: Vec<String>,
    unavailable: u64,
}

/// Retries `f` while the ledger is unavailable, as a careful client does (same idempotency
/// key, so a retry never applies the operation twice).
fn until_available<T>(acked: &mut Acked, mut f: impl FnMut() -> Result<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match f() {
            Ok(v) => return Some(v),
            Err(e) if e.code() == "LEDGER_UNAVAILABLE" && Instant::now() < deadline => {
                acked.unavailable += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                acked.failures.push(e.to_string());
                return None;
            }
        }
    }
}

fn wait_for(done: &AtomicU64, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while done.load(Ordering::SeqCst) < at_least {
        assert!(Instant::now() < deadline, "the load made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn restarts_during_load_lose_nothing_and_apply_nothing_twice() {
    let _one = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    let schema = Schema::new("restart");
    const WORKERS: usize = 4;
    let auths: Vec<Authority> = (0..WORKERS)
        .map(|_| {
            Authority::builder()
                .policy(policy())
                .ledger(ledger(&schema.0, 1_000))
                .build()
                .unwrap()
        })
        .collect();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started_before: std::time::SystemTime = postgres_support::admin(&schema.0)
        .query_one("SELECT pg_postmaster_start_time()", &[])
        .unwrap()
        .get(0);
    let _guard = ServerUp;
    let results: Vec<Acked> = std::thread::scope(|s| {
        let handles: Vec<_> = auths
            .iter()
            .enumerate()
            .map(|(w, auth)| {
                let (done, stop) = (done.clone(), stop.clone());
                s.spawn(move || {
                    let mut acked = Acked::default();
                    let subject = Subject::new().tenant("acme").agent(format!("w{w}"));
                    let mut op = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let mut req = ReserveRequest::new(subject.clone(), call());
                        req.idempotency_key = Some(format!("w{w}-r{op}"));
                        let Some(r) = until_available(&mut acked, || auth.reserve(&req)) else {
                            break;
                        };
                        let commit = CommitRequest {
                            idempotency_key: Some(format!("w{w}-c{op}")),
                            ..CommitRequest::default()
                        };
                        let Some(c) =
                            until_available(&mut acked, || auth.commit(&r.reservation_id, &commit))
                        else {
                            break;
                        };
                        if c.charged != vec![Amount::new(Unit::RiskPoints, 1)] {
                            acked.failures.push(format!("charged {:?}", c.charged));
                        }
                        acked.reservations.push(r.reservation_id);
                        done.fetch_add(1, Ordering::SeqCst);
                        op += 1;
                    }
                    acked
                })
            })
            .collect();
        wait_for(&done, 40);
        stop_server("fast");
        start_server();
        let after_clean = done.load(Ordering::SeqCst);
        wait_for(&done, after_clean + 40);
        // A crash: no shutdown checkpoint, the server recovers from the WAL.
        stop_server("immediate");
        start_server();
        let after_crash = done.load(Ordering::SeqCst);
        wait_for(&done, after_crash + 40);
        stop.store(true, Ordering::SeqCst);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut ids = BTreeSet::new();
    let mut unavailable = 0;
    for (w, a) in results.iter().enumerate() {
        assert!(a.failures.is_empty(), "worker {w}: {:?}", a.failures);
        unavailable += a.unavailable;
        ids.extend(a.reservations.iter().cloned());
    }
    // The server did restart under the load (operations completed before, between and after
    // the two restarts: `wait_for` above). Most lost sessions are retried inside the ledger,
    // so callers see LEDGER_UNAVAILABLE only while the server is down longer than
    // `connect_timeout`.
    let started_after: std::time::SystemTime = postgres_support::admin(&schema.0)
        .query_one("SELECT pg_postmaster_start_time()", &[])
        .unwrap()
        .get(0);
    assert!(started_after > started_before, "the server did not restart");
    let total = results.iter().map(|a| a.reservations.len()).sum::<usize>() as i64;
    eprintln!("{total} operations acknowledged; {unavailable} attempts saw LEDGER_UNAVAILABLE");
    assert_eq!(
        ids.len() as i64,
        total,
        "every acknowledged reservation is distinct"
    );

    let auth = &auths[0];
    // Nothing acknowledged was lost, nothing unacknowledged was left behind.
    let stored = auth.reservations(None, usize::MAX).unwrap();
    assert_eq!(stored.len() as i64, total, "reservations in the ledger");
    for r in &stored {
        assert!(
            ids.contains(&r.reservation_id),
            "orphan {}",
            r.reservation_id
        );
        assert_eq!(
            r.status,
            ReservationStatus::Committed,
            "{}",
            r.reservation_id
        );
    }
    let b = &auth.balances(Some("tenant:acme")).unwrap()[0];
    assert_eq!((b.spent, b.reserved), (total, 0));
    let v = auth.verify().unwrap();
    assert!(v.ok, "{v:?}");
    let records = auth.audit(&AuditQuery::default()).unwrap();
    let count = |k: AuditKind| records.iter().filter(|r| r.kind == k).count() as i64;
    assert_eq!(
        count(AuditKind::Reserve),
        total,
        "one reserve record per operation"
    );
    assert_eq!(
        count(AuditKind::Commit),
        total,
        "one commit record per operation"
    );
    assert_eq!(v.records as i64, 1 + 2 * total);
}
