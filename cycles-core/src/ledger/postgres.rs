//! A ledger in PostgreSQL (feature `postgres`): one budget shared by processes on many hosts.
//!
//! # Concurrency
//!
//! Every write appends to one hash chain, so writes are totally ordered by the chain anyway.
//! This backend makes that order explicit: the first statement of every write transaction
//! locks the chain head row (`SELECT ... FROM cycles_audit_head ... FOR UPDATE`). One lock,
//! always taken first, is a canonical lock order: there is nothing to deadlock on, and no
//! serialization failure to retry on a hot budget. Under READ COMMITTED each later statement
//! sees everything the previous holder committed, and no writer can change a row until we
//! commit, so the machine runs on a state that behaves as if writers ran one at a time.
//! Deadlock and serialization failures (SQLSTATE 40P01 / 40001, which only an outside session
//! could cause) are retried by re-running the closure.
//!
//! # Throughput
//!
//! Writes are buffered and sent as one statement pipelined with `COMMIT`; `BEGIN` and the
//! lock go out with the first read; reads are cached for the transaction, and for the next
//! one while the head's version shows no other writer in between. The threads of a process
//! share transactions (group commit). So the head is held for about one round trip per
//! transaction, and one transaction carries many operations.
//!
//! # Durability
//!
//! Holding the head lock through a WAL flush would serialise every operation behind one fsync.
//! So the write transaction commits with `synchronous_commit = off` (the lock is released as
//! soon as the commit record is in the WAL buffer) and then, with [`Synchronous::Full`], a
//! second tiny transaction with `synchronous_commit = on` waits until the WAL is flushed past
//! our commit before the operation is acknowledged. WAL is replayed as a prefix after a crash,
//! so an acknowledged operation survives, an unacknowledged one is either fully there or
//! fully absent, and the flushes of concurrent clients are grouped by the server.
//!
//! # Failures
//!
//! A lost connection before `COMMIT` leaves nothing behind (the server rolls back) and the
//! operation runs again on a fresh connection. A connection lost *during* `COMMIT` is resolved
//! by locking the chain head on a new connection and looking for the audit record the
//! transaction appended. Every failure is reported as [`CyclesError::LedgerUnavailable`],
//! which the gate turns into DENY `LEDGER_UNAVAILABLE`. docs/architecture.md has the details.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, SimpleQueryMessage, Statement};

use super::{IdempotencyEntry, Ledger, LedgerTxn, Synchronous, scope_within};
use crate::audit::{AuditRecord, SealedRecord};
use crate::error::{CyclesError, Result};
use crate::model::{Budget, BudgetStatus, Reservation, ReservationStatus, Unit};

type PgError = tokio_postgres::Error;

/// The schema version this code writes (row of `cycles_schema_version`).
pub const SCHEMA_VERSION: i32 = 1;

/// Migrations in order: `(version, sql)`. A database at version `v` gets every later one.
const MIGRATIONS: &[(i32, &str)] = &[(1, SCHEMA_V1)];

const SCHEMA_V1: &str = r#"
CREATE TABLE cycles_budgets (
    scope TEXT COLLATE "C" NOT NULL,
    unit TEXT COLLATE "C" NOT NULL,
    allocated BIGINT NOT NULL,
    spent BIGINT NOT NULL,
    reserved BIGINT NOT NULL,
    debt BIGINT NOT NULL,
    overdraft_limit BIGINT NOT NULL,
    status TEXT NOT NULL,
    is_over_limit BOOLEAN NOT NULL,
    PRIMARY KEY (scope, unit)
);
CREATE TABLE cycles_reservations (
    id TEXT COLLATE "C" PRIMARY KEY,
    status TEXT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    created_seq BIGINT GENERATED ALWAYS AS IDENTITY,
    -- The budgeted scopes the reservation holds, newline-separated: lets the read of a
    -- reservation bring its budgets along.
    hold_scopes TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX cycles_reservations_active ON cycles_reservations (deadline_ms, id)
    WHERE status = 'ACTIVE';
CREATE INDEX cycles_reservations_order ON cycles_reservations (created_seq);
CREATE TABLE cycles_idempotency (
    op TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    request_digest TEXT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (op, key)
);
CREATE TABLE cycles_audit (
    seq BIGINT PRIMARY KEY CHECK (seq > 0),
    time_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    hash TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE cycles_audit_head (
    id INT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    -- Bumped by every transaction that writes: a process may keep what it read while this
    -- has not moved since its own last write.
    version BIGINT NOT NULL
);
INSERT INTO cycles_audit_head (id, seq, hash, version) VALUES (1, 0, '', 0);
CREATE TABLE cycles_kv (
    ns TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (ns, key)
);
-- Lets a statement fail with a message (the flush checks the chain head with it).
CREATE FUNCTION cycles_raise(msg TEXT) RETURNS INT LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', msg USING ERRCODE = 'data_corrupted';
END
$$;
"#;

/// Key of the advisory lock that serialises schema creation between processes.
const MIGRATION_LOCK: i64 = 0x6379_636c_6573; // "cycles"

const BEGIN_WRITE: &str = "BEGIN ISOLATION LEVEL READ COMMITTED; \
     SET LOCAL synchronous_commit TO off; \
     SELECT seq, hash, version FROM cycles_audit_head WHERE id = 1 FOR UPDATE";
const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
/// A transaction of its own that writes one WAL record (a logical decoding message, which
/// nothing consumes) so that its commit, with `synchronous_commit = on`, waits for the WAL
/// flush past its own commit record, which comes after ours. (A transaction that only takes
/// an xid, such as `SELECT txid_current()`, writes no WAL before its commit record and is
/// committed asynchronously: the crash test caught exactly that.)
const DURABILITY_BARRIER: &str = "SELECT pg_logical_emit_message(true, 'cycles', '')";

/// The writes of one transaction in one statement. Its head update also checks, under the head
/// lock and at no extra round trip, that the head and the audit table agree (the record at the
/// head carries the head's hash and none follows it): a head moved through SQL, a deleted last
/// record or a forged head hash fails the whole statement (`LEDGER_CORRUPT`) before anything is
/// appended over a gap or under existing records.
const FLUSH: &str = "WITH
b AS (
  INSERT INTO cycles_budgets (scope, unit, allocated, spent, reserved, debt, overdraft_limit, status, is_over_limit)
  SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::text[], $9::bool[])
  ON CONFLICT (scope, unit) DO UPDATE SET allocated = EXCLUDED.allocated, spent = EXCLUDED.spent,
    reserved = EXCLUDED.reserved, debt = EXCLUDED.debt, overdraft_limit = EXCLUDED.overdraft_limit,
    status = EXCLUDED.status, is_over_limit = EXCLUDED.is_over_limit
  RETURNING 1),
r AS (
  INSERT INTO cycles_reservations (id, status, deadline_ms, body, hold_scopes)
  SELECT * FROM unnest($10::text[], $11::text[], $12::int8[], $13::text[], $30::text[])
  ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, deadline_ms = EXCLUDED.deadline_ms,
    body = EXCLUDED.body, hold_scopes = EXCLUDED.hold_scopes
  RETURNING 1),
i AS (
  INSERT INTO cycles_idempotency (op, key, request_digest, result)
  SELECT * FROM unnest($14::text[], $15::text[], $16::text[], $17::text[])
  ON CONFLICT (op, key) DO UPDATE SET request_digest = EXCLUDED.request_digest, result = EXCLUDED.result
  RETURNING 1),
a AS (
  INSERT INTO cycles_audit (seq, time_ms, kind, hash, body)
  SELECT * FROM unnest($18::int8[], $19::int8[], $20::text[], $21::text[], $22::text[])
  ON CONFLICT (seq) DO NOTHING
  RETURNING 1),
k AS (
  INSERT INTO cycles_kv (ns, key, value)
  SELECT * FROM unnest($23::text[], $24::text[], $25::text[])
  ON CONFLICT (ns, key) DO UPDATE SET value = EXCLUDED.value
  RETURNING 1),
h AS (
  UPDATE cycles_audit_head SET seq = CASE WHEN $28::bool THEN $26 ELSE seq END,
    hash = CASE WHEN $28::bool THEN $27 ELSE hash END, version = version + 1
  WHERE id = 1 AND seq = $29
    AND CASE WHEN $29 = 0 THEN cycles_audit_head.hash = ''
      ELSE EXISTS (SELECT 1 FROM cycles_audit x WHERE x.seq = $29 AND x.hash = cycles_audit_head.hash) END
    AND NOT EXISTS (SELECT 1 FROM cycles_audit x WHERE x.seq = $29 + 1)
  RETURNING version)
SELECT CASE WHEN (SELECT count(*) FROM h) <> 1
    THEN cycles_raise('the audit chain head does not match the audit records (the tables were changed outside the ledger, or a writer bypassed the head lock)')::int8
    ELSE (SELECT version FROM h) END";

/// Options for [`PostgresLedger::connect_with`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// The schema holding the ledger's tables, created if absent (default: the connection's
    /// `search_path`, usually `public`). Lowercase letters, digits and `_`, at most 63 chars.
    pub schema: Option<String>,
    /// Most connections this process keeps open (default 8).
    pub pool_size: u32,
    /// How long an operation waits for a connection before it fails with
    /// `LEDGER_UNAVAILABLE` (default 2 s). This is how long the gate takes to answer DENY
    /// while the server is down.
    pub connect_timeout: Duration,
    /// How long a write waits for the chain head lock (default 10 s).
    pub lock_timeout: Duration,
    /// How long the server lets a session sit idle inside a transaction before ending it,
    /// which frees the chain head if a client hangs while holding it (default 30 s).
    pub idle_in_transaction_timeout: Duration,
    /// [`Synchronous::Full`] (default): an operation is acknowledged only after its commit
    /// is flushed to the server's WAL. [`Synchronous::Normal`]: acknowledged at commit; a
    /// server crash may lose the last acknowledged operations (never half of one).
    pub synchronous: Synchronous,
    /// `application_name` of the sessions (default `cycles`).
    pub application_name: String,
    /// Group commit (default on): the operations of this process's threads that write at
    /// the same time share one transaction, one chain-head lock and one WAL flush; each runs
    /// on its own thread, reads what its predecessors left, and is undone alone if it fails.
    pub group_commit: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(2),
            lock_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(30),
            synchronous: Synchronous::Full,
            application_name: "cycles".to_string(),
            group_commit: true,
        }
    }
}

