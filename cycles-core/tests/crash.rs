//! Crash safety: a child process runs reserve/commit/release in a loop on a SQLite file
//! (`synchronous=FULL`) and is killed with SIGKILL at a random moment, fifty times over on the
//! same file. After each kill the file must open, the audit chain verify, every budget satisfy
//! `remaining = allocated - spent - reserved - debt`, `reserved` equal the holds of ACTIVE
//! reservations, `spent` equal the charges of COMMITTED ones, and every commit the child
//! acknowledged (it prints `ACK <id>` only after `commit` returned) be COMMITTED.
//!
//! The child is this test binary re-executed on the ignored `crash_child` test.

#[path = "support/crash.rs"]
mod crash;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crash::{
    BIG, Rng, announce_ready, base_policy, check_file, child_env, clock_seed, reserve_and_settle,
    run_and_kill,
};
use cycles_core::*;

const KILLS: u64 = 50;
const DB_ENV: &str = "CYCLES_CRASH_DB";
const SEED_ENV: &str = "CYCLES_CRASH_SEED";

fn policy() -> Policy {
    base_policy().budget(BudgetSpec::new("tenant:acme/agent:bot", Unit::Tokens, BIG))
}

fn open(path: &Path) -> Authority {
    Authority::builder()
        .policy(policy())
        .ledger(SqliteLedger::open(path).expect("the ledger file opens after a crash"))
        .build()
        .expect("an authority starts on the file after a crash")
}

#[test]
fn sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(open(&path));
    let seed = clock_seed();
    let mut rng = Rng(seed);
    let mut acknowledged = HashSet::new();
    let mut mid_loop_kills = 0;
    for run in 0..KILLS {
        let envs = [
            (DB_ENV, path.clone().into()),
            (SEED_ENV, run.to_string().into()),
        ];
        let killed = run_and_kill("crash_child", envs, Duration::from_secs(60), |wait_line| {
            if rng.below(5) == 0 {
                // Sometimes while the child is still opening the file.
                std::thread::sleep(Duration::from_millis(rng.below(15)));
            } else {
                wait_line(); // READY
                // Let 0 to 3 commits through, then strike at a random point of the loop.
                let commits = rng.below(4);
                for _ in 0..commits {
                    wait_line();
                }
                mid_loop_kills += u64::from(commits > 0);
                std::thread::sleep(Duration::from_millis(rng.below(25)));
            }
        });
        acknowledged.extend(killed.acks);
        check_file(&open(&path), 4, &acknowledged);
    }
    eprintln!(
        "{KILLS} kills, {mid_loop_kills} after acknowledged commits, {} commits acknowledged",
        acknowledged.len()
    );
    assert!(
        mid_loop_kills > 0,
        "no kill landed inside the loop: seed {seed}"
    );
}

/// Child-process entry point of `sigkill_at_random_moments`: loops until killed.
#[test]
#[ignore = "run as a child process by sigkill_at_random_moments"]
fn crash_child() {
    let Some((path, seed)) = child_env(DB_ENV, SEED_ENV) else {
        return;
    };
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let auth = open(Path::new(&path));
    announce_ready();
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let args = serde_json::json!({ "seed": seed, "i": i });
        let units = [Unit::UsdMicrocents, Unit::Tokens];
        if let Some(id) = reserve_and_settle(&auth, &mut rng, args, &units, 8) {
            writeln!(out, "ACK {id}").unwrap();
            out.flush().unwrap();
        }
    }
}
