//! Throughput and latency of the gate under concurrent callers, on each ledger, plus the
//! physical reference: a plain SQLite insert+update transaction through rusqlite.
//!
//! One configuration per run; prints one JSON line. `benches/run.sh` runs the whole matrix and
//! writes the table in docs/benchmarks.md.
//!
//! ```text
//! cargo bench -p cycles-core --bench throughput -- \
//!     --ledger sqlite --sync full --group-commit on --op reserve+commit --threads 8 --secs 3
//! ```
//!
//! `--ledger memory|sqlite`, `--sync full|normal`, `--group-commit on|off`,
//! `--op decide|reserve+commit|reference`, `--threads N`, `--secs S` (measured), `--warmup S`;
//! `--ops N` instead runs exactly N operations per thread, no warm-up (for instruction counts
//! under `valgrind --tool=callgrind`, where time means nothing). `--pause-us N` sleeps N µs
//! after each operation, outside its timing (sparse callers, like an agent between tool
//! calls); `--checkpoint background|inline` sets `SqliteOptions::background_checkpoint`.
//! One reserve+commit operation is a reserve followed by a commit of the same reservation (two
//! ledger transactions); its latency is the pair's. `reference` runs `BEGIN IMMEDIATE; INSERT
//! one 200-byte row; UPDATE one counter row; COMMIT` on a WAL file with the same `synchronous`,
//! one connection per thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cycles_core::*;
use serde_json::json;

#[derive(Debug, Clone)]
struct Config {
    ledger: String,
    sync: Synchronous,
    group_commit: bool,
    op: String,
    threads: usize,
    secs: f64,
    warmup: f64,
    /// Fixed operations per thread instead of a timed window (for instruction counts).
    ops: Option<u64>,
    /// Pause after each operation (µs), outside the timed call: sparse callers.
    pause_us: u64,
    /// SQLite checkpoints between sparse writes (`--checkpoint background`, the default) or
    /// always inline (`--checkpoint inline`).
    background_checkpoint: bool,
}

fn parse_args() -> Config {
    let mut c = Config {
        ledger: "sqlite".into(),
        sync: Synchronous::Full,
        group_commit: true,
        op: "reserve+commit".into(),
        threads: 1,
        secs: 3.0,
        warmup: 0.5,
        ops: None,
        pause_us: 0,
        background_checkpoint: true,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || {
            args.get(i + 1)
                .unwrap_or_else(|| panic!("{} needs a value", args[i]))
                .clone()
        };
        match args[i].as_str() {
            "--ledger" => c.ledger = value(),
            "--sync" => {
                c.sync = match value().as_str() {
                    "full" => Synchronous::Full,
                    "normal" => Synchronous::Normal,
                    v => panic!("--sync full|normal, not {v}"),
                }
            }
            "--group-commit" => c.group_commit = value() == "on",
            "--op" => c.op = value(),
            "--threads" => c.threads = value().parse().expect("--threads N"),
            "--secs" => c.secs = value().parse().expect("--secs S"),
            "--warmup" => c.warmup = value().parse().expect("--warmup S"),
            "--ops" => c.ops = Some(value().parse().expect("--ops N")),
            "--pause-us" => c.pause_us = value().parse().expect("--pause-us N"),
            "--checkpoint" => {
                c.background_checkpoint = match value().as_str() {
                    "background" => true,
                    "inline" => false,
                    v => panic!("--checkpoint background|inline, not {v}"),
                }
            }
            // `cargo bench` passes --bench to harness=false targets.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    assert!(
        matches!(c.ledger.as_str(), "memory" | "sqlite"),
        "--ledger memory|sqlite"
    );
    assert!(
        matches!(c.op.as_str(), "decide" | "reserve+commit" | "reference"),
        "--op decide|reserve+commit|reference"
    );
    assert!(c.threads >= 1);
    c
}

/// A subject with three budgeted scopes (tenant, workflow, agent), as in the authority bench.
fn authority(ledger: Arc<dyn Ledger>) -> (Authority, Subject) {
    let big = i64::MAX / 4;
    let policy = Policy::default()
        .register("read_file", Tier::T0)
        .register("write_file", Tier::T1)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, big))
        .budget(BudgetSpec::new(
            "tenant:acme/workflow:w1",
            Unit::RiskPoints,
            big,
        ))
        .budget(BudgetSpec::new(
            "tenant:acme/workflow:w1/agent:bot",
            Unit::RiskPoints,
            big,
        ));
    let auth = Authority::builder()
        .policy(policy)
        .shared_ledger(ledger)
        .build()
        .unwrap();
    (
        auth,
        Subject::new().tenant("acme").workflow("w1").agent("bot"),
    )
}

fn sync_pragma(sync: Synchronous) -> &'static str {
    match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    }
}

