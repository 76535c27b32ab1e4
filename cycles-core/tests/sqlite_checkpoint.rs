//! WAL checkpoints of the SQLite ledger (`SqliteOptions::background_checkpoint`): on the
//! ledger's own thread between sparse writes, inline while writes are dense, and the WAL
//! bounded either way.

use std::path::Path;
use std::time::Duration;

use cycles_core::*;
use serde_json::json;

fn open(path: &Path, background_checkpoint: bool) -> (Authority, std::sync::Arc<SqliteLedger>) {
    let ledger = std::sync::Arc::new(
        SqliteLedger::open_with(
            path,
            SqliteOptions {
                synchronous: Synchronous::Normal,
                background_checkpoint,
                ..SqliteOptions::default()
            },
        )
        .unwrap(),
    );
    let policy = Policy::default()
        .register("write_file", Tier::T1)
        .budget(BudgetSpec::new(
            "tenant:acme",
            Unit::RiskPoints,
            i64::MAX / 4,
        ));
    let auth = Authority::builder()
        .policy(policy)
        .shared_ledger(ledger.clone())
        .build()
        .unwrap();
    (auth, ledger)
}

/// One reserve+commit pair: about eleven WAL pages, so a checkpoint is due every ~90 pairs.
fn pair(auth: &Authority) {
    let r = auth
        .reserve(&ReserveRequest::new(
            Subject::new().tenant("acme"),
            ToolCall::new("write_file", json!({ "path": "notes.md" })),
        ))
        .unwrap();
    auth.commit(&r.reservation_id, &CommitRequest::default())
        .unwrap();
}

fn wal_bytes(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// 2,000 frames of 4 KiB: twice the checkpoint threshold.
const WAL_BOUND: u64 = 2_000 * (4096 + 24);

#[test]
fn sparse_writes_are_checkpointed_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let (auth, ledger) = open(&path, true);
    // An agent's pace, if a fast one: a pause after each call. Pauses only ever make the
    // gaps longer, so this cannot turn dense by accident.
    for _ in 0..110 {
        pair(&auth);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (background, inline) = ledger.checkpoint_counts();
    assert!(
        background >= 1,
        "no background checkpoint: {background}, {inline}"
    );
    assert_eq!(inline, 0, "a checkpoint ran in a commit");
    assert!(wal_bytes(&path) <= WAL_BOUND, "{}", wal_bytes(&path));
    assert!(auth.verify().unwrap().ok);
}

#[test]
fn dense_writes_are_checkpointed_inline_and_the_wal_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let (auth, ledger) = open(&path, true);
    for _ in 0..700 {
        pair(&auth);
    }
    let (_, inline) = ledger.checkpoint_counts();
    // About seven checkpoints were due; a stall of the whole machine could make one of them
    // look sparse, not all of them.
    assert!(inline >= 1, "no inline checkpoint under dense writes");
    assert!(wal_bytes(&path) <= WAL_BOUND, "{}", wal_bytes(&path));
    let balance = &auth.balances(Some("tenant:acme")).unwrap()[0];
    assert_eq!((balance.spent, balance.reserved), (700, 0));
}

#[test]
fn turned_off_sqlite_checkpoints_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let (auth, ledger) = open(&path, false);
    for _ in 0..300 {
        pair(&auth);
    }
    assert_eq!(ledger.checkpoint_counts(), (0, 0));
    assert!(wal_bytes(&path) <= WAL_BOUND, "{}", wal_bytes(&path));
}

/// Dropping a ledger stops and joins its checkpoint thread.
#[cfg(target_os = "linux")]
#[test]
fn dropping_the_ledger_ends_its_thread() {
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(open(&path, true));
    let before = threads();
    for _ in 0..20 {
        let (auth, ledger) = open(&path, true);
        pair(&auth);
        drop(auth);
        drop(ledger);
    }
    // Other tests of this binary run in parallel and start threads of their own: allow a few,
    // not one per ledger opened here.
    let after = threads();
    assert!(after < before + 10, "threads {before} -> {after}");
}