impl PostgresOptions {
    /// These options with `schema`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }
}

/// A ledger in a PostgreSQL database, shared by every process and host that connects to it.
///
/// ```no_run
/// use cycles_core::{Authority, PostgresLedger};
/// let ledger = PostgresLedger::connect("postgres://cycles@127.0.0.1:5432/cycles?schema=agents")?;
/// let auth = Authority::builder().ledger(ledger).build()?;
/// assert!(auth.verify()?.ok);
/// # Ok::<(), cycles_core::CyclesError>(())
/// ```
pub struct PostgresLedger {
    pool: r2d2::Pool<Manager>,
    options: PostgresOptions,
    describe: String,
    /// The open shared write transaction of this process, if any (group commit).
    batch: Mutex<Option<Batch>>,
    /// Writers queued for `batch`: a writer that finishes while this is non-zero hands the
    /// open transaction on instead of committing it.
    waiting: AtomicUsize,
    transactions: AtomicU64,
    operations: AtomicU64,
    /// What this process's last committed write transaction knew (see [`Carry`]).
    carry: Mutex<Option<Arc<Carry>>>,
}

/// Most operations one shared transaction takes before it commits: bounds how long the chain
/// head stays locked for other processes.
pub const MAX_BATCH_OPS: usize = 64;

/// An open shared write transaction.
struct Batch {
    conn: r2d2::PooledConnection<Manager>,
    st: TxnState,
    /// Operations in it that succeeded.
    ops: usize,
    /// Where writers that handed the transaction on wait for its end.
    waiters: Option<Arc<BatchOutcome>>,
}

/// How a shared transaction ended, for everyone whose operation is in it.
#[derive(Clone, Debug)]
enum Shared {
    Committed,
    /// Nothing of it was applied; the operations may run again.
    Retry(String),
    Failed(String),
    /// The tables disagree with the audit chain (`LEDGER_CORRUPT`).
    Corrupt(String),
}

#[derive(Default)]
struct BatchOutcome {
    done: Mutex<Option<Shared>>,
    cv: Condvar,
}

impl BatchOutcome {
    fn publish(&self, outcome: Shared) {
        *self.done.lock() = Some(outcome);
        self.cv.notify_all();
    }

    fn wait(&self) -> Shared {
        let mut done = self.done.lock();
        loop {
            if let Some(outcome) = done.as_ref() {
                return outcome.clone();
            }
            self.cv.wait(&mut done);
        }
    }
}

/// The message of a ledger error (to hand it to the other members of a shared transaction).
fn message(e: &CyclesError) -> String {
    match e {
        CyclesError::LedgerUnavailable(m) | CyclesError::LedgerCorrupt(m) => m.clone(),
        other => other.to_string(),
    }
}

impl Shared {
    fn of(attempt: &Attempt) -> Shared {
        match attempt {
            Attempt::Retry(e) => Shared::Retry(message(e)),
            Attempt::Fail(e @ CyclesError::LedgerCorrupt(_)) => Shared::Corrupt(message(e)),
            Attempt::Fail(e) => Shared::Failed(message(e)),
        }
    }

    fn into_result(self) -> std::result::Result<(), Attempt> {
        match self {
            Shared::Committed => Ok(()),
            Shared::Retry(m) => Err(Attempt::Retry(unavailable(m))),
            Shared::Failed(m) => Err(Attempt::Fail(unavailable(m))),
            Shared::Corrupt(m) => Err(Attempt::Fail(corrupt(m))),
        }
    }
}

impl fmt::Debug for PostgresLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLedger")
            .field("target", &self.describe)
            .field("pool_size", &self.options.pool_size)
            .finish()
    }
}

fn unavailable(what: impl fmt::Display) -> CyclesError {
    CyclesError::LedgerUnavailable(what.to_string())
}

fn corrupt(what: impl fmt::Display) -> CyclesError {
    CyclesError::LedgerCorrupt(what.to_string())
}

/// A client error with its cause (the client's own `Display` leaves the cause out).
fn pg_msg(e: &PgError) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

/// Takes a `schema=NAME` parameter out of a `postgres://` URL (the client library does not
/// know it). Other forms are returned unchanged.
fn split_schema_param(url: &str) -> Result<(String, Option<String>)> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_string(), None));
    };
    let mut schema = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", v)) => schema = Some(v.to_string()),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, schema))
}

fn validate_schema(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(CyclesError::invalid(
            "schema",
            format!("{name:?}: use lowercase letters, digits and _ (at most 63, not digit first)"),
        ))
    }
}

