//! Crash safety: a child process runs reserve/commit/release in a loop on a SQLite file
//! (`synchronous=FULL`) and is killed with SIGKILL at a random moment, fifty times over on the
//! same file. After each kill the file must open, the audit chain verify, every budget satisfy
//! `remaining = allocated - spent - reserved - debt`, `reserved` equal the holds of ACTIVE
//! reservations, `spent` equal the charges of COMMITTED ones, and every commit the child
//! acknowledged (it prints `ACK <id>` only after `commit` returned) be COMMITTED.
//!
//! The child is this test binary re-executed on the ignored `crash_child` test.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cycles_core::*;

const KILLS: u64 = 50;
const DB_ENV: &str = "CYCLES_CRASH_DB";
const SEED_ENV: &str = "CYCLES_CRASH_SEED";
const BIG: i64 = 1_000_000_000_000;

fn policy() -> Policy {
    Policy::default()
        .register("charge_card", Tier::T2)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, BIG))
        .budget(BudgetSpec::new("tenant:acme", Unit::UsdMicrocents, BIG))
        .budget(BudgetSpec::new(
            "tenant:acme/agent:bot",
            Unit::RiskPoints,
            BIG,
        ))
        .budget(BudgetSpec::new("tenant:acme/agent:bot", Unit::Tokens, BIG))
}

fn open(path: &Path) -> Authority {
    Authority::builder()
        .policy(policy())
        .ledger(SqliteLedger::open(path).expect("the ledger file opens after a crash"))
        .build()
        .expect("an authority starts on the file after a crash")
}

/// xorshift64*: random kill moments without another dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Everything that must hold in the file between crashes.
fn check_file(path: &Path, acknowledged: &HashSet<String>) -> usize {
    let auth = open(path);
    let report = auth.verify().unwrap();
    assert!(report.ok, "audit chain broken after a crash: {report:?}");

    let all = auth.reservations(None, usize::MAX).unwrap();
    let mut held: BTreeMap<(String, Unit), i64> = BTreeMap::new();
    let mut charged: BTreeMap<(String, Unit), i64> = BTreeMap::new();
    let mut committed = HashSet::new();
    for r in &all {
        match r.status {
            ReservationStatus::Active => {
                for h in &r.holds {
                    for s in &h.scopes {
                        *held.entry((s.clone(), h.unit)).or_default() += h.amount;
                    }
                }
            }
            ReservationStatus::Committed => {
                committed.insert(r.reservation_id.clone());
                for c in &r.charged {
                    let hold = r.holds.iter().find(|h| h.unit == c.unit).unwrap();
                    for s in &hold.scopes {
                        *charged.entry((s.clone(), c.unit)).or_default() += c.amount;
                    }
                }
            }
            ReservationStatus::Released | ReservationStatus::Expired => {}
        }
    }
    let balances = auth.balances(None).unwrap();
    assert_eq!(balances.len(), 4);
    for b in &balances {
        let key = (b.scope.clone(), b.unit);
        assert_eq!(
            b.remaining,
            b.allocated - b.spent - b.reserved - b.debt,
            "{b:?}"
        );
        assert!(b.spent + b.reserved <= b.allocated, "{b:?}");
        assert_eq!(b.debt, 0, "{b:?}");
        assert_eq!(
            b.reserved,
            held.get(&key).copied().unwrap_or(0),
            "reserved is not the sum of ACTIVE holds: {b:?}"
        );
        assert_eq!(
            b.spent,
            charged.get(&key).copied().unwrap_or(0),
            "spent is not the sum of COMMITTED charges: {b:?}"
        );
    }
    for id in acknowledged {
        assert!(
            committed.contains(id),
            "acknowledged commit {id} is not COMMITTED after the crash"
        );
    }
    // State and audit commit together: one reserve record per reservation, one commit record
    // per committed one.
    let records = auth.audit(&AuditQuery::default()).unwrap();
    let count = |k: AuditKind| records.iter().filter(|r| r.kind == k).count();
    assert_eq!(count(AuditKind::Reserve), all.len());
    assert_eq!(count(AuditKind::Commit), committed.len());
    assert_eq!(count(AuditKind::BudgetSet), 4);
    committed.len()
}

#[test]
fn sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(open(&path));
    let exe = std::env::current_exe().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill-moment seed {seed}");
    let mut rng = Rng(seed);
    let mut acknowledged = HashSet::new();
    let mut mid_loop_kills = 0;
    for run in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DB_ENV, &path)
            .env(SEED_ENV, run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (line_tx, line_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            let mut lines = BufReader::new(stdout);
            let mut line = String::new();
            // A line cut short by the kill has no newline and is not an acknowledgement.
            while lines.read_line(&mut line).unwrap_or(0) > 0 && line.ends_with('\n') {
                if line == "READY\n" {
                    let _ = line_tx.send(());
                } else if let Some(id) = line.strip_prefix("ACK ") {
                    acks.push(id.trim_end().to_string());
                    let _ = line_tx.send(());
                }
                line.clear();
            }
            acks
        });
        let wait_line = || {
            line_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("child stopped making progress")
        };
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
        // SAFETY: plain syscall on the pid of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0);
        let status = child.wait().unwrap();
        let acks = reader.join().unwrap();
        if status.signal() != Some(libc::SIGKILL) {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("child ended by itself ({status}) instead of being killed:\n{err}");
        }
        acknowledged.extend(acks);
        check_file(&path, &acknowledged);
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
    let (Some(path), Some(seed)) = (std::env::var_os(DB_ENV), std::env::var_os(SEED_ENV)) else {
        eprintln!("crash_child only runs as a child of sigkill_at_random_moments");
        return;
    };
    let seed: u64 = seed.to_str().unwrap().parse().unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let auth = open(Path::new(&path));
    let mut out = std::io::stdout().lock();
    // The harness has printed "test crash_child ... " without a newline: start a fresh line.
    writeln!(out, "\nREADY").unwrap();
    out.flush().unwrap();
    let subject = Subject::new().tenant("acme").agent("bot");
    for i in 0u64.. {
        let mut req = ReserveRequest::new(
            subject.clone(),
            ToolCall::new("charge_card", serde_json::json!({ "seed": seed, "i": i })),
        );
        req.estimate = vec![
            Amount::new(Unit::UsdMicrocents, 1 + rng.below(1_000) as i64),
            Amount::new(Unit::Tokens, rng.below(500) as i64),
        ];
        let r = auth.reserve(&req).expect("reserve");
        match rng.below(8) {
            0 => {
                auth.release(&r.reservation_id, &ReleaseRequest::default())
                    .expect("release");
            }
            // Left ACTIVE: a hold the crash strands, which must stay accounted for.
            1 => {}
            _ => {
                let actual = vec![
                    Amount::new(Unit::UsdMicrocents, rng.below(1_500) as i64),
                    Amount::new(Unit::Tokens, rng.below(500) as i64),
                ];
                auth.commit(
                    &r.reservation_id,
                    &CommitRequest {
                        actual,
                        idempotency_key: None,
                    },
                )
                .expect("commit");
                writeln!(out, "ACK {}", r.reservation_id).unwrap();
                out.flush().unwrap();
            }
        }
    }
}
