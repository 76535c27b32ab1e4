//! Throughput of reserve+commit on PostgresLedger: 1 and 8 clients, on one hot scope and on
//! disjoint scopes, with durable (`Synchronous::Full`) and relaxed (`Normal`) commits.
//!
//! A client is a thread running reserve then commit in a loop. "shared" clients use one
//! `PostgresLedger` (one process with several agents: group commit lets them share
//! transactions); "separate" clients each have their own ledger and pool, as separate
//! processes or hosts would.
//!
//! Needs a server: `scripts/pg-test.sh --bench` starts one and runs this, or set
//! `CYCLES_PG_URL`. Each configuration runs in a fresh schema for `CYCLES_BENCH_SECS` seconds
//! (default 5) after a one-second warm-up. Results go to stdout as a Markdown table
//! (docs/benchmarks.md records them).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cycles_core::*;
use serde_json::json;

struct Outcome {
    pairs: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    /// Mean operations per transaction (shared ledger only).
    batch: Option<f64>,
}

fn run(
    url: &str,
    clients: usize,
    hot: bool,
    shared: bool,
    sync: Synchronous,
    secs: u64,
) -> Outcome {
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let schema = format!(
        "bench_{}_{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::SeqCst)
    );
    let mut policy = Policy::default().register("write_file", Tier::T1);
    let scopes: Vec<String> = (0..clients)
        .map(|i| if hot { "hot".into() } else { format!("c{i}") })
        .collect();
    let mut unique = scopes.clone();
    unique.dedup();
    for s in &unique {
        policy = policy.budget(BudgetSpec::new(
            format!("tenant:{s}"),
            Unit::RiskPoints,
            1_000_000_000_000,
        ));
    }
    let opts = PostgresOptions {
        pool_size: if shared { clients as u32 } else { 1 },
        synchronous: sync,
        ..PostgresOptions::default()
    }
    .schema(&schema);
    let connect = |opts: PostgresOptions| {
        let ledger = Arc::new(PostgresLedger::connect_with(url, opts).expect("connect"));
        let auth = Authority::builder()
            .policy(policy.clone())
            .shared_ledger(ledger.clone())
            .build()
            .expect("authority");
        (ledger, auth)
    };
    let (ledger, auth) = connect(opts.clone());
    let auths: Vec<Authority> = (0..clients)
        .map(|_| {
            if shared {
                auth.clone()
            } else {
                connect(opts.clone()).1
            }
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = scopes
        .into_iter()
        .zip(auths)
        .map(|(scope, auth)| {
            let (stop, measuring) = (stop.clone(), measuring.clone());
            std::thread::spawn(move || {
                let subject = Subject::new().tenant(scope);
                let call = ToolCall::new("write_file", json!({"path": "a"}));
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = auth
                        .reserve(&ReserveRequest::new(subject.clone(), call.clone()))
                        .expect("reserve");
                    auth.commit(&r.reservation_id, &CommitRequest::default())
                        .expect("commit");
                    if measuring.load(Ordering::Relaxed) {
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let (t0, o0) = ledger.batch_stats();
    std::thread::sleep(Duration::from_secs(secs));
    let (t1, o1) = ledger.batch_stats();
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect();
    latencies_us.sort_unstable();
    let v = auth.verify().expect("verify");
    assert!(v.ok, "chain broken after the run: {v:?}");
    let batch = shared.then(|| (o1 - o0) as f64 / (t1 - t0).max(1) as f64);
    if let Ok(mut c) = postgres::Client::connect(url, postgres::NoTls) {
        let _ = c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
    }
    Outcome {
        pairs: latencies_us.len() as u64,
        elapsed,
        latencies_us,
        batch,
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects configurations by label.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let Ok(url) = std::env::var("CYCLES_PG_URL") else {
        eprintln!("CYCLES_PG_URL is not set: run scripts/pg-test.sh --bench");
        std::process::exit(2);
    };
    let secs: u64 = std::env::var("CYCLES_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average before: {} ({} CPUs)",
        load().trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| commits | clients | scopes | ledgers | reserve+commit/s | p50 ms | p99 ms | ops/txn |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let configs = [
        (Synchronous::Full, 1, true, true),
        (Synchronous::Full, 8, true, true),
        (Synchronous::Full, 8, false, true),
        (Synchronous::Full, 8, true, false),
        (Synchronous::Full, 8, false, false),
        (Synchronous::Normal, 1, true, true),
        (Synchronous::Normal, 8, true, true),
        (Synchronous::Normal, 8, false, true),
        (Synchronous::Normal, 8, true, false),
    ];
    for (sync, clients, hot, shared) in configs {
        let commits = match sync {
            Synchronous::Full => "durable (Full)",
            Synchronous::Normal => "relaxed (Normal)",
        };
        let scopes = if hot { "one hot scope" } else { "disjoint" };
        let ledgers = match (clients, shared) {
            (1, _) => "one",
            (_, true) => "one shared",
            (_, false) => "one per client",
        };
        let label = format!("{commits} {clients} {scopes} {ledgers}");
        if filter.as_ref().is_some_and(|f| !label.contains(f.as_str())) {
            continue;
        }
        let o = run(&url, clients, hot, shared, sync, secs);
        println!(
            "| {commits} | {clients} | {scopes} | {ledgers} | {:.0} | {:.2} | {:.2} | {} |",
            o.pairs as f64 / o.elapsed.as_secs_f64(),
            pct(&o.latencies_us, 0.50),
            pct(&o.latencies_us, 0.99),
            o.batch.map_or("1".to_string(), |b| format!("{b:.1}")),
        );
    }
    println!("load average after: {}", load().trim());
}
