//! decide and reserve+commit per call on each ledger. Results: docs/benchmarks.md.
//!
//! Run: `cargo bench -p cycles-core --bench authority`

use criterion::{Criterion, criterion_group, criterion_main};
use cycles_core::*;
use serde_json::json;

/// A subject with three budgeted scopes (tenant, workflow, agent).
fn authority(ledger: impl Ledger + 'static) -> (Authority, Subject) {
    let policy = Policy::default()
        .register("read_file", Tier::T0)
        .register("write_file", Tier::T1)
        .budget(BudgetSpec::new(
            "tenant:acme",
            Unit::RiskPoints,
            i64::MAX / 4,
        ))
        .budget(BudgetSpec::new(
            "tenant:acme/workflow:w1",
            Unit::RiskPoints,
            i64::MAX / 4,
        ))
        .budget(BudgetSpec::new(
            "tenant:acme/workflow:w1/agent:bot",
            Unit::RiskPoints,
            i64::MAX / 4,
        ));
    let auth = Authority::builder()
        .policy(policy)
        .ledger(ledger)
        .build()
        .unwrap();
    (
        auth,
        Subject::new().tenant("acme").workflow("w1").agent("bot"),
    )
}

fn run(c: &mut Criterion, name: &str, auth: &Authority, subject: &Subject) {
    let decide = DecideRequest::new(
        subject.clone(),
        ToolCall::new("read_file", json!({"path": "src/lib.rs"})),
    );
    c.bench_function(&format!("{name}/decide"), |b| {
        b.iter(|| auth.decide(&decide).unwrap())
    });
    let reserve = ReserveRequest::new(
        subject.clone(),
        ToolCall::new("write_file", json!({"path": "notes.md"})),
    );
    let commit = CommitRequest::default();
    c.bench_function(&format!("{name}/reserve+commit"), |b| {
        b.iter(|| {
            let r = auth.reserve(&reserve).unwrap();
            auth.commit(&r.reservation_id, &commit).unwrap()
        })
    });
}

fn memory(c: &mut Criterion) {
    let (auth, subject) = authority(MemoryLedger::new());
    run(c, "memory", &auth, &subject);
}

fn sqlite(c: &mut Criterion) {
    for (label, sync) in [("full", Synchronous::Full), ("normal", Synchronous::Normal)] {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open_with(
            dir.path().join("bench.db"),
            SqliteOptions {
                synchronous: sync,
                ..SqliteOptions::default()
            },
        )
        .unwrap();
        let (auth, subject) = authority(ledger);
        run(c, &format!("sqlite_{label}"), &auth, &subject);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = memory, sqlite
}
criterion_main!(benches);
