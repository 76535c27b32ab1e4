//! Group commit on PostgresLedger: threads of one process share write transactions. Each
//! operation must behave as if it ran alone: a failing or panicking operation is undone
//! without touching the others (also after it sent writes to the server), a lost session
//! makes every operation of the shared transaction run again exactly once, and the result
//! is the same as running the operations one after another.
#![cfg(feature = "postgres")]

mod postgres_support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cycles_core::*;
use postgres_support::{Schema, append, terminate_sessions, url};
use serde_json::json;

const THREADS: u64 = 8;

fn ledger(schema: &Schema, app: &str) -> PostgresLedger {
    let opts = PostgresOptions {
        application_name: app.to_string(),
        ..postgres_support::options(&schema.0)
    };
    assert!(opts.group_commit, "group commit is on by default");
    PostgresLedger::connect_with(&url(), opts).unwrap()
}

/// One operation written directly against the ledger: +1 on a counter budget, a kv row
/// naming it, an audit record carrying the budget after it; `flush_first` lists a namespace first (which sends pending
/// writes to the server, inside the operation's savepoint when it shares a transaction).
fn op(txn: &mut dyn LedgerTxn, id: &str, flush_first: bool, fail: bool) -> cycles_core::Result<()> {
    let mut b = txn
        .budget("tenant:counter", Unit::Credits)?
        .expect("the counter exists");
    b.spent += 1;
    txn.put_budget(&b)?;
    txn.kv_put("ops", id, &json!(b.spent))?;
    let mut rec = AuditRecord::new(AuditKind::Event, 1);
    rec.detail = Some(json!({ "op": id }));
    // As the state machine's records do: the budget as the operation left it (verify checks
    // the ledger's budgets against these).
    rec.budgets = vec![b];
    append(txn, rec)?;
    if flush_first {
        txn.kv_list("ops")?;
    }
    if fail {
        return Err(CyclesError::invalid(
            "op",
            "this operation fails after writing",
        ));
    }
    Ok(())
}

fn counter(ledger: &PostgresLedger) -> (i64, Vec<String>, u64) {
    let mut out = (0, Vec::new(), 0);
    ledger
        .read(&mut |txn| {
            out.0 = txn.budget("tenant:counter", Unit::Credits)?.unwrap().spent;
            out.1 = txn.kv_list("ops")?.into_iter().map(|(k, _)| k).collect();
            out.2 = txn.audit_page(0, usize::MAX)?.len() as u64;
            Ok(())
        })
        .unwrap();
    out
}

fn init_counter(ledger: &PostgresLedger) {
    ledger
        .write(&mut |txn| {
            txn.put_budget(&Budget::new("tenant:counter", Unit::Credits, i64::MAX / 2))
        })
        .unwrap();
}

#[test]
fn failing_and_panicking_operations_are_undone_alone() {
    let schema = Schema::new("gcfail");
    let ledger = ledger(&schema, "cycles-gcfail");
    init_counter(&ledger);
    let ok = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let panicked = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (ledger, ok, failed, panicked) = (&ledger, &ok, &failed, &panicked);
            s.spawn(move || {
                for i in 0..60u64 {
                    let id = format!("t{t}-{i}");
                    let kind = (t + i) % 5;
                    let run = || {
                        ledger.write(&mut |txn| {
                            let r = op(txn, &id, i % 2 == 0, kind == 1 || kind == 3);
                            if kind == 4 && i % 4 == 0 {
                                panic!("operation {id} panics after writing");
                            }
                            r
                        })
                    };
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
                        Ok(Ok(())) => ok.fetch_add(1, Ordering::SeqCst),
                        Ok(Err(e)) => {
                            assert_eq!(e.code(), "INVALID_REQUEST", "{e}");
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                        Err(_) => panicked.fetch_add(1, Ordering::SeqCst),
                    };
                }
            });
        }
    });
    let (ok, failed, panicked) = (ok.into_inner(), failed.into_inner(), panicked.into_inner());
    assert_eq!(ok + failed + panicked, THREADS * 60);
    assert!(failed > 0 && panicked > 0);
    let (spent, ids, records) = counter(&ledger);
    assert_eq!(spent as u64, ok, "only the successful operations counted");
    assert_eq!(ids.len() as u64, ok);
    assert_eq!(records, ok);
    let (transactions, operations) = ledger.batch_stats();
    assert!(
        operations > transactions,
        "no transaction was shared ({operations} operations in {transactions} transactions)"
    );
    let auth = Authority::builder().ledger(ledger).build().unwrap();
    let v = auth.verify().unwrap();
    assert!(v.ok, "{v:?}");
}