/// Runs `op` on `threads` threads: a warm-up, then `secs` measured (or exactly `ops` operations
/// per thread). Returns the latencies (ns) of the operations started inside the measured
/// window, and the window's length.
fn drive<S: Send + 'static>(
    cfg: &Config,
    mut setup: impl FnMut(usize) -> S,
    op: fn(&mut S),
) -> (Vec<u64>, f64) {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(std::sync::Barrier::new(cfg.threads + 1));
    let handles: Vec<_> = (0..cfg.threads)
        .map(|t| {
            let mut state = setup(t);
            let (measuring, stop, barrier) = (measuring.clone(), stop.clone(), barrier.clone());
            let fixed = cfg.ops;
            let pause = Duration::from_micros(cfg.pause_us);
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(1 << 16);
                barrier.wait();
                if let Some(n) = fixed {
                    for _ in 0..n {
                        let t0 = Instant::now();
                        op(&mut state);
                        lat.push(t0.elapsed().as_nanos() as u64);
                    }
                    return lat;
                }
                while !stop.load(Ordering::Relaxed) {
                    let recording = measuring.load(Ordering::Relaxed);
                    let t0 = Instant::now();
                    op(&mut state);
                    if recording {
                        lat.push(t0.elapsed().as_nanos() as u64);
                    }
                    if !pause.is_zero() {
                        std::thread::sleep(pause);
                    }
                }
                lat
            })
        })
        .collect();
    barrier.wait();
    if cfg.ops.is_some() {
        let t0 = Instant::now();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().unwrap());
        }
        return (all, t0.elapsed().as_secs_f64());
    }
    std::thread::sleep(Duration::from_secs_f64(cfg.warmup));
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(cfg.secs));
    measuring.store(false, Ordering::Relaxed);
    let window = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    (all, window)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1_000.0
}

fn main() {
    let cfg = parse_args();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let mut sqlite: Option<Arc<SqliteLedger>> = None;

    let (mut lat, window) = if cfg.op == "reference" {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .unwrap();
        conn.execute_batch(
            "CREATE TABLE ref_log (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
             CREATE TABLE ref_bal (k INTEGER PRIMARY KEY, v INTEGER NOT NULL);
             INSERT INTO ref_bal VALUES (1, 0);",
        )
        .unwrap();
        drop(conn);
        let body = "x".repeat(200);
        let sync = cfg.sync;
        drive(
            &cfg,
            |_| {
                let conn = rusqlite::Connection::open(&db).unwrap();
                conn.busy_timeout(Duration::from_secs(30)).unwrap();
                conn.execute_batch(&format!("PRAGMA synchronous={};", sync_pragma(sync)))
                    .unwrap();
                (conn, body.clone())
            },
            |(conn, body)| {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .unwrap();
                tx.prepare_cached("INSERT INTO ref_log (body) VALUES (?1)")
                    .unwrap()
                    .execute([&*body])
                    .unwrap();
                tx.prepare_cached("UPDATE ref_bal SET v = v + 1 WHERE k = 1")
                    .unwrap()
                    .execute([])
                    .unwrap();
                tx.commit().unwrap();
            },
        )
    } else {
        let ledger: Arc<dyn Ledger> = if cfg.ledger == "memory" {
            Arc::new(MemoryLedger::new())
        } else {
            let l = Arc::new(
                SqliteLedger::open_with(
                    &db,
                    SqliteOptions {
                        synchronous: cfg.sync,
                        group_commit: cfg.group_commit,
                        background_checkpoint: cfg.background_checkpoint,
                        ..SqliteOptions::default()
                    },
                )
                .unwrap(),
            );
            sqlite = Some(l.clone());
            l
        };
        let (auth, subject) = authority(ledger);
        let decide = DecideRequest::new(
            subject.clone(),
            ToolCall::new("read_file", json!({"path": "src/lib.rs"})),
        );
        let reserve = ReserveRequest::new(
            subject,
            ToolCall::new("write_file", json!({"path": "notes.md"})),
        );
        type State = (Authority, DecideRequest, ReserveRequest);
        let op: fn(&mut State) = if cfg.op == "decide" {
            |(auth, decide, _)| {
                auth.decide(decide).unwrap();
            }
        } else {
            |(auth, _, reserve)| {
                let r = auth.reserve(reserve).unwrap();
                auth.commit(&r.reservation_id, &CommitRequest::default())
                    .unwrap();
            }
        };
        drive(
            &cfg,
            |_| (auth.clone(), decide.clone(), reserve.clone()),
            op,
        )
    };

    lat.sort_unstable();
    let stats = sqlite.as_ref().map(|l| l.group_commit_stats());
    let line = json!({
        "ledger": if cfg.op == "reference" { "rusqlite" } else { cfg.ledger.as_str() },
        "sync": if cfg.ledger == "memory" && cfg.op != "reference" { None } else { Some(sync_pragma(cfg.sync)) },
        "group_commit": (cfg.ledger == "sqlite" && cfg.op != "reference").then_some(cfg.group_commit),
        "op": cfg.op,
        "threads": cfg.threads,
        "ops": lat.len(),
        "secs": window,
        "ops_per_sec": lat.len() as f64 / window,
        "p50_us": percentile(&lat, 0.5),
        "p99_us": percentile(&lat, 0.99),
        "p999_us": percentile(&lat, 0.999),
        "max_us": lat.last().map_or(f64::NAN, |&ns| ns as f64 / 1_000.0),
        // Mean operations per committed write transaction over the whole run (warm-up included).
        "ops_per_txn": stats.map(|s| s.operations as f64 / s.transactions.max(1) as f64),
    });
    println!("{line}");
}
