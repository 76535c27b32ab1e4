//! Crash safety of group commit: a child process runs eight threads of reserve/commit/release
//! on one SQLite ledger (`synchronous=FULL`, group commit on, the defaults) and is killed with
//! SIGKILL at a random moment, 24 times over on the same file. Each thread prints `ACK <id>`
//! (flushed) only after its `commit` returned. After each kill the file must open, the audit
//! chain verify, every budget equal the sum of its ACTIVE holds and COMMITTED charges, and every
//! acknowledged reservation be COMMITTED: no acknowledged operation is lost.
//!
//! The child also reports its group-commit counters (`STATS <transactions> <operations>`), and
//! the test requires that operations did share transactions, or it would not test batching.
//!
//! The child is this test binary re-executed on the ignored `group_commit_crash_child` test.

#[path = "support/crash.rs"]
mod crash;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crash::{
    Rng, announce_ready, base_policy, check_file, child_env, clock_seed, reserve_and_settle,
    run_and_kill,
};
use cycles_core::*;

const KILLS: u64 = 24;
const THREADS: u64 = 8;
const DB_ENV: &str = "CYCLES_GC_CRASH_DB";
const SEED_ENV: &str = "CYCLES_GC_CRASH_SEED";

fn open(path: &Path) -> (Authority, std::sync::Arc<SqliteLedger>) {
    let ledger =
        std::sync::Arc::new(SqliteLedger::open(path).expect("the ledger file opens after a crash"));
    assert!(ledger.group_commit(), "group commit is the default");
    let auth = Authority::builder()
        .policy(base_policy())
        .shared_ledger(ledger.clone())
        .build()
        .expect("an authority starts on the file after a crash");
    (auth, ledger)
}

#[test]
fn sigkill_during_group_commit_loses_no_acknowledged_operation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(open(&path));
    let mut rng = Rng(clock_seed());
    let mut acknowledged = HashSet::new();
    let (mut best_txns, mut best_ops) = (0u64, 0u64);
    for run in 0..KILLS {
        let envs = [
            (DB_ENV, path.clone().into()),
            (SEED_ENV, run.to_string().into()),
        ];
        let child = "group_commit_crash_child";
        let killed = run_and_kill(child, envs, Duration::from_secs(120), |wait_line| {
            wait_line(); // READY
            // Let 0 to 199 commits through, then strike at a random moment.
            for _ in 0..rng.below(200) {
                wait_line();
            }
            std::thread::sleep(Duration::from_millis(rng.below(20)));
        });
        // The last `STATS <transactions> <operations>` line the child completed.
        let (txns, ops) = killed
            .other
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("STATS "))
            .map_or((0, 0), |s| {
                let mut it = s.split_whitespace().map(|x| x.parse::<u64>().unwrap());
                (it.next().unwrap(), it.next().unwrap())
            });
        if ops.saturating_sub(txns) > best_ops.saturating_sub(best_txns) {
            (best_txns, best_ops) = (txns, ops);
        }
        let n = killed.acks.len();
        acknowledged.extend(killed.acks);
        let committed = check_file(&open(&path).0, 3, &acknowledged);
        eprintln!(
            "run {run}: {n} acknowledged, {committed} committed in the file, \
             child stats {ops} operations in {txns} transactions"
        );
    }
    assert!(
        acknowledged.len() as u64 > KILLS,
        "too few acknowledged commits to mean anything"
    );
    assert!(
        best_ops > best_txns,
        "the children never batched ({best_ops} operations in {best_txns} transactions)"
    );
}

/// Child-process entry point: eight threads loop until the process is killed.
#[test]
#[ignore = "run as a child process by sigkill_during_group_commit_loses_no_acknowledged_operation"]
fn group_commit_crash_child() {
    let Some((path, seed)) = child_env(DB_ENV, SEED_ENV) else {
        return;
    };
    let (auth, ledger) = open(Path::new(&path));
    announce_ready();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (auth, ledger) = (&auth, &ledger);
            s.spawn(move || {
                let mut rng = Rng((seed * 64 + t).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
                for i in 0u64.. {
                    let args = serde_json::json!({ "seed": seed, "t": t, "i": i });
                    let units = [Unit::UsdMicrocents];
                    if let Some(id) = reserve_and_settle(auth, &mut rng, args, &units, 16) {
                        let stats = ledger.group_commit_stats();
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ACK {id}").unwrap();
                        if i % 8 == 0 {
                            writeln!(out, "STATS {} {}", stats.transactions, stats.operations)
                                .unwrap();
                        }
                        out.flush().unwrap();
                    }
                }
            });
        }
    });
}