#[test]
fn lost_sessions_rerun_every_operation_of_the_shared_transaction_once() {
    let schema = Schema::new("gclost");
    let app = format!("cycles-gclost-{}", std::process::id());
    let ledger = ledger(&schema, &app);
    init_counter(&ledger);
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut admin = schema.admin();
    let acked: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (ledger, done, stop) = (&ledger, &done, &stop);
                s.spawn(move || {
                    let mut acked = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let id = format!("t{t}-{i}");
                        // The ledger retries lost sessions itself; an error here is a failure
                        // to recover (reported after the others stop).
                        if let Err(e) = ledger.write(&mut |txn| op(txn, &id, i % 3 == 0, false)) {
                            stop.store(true, Ordering::SeqCst);
                            return Err(format!("{id}: {e}"));
                        }
                        acked.push(id);
                        done.fetch_add(1, Ordering::SeqCst);
                        i += 1;
                    }
                    Ok(acked)
                })
            })
            .collect();
        let mut killed = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        for round in 1..=6u64 {
            while done.load(Ordering::SeqCst) < round * 60 && !stop.load(Ordering::SeqCst) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the writers made no progress"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            let n = terminate_sessions(&mut admin, &app);
            killed += n;
        }
        stop.store(true, Ordering::SeqCst);
        let results: Vec<Result<Vec<String>, String>> =
            workers.into_iter().map(|w| w.join().unwrap()).collect();
        let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(failures.is_empty(), "writes failed: {failures:?}");
        assert!(killed > 0, "no session was ended");
        results.into_iter().flat_map(Result::unwrap).collect()
    });
    let (spent, ids, records) = counter(&ledger);
    let acked_set: BTreeSet<String> = acked.iter().cloned().collect();
    assert_eq!(acked_set.len(), acked.len());
    assert_eq!(
        spent as usize,
        acked.len(),
        "every acknowledged operation applied once"
    );
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), acked_set);
    assert_eq!(records as usize, acked.len());
    let auth = Authority::builder().ledger(ledger).build().unwrap();
    assert!(auth.verify().unwrap().ok);
}

#[test]
fn shared_transactions_equal_serial_execution_on_a_hot_budget() {
    // Reserve/commit with REJECT overage on one hot budget from 8 threads: some commits abort
    // (BUDGET_EXCEEDED) inside shared transactions. The books must balance exactly.
    let schema = Schema::new("gchot");
    let policy = Policy::default()
        .register("write_file", Tier::T1)
        .budget(BudgetSpec::new("tenant:hot", Unit::RiskPoints, 400));
    let auth = Authority::builder()
        .policy(policy)
        .ledger(ledger(&schema, "cycles-gchot"))
        .build()
        .unwrap();
    let charged = AtomicU64::new(0);
    let rejected = AtomicU64::new(0);
    let denied = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (auth, charged, rejected, denied) = (&auth, &charged, &rejected, &denied);
            s.spawn(move || {
                let subject = Subject::new().tenant("hot").agent(format!("t{t}"));
                for i in 0..50 {
                    let mut req = ReserveRequest::new(
                        subject.clone(),
                        ToolCall::new("write_file", json!({ "i": i })),
                    );
                    req.overage_policy = Some(CommitOveragePolicy::Reject);
                    let r = match auth.reserve(&req) {
                        Ok(r) => r,
                        Err(e) => {
                            assert_eq!(e.code(), "BUDGET_EXCEEDED", "{e}");
                            denied.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                    };
                    // Every third commit asks for far more than the budget holds.
                    let actual = if i % 3 == 0 { 1_000 } else { 1 };
                    let c = CommitRequest {
                        actual: vec![Amount::new(Unit::RiskPoints, actual)],
                        ran: None,
                        charge_if_expired: false,
                        idempotency_key: None,
                    };
                    match auth.commit(&r.reservation_id, &c) {
                        Ok(res) => {
                            charged.fetch_add(res.charged[0].amount as u64, Ordering::SeqCst);
                        }
                        Err(e) => {
                            assert_eq!(e.code(), "BUDGET_EXCEEDED", "{e}");
                            rejected.fetch_add(1, Ordering::SeqCst);
                            auth.release(&r.reservation_id, &ReleaseRequest::default())
                                .unwrap();
                        }
                    }
                }
            });
        }
    });
    let b = &auth.balances(Some("tenant:hot")).unwrap()[0];
    assert_eq!(b.spent as u64, charged.load(Ordering::SeqCst));
    assert_eq!(b.reserved, 0);
    assert!(b.spent <= b.allocated);
    assert!(rejected.load(Ordering::SeqCst) > 0);
    let records = auth.audit(&AuditQuery::default()).unwrap();
    let count = |k: AuditKind| records.iter().filter(|r| r.kind == k).count() as u64;
    let reserved = THREADS * 50 - denied.load(Ordering::SeqCst);
    assert_eq!(count(AuditKind::Reserve), reserved);
    assert_eq!(count(AuditKind::Denial), denied.load(Ordering::SeqCst));
    // A rejected commit aborts and leaves no record; its release does.
    assert_eq!(count(AuditKind::Release), rejected.load(Ordering::SeqCst));
    assert_eq!(
        count(AuditKind::Commit),
        reserved - rejected.load(Ordering::SeqCst)
    );
    assert!(auth.verify().unwrap().ok);
}
