//! Eight threads hammer one budget on each ledger. The sum of every thread's charges must be
//! exactly what the ledger says was spent, never more than allocated, and every attempt must
//! end as a grant or a BUDGET_EXCEEDED denial.

#[path = "support/hammer.rs"]
mod hammer;

use std::sync::Barrier;
use std::thread;

use cycles_core::*;
use hammer::{Tally, check, policy, work};

const THREADS: u64 = 8;
const ITERATIONS: u64 = 40;

/// Runs the workers, each on the authority `auth_for(thread)` gives it, all starting together.
fn hammer(auth_for: impl Fn(u64) -> Authority + Sync) -> Tally {
    let barrier = Barrier::new(THREADS as usize);
    // Opened before the threads start: a failing open then fails the test instead of leaving
    // the other workers waiting at the barrier forever (concurrent opens: sqlite_open_race.rs).
    let auths: Vec<Authority> = (0..THREADS).map(&auth_for).collect();
    let tallies: Vec<Tally> = thread::scope(|s| {
        let handles: Vec<_> = auths
            .iter()
            .enumerate()
            .map(|(w, auth)| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    work(auth, w as u64, ITERATIONS)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut total = Tally::default();
    for t in &tallies {
        total.add(t);
    }
    assert_eq!(total.attempts, THREADS * ITERATIONS);
    total
}

#[test]
fn memory_ledger_one_authority_shared() {
    let auth = Authority::builder().policy(policy()).build().unwrap();
    let total = hammer(|_| auth.clone());
    check(&auth, &total);
}

#[test]
fn sqlite_one_authority_shared() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = SqliteLedger::open(dir.path().join("ledger.db")).unwrap();
    let auth = Authority::builder()
        .policy(policy())
        .ledger(ledger)
        .build()
        .unwrap();
    let total = hammer(|_| auth.clone());
    check(&auth, &total);
}

#[test]
fn sqlite_one_connection_per_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    // Every thread opens the file and builds its own authority concurrently: the policy's
    // budgets must still be created exactly once (check() counts the budget_set records).
    let total = hammer(|_| {
        Authority::builder()
            .policy(policy())
            .ledger(SqliteLedger::open(&path).unwrap())
            .build()
            .unwrap()
    });
    let fresh = Authority::builder()
        .policy(policy())
        .ledger(SqliteLedger::open(&path).unwrap())
        .build()
        .unwrap();
    check(&fresh, &total);
}