impl PostgresLedger {
    /// Connects with default options. `url` is a `postgres://` URL (or a libpq key=value
    /// string); a `schema=NAME` URL parameter selects the schema.
    pub fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PostgresOptions::default())
    }

    /// Connects, creates the schema and tables if absent (or migrates them), and returns the
    /// ledger. A `schema=NAME` URL parameter overrides `options.schema`.
    pub fn connect_with(url: &str, mut options: PostgresOptions) -> Result<Self> {
        let (url, url_schema) = split_schema_param(url)?;
        if url_schema.is_some() {
            options.schema = url_schema;
        }
        if let Some(s) = &options.schema {
            validate_schema(s)?;
        }
        if options.pool_size == 0 {
            return Err(CyclesError::invalid("pool_size", "must be at least 1"));
        }
        let mut config: Config = url
            .parse()
            .map_err(|e| CyclesError::invalid("url", format!("{e}")))?;
        let ms = |d: Duration| d.as_millis().max(1);
        let mut startup = config.get_options().unwrap_or_default().to_string();
        // Session settings travel in the startup packet, so every pooled connection has them.
        startup.push_str(&format!(
            " -c synchronous_commit=on -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            ms(options.lock_timeout),
            ms(options.idle_in_transaction_timeout)
        ));
        if let Some(s) = &options.schema {
            startup.push_str(&format!(" -c search_path={s}"));
        }
        config
            .options(startup.trim())
            .application_name(&options.application_name)
            .connect_timeout(options.connect_timeout);
        let describe = describe(&config, options.schema.as_deref());
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size)
            .min_idle(Some(0))
            .test_on_check_out(false)
            .connection_timeout(options.connect_timeout)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build(Manager { config })
            .map_err(|e| unavailable(format!("{describe}: {e}")))?;
        let ledger = PostgresLedger {
            pool,
            options,
            describe,
            batch: Mutex::new(None),
            waiting: AtomicUsize::new(0),
            transactions: AtomicU64::new(0),
            operations: AtomicU64::new(0),
            carry: Mutex::new(None),
        };
        ledger.migrate()?;
        Ok(ledger)
    }

    fn checkout(&self) -> Result<r2d2::PooledConnection<Manager>> {
        self.pool
            .get()
            .map_err(|e| unavailable(format!("{}: {e}", self.describe)))
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.checkout()?;
        let schema = self.options.schema.clone();
        let run = |c: &mut PgConn| -> std::result::Result<i32, PgError> {
            c.batch("BEGIN")?;
            c.query_text("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            // DDL only where something is missing, so that a user without CREATE rights can
            // use a ledger someone else created.
            if let Some(s) = &schema {
                let exists = c.query_text("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[s])?;
                if exists.is_empty() {
                    // The name is validated: lowercase, digits, underscore.
                    c.batch(&format!("CREATE SCHEMA {s}"))?;
                }
                c.batch(&format!("SET LOCAL search_path TO {s}"))?;
            }
            let have_version_table = !c
                .query_text(
                    "SELECT 1 WHERE to_regclass('cycles_schema_version') IS NOT NULL",
                    &[],
                )?
                .is_empty();
            if !have_version_table {
                c.batch(
                    "CREATE TABLE cycles_schema_version (
                         id INT PRIMARY KEY CHECK (id = 1), version INT NOT NULL)",
                )?;
            }
            let version: i32 = c
                .query_text(
                    "SELECT version FROM cycles_schema_version WHERE id = 1",
                    &[],
                )?
                .first()
                .map_or(0, |r| r.get(0));
            if version > SCHEMA_VERSION {
                c.batch("ROLLBACK")?;
                return Ok(version);
            }
            for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > version) {
                c.batch(sql)?;
                c.query_text(
                    "INSERT INTO cycles_schema_version (id, version) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
                    &[v],
                )?;
            }
            c.batch("COMMIT")?;
            // Fails early (and closed) where the durability barrier is not permitted.
            c.simple(DURABILITY_BARRIER)?;
            Ok(version)
        };
        let version = run(&mut conn).map_err(|e| {
            conn.broken = true;
            unavailable(format!(
                "{}: creating the schema: {}",
                self.describe,
                pg_msg(&e)
            ))
        })?;
        if version > SCHEMA_VERSION {
            return Err(corrupt(format!(
                "{}: schema version {version} is newer than this library's {SCHEMA_VERSION}",
                self.describe
            )));
        }
        Ok(())
    }

    /// The schema version stored in the database.
    pub fn schema_version(&self) -> Result<i32> {
        let mut conn = self.checkout()?;
        let rows = conn
            .query_text(
                "SELECT version FROM cycles_schema_version WHERE id = 1",
                &[],
            )
            .map_err(|e| unavailable(format!("{}: {}", self.describe, pg_msg(&e))))?;
        rows.first()
            .map(|r| r.get(0))
            .ok_or_else(|| corrupt("the schema version row is missing"))
    }

    /// The options this ledger runs with.
    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    /// Test hook: runs raw SQL in the ledger's schema (to simulate tampering). Not stable API.
    #[doc(hidden)]
    pub fn execute_raw(&self, sql: &str) -> Result<()> {
        self.carry.lock().take();
        let mut conn = self.checkout()?;
        conn.batch(sql)
            .map_err(|e| unavailable(format!("{}: {}", self.describe, pg_msg(&e))))
    }

    /// Most attempts of one operation: enough to skip every stale pooled connection after a
    /// server restart, then one more.
    fn max_attempts(&self) -> u32 {
        self.options.pool_size + 3
    }

    /// `(transactions, operations)` committed or attempted by this ledger's writers so far:
    /// `operations / transactions` is the mean number of operations per transaction.
    pub fn batch_stats(&self) -> (u64, u64) {
        (
            self.transactions.load(Ordering::Relaxed),
            self.operations.load(Ordering::Relaxed),
        )
    }

    /// One operation in a transaction of its own (group commit off).
    fn write_once(
        &self,
        conn: &mut PgConn,
        f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>,
    ) -> std::result::Result<(), Attempt> {
        let mut st = TxnState {
            carry_in: self.carry.lock().take(),
            ..TxnState::default()
        };
        // Until the closure returns normally the session counts as broken, so that a panic
        // drops it (the server then rolls its transaction back) instead of pooling it.
        conn.broken = true;
        let outcome = f(&mut PgTxn {
            conn,
            writable: true,
            st: &mut st,
        });
        conn.broken = st.fault.as_ref().is_some_and(|(f, _)| *f == Fault::Lost);
        if let Some(fault) = st.fault.take() {
            return Err(abort(conn, fault));
        }
        if let Err(e) = outcome {
            if st.begun {
                rollback(conn);
            }
            return Err(Attempt::Fail(e));
        }
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.operations.fetch_add(1, Ordering::Relaxed);
        if !st.begun && st.pending.is_empty() {
            // Read nothing, wrote nothing: no transaction was opened.
            *self.carry.lock() = st.carry_in.take();
            return Ok(());
        }
        self.commit_txn(conn, &mut st)
    }

    /// Group commit: join this process's open write transaction or open one, run the
    /// operation in it, then hand the transaction on to a queued writer or commit it.
    fn write_grouped(
        &self,
        f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>,
    ) -> std::result::Result<(), Attempt> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.batch.lock();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let first = guard.is_none();
        if first {
            let conn = self.checkout().map_err(Attempt::Fail)?;
            *guard = Some(Batch {
                conn,
                st: TxnState {
                    carry_in: self.carry.lock().take(),
                    ..TxnState::default()
                },
                ops: 0,
                waiters: None,
            });
        }
        let batch = guard.as_mut().expect("a batch is open");
        // What to restore if this operation fails; the first one fails with the transaction.
        let before = (!first).then(|| batch.st.clone());
        batch.st.in_savepoint = !first;
        batch.st.savepoint_set = false;
        let ran = catch_unwind(AssertUnwindSafe(|| {
            f(&mut PgTxn {
                conn: &mut batch.conn,
                writable: true,
                st: &mut batch.st,
            })
        }));
        batch.st.in_savepoint = false;
        let (own, panic): (Result<()>, Option<Box<dyn Any + Send>>) = match ran {
            Ok(r) => (r, None),
            Err(p) => (Err(unavailable("the operation panicked")), Some(p)),
        };
        let resume = |panic: Option<Box<dyn Any + Send>>| {
            if let Some(p) = panic {
                resume_unwind(p)
            }
        };
        // A database error aborted or lost the shared transaction: everything in it fails.
        if let Some(fault) = batch.st.fault.take() {
            let mut batch = guard.take().expect("a batch is open");
            drop(guard);
            let attempt = abort(&mut batch.conn, fault);
            // The others' operations were fine: nothing of them was applied, they run again.
            self.end_batch(batch, Shared::Retry(message(attempt.error())));
            resume(panic);
            return Err(attempt);
        }
        if own.is_ok() {
            batch.ops += 1;
        } else if first {
            // Alone in the transaction: end it.
            let mut batch = guard.take().expect("a batch is open");
            drop(guard);
            if batch.st.begun {
                rollback(&mut batch.conn);
            }
            resume(panic);
            return Err(Attempt::Fail(own.expect_err("failed")));
        } else {
            // Undo this operation alone: its buffered writes with the state copy, what it
            // sent to the server with its savepoint.
            let sent = batch.st.savepoint_set;
            let mut restored = before.expect("a copy of the state before the operation");
            if !restored.begun && batch.st.begun {
                // It opened the transaction (and holds the chain head): that stays.
                restored.begun = true;
                restored.head = batch.st.begin_head.clone();
                restored.begin_head = batch.st.begin_head.clone();
                restored.locked_seq = restored.head.as_ref().map_or(0, |h| h.0);
            }
            batch.st = restored;
            if sent && let Err(e) = batch.conn.batch("ROLLBACK TO SAVEPOINT cycles_op") {
                let fault = (classify(batch.conn.is_closed(), &e), pg_msg(&e));
                let mut batch = guard.take().expect("a batch is open");
                drop(guard);
                let attempt = abort(&mut batch.conn, fault);
                self.end_batch(batch, Shared::Retry(message(attempt.error())));
                resume(panic);
                return Err(Attempt::Fail(own.expect_err("failed")));
            }
        }
        if self.waiting.load(Ordering::SeqCst) > 0 && batch.ops < MAX_BATCH_OPS {
            // Someone is queued: let them join; whoever ends the batch tells us how.
            let outcome = own
                .is_ok()
                .then(|| batch.waiters.get_or_insert_with(Default::default).clone());
            drop(guard);
            resume(panic);
            return match (own, outcome) {
                (Ok(()), Some(outcome)) => outcome.wait().into_result(),
                (Err(e), _) => Err(Attempt::Fail(e)),
                (Ok(()), None) => unreachable!("a successful operation waits"),
            };
        }
        let batch = guard.take().expect("a batch is open");
        // The next batch may open (and queue for the chain head) while this one commits.
        drop(guard);
        let shared = self.commit_batch(batch);
        resume(panic);
        match own {
            Err(e) => Err(Attempt::Fail(e)),
            Ok(()) => shared.into_result(),
        }
    }

    fn commit_batch(&self, mut batch: Batch) -> Shared {
        let shared = if !batch.st.begun && batch.st.pending.is_empty() {
            *self.carry.lock() = batch.st.carry_in.take();
            Shared::Committed
        } else {
            match self.commit_txn(&mut batch.conn, &mut batch.st) {
                Ok(()) => Shared::Committed,
                Err(attempt) => Shared::of(&attempt),
            }
        };
        self.end_batch(batch, shared.clone());
        shared
    }

    /// Counts a batch that ended and wakes the writers waiting for it.
    fn end_batch(&self, batch: Batch, shared: Shared) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.operations
            .fetch_add(batch.ops as u64, Ordering::Relaxed);
        if let Some(waiters) = &batch.waiters {
            waiters.publish(shared);
        }
    }

    /// Commits a write transaction whose operations all ran: the buffered writes, `COMMIT`
    /// and the durability barrier in one round trip, then sorts out what the answers mean.
    fn commit_txn(&self, conn: &mut PgConn, st: &mut TxnState) -> std::result::Result<(), Attempt> {
        if !st.begun {
            let begun = PgTxn {
                conn,
                writable: true,
                st,
            }
            .ensure_begun();
            if let Some(fault) = st.fault.take() {
                return Err(abort(conn, fault));
            }
            if let Err(e) = begun {
                rollback(conn);
                return Err(Attempt::Fail(e));
            }
        }
        let writes = st.take_writes();
        let appended = st.last_appended.take();
        let barrier = self.options.synchronous == Synchronous::Full;
        let tail = match conn.commit_pipelined(writes.as_ref(), barrier) {
            Ok(tail) => tail,
            // Preparing the statement failed: nothing was sent for commit yet.
            Err(e) => {
                let fault = classify(conn.is_closed(), &e);
                return Err(abort(conn, (fault, pg_msg(&e))));
            }
        };
        let closed = conn.is_closed();
        let lost = |e: &PgError| classify(closed, e) == Fault::Lost;
        let refused = match (&tail.flush, &tail.commit) {
            // The server answered the error, so COMMIT ended the aborted transaction with a
            // rollback: nothing was applied.
            (Err(e), _) if !lost(e) => Some(e),
            (Ok(_), Err(e)) if !lost(e) => Some(e),
            _ => None,
        };
        if let Some(e) = refused {
            if tail.barrier.is_err() {
                conn.broken = true;
            }
            if classify(closed, e) == Fault::Corrupt {
                // The head check of the write statement: the tables disagree with the chain.
                *self.carry.lock() = None;
                return Err(Attempt::Fail(corrupt(pg_msg(e))));
            }
            let err = unavailable(pg_msg(e));
            return Err(match classify(closed, e) {
                Fault::Conflict => Attempt::Retry(err),
                _ => Attempt::Fail(err),
            });
        }
        match (tail.flush, tail.commit, tail.barrier) {
            (Ok(version), Ok(()), Ok(())) => {
                if let Some(v) = version {
                    st.version = v;
                }
                // The next transaction of this process may reuse what this one knew.
                *self.carry.lock() = std::mem::take(st).into_carry();
                Ok(())
            }
            // Committed, but not known to be durable; or the session was lost with the
            // outcome of COMMIT unknown: look from a new session.
            (Ok(_), Ok(()), Err(e)) | (Err(e), _, _) | (Ok(_), Err(e), _) => {
                conn.broken = true;
                self.resolve_commit(appended, &e)
            }
        }
    }

    /// After the connection was lost while committing: waits for the chain head (so the old
    /// session's transaction has finished one way or the other), then looks for the last
    /// audit record the transaction appended. Found: committed, and made durable here. Absent:
    /// never committed, so the operation may run again.
    fn resolve_commit(
        &self,
        appended: Option<(u64, String)>,
        cause: &PgError,
    ) -> std::result::Result<(), Attempt> {
        let unknown = |why: String| {
            Attempt::Fail(unavailable(format!(
                "{}: connection lost while committing ({}); outcome unknown: {why}",
                self.describe,
                pg_msg(cause)
            )))
        };
        let Some((seq, hash)) = appended else {
            return Err(unknown("the transaction appended no audit record".into()));
        };
        // The lookup only reads (and waits for the head): a session lost during it is simply
        // replaced, a few times.
        let mut attempt = 0;
        let found = loop {
            attempt += 1;
            let mut conn = self.checkout().map_err(|e| unknown(e.to_string()))?;
            let looked = (|| -> std::result::Result<Option<String>, PgError> {
                conn.batch("BEGIN")?;
                conn.query_text(
                    "SELECT seq FROM cycles_audit_head WHERE id = 1 FOR UPDATE",
                    &[],
                )?;
                let rows = conn.query_text(
                    "SELECT hash FROM cycles_audit WHERE seq = $1",
                    &[&(seq as i64)],
                )?;
                conn.batch("COMMIT")?;
                let found: Option<String> = rows.first().map(|r| r.get(0));
                if found.as_ref() == Some(&hash) && self.options.synchronous == Synchronous::Full {
                    // Committed: make sure it is durable before saying so.
                    conn.simple(DURABILITY_BARRIER)?;
                }
                Ok(found)
            })();
            match looked {
                Ok(found) => break found,
                Err(e) => {
                    conn.broken = true;
                    let lost = classify(conn.is_closed(), &e) == Fault::Lost;
                    if !lost || attempt >= self.max_attempts() {
                        return Err(unknown(pg_msg(&e)));
                    }
                }
            }
        };
        match found {
            Some(h) if h == hash => Ok(()),
            _ => Err(Attempt::Retry(unavailable(format!(
                "{}: connection lost while committing ({}); not committed",
                self.describe,
                pg_msg(cause)
            )))),
        }
    }

    fn read_once(
        &self,
        conn: &mut PgConn,
        f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>,
    ) -> std::result::Result<(), Attempt> {
        let mut st = TxnState::default();
        conn.broken = true; // until the closure returns normally (see write_once)
        let outcome = f(&mut PgTxn {
            conn,
            writable: false,
            st: &mut st,
        });
        conn.broken = st.fault.as_ref().is_some_and(|(f, _)| *f == Fault::Lost);
        if let Some(fault) = st.fault.take() {
            return Err(abort(conn, fault));
        }
        // A read-only transaction has nothing to commit; end it either way.
        if st.begun {
            rollback(conn);
        }
        outcome.map_err(Attempt::Fail)
    }

    fn run(
        &self,
        f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>,
        once: AttemptFn,
    ) -> Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut conn = self.checkout()?;
            match once(self, &mut conn, f) {
                Ok(()) => return Ok(()),
                Err(Attempt::Retry(_)) if attempt < self.max_attempts() => continue,
                Err(Attempt::Retry(e)) | Err(Attempt::Fail(e)) => return Err(e),
            }
        }
    }
}

