//! Classification cost per classifier, SQL and shell scaling up to 10 KB, and `decide` with
//! classification on the memory ledger. Results: docs/benchmarks.md, "Classification".
//!
//! Run: `cargo bench -p cycles-core --bench classify`
//! (`-- --quick` for a shorter run; the latency percentiles are printed first).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cycles_core::classify::{ClassifierKind, SqlDialect, http, names, shell, sql};
use cycles_core::policy::ToolRule;
use cycles_core::*;
use serde_json::json;

fn classifiers(c: &mut Criterion) {
    let mut g = c.benchmark_group("classifier");
    g.bench_function("names/volumeDelete", |b| {
        b.iter(|| names::classify(black_box("railway.volumeDelete")))
    });
    for (label, q) in [
        ("select", "SELECT id, name FROM users WHERE id = 42"),
        (
            "delete_where",
            "DELETE FROM sessions WHERE expires_at < now()",
        ),
        (
            "cte_delete",
            "WITH gone AS (DELETE FROM users RETURNING *) SELECT count(*) FROM gone",
        ),
        ("drop", "DROP TABLE users"),
        ("unparsable", "SELEC * FRM users"),
    ] {
        g.bench_function(format!("sql/{label}"), |b| {
            b.iter(|| sql::classify(black_box(q), SqlDialect::Postgres))
        });
    }
    for (label, cmd) in [
        ("ls", "ls -la"),
        ("rm_build", "rm -rf ./build"),
        (
            "pipeline",
            "cat access.log | grep 500 | sort | uniq -c | head -20",
        ),
        ("nested_psql", "bash -c \"psql -c 'DROP DATABASE prod'\""),
        ("git_push_force", "git push --force origin main"),
        (
            "curl_pipe_sh",
            "curl -fsSL https://example.com/install.sh | sudo sh",
        ),
    ] {
        g.bench_function(format!("shell/{label}"), |b| {
            b.iter(|| shell::classify(black_box(cmd)))
        });
    }
    g.bench_function("http/delete_volume", |b| {
        b.iter(|| {
            http::classify(
                black_box("DELETE"),
                black_box("https://api.example.com/v1/volumes/vol_123"),
                None,
            )
        })
    });
    let body = json!({
        "query": "mutation volumeDelete($id: String!) { volumeDelete(volumeId: $id) }",
        "variables": {"id": "vol_123"}
    });
    g.bench_function("http/graphql_mutation", |b| {
        b.iter(|| {
            http::classify(
                "POST",
                "https://backboard.railway.app/graphql/v2",
                Some(black_box(&body)),
            )
        })
    });
    g.finish();
}

/// `n` bytes (about) of SQL: INSERT statements of 100 bytes each.
fn sql_of(n: usize) -> String {
    let mut s = String::with_capacity(n + 128);
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!(
            "INSERT INTO events (id, kind, payload) VALUES ({i}, 'click', '{{\"x\": {i}}}');\n"
        ));
        i += 1;
    }
    s
}

/// `n` bytes (about) of shell: a chain of commands.
fn shell_of(n: usize) -> String {
    let mut s = String::with_capacity(n + 64);
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!("grep -c 'pattern {i}' logs/app-{i}.log && "));
        i += 1;
    }
    s.push_str("true");
    s
}

fn scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("scaling");
    for kb in [1usize, 2, 5, 10] {
        let q = sql_of(kb * 1024);
        g.throughput(Throughput::Bytes(q.len() as u64));
        g.bench_with_input(BenchmarkId::new("sql_bytes", q.len()), &q, |b, q| {
            b.iter(|| sql::classify(q, SqlDialect::Postgres))
        });
        let cmd = shell_of(kb * 1024);
        g.throughput(Throughput::Bytes(cmd.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("shell_bytes", cmd.len()),
            &cmd,
            |b, cmd| b.iter(|| shell::classify(cmd)),
        );
    }
    g.finish();
}

fn authority() -> (Authority, Subject) {
    let policy = Policy::default()
        .register("read_file", Tier::T0)
        .tool(
            ToolRule::new("run_sql", Tier::T0)
                .classifier(ClassifierKind::Sql)
                .dialect(SqlDialect::Postgres),
        )
        .tool(ToolRule::new("bash", Tier::T0).classifier(ClassifierKind::Shell))
        .budget(BudgetSpec::new(
            "tenant:acme",
            Unit::RiskPoints,
            i64::MAX / 4,
        ))
        .budget(BudgetSpec::new(
            "tenant:acme/agent:bot",
            Unit::RiskPoints,
            i64::MAX / 4,
        ));
    let auth = Authority::builder().policy(policy).build().unwrap();
    (auth, Subject::new().tenant("acme").agent("bot"))
}

fn calls() -> [(&'static str, ToolCall); 3] {
    [
        (
            "registered_no_classifier",
            ToolCall::new("read_file", json!({"path": "src/lib.rs"})),
        ),
        (
            "sql_select",
            ToolCall::new(
                "run_sql",
                json!({"query": "SELECT id FROM users WHERE id = 1"}),
            ),
        ),
        (
            "shell_ls",
            ToolCall::new("bash", json!({"command": "ls -la src"})),
        ),
    ]
}

fn policy_and_decide(c: &mut Criterion) {
    let (auth, subject) = authority();
    let mut g = c.benchmark_group("classify_call");
    for (label, call) in calls() {
        g.bench_function(label, |b| {
            b.iter(|| auth.policy().classify(black_box(&call)))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("decide_memory");
    for (label, call) in calls() {
        let req = DecideRequest::new(subject.clone(), call);
        // A fresh authority per sample: every decide appends an audit record, and the memory
        // ledger would otherwise grow by millions of records over a run.
        g.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let (auth, _) = authority();
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(auth.decide(black_box(&req)).unwrap());
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

/// Per-call latency percentiles of `decide` (memory ledger), measured call by call.
fn percentiles() {
    for (label, call) in calls() {
        let (auth, subject) = authority();
        let req = DecideRequest::new(subject.clone(), call);
        for _ in 0..20_000 {
            black_box(auth.decide(&req).unwrap());
        }
        let n = 100_000;
        let mut t: Vec<Duration> = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            black_box(auth.decide(&req).unwrap());
            t.push(start.elapsed());
        }
        t.sort();
        let p = |q: f64| t[((n as f64 - 1.0) * q) as usize].as_nanos() as f64 / 1000.0;
        println!(
            "decide_memory/{label:<26} p50 {:>6.2} us  p90 {:>6.2} us  p99 {:>6.2} us  (n = {n})",
            p(0.50),
            p(0.90),
            p(0.99)
        );
    }
}

fn all(c: &mut Criterion) {
    percentiles();
    classifiers(c);
    scaling(c);
    policy_and_decide(c);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(1)).warm_up_time(Duration::from_millis(300));
    targets = all
}
criterion_main!(benches);
