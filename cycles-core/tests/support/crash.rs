//! The SIGKILL harness shared by `crash.rs` and `group_commit_crash.rs`: re-execute the test
//! binary on an ignored child test that loops on a SQLite file, kill it with SIGKILL at a moment
//! the caller picks, collect the commits it acknowledged (`ACK <id>` lines, printed only after
//! `commit` returned), and check everything that must hold in the file after the crash.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cycles_core::*;

/// Budget size large enough that the loops never run out.
pub const BIG: i64 = 1_000_000_000_000;

/// The policy both children run under: `charge_card` (tier 2) and three budgets of [`BIG`];
/// a test adds budgets of its own on top.
pub fn base_policy() -> Policy {
    Policy::default()
        .register("charge_card", Tier::T2)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, BIG))
        .budget(BudgetSpec::new("tenant:acme", Unit::UsdMicrocents, BIG))
        .budget(BudgetSpec::new(
            "tenant:acme/agent:bot",
            Unit::RiskPoints,
            BIG,
        ))
}

/// xorshift64*: random kill moments without another dependency.
pub struct Rng(pub u64);

impl Rng {
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// A fresh nonzero seed from the clock, printed so a failing run can be told apart.
pub fn clock_seed() -> u64 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill-moment seed {seed}");
    seed
}

/// What a killed child printed in full lines before it died.
pub struct Killed {
    /// Reservation ids of the commits the child acknowledged.
    pub acks: Vec<String>,
    /// Every other complete line except `READY`, in order.
    pub other: Vec<String>,
}

/// Runs the ignored test `child_test` of this binary as a child process with `DB_ENV=db` and
/// `SEED_ENV=seed`, lets `strike` choose the moment (it gets a function that waits for the next
/// `READY` or `ACK` line, failing after `progress` without one), then kills the child with
/// SIGKILL. Fails if the child ended by itself.
pub fn run_and_kill(
    child_test: &str,
    envs: [(&str, OsString); 2],
    progress: Duration,
    strike: impl FnOnce(&dyn Fn()),
) -> Killed {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            child_test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(envs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut killed = Killed {
            acks: Vec::new(),
            other: Vec::new(),
        };
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        // A line cut short by the kill has no newline and is not an acknowledgement.
        while lines.read_line(&mut line).unwrap_or(0) > 0 && line.ends_with('\n') {
            if line == "READY\n" {
                let _ = line_tx.send(());
            } else if let Some(id) = line.strip_prefix("ACK ") {
                killed.acks.push(id.trim_end().to_string());
                let _ = line_tx.send(());
            } else {
                killed.other.push(line.trim_end().to_string());
            }
            line.clear();
        }
        killed
    });
    strike(&|| {
        line_rx
            .recv_timeout(progress)
            .expect("child stopped making progress")
    });
    // SAFETY: plain syscall on the pid of a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap();
    let killed = reader.join().unwrap();
    if status.signal() != Some(libc::SIGKILL) {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        panic!("child ended by itself ({status}) instead of being killed:\n{err}");
    }
    killed
}

/// In the child: the file path and run number the parent passed, or `None` (with a note) when
/// the ignored child test is run by hand.
pub fn child_env(db_env: &str, seed_env: &str) -> Option<(OsString, u64)> {
    let (Some(path), Some(seed)) = (std::env::var_os(db_env), std::env::var_os(seed_env)) else {
        eprintln!("the crash child test only runs as a child of its crash test");
        return None;
    };
    Some((path, seed.to_str().unwrap().parse().unwrap()))
}

/// In the child: tells the parent the file is open.
pub fn announce_ready() {
    let mut out = std::io::stdout().lock();
    // The harness has printed "test ... " without a newline: start a fresh line.
    writeln!(out, "\nREADY").unwrap();
    out.flush().unwrap();
}

/// In the child: one `charge_card` call for `tenant:acme/agent:bot` with `args`, reserving a
/// random estimate in each of `units`, then by a draw of `rng` released (1 in `choices`), left
/// ACTIVE for the crash to strand (1 in `choices`) or committed with a random actual (which may
/// exceed the estimate). Returns the reservation id once `commit` has returned.
pub fn reserve_and_settle(
    auth: &Authority,
    rng: &mut Rng,
    args: serde_json::Value,
    units: &[Unit],
    choices: u64,
) -> Option<String> {
    let subject = Subject::new().tenant("acme").agent("bot");
    let mut req = ReserveRequest::new(subject, ToolCall::new("charge_card", args));
    req.estimate = units
        .iter()
        .map(|&u| Amount::new(u, 1 + rng.below(1_000) as i64))
        .collect();
    let r = auth.reserve(&req).expect("reserve");
    match rng.below(choices) {
        0 => {
            auth.release(&r.reservation_id, &ReleaseRequest::default())
                .expect("release");
            None
        }
        // Left ACTIVE: a hold the crash strands, which must stay accounted for.
        1 => None,
        _ => {
            let actual = units
                .iter()
                .map(|&u| Amount::new(u, rng.below(1_500) as i64))
                .collect();
            auth.commit(
                &r.reservation_id,
                &CommitRequest {
                    actual,
                    ran: None,
                    charge_if_expired: false,
                    idempotency_key: None,
                },
            )
            .expect("commit");
            Some(r.reservation_id)
        }
    }
}

/// Everything that must hold in the file between crashes, on an authority freshly opened on it
/// with `budgets` budgets of size [`BIG`]. Returns the number of COMMITTED reservations.
pub fn check_file(auth: &Authority, budgets: usize, acknowledged: &HashSet<String>) -> usize {
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
    assert_eq!(balances.len(), budgets);
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
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !committed.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged commits are not COMMITTED after the crash: {lost:?}",
        lost.len()
    );
    // State and audit commit together: one reserve record per reservation, one commit record
    // per committed one.
    let records = auth.audit(&AuditQuery::default()).unwrap();
    let count = |k: AuditKind| records.iter().filter(|r| r.kind == k).count();
    assert_eq!(count(AuditKind::Reserve), all.len());
    assert_eq!(count(AuditKind::Commit), committed.len());
    assert_eq!(count(AuditKind::BudgetSet), budgets);
    committed.len()
}