fn describe(config: &Config, schema: Option<&str>) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let mut out = format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    );
    if let Some(s) = schema {
        out.push_str(&format!("?schema={s}"));
    }
    out
}

/// What went wrong with the database, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The session is gone: the server rolled back whatever was not committed.
    Lost,
    /// Serialization failure or deadlock: the transaction was rolled back, run it again.
    Conflict,
    /// The write statement's head check failed (`data_corrupted`): the tables disagree with
    /// the audit chain; give up with `LEDGER_CORRUPT`.
    Corrupt,
    /// Anything else (lock timeout, constraint violation): give up.
    Other,
}

fn classify(closed: bool, e: &PgError) -> Fault {
    if closed || e.is_closed() {
        return Fault::Lost;
    }
    match e.code() {
        // No SQLSTATE: an I/O or protocol error, so the session cannot be trusted.
        None => Fault::Lost,
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => Fault::Conflict,
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => Fault::Conflict,
        // Connection exceptions and operator intervention (shutdown, terminated session).
        Some(c) if c.code().starts_with("08") || c.code().starts_with("57P") => Fault::Lost,
        Some(c) if *c == SqlState::DATA_CORRUPTED => Fault::Corrupt,
        Some(_) => Fault::Other,
    }
}

/// One attempt of a write or a read on a connection.
type AttemptFn = fn(
    &PostgresLedger,
    &mut PgConn,
    &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>,
) -> std::result::Result<(), Attempt>;

