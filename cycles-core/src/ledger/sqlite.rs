//! The embedded default: one SQLite file (WAL), safe for several threads and processes.
//!
//! Writes run in `BEGIN IMMEDIATE` transactions so concurrent writers queue on SQLite's lock
//! (with a busy timeout) instead of failing on upgrade; `synchronous=FULL` by default makes
//! every acknowledged operation durable across power loss.

use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{IdempotencyEntry, Ledger, LedgerTxn};
use crate::audit::AuditRecord;
use crate::error::{CyclesError, Result};
use crate::model::{Budget, BudgetStatus, Reservation, ReservationStatus, Unit};

/// The schema version this code writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// SQLite's `synchronous` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// fsync on every commit: durable across power loss (default).
    #[default]
    Full,
    /// WAL with NORMAL: durable across process crashes, may lose the last commits on power loss.
    Normal,
}

/// Options for [`SqliteLedger::open_with`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// `synchronous` (default FULL).
    pub synchronous: Synchronous,
    /// How long a writer waits for another process's lock (default 10 s).
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// A ledger in one SQLite file.
///
/// ```
/// use cycles_core::{Authority, SqliteLedger};
/// let dir = tempfile::tempdir().unwrap();
/// let ledger = SqliteLedger::open(dir.path().join("cycles.db")).unwrap();
/// let auth = Authority::builder().ledger(ledger).build().unwrap();
/// assert!(auth.verify().unwrap().ok);
/// ```
#[derive(Debug)]
pub struct SqliteLedger {
    conn: Mutex<Connection>,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS budgets (
    scope TEXT NOT NULL,
    unit TEXT NOT NULL,
    allocated INTEGER NOT NULL,
    spent INTEGER NOT NULL,
    reserved INTEGER NOT NULL,
    debt INTEGER NOT NULL,
    overdraft_limit INTEGER NOT NULL,
    status TEXT NOT NULL,
    is_over_limit INTEGER NOT NULL,
    PRIMARY KEY (scope, unit)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    deadline_ms INTEGER NOT NULL,
    created_seq INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_active ON reservations (status, deadline_ms);
CREATE INDEX IF NOT EXISTS reservations_order ON reservations (created_seq);
CREATE TABLE IF NOT EXISTS idempotency (
    op TEXT NOT NULL,
    key TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (op, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    hash TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
";

fn corrupt(what: impl std::fmt::Display) -> CyclesError {
    CyclesError::LedgerCorrupt(what.to_string())
}

impl SqliteLedger {
    /// Opens (or creates) the ledger at `path` with default options (`synchronous=FULL`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens (or creates) the ledger at `path`.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut conn = Connection::open(&path)
            .map_err(|e| CyclesError::LedgerUnavailable(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(options.busy_timeout)?;
        // journal_mode=WAL persists in the file; setting it takes a lock, so retry on busy.
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(CyclesError::LedgerUnavailable(format!(
                "{}: could not enable WAL (journal_mode={mode})",
                path.display()
            )));
        }
        let sync = match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous={sync}; PRAGMA foreign_keys=ON;"
        ))?;
        Self::migrate(&mut conn, &path)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(SqliteLedger {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        match version {
            0 => {
                tx.execute_batch(SCHEMA)?;
                tx.execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION}"))?;
            }
            SCHEMA_VERSION => {}
            v => {
                return Err(CyclesError::LedgerCorrupt(format!(
                    "{}: schema version {v} is newer than this library's {SCHEMA_VERSION}",
                    path.display()
                )));
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The file this ledger lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Test hook: runs raw SQL against the file (to simulate tampering). Not stable API.
    #[doc(hidden)]
    pub fn execute_raw(&self, sql: &str) -> Result<()> {
        self.conn.lock().execute_batch(sql)?;
        Ok(())
    }
}

struct SqliteTxn<'a> {
    tx: Transaction<'a>,
}

fn budget_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Budget, String, String)> {
    Ok((
        Budget {
            scope: r.get(0)?,
            unit: Unit::RiskPoints,
            allocated: r.get(2)?,
            spent: r.get(3)?,
            reserved: r.get(4)?,
            debt: r.get(5)?,
            overdraft_limit: r.get(6)?,
            status: BudgetStatus::Active,
            is_over_limit: r.get::<_, i64>(8)? != 0,
        },
        r.get(1)?,
        r.get(7)?,
    ))
}

fn finish_budget((mut b, unit, status): (Budget, String, String)) -> Result<Budget> {
    b.unit = Unit::parse(&unit).map_err(|_| corrupt(format!("budget unit {unit:?}")))?;
    b.status =
        BudgetStatus::parse(&status).map_err(|_| corrupt(format!("budget status {status:?}")))?;
    Ok(b)
}

const BUDGET_COLS: &str =
    "scope, unit, allocated, spent, reserved, debt, overdraft_limit, status, is_over_limit";

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, body: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|e| corrupt(format!("{what}: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("ledger values serialize")
}

impl LedgerTxn for SqliteTxn<'_> {
    fn budget(&mut self, scope: &str, unit: Unit) -> Result<Option<Budget>> {
        let row = self
            .tx
            .prepare_cached(&format!(
                "SELECT {BUDGET_COLS} FROM budgets WHERE scope = ?1 AND unit = ?2"
            ))?
            .query_row(params![scope, unit.as_str()], budget_from_row)
            .optional()?;
        row.map(finish_budget).transpose()
    }

    fn put_budget(&mut self, b: &Budget) -> Result<()> {
        self.tx
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO budgets ({BUDGET_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))?
            .execute(params![
                b.scope,
                b.unit.as_str(),
                b.allocated,
                b.spent,
                b.reserved,
                b.debt,
                b.overdraft_limit,
                b.status.as_str(),
                b.is_over_limit as i64
            ])?;
        Ok(())
    }

    fn budgets(&mut self, scope: Option<&str>) -> Result<Vec<Budget>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {BUDGET_COLS} FROM budgets
             WHERE ?1 IS NULL OR scope = ?1 OR substr(scope, 1, length(?1) + 1) = ?1 || '/'
             ORDER BY scope, unit"
        ))?;
        let rows = stmt
            .query_map(params![scope], budget_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out = rows
            .into_iter()
            .map(finish_budget)
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| (&a.scope, a.unit).cmp(&(&b.scope, b.unit)));
        Ok(out)
    }

    fn reservation(&mut self, id: &str) -> Result<Option<Reservation>> {
        let body: Option<String> = self
            .tx
            .prepare_cached("SELECT body FROM reservations WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        body.map(|b| parse_json(&format!("reservation {id}"), &b))
            .transpose()
    }

    fn put_reservation(&mut self, r: &Reservation) -> Result<()> {
        let deadline = r.expires_at_ms.saturating_add(r.grace_ms);
        let updated = self
            .tx
            .prepare_cached(
                "UPDATE reservations SET status = ?2, deadline_ms = ?3, body = ?4 WHERE id = ?1",
            )?
            .execute(params![
                r.reservation_id,
                r.status.as_str(),
                deadline,
                to_json(r)
            ])?;
        if updated == 0 {
            self.tx
                .prepare_cached(
                    "INSERT INTO reservations (id, status, deadline_ms, created_seq, body)
                     VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(created_seq), 0) + 1 FROM reservations), ?4)",
                )?
                .execute(params![r.reservation_id, r.status.as_str(), deadline, to_json(r)])?;
        }
        Ok(())
    }

    fn reservations(
        &mut self,
        status: Option<ReservationStatus>,
        limit: usize,
    ) -> Result<Vec<Reservation>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT id, body FROM reservations WHERE ?1 IS NULL OR status = ?1
             ORDER BY created_seq LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(
                params![
                    status.map(|s| s.as_str()),
                    limit.min(i64::MAX as usize) as i64
                ],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.iter()
            .map(|(id, body)| parse_json(&format!("reservation {id}"), body))
            .collect()
    }

    fn expired_reservation_ids(&mut self, now_ms: i64, limit: usize) -> Result<Vec<String>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT id FROM reservations WHERE status = 'ACTIVE' AND deadline_ms < ?1
             ORDER BY deadline_ms, id LIMIT ?2",
        )?;
        let ids = stmt
            .query_map(params![now_ms, limit.min(i64::MAX as usize) as i64], |r| {
                r.get(0)
            })?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(ids)
    }

    fn idempotency(&mut self, op: &str, key: &str) -> Result<Option<IdempotencyEntry>> {
        let row: Option<(String, String)> = self
            .tx
            .prepare_cached(
                "SELECT request_digest, result FROM idempotency WHERE op = ?1 AND key = ?2",
            )?
            .query_row(params![op, key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(request_digest, result)| {
            Ok(IdempotencyEntry {
                request_digest,
                result: parse_json(&format!("idempotency {op}/{key}"), &result)?,
            })
        })
        .transpose()
    }

    fn put_idempotency(&mut self, op: &str, key: &str, e: &IdempotencyEntry) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO idempotency (op, key, request_digest, result) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![op, key, e.request_digest, to_json(&e.result)])?;
        Ok(())
    }

    fn audit_head(&mut self) -> Result<Option<(u64, String)>> {
        let row: Option<(i64, String)> = self
            .tx
            .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.map(|(s, h)| (s as u64, h)))
    }

    fn append_audit(&mut self, r: &AuditRecord) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO audit (seq, time_ms, kind, hash, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                r.seq as i64,
                r.time_ms,
                r.kind.as_str(),
                r.hash,
                to_json(r)
            ])?;
        Ok(())
    }

    fn audit_page(&mut self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT seq, body FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt
            .query_map(
                params![after_seq as i64, limit.min(i64::MAX as usize) as i64],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.iter()
            .map(|(seq, body)| {
                let rec: AuditRecord = parse_json(&format!("audit record {seq}"), body)?;
                if rec.seq as i64 != *seq {
                    return Err(corrupt(format!(
                        "audit record {seq}: row says sequence {}",
                        rec.seq
                    )));
                }
                Ok(rec)
            })
            .collect()
    }

    fn kv_get(&mut self, ns: &str, key: &str) -> Result<Option<serde_json::Value>> {
        let v: Option<String> = self
            .tx
            .prepare_cached("SELECT value FROM kv WHERE ns = ?1 AND key = ?2")?
            .query_row(params![ns, key], |r| r.get(0))
            .optional()?;
        v.map(|v| parse_json(&format!("kv {ns}/{key}"), &v))
            .transpose()
    }

    fn kv_put(&mut self, ns: &str, key: &str, value: &serde_json::Value) -> Result<()> {
        self.tx
            .prepare_cached("INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?1, ?2, ?3)")?
            .execute(params![ns, key, to_json(value)])?;
        Ok(())
    }

    fn kv_list(&mut self, ns: &str) -> Result<Vec<(String, serde_json::Value)>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT key, value FROM kv WHERE ns = ?1 ORDER BY key")?;
        let rows = stmt
            .query_map(params![ns], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(k, v)| Ok((k.clone(), parse_json(&format!("kv {ns}/{k}"), &v)?)))
            .collect()
    }
}

impl Ledger for SqliteLedger {
    fn write(&self, f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>) -> Result<()> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut txn = SqliteTxn { tx };
        f(&mut txn)?; // dropping the transaction on error rolls it back
        txn.tx.commit()?;
        Ok(())
    }

    fn read(&self, f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>) -> Result<()> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let mut txn = SqliteTxn { tx };
        f(&mut txn)
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}
