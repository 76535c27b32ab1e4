//! The state check of `verify` on PostgreSQL (scripts/pg-test.sh starts a server): concurrent
//! clients, with and without group commit, doing every operation, failing ones included (a
//! REJECT overage rolled back inside a shared transaction, denials, lazy expiries, sweeps),
//! leave state that the chain accounts for: `verify` reports no mismatch, during and after.
#![cfg(feature = "postgres")]

mod postgres_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cycles_core::*;
use postgres_support::{Schema, options, url};
use serde_json::json;

fn bot(n: usize) -> Subject {
    Subject::new().tenant("acme").agent(format!("bot{}", n % 2))
}

fn authority(ledger: PostgresLedger, clock: ManualClock) -> Authority {
    let policy = Policy::default()
        .register("read_file", Tier::T0)
        .register("write_file", Tier::T1)
        .register("deploy", Tier::T3)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 1 << 40))
        .budget(BudgetSpec::new(
            "tenant:acme/agent:bot0",
            Unit::RiskPoints,
            400,
        ))
        .budget(BudgetSpec::new(
            "tenant:acme/agent:bot1",
            Unit::RiskPoints,
            1 << 30,
        ));
    Authority::builder()
        .policy(policy)
        .ledger(ledger)
        .clock(clock)
        .build()
        .unwrap()
}

/// One client's mix of operations; every outcome is fine, only the state it leaves matters.
fn client(auth: &Authority, clock: &ManualClock, n: usize, rounds: usize) {
    for i in 0..rounds {
        let tool = ["write_file", "deploy", "read_file"][i % 3];
        let mut req = ReserveRequest::new(bot(n + i), ToolCall::new(tool, json!({"i": i})));
        req.overage_policy = Some(
            [
                CommitOveragePolicy::Reject,
                CommitOveragePolicy::AllowIfAvailable,
                CommitOveragePolicy::AllowWithOverdraft,
            ][i % 3],
        );
        req.ttl_ms = Some(1_000 + (i as i64 % 5) * 500);
        if i % 4 == 0 {
            req.idempotency_key = Some(format!("k{n}-{}", i / 8));
        }
        let Ok(r) = auth.reserve(&req) else { continue };
        match i % 5 {
            // Past the budget: REJECT fails after its writes, in a shared transaction.
            0 => {
                let over = CommitRequest {
                    actual: vec![Amount::new(Unit::RiskPoints, 1 << 35)],
                    ..CommitRequest::default()
                };
                let _ = auth.commit(&r.reservation_id, &over);
            }
            1 => {
                let _ = auth.release(&r.reservation_id, &ReleaseRequest::default());
            }
            2 => {
                let ran = CommitRequest {
                    ran: Some(ToolCall::new("deploy", json!({"ran": i}))),
                    ..CommitRequest::default()
                };
                let _ = auth.commit(&r.reservation_id, &ran);
            }
            3 => {
                // Left to expire, lazily or by a sweep.
                clock.advance(700);
                let _ = auth.extend(
                    &r.reservation_id,
                    &ExtendRequest {
                        extend_by_ms: 100,
                        idempotency_key: None,
                    },
                );
            }
            _ => {
                let _ = auth.commit(&r.reservation_id, &CommitRequest::default());
            }
        }
        if i % 7 == 0 {
            let _ = auth.event(&EventRequest {
                subject: bot(n + i),
                call: ToolCall::new("read_file", json!({})),
                actual: vec![Amount::new(Unit::RiskPoints, 3)],
                overage_policy: Some(CommitOveragePolicy::AllowWithOverdraft),
                idempotency_key: None,
            });
        }
        if i % 11 == 0 {
            let _ = auth.sweep_expired();
        }
    }
}

#[test]
fn concurrent_clients_leave_state_the_chain_accounts_for() {
    let _ = url();
    for group_commit in [true, false] {
        let schema = Schema::new("stcheck");
        let mut opts = options(&schema.0);
        opts.group_commit = group_commit;
        opts.pool_size = 6;
        let clock = ManualClock::new(1_000);
        let ledger = PostgresLedger::connect_with(&url(), opts).unwrap();
        let auth = authority(ledger, clock.clone());
        let running = Arc::new(AtomicUsize::new(4));
        let clients: Vec<_> = (0..4)
            .map(|n| {
                let (auth, clock, running) = (auth.clone(), clock.clone(), running.clone());
                std::thread::spawn(move || {
                    client(&auth, &clock, n, 120);
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        let mut during = 0;
        while running.load(Ordering::SeqCst) > 0 {
            let report = auth.verify().unwrap();
            assert!(report.ok, "group_commit {group_commit}: {report:?}");
            during += 1;
        }
        clients.into_iter().for_each(|c| c.join().unwrap());
        clock.advance(60_000);
        auth.sweep_expired().unwrap();
        let report = auth.verify().unwrap();
        assert!(report.ok, "group_commit {group_commit}: {report:?}");
        assert!(during > 0 && report.records > 400, "{report:?}");
        // The mix did what it is for: charges, releases and expiries all happened.
        let records = auth.audit(&AuditQuery::default()).unwrap();
        for kind in [
            AuditKind::Commit,
            AuditKind::Release,
            AuditKind::Expire,
            AuditKind::Event,
        ] {
            assert!(records.iter().any(|r| r.kind == kind), "{kind:?}");
        }
    }
}