/// The outcome of one attempt of an operation.
enum Attempt {
    /// Nothing was applied; the operation may run again.
    Retry(CyclesError),
    /// Report this.
    Fail(CyclesError),
}

impl Attempt {
    fn error(&self) -> &CyclesError {
        match self {
            Attempt::Retry(e) | Attempt::Fail(e) => e,
        }
    }
}

fn rollback(conn: &mut PgConn) {
    if conn.batch("ROLLBACK").is_err() {
        conn.broken = true;
    }
}

/// Ends a transaction that hit `fault` and says whether the operation may run again.
fn abort(conn: &mut PgConn, (fault, msg): (Fault, String)) -> Attempt {
    if fault == Fault::Corrupt {
        rollback(conn);
        return Attempt::Fail(corrupt(msg));
    }
    let err = unavailable(msg);
    match fault {
        Fault::Lost => {
            conn.broken = true;
            Attempt::Retry(err)
        }
        Fault::Conflict => {
            rollback(conn);
            Attempt::Retry(err)
        }
        Fault::Other | Fault::Corrupt => {
            rollback(conn);
            Attempt::Fail(err)
        }
    }
}

/// A pooled session: a client driven by its own single-threaded runtime, and its prepared
/// statements. Each call blocks on the runtime, which also drives the connection.
struct PgConn {
    rt: tokio::runtime::Runtime,
    client: Client,
    statements: HashMap<&'static str, Statement>,
    broken: bool,
}

/// What the pipelined end of a write transaction answered, part by part.
struct Tail {
    /// The head's new version, when there were writes.
    flush: std::result::Result<Option<i64>, PgError>,
    commit: std::result::Result<(), PgError>,
    barrier: std::result::Result<(), PgError>,
}

impl PgConn {
    fn connect(config: &Config) -> std::result::Result<PgConn, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the client runtime: {e}"))?;
        let (client, connection) = rt.block_on(config.connect(NoTls)).map_err(|e| pg_msg(&e))?;
        rt.spawn(connection);
        Ok(PgConn {
            rt,
            client,
            statements: HashMap::new(),
            broken: false,
        })
    }

    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    fn simple(&mut self, sql: &str) -> std::result::Result<Vec<SimpleQueryMessage>, PgError> {
        self.rt.block_on(self.client.simple_query(sql))
    }

    fn batch(&mut self, sql: &str) -> std::result::Result<(), PgError> {
        self.rt.block_on(self.client.batch_execute(sql))
    }

    /// A statement prepared once per session.
    fn statement(&mut self, sql: &'static str) -> std::result::Result<Statement, PgError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.rt.block_on(self.client.prepare(sql))?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Vec<Row>, PgError> {
        let stmt = self.statement(sql)?;
        self.rt.block_on(self.client.query(&stmt, params))
    }

    /// A one-off query (not kept prepared).
    fn query_text(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Vec<Row>, PgError> {
        self.rt.block_on(self.client.query(sql, params))
    }

    /// Sends `begin` (a simple query) and, when given, a first statement without waiting in
    /// between: the server runs the statement as soon as `begin` is done (for a write, as
    /// soon as it holds the chain head). The outer error is a failure to prepare.
    #[allow(clippy::type_complexity)]
    fn begin_pipelined(
        &mut self,
        begin: &str,
        first: Option<(&'static str, &[&(dyn ToSql + Sync)])>,
    ) -> std::result::Result<
        (
            std::result::Result<Vec<SimpleQueryMessage>, PgError>,
            Option<std::result::Result<Vec<Row>, PgError>>,
        ),
        PgError,
    > {
        let stmt = match first {
            Some((sql, _)) => Some(self.statement(sql)?),
            None => None,
        };
        let client = &self.client;
        let begin = client.simple_query(begin);
        let query = async {
            match (first, &stmt) {
                (Some((_, params)), Some(stmt)) => Some(client.query(stmt, params).await),
                _ => None,
            }
        };
        Ok(self.rt.block_on(futures_util::future::join(begin, query)))
    }

    /// Sends the buffered writes, `COMMIT` and, when asked, the durability barrier without
    /// waiting in between: one round trip, so the chain head is released as soon as the
    /// server has run the writes. Each part's answer is reported separately.
    fn commit_pipelined(
        &mut self,
        writes: Option<&FlushArgs>,
        barrier: bool,
    ) -> std::result::Result<Tail, PgError> {
        let flush_stmt = match writes {
            Some(_) => Some(self.statement(FLUSH)?),
            None => None,
        };
        let client = &self.client;
        let flush = async {
            match (writes, &flush_stmt) {
                (Some(w), Some(stmt)) => client
                    .query(stmt, &w.params())
                    .await
                    .map(|rows| rows.first().and_then(|r| r.try_get::<_, i64>(0).ok())),
                _ => Ok(None),
            }
        };
        let commit = client.batch_execute("COMMIT");
        let barrier = async {
            if barrier {
                client.simple_query(DURABILITY_BARRIER).await.map(|_| ())
            } else {
                Ok(())
            }
        };
        // join3 polls in order, so the messages go out in order before any answer is read.
        let (flush, commit, barrier) = self
            .rt
            .block_on(futures_util::future::join3(flush, commit, barrier));
        Ok(Tail {
            flush,
            commit,
            barrier,
        })
    }
}

struct Manager {
    config: Config,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Manager")
    }
}

/// A connection error with its cause, as the pool reports it after its timeout.
#[derive(Debug)]
struct ConnectError(String);

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = ConnectError;

    fn connect(&self) -> std::result::Result<PgConn, ConnectError> {
        PgConn::connect(&self.config).map_err(ConnectError)
    }

    fn is_valid(&self, conn: &mut PgConn) -> std::result::Result<(), ConnectError> {
        conn.simple("")
            .map(|_| ())
            .map_err(|e| ConnectError(pg_msg(&e)))
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.broken || conn.is_closed()
    }
}

/// One transaction. Writes are buffered and sent in one statement ([`FLUSH`]) before a list
/// query or the commit; point reads are cached, which is sound because a write transaction
/// holds the chain head and so no other writer can change a row under it.
struct PgTxn<'a> {
    conn: &'a mut PgConn,
    writable: bool,
    st: &'a mut TxnState,
}

/// What a transaction knows and holds on the client side. Kept apart from the connection so
/// that a shared (group-commit) transaction carries it from one operation to the next, and an
/// operation that fails is undone by restoring a copy taken before it ran.
#[derive(Clone, Default)]
struct TxnState {
    /// `BEGIN` is sent lazily, pipelined with the first query.
    begun: bool,
    /// Scopes whose budgets (every unit) are all in `budgets`.
    loaded_scopes: std::collections::HashSet<String>,
    /// `(seq, hash)` of the chain head, including our own appends (write transactions).
    head: Option<(u64, String)>,
    /// The head as last written to the server: the flush checks that nobody moved it.
    locked_seq: u64,
    /// The head as read under the lock.
    begin_head: Option<(u64, String)>,
    /// `cycles_audit_head.version` as of our last statement (read at `BEGIN`, then
    /// returned by each flush).
    version: i64,
    /// What this process knew after its previous write, usable if the version matches.
    carry_in: Option<Arc<Carry>>,
    /// `carry_in` once the version matched: read through on a miss (entries used are copied
    /// into this transaction's own caches, so what is carried on stays small).
    base: Option<Arc<Carry>>,
    budgets: HashMap<(String, Unit), Option<Budget>>,
    reservations: HashMap<String, Option<Reservation>>,
    idempotency: HashMap<(String, String), Option<IdempotencyEntry>>,
    kv: HashMap<(String, String), Option<serde_json::Value>>,
    pending: Pending,
    last_appended: Option<(u64, String)>,
    fault: Option<(Fault, String)>,
    /// In a shared transaction, an operation after the first puts whatever it sends to the
    /// server (a flush before a list query) in a savepoint, so that it can be undone alone.
    in_savepoint: bool,
    savepoint_set: bool,
}

/// What a process read and wrote in its last write transaction, valid for its next one
/// while `version` is still the head's (no other writer has committed since).
#[derive(Clone, Default)]
struct Carry {
    version: i64,
    budgets: HashMap<(String, Unit), Option<Budget>>,
    reservations: HashMap<String, Option<Reservation>>,
    idempotency: HashMap<(String, String), Option<IdempotencyEntry>>,
    kv: HashMap<(String, String), Option<serde_json::Value>>,
    loaded_scopes: std::collections::HashSet<String>,
}

