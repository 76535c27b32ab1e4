//! The SQLite file's schema: migration of a version 1 file, and the layout that keeps the WAL
//! pages each operation writes few (schema version 2).

use cycles_core::ledger::sqlite::SCHEMA_VERSION;
use cycles_core::*;
use rusqlite::Connection;
use serde_json::json;

/// The reservations table and indexes of schema version 1, as files written by earlier
/// releases have them (historical: the ledger itself no longer creates this).
const RESERVATIONS_V1: &str = "
CREATE TABLE reservations (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    deadline_ms INTEGER NOT NULL,
    created_seq INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX reservations_active ON reservations (status, deadline_ms);
CREATE INDEX reservations_order ON reservations (created_seq);
";

fn authority(path: &std::path::Path, clock: ManualClock) -> Authority {
    let policy = Policy::default()
        .register("write_file", Tier::T1)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 1_000))
        .budget(BudgetSpec::new(
            "tenant:acme/agent:bot",
            Unit::RiskPoints,
            1_000,
        ));
    Authority::builder()
        .policy(policy)
        .ledger(SqliteLedger::open(path).unwrap())
        .clock(clock)
        .build()
        .unwrap()
}

fn reserve(auth: &Authority, n: i64, ttl_ms: i64) -> Reservation {
    let mut req = ReserveRequest::new(
        Subject::new().tenant("acme").agent("bot"),
        ToolCall::new("write_file", json!({ "n": n })),
    );
    req.ttl_ms = Some(ttl_ms);
    auth.reserve(&req).unwrap()
}

fn user_version(path: &std::path::Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// Rewrites the reservations of a current file into the version 1 layout. Rows go in in
/// reverse, so the table's own row order differs from the creation order `created_seq`
/// records: the migration has to follow `created_seq`.
fn downgrade_to_v1(path: &std::path::Path) {
    let mut conn = Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    let rows: Vec<(i64, String, String, i64, String)> = tx
        .prepare("SELECT seq, id, status, deadline_ms, body FROM reservations ORDER BY seq DESC")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    tx.execute_batch("DROP TABLE reservations;").unwrap();
    tx.execute_batch(RESERVATIONS_V1).unwrap();
    for (seq, id, status, deadline, body) in rows {
        tx.execute(
            "INSERT INTO reservations (id, status, deadline_ms, created_seq, body)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![id, status, deadline, seq, body],
        )
        .unwrap();
    }
    tx.execute_batch("PRAGMA user_version = 1").unwrap();
    tx.commit().unwrap();
}

#[test]
fn a_version_1_file_is_migrated_keeping_every_reservation_and_its_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let clock = ManualClock::new(1_000_000);
    let auth = authority(&path, clock.clone());
    let committed = reserve(&auth, 1, 60_000);
    let released = reserve(&auth, 2, 60_000);
    let short = reserve(&auth, 3, 1_000);
    let long = reserve(&auth, 4, 600_000);
    auth.commit(&committed.reservation_id, &CommitRequest::default())
        .unwrap();
    auth.release(&released.reservation_id, &ReleaseRequest::default())
        .unwrap();
    let listed = auth.reservations(None, 100).unwrap();
    let balances = auth.balances(None).unwrap();
    let audit_len = auth.audit(&AuditQuery::default()).unwrap().len();
    drop(auth);

    downgrade_to_v1(&path);
    assert_eq!(user_version(&path), 1);

    let auth = authority(&path, clock.clone());
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 2);
    // Same reservations, same bodies, oldest first as before.
    assert_eq!(auth.reservations(None, 100).unwrap(), listed);
    let active: Vec<String> = auth
        .reservations(Some(ReservationStatus::Active), 100)
        .unwrap()
        .into_iter()
        .map(|r| r.reservation_id)
        .collect();
    assert_eq!(
        active,
        [short.reservation_id.clone(), long.reservation_id.clone()]
    );
    assert_eq!(auth.balances(None).unwrap(), balances);
    assert_eq!(
        auth.audit(&AuditQuery::default()).unwrap().len(),
        audit_len,
        "the migration writes no audit record"
    );

    // The migrated table works: expiry finds the short one through the new index, the long
    // one still commits, and new reservations come after the old ones.
    clock.advance(60_000);
    assert_eq!(auth.sweep_expired().unwrap(), 1);
    assert_eq!(
        auth.reservation(&short.reservation_id).unwrap().status,
        ReservationStatus::Expired
    );
    auth.commit(&long.reservation_id, &CommitRequest::default())
        .unwrap();
    let newer = reserve(&auth, 5, 60_000);
    let all = auth.reservations(None, 100).unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all[4].reservation_id, newer.reservation_id);
    assert!(auth.verify().unwrap().ok);

    // Opening again does nothing more.
    drop(auth);
    let auth = authority(&path, clock);
    assert_eq!(auth.reservations(None, 100).unwrap(), all);
}

/// A file the version 1 release really wrote (fixtures/README.md), not one rebuilt by hand.
#[test]
fn a_file_written_by_the_version_1_release_opens_with_everything_in_it() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ledgers");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    std::fs::copy(fixtures.join("sqlite-v1.db"), &path).unwrap();
    let listed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("sqlite-v1.reservations.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(user_version(&path), 1);

    // The release's policy plus a budget it did not have, which opening adds.
    let auth = authority(&path, ManualClock::new(1_000_000));
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let now = serde_json::to_value(auth.reservations(None, 100).unwrap()).unwrap();
    assert_eq!(now, listed);
    assert_eq!(now.as_array().unwrap().len(), 12);

    let active = auth
        .reservations(Some(ReservationStatus::Active), 100)
        .unwrap();
    assert_eq!(active.len(), 4);
    for r in &active {
        auth.commit(&r.reservation_id, &CommitRequest::default())
            .unwrap();
    }
    let tenant = &auth.balances(Some("tenant:acme")).unwrap()[0];
    // Eight committed reservations of one point each, nothing held any more.
    assert_eq!((tenant.spent, tenant.reserved), (8, 0));
    assert!(auth.verify().unwrap().ok);
}

#[test]
fn a_fresh_file_has_the_version_2_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(SqliteLedger::open(&path).unwrap());
    assert_eq!(user_version(&path), 2);
    let conn = Connection::open(&path).unwrap();
    let indexes: Vec<(String, String)> = conn
        .prepare(
            "SELECT name, COALESCE(sql, '') FROM sqlite_master
             WHERE type = 'index' AND tbl_name = 'reservations' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let names: Vec<&str> = indexes.iter().map(|(n, _)| n.as_str()).collect();
    // The id key, and the deadlines of ACTIVE reservations only: no order index.
    assert_eq!(
        names,
        ["reservations_active", "sqlite_autoindex_reservations_1"]
    );
    assert!(
        indexes[0].1.contains("WHERE status = 'ACTIVE'"),
        "{}",
        indexes[0].1
    );
}

/// Reservation ids sort in creation order (UUIDv7), so the id index of every ledger grows at
/// its end instead of dirtying a random page per reservation.
#[test]
fn reservation_ids_sort_in_creation_order() {
    let dir = tempfile::tempdir().unwrap();
    let auth = authority(&dir.path().join("ledger.db"), ManualClock::new(1_000_000));
    let ids: Vec<String> = (0..300)
        .map(|n| reserve(&auth, n, 60_000).reservation_id)
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert!(
        ids.iter()
            .all(|id| id.len() == 36 && id.starts_with("rsv_"))
    );
}
