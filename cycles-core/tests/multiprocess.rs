//! Four OS processes share one SQLite file and hammer one budget. The children are this test
//! binary re-executed on the ignored `child_worker` test; each prints its tally on stdout.
//! The sum of the tallies must equal what the file says was spent, never more than allocated,
//! and the audit chain written by four processes must verify.

#[path = "support/hammer.rs"]
mod hammer;

use std::process::{Command, Stdio};

use cycles_core::*;
use hammer::{Tally, check, policy, work};

const PROCESSES: u64 = 4;
const ITERATIONS: u64 = 80;
const DB_ENV: &str = "CYCLES_MULTIPROCESS_DB";
const WORKER_ENV: &str = "CYCLES_MULTIPROCESS_WORKER";

#[test]
fn four_processes_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    // Create the file and its budgets first, then let the children race on it.
    drop(
        Authority::builder()
            .policy(policy())
            .ledger(SqliteLedger::open(&path).unwrap())
            .build()
            .unwrap(),
    );
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|w| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "child_worker",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(DB_ENV, &path)
                .env(WORKER_ENV, w.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut total = Tally::default();
    for (w, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child {w} failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let tallies: Vec<Tally> = stdout.lines().filter_map(Tally::from_line).collect();
        assert_eq!(tallies.len(), 1, "child {w} printed no tally:\n{stdout}");
        assert_eq!(tallies[0].attempts, ITERATIONS, "child {w}");
        total.add(&tallies[0]);
    }
    let auth = Authority::builder()
        .policy(policy())
        .ledger(SqliteLedger::open(&path).unwrap())
        .build()
        .unwrap();
    check(&auth, &total);
}

/// Child-process entry point of `four_processes_share_one_file`; does nothing on its own.
#[test]
#[ignore = "run as a child process by four_processes_share_one_file"]
fn child_worker() {
    let (Some(path), Some(worker)) = (std::env::var_os(DB_ENV), std::env::var_os(WORKER_ENV))
    else {
        eprintln!("child_worker only runs as a child of four_processes_share_one_file");
        return;
    };
    let worker: u64 = worker.to_str().unwrap().parse().unwrap();
    let auth = Authority::builder()
        .policy(policy())
        .ledger(SqliteLedger::open(path).unwrap())
        .build()
        .unwrap();
    let tally = work(&auth, worker, ITERATIONS);
    // The harness has printed "test child_worker ... " without a newline: start a fresh line.
    println!("\n{}", tally.to_line());
}