/// A transaction that touched more entries than this carries nothing on.
const MAX_CARRY: usize = 4_096;

impl TxnState {
    /// A budget this transaction knows: `Some(None)` means known not to exist.
    fn known_budget(&mut self, scope: &str, unit: Unit) -> Option<Option<Budget>> {
        let key = (scope.to_string(), unit);
        if let Some(b) = self.budgets.get(&key) {
            return Some(b.clone());
        }
        if self.loaded_scopes.contains(scope) {
            return Some(None);
        }
        let base = self.base.clone()?;
        let loaded = base.loaded_scopes.contains(scope);
        if !loaded && !base.budgets.contains_key(&key) {
            return None;
        }
        // Bring the scope over from the previous transaction, every unit it knew.
        for ((s, u), b) in base.budgets.iter().filter(|((s, _), _)| s == scope) {
            self.budgets
                .entry((s.clone(), *u))
                .or_insert_with(|| b.clone());
        }
        if loaded {
            self.loaded_scopes.insert(scope.to_string());
        }
        Some(self.budgets.get(&key).cloned().flatten())
    }

    fn known_reservation(&mut self, id: &str) -> Option<Option<Reservation>> {
        if let Some(r) = self.reservations.get(id) {
            return Some(r.clone());
        }
        let r = self.base.as_ref()?.reservations.get(id)?.clone();
        self.reservations.insert(id.to_string(), r.clone());
        Some(r)
    }

    fn known_idempotency(&mut self, k: &(String, String)) -> Option<Option<IdempotencyEntry>> {
        if let Some(e) = self.idempotency.get(k) {
            return Some(e.clone());
        }
        let e = self.base.as_ref()?.idempotency.get(k)?.clone();
        self.idempotency.insert(k.clone(), e.clone());
        Some(e)
    }

    fn known_kv(&mut self, k: &(String, String)) -> Option<Option<serde_json::Value>> {
        if let Some(v) = self.kv.get(k) {
            return Some(v.clone());
        }
        let v = self.base.as_ref()?.kv.get(k)?.clone();
        self.kv.insert(k.clone(), v.clone());
        Some(v)
    }

    /// What the next transaction may reuse, once this one has committed.
    fn into_carry(self) -> Option<Arc<Carry>> {
        let size =
            self.budgets.len() + self.reservations.len() + self.idempotency.len() + self.kv.len();
        (self.begun && size <= MAX_CARRY).then(|| {
            Arc::new(Carry {
                version: self.version,
                budgets: self.budgets,
                reservations: self.reservations,
                idempotency: self.idempotency,
                kv: self.kv,
                loaded_scopes: self.loaded_scopes,
            })
        })
    }

    /// The buffered writes as statement parameters (and the head they move the chain to),
    /// leaving the buffer empty.
    fn take_writes(&mut self) -> Option<FlushArgs> {
        if self.pending.is_empty() {
            return None;
        }
        let p = std::mem::take(&mut self.pending);
        let args = FlushArgs::new(p, self.head.as_ref(), self.locked_seq);
        if args.moved {
            self.locked_seq = args.head_seq as u64;
        }
        Some(args)
    }
}

#[derive(Clone, Default)]
struct Pending {
    budgets: BTreeMap<(String, Unit), Budget>,
    reservations: BTreeMap<String, Reservation>,
    idempotency: BTreeMap<(String, String), IdempotencyEntry>,
    audit: Vec<SealedRecord>,
    kv: BTreeMap<(String, String), serde_json::Value>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.budgets.is_empty()
            && self.reservations.is_empty()
            && self.idempotency.is_empty()
            && self.audit.is_empty()
            && self.kv.is_empty()
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("ledger values serialize")
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, body: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|e| corrupt(format!("{what}: {e}")))
}

/// The scopes a reservation holds, as stored in `hold_scopes`.
fn hold_scopes(r: &Reservation) -> String {
    let mut scopes: Vec<&str> = r
        .holds
        .iter()
        .flat_map(|h| h.scopes.iter().map(String::as_str))
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    scopes.join("\n")
}

fn limit_param(limit: usize) -> i64 {
    limit.min(i64::MAX as usize) as i64
}

fn budget_from_row(r: &Row) -> Result<Budget> {
    budget_from_cols(r, 0)
}

/// A budget from the nine budget columns starting at column `at`.
fn budget_from_cols(r: &Row, at: usize) -> Result<Budget> {
    let get = |e: PgError| corrupt(format!("budget row: {}", pg_msg(&e)));
    let unit: String = r.try_get(at + 1).map_err(get)?;
    let status: String = r.try_get(at + 7).map_err(get)?;
    Ok(Budget {
        scope: r.try_get(at).map_err(get)?,
        unit: Unit::parse(&unit).map_err(|_| corrupt(format!("budget unit {unit:?}")))?,
        allocated: r.try_get(at + 2).map_err(get)?,
        spent: r.try_get(at + 3).map_err(get)?,
        reserved: r.try_get(at + 4).map_err(get)?,
        debt: r.try_get(at + 5).map_err(get)?,
        overdraft_limit: r.try_get(at + 6).map_err(get)?,
        status: BudgetStatus::parse(&status)
            .map_err(|_| corrupt(format!("budget status {status:?}")))?,
        is_over_limit: r.try_get(at + 8).map_err(get)?,
    })
}

impl<'a> PgTxn<'a> {
    /// Records a database error (so the caller can decide to retry) and converts it.
    fn db_error(&mut self, e: PgError) -> CyclesError {
        let fault = classify(self.conn.is_closed(), &e);
        if fault == Fault::Lost {
            self.conn.broken = true;
        }
        let msg = pg_msg(&e);
        if self.st.fault.is_none() {
            self.st.fault = Some((fault, msg.clone()));
        }
        if fault == Fault::Corrupt {
            return corrupt(msg);
        }
        unavailable(msg)
    }

    fn query(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        if let Some((_, msg)) = &self.st.fault {
            // The transaction is already aborted on the server.
            return Err(unavailable(msg.clone()));
        }
        if !self.st.begun {
            return self
                .begin(Some((sql, params)))
                .map(Option::unwrap_or_default);
        }
        match self.conn.query(sql, params) {
            Ok(rows) => Ok(rows),
            Err(e) => Err(self.db_error(e)),
        }
    }

    /// Opens the transaction (a write takes the chain head first), pipelined with `first`.
    fn begin(
        &mut self,
        first: Option<(&'static str, &[&(dyn ToSql + Sync)])>,
    ) -> Result<Option<Vec<Row>>> {
        let sql = if self.writable {
            BEGIN_WRITE
        } else {
            BEGIN_READ
        };
        let (begin, rows) = match self.conn.begin_pipelined(sql, first) {
            Ok(answers) => answers,
            Err(e) => return Err(self.db_error(e)),
        };
        let msgs = match begin {
            Ok(m) => m,
            Err(e) => return Err(self.db_error(e)),
        };
        self.st.begun = true;
        if self.writable {
            let head = msgs.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some((
                    r.get(0).and_then(|s| s.parse::<u64>().ok()),
                    r.get(1).map(str::to_string),
                    r.get(2).and_then(|s| s.parse::<i64>().ok()),
                )),
                _ => None,
            });
            let Some((Some(seq), Some(hash), Some(version))) = head else {
                return Err(corrupt("the audit chain head row is missing"));
            };
            self.st.locked_seq = seq;
            self.st.head = Some((seq, hash));
            self.st.begin_head = self.st.head.clone();
            self.st.version = version;
            self.st.base = self
                .st
                .carry_in
                .take()
                .filter(|carry| carry.version == version);
        }
        rows.map(|r| r.map_err(|e| self.db_error(e))).transpose()
    }

    fn ensure_begun(&mut self) -> Result<()> {
        if let Some((_, msg)) = &self.st.fault {
            return Err(unavailable(msg.clone()));
        }
        if !self.st.begun {
            self.begin(None)?;
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(unavailable("write attempted in a read transaction"))
        }
    }

    /// Caches budgets read under the chain head (a pending write of ours stays as it is) and
    /// notes that `scopes` are complete.
    fn cache_budgets(&mut self, scopes: impl IntoIterator<Item = String>, budgets: Vec<Budget>) {
        for b in budgets {
            self.st
                .budgets
                .entry((b.scope.clone(), b.unit))
                .or_insert(Some(b));
        }
        self.st.loaded_scopes.extend(scopes);
    }

    /// The buffered writes as statement parameters (and the head they move the chain to),
    /// leaving the buffer empty.
    fn take_writes(&mut self) -> Option<FlushArgs> {
        self.st.take_writes()
    }

    /// Sends every buffered write in one statement (before a query that lists rows).
    fn flush(&mut self) -> Result<()> {
        if self.st.pending.is_empty() {
            return Ok(());
        }
        self.ensure_begun()?;
        if self.st.in_savepoint && !self.st.savepoint_set {
            if let Err(e) = self.conn.batch("SAVEPOINT cycles_op") {
                return Err(self.db_error(e));
            }
            self.st.savepoint_set = true;
        }
        if let Some(args) = self.take_writes() {
            let rows = self.query(FLUSH, &args.params())?;
            self.st.version = rows
                .first()
                .and_then(|r| r.try_get::<_, i64>(0).ok())
                .ok_or_else(|| corrupt("the flush returned no version"))?;
        }
        Ok(())
    }
}

/// The parameters of [`FLUSH`]: one array per column.
struct FlushArgs {
    b_scope: Vec<String>,
    b_unit: Vec<&'static str>,
    b_alloc: Vec<i64>,
    b_spent: Vec<i64>,
    b_reserved: Vec<i64>,
    b_debt: Vec<i64>,
    b_overdraft: Vec<i64>,
    b_status: Vec<&'static str>,
    b_over: Vec<bool>,
    r_id: Vec<String>,
    r_status: Vec<&'static str>,
    r_deadline: Vec<i64>,
    r_body: Vec<String>,
    r_scopes: Vec<String>,
    i_op: Vec<String>,
    i_key: Vec<String>,
    i_digest: Vec<String>,
    i_result: Vec<String>,
    a_seq: Vec<i64>,
    a_time: Vec<i64>,
    a_kind: Vec<&'static str>,
    a_hash: Vec<String>,
    a_body: Vec<String>,
    k_ns: Vec<String>,
    k_key: Vec<String>,
    k_value: Vec<String>,
    head_seq: i64,
    head_hash: String,
    moved: bool,
    locked_seq: i64,
}

impl FlushArgs {
    fn new(p: Pending, head: Option<&(u64, String)>, locked_seq: u64) -> Self {
        let budgets: Vec<Budget> = p.budgets.into_values().collect();
        let reservations: Vec<Reservation> = p.reservations.into_values().collect();
        let (head_seq, head_hash) = match (head, p.audit.last()) {
            (_, Some(last)) => (last.seq() as i64, last.hash().to_string()),
            (Some((s, h)), None) => (*s as i64, h.clone()),
            (None, None) => (0, String::new()),
        };
        let a_seq = p.audit.iter().map(|a| a.seq() as i64).collect();
        let a_time = p.audit.iter().map(|a| a.time_ms()).collect();
        let a_kind = p.audit.iter().map(|a| a.kind().as_str()).collect();
        let moved = !p.audit.is_empty();
        let (a_hash, a_body) = p
            .audit
            .into_iter()
            .map(SealedRecord::into_hash_and_json)
            .unzip();
        FlushArgs {
            b_unit: budgets.iter().map(|b| b.unit.as_str()).collect(),
            b_alloc: budgets.iter().map(|b| b.allocated).collect(),
            b_spent: budgets.iter().map(|b| b.spent).collect(),
            b_reserved: budgets.iter().map(|b| b.reserved).collect(),
            b_debt: budgets.iter().map(|b| b.debt).collect(),
            b_overdraft: budgets.iter().map(|b| b.overdraft_limit).collect(),
            b_status: budgets.iter().map(|b| b.status.as_str()).collect(),
            b_over: budgets.iter().map(|b| b.is_over_limit).collect(),
            b_scope: budgets.into_iter().map(|b| b.scope).collect(),
            r_status: reservations.iter().map(|r| r.status.as_str()).collect(),
            r_deadline: reservations
                .iter()
                .map(|r| r.expires_at_ms.saturating_add(r.grace_ms))
                .collect(),
            r_body: reservations.iter().map(to_json).collect(),
            r_scopes: reservations.iter().map(hold_scopes).collect(),
            r_id: reservations.into_iter().map(|r| r.reservation_id).collect(),
            i_digest: p
                .idempotency
                .values()
                .map(|e| e.request_digest.clone())
                .collect(),
            i_result: p.idempotency.values().map(|e| to_json(&e.result)).collect(),
            i_op: p.idempotency.keys().map(|k| k.0.clone()).collect(),
            i_key: p.idempotency.into_keys().map(|k| k.1).collect(),
            a_seq,
            a_time,
            a_kind,
            a_hash,
            moved,
            a_body,
            k_value: p.kv.values().map(to_json).collect(),
            k_ns: p.kv.keys().map(|k| k.0.clone()).collect(),
            k_key: p.kv.into_keys().map(|k| k.1).collect(),
            head_seq,
            head_hash,
            locked_seq: locked_seq as i64,
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 30] {
        [
            &self.b_scope,
            &self.b_unit,
            &self.b_alloc,
            &self.b_spent,
            &self.b_reserved,
            &self.b_debt,
            &self.b_overdraft,
            &self.b_status,
            &self.b_over,
            &self.r_id,
            &self.r_status,
            &self.r_deadline,
            &self.r_body,
            &self.i_op,
            &self.i_key,
            &self.i_digest,
            &self.i_result,
            &self.a_seq,
            &self.a_time,
            &self.a_kind,
            &self.a_hash,
            &self.a_body,
            &self.k_ns,
            &self.k_key,
            &self.k_value,
            &self.head_seq,
            &self.head_hash,
            &self.moved,
            &self.locked_seq,
            &self.r_scopes,
        ]
    }
}

impl LedgerTxn for PgTxn<'_> {
    fn budget(&mut self, scope: &str, unit: Unit) -> Result<Option<Budget>> {
        if let Some(b) = self.st.known_budget(scope, unit) {
            return Ok(b);
        }
        // Every unit of the scope at once: a call usually holds several.
        let rows = self.query(
            "SELECT scope, unit, allocated, spent, reserved, debt, overdraft_limit, status, \
             is_over_limit FROM cycles_budgets WHERE scope = $1",
            &[&scope],
        )?;
        let budgets = rows
            .iter()
            .map(budget_from_row)
            .collect::<Result<Vec<_>>>()?;
        let found = budgets.iter().find(|b| b.unit == unit).cloned();
        if self.writable {
            self.cache_budgets(std::iter::once(scope.to_string()), budgets);
        }
        Ok(found)
    }

    fn put_budget(&mut self, budget: &Budget) -> Result<()> {
        self.check_writable()?;
        let key = (budget.scope.clone(), budget.unit);
        self.st.budgets.insert(key.clone(), Some(budget.clone()));
        self.st.pending.budgets.insert(key, budget.clone());
        Ok(())
    }

    fn budgets(&mut self, scope: Option<&str>) -> Result<Vec<Budget>> {
        self.flush()?;
        let rows = self.query(
            "SELECT scope, unit, allocated, spent, reserved, debt, overdraft_limit, status, \
             is_over_limit FROM cycles_budgets \
             WHERE $1::text IS NULL OR scope = $1 OR left(scope, length($1) + 1) = $1 || '/'",
            &[&scope],
        )?;
        let mut out = rows
            .iter()
            .map(budget_from_row)
            .collect::<Result<Vec<_>>>()?;
        // The prefix filter is a convenience for the index; the rule is scope_within.
        out.retain(|b| scope.is_none_or(|s| scope_within(&b.scope, s)));
        out.sort_by(|a, b| (&a.scope, a.unit).cmp(&(&b.scope, b.unit)));
        Ok(out)
    }

    fn reservation(&mut self, id: &str) -> Result<Option<Reservation>> {
        if let Some(r) = self.st.known_reservation(id) {
            return Ok(r);
        }
        if !self.writable {
            let rows = self.query("SELECT body FROM cycles_reservations WHERE id = $1", &[&id])?;
            return rows
                .first()
                .map(|row| parse_json(&format!("reservation {id}"), row.get::<_, &str>(0)))
                .transpose();
        }
        // A write that reads a reservation goes on to its budgets: fetch them in the same
        // round trip.
        let rows = self.query(
            "SELECT r.body, r.hold_scopes, b.scope, b.unit, b.allocated, b.spent, b.reserved, \
             b.debt, b.overdraft_limit, b.status, b.is_over_limit \
             FROM cycles_reservations r LEFT JOIN cycles_budgets b \
             ON b.scope = ANY (string_to_array(r.hold_scopes, E'\\n')) WHERE r.id = $1",
            &[&id],
        )?;
        let Some(first) = rows.first() else {
            self.st.reservations.insert(id.to_string(), None);
            return Ok(None);
        };
        let r: Reservation = parse_json(&format!("reservation {id}"), first.get::<_, &str>(0))?;
        let scopes: String = first.get(1);
        let mut budgets = Vec::new();
        for row in &rows {
            if row.get::<_, Option<&str>>(2).is_some() {
                budgets.push(budget_from_cols(row, 2)?);
            }
        }
        let scopes: Vec<String> = scopes
            .split('\n')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        self.cache_budgets(scopes, budgets);
        self.st.reservations.insert(id.to_string(), Some(r.clone()));
        Ok(Some(r))
    }

    fn put_reservation(&mut self, r: &Reservation) -> Result<()> {
        self.check_writable()?;
        self.st
            .reservations
            .insert(r.reservation_id.clone(), Some(r.clone()));
        self.st
            .pending
            .reservations
            .insert(r.reservation_id.clone(), r.clone());
        Ok(())
    }

    fn reservations(
        &mut self,
        status: Option<ReservationStatus>,
        limit: usize,
    ) -> Result<Vec<Reservation>> {
        self.flush()?;
        let rows = self.query(
            "SELECT id, body FROM cycles_reservations WHERE $1::text IS NULL OR status = $1 \
             ORDER BY created_seq LIMIT $2",
            &[&status.map(|s| s.as_str()), &limit_param(limit)],
        )?;
        rows.iter()
            .map(|row| {
                let id: &str = row.get(0);
                parse_json(&format!("reservation {id}"), row.get::<_, &str>(1))
            })
            .collect()
    }

    fn expired_reservation_ids(&mut self, now_ms: i64, limit: usize) -> Result<Vec<String>> {
        self.flush()?;
        let rows = self.query(
            "SELECT id FROM cycles_reservations WHERE status = 'ACTIVE' AND deadline_ms < $1 \
             ORDER BY deadline_ms, id LIMIT $2",
            &[&now_ms, &limit_param(limit)],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn idempotency(&mut self, op: &str, key: &str) -> Result<Option<IdempotencyEntry>> {
        let k = (op.to_string(), key.to_string());
        if let Some(e) = self.st.known_idempotency(&k) {
            return Ok(e);
        }
        let rows = self.query(
            "SELECT request_digest, result FROM cycles_idempotency WHERE op = $1 AND key = $2",
            &[&op, &key],
        )?;
        let e = rows
            .first()
            .map(|row| -> Result<IdempotencyEntry> {
                Ok(IdempotencyEntry {
                    request_digest: row.get(0),
                    result: parse_json(&format!("idempotency {op}/{key}"), row.get::<_, &str>(1))?,
                })
            })
            .transpose()?;
        if self.writable {
            self.st.idempotency.insert(k, e.clone());
        }
        Ok(e)
    }

    fn idempotency_entries(&mut self) -> Result<Vec<(String, String, IdempotencyEntry)>> {
        self.flush()?;
        let rows = self.query(
            "SELECT op, key, request_digest, result FROM cycles_idempotency",
            &[],
        )?;
        let mut out = rows
            .iter()
            .map(|row| {
                let (op, key): (String, String) = (row.get(0), row.get(1));
                let result = parse_json(&format!("idempotency {op}/{key}"), row.get::<_, &str>(3))?;
                let entry = IdempotencyEntry {
                    request_digest: row.get(2),
                    result,
                };
                Ok((op, key, entry))
            })
            .collect::<Result<Vec<_>>>()?;
        // Sorted here, as kv_list is: the same order as the other backends whatever the
        // database's collation.
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(out)
    }

    fn put_idempotency(&mut self, op: &str, key: &str, entry: &IdempotencyEntry) -> Result<()> {
        self.check_writable()?;
        let k = (op.to_string(), key.to_string());
        self.st.idempotency.insert(k.clone(), Some(entry.clone()));
        self.st.pending.idempotency.insert(k, entry.clone());
        Ok(())
    }

    fn audit_head(&mut self) -> Result<Option<(u64, String)>> {
        if !self.writable {
            let rows = self.query("SELECT seq, hash FROM cycles_audit_head WHERE id = 1", &[])?;
            let row = rows
                .first()
                .ok_or_else(|| corrupt("the audit chain head row is missing"))?;
            let seq: i64 = row.get(0);
            return Ok((seq > 0).then(|| (seq as u64, row.get(1))));
        }
        self.ensure_begun()?;
        Ok(self.st.head.clone().filter(|(seq, _)| *seq > 0))
    }

    fn append_audit(&mut self, sealed: SealedRecord) -> Result<()> {
        self.check_writable()?;
        self.ensure_begun()?;
        let expected = self.st.head.as_ref().map_or(0, |h| h.0) + 1;
        if sealed.seq() != expected {
            return Err(corrupt(format!(
                "audit record {} appended where {expected} was expected",
                sealed.seq()
            )));
        }
        self.st.head = Some((sealed.seq(), sealed.hash().to_string()));
        self.st.last_appended = self.st.head.clone();
        self.st.pending.audit.push(sealed);
        Ok(())
    }

    fn audit_page(&mut self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        self.flush()?;
        let rows = self.query(
            "SELECT seq, body FROM cycles_audit WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[
                &(after_seq.min(i64::MAX as u64) as i64),
                &limit_param(limit),
            ],
        )?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.get(0);
                let rec: AuditRecord =
                    parse_json(&format!("audit record {seq}"), row.get::<_, &str>(1))?;
                if rec.seq as i64 != seq {
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
        let k = (ns.to_string(), key.to_string());
        if let Some(v) = self.st.known_kv(&k) {
            return Ok(v);
        }
        let rows = self.query(
            "SELECT value FROM cycles_kv WHERE ns = $1 AND key = $2",
            &[&ns, &key],
        )?;
        let v = rows
            .first()
            .map(|row| parse_json(&format!("kv {ns}/{key}"), row.get::<_, &str>(0)))
            .transpose()?;
        if self.writable {
            self.st.kv.insert(k, v.clone());
        }
        Ok(v)
    }

    fn kv_put(&mut self, ns: &str, key: &str, value: &serde_json::Value) -> Result<()> {
        self.check_writable()?;
        let k = (ns.to_string(), key.to_string());
        self.st.kv.insert(k.clone(), Some(value.clone()));
        self.st.pending.kv.insert(k, value.clone());
        Ok(())
    }

    fn kv_list(&mut self, ns: &str) -> Result<Vec<(String, serde_json::Value)>> {
        self.flush()?;
        let rows = self.query("SELECT key, value FROM cycles_kv WHERE ns = $1", &[&ns])?;
        let mut out = rows
            .iter()
            .map(|row| {
                let k: String = row.get(0);
                let v = parse_json(&format!("kv {ns}/{k}"), row.get::<_, &str>(1))?;
                Ok((k, v))
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

impl Ledger for PostgresLedger {
    fn write(&self, f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>) -> Result<()> {
        if !self.options.group_commit {
            return self.run(f, Self::write_once);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.write_grouped(f) {
                Ok(()) => return Ok(()),
                Err(Attempt::Retry(_)) if attempt < self.max_attempts() => continue,
                Err(Attempt::Retry(e)) | Err(Attempt::Fail(e)) => return Err(e),
            }
        }
    }

    fn read(&self, f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>) -> Result<()> {
        self.run(f, Self::read_once)
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_param_is_taken_out_of_urls() {
        let (u, s) =
            split_schema_param("postgres://u@h:5/db?schema=ab_1&connect_timeout=3").unwrap();
        assert_eq!(u, "postgres://u@h:5/db?connect_timeout=3");
        assert_eq!(s.as_deref(), Some("ab_1"));
        let (u, s) = split_schema_param("postgresql://u@h/db?schema=x").unwrap();
        assert_eq!(u, "postgresql://u@h/db");
        assert_eq!(s.as_deref(), Some("x"));
        let (u, s) = split_schema_param("host=h user=u").unwrap();
        assert_eq!(u, "host=h user=u");
        assert_eq!(s, None);
    }

    #[test]
    fn schema_names_are_validated() {
        assert!(validate_schema("cycles_1").is_ok());
        for bad in ["", "1abc", "Caps", "a-b", "a;drop", &"x".repeat(64)] {
            assert_eq!(
                validate_schema(bad).unwrap_err().code(),
                "INVALID_REQUEST",
                "{bad:?}"
            );
        }
    }
}
