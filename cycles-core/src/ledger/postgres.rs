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
//! # Durability and throughput
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
//! Writes are buffered in the transaction and sent in one statement before `COMMIT`; a lost
//! connection before `COMMIT` leaves nothing behind (the server rolls back) and the closure
//! is re-run on a fresh connection. A connection lost *during* `COMMIT` is resolved by
//! locking the chain head on a new connection and looking for the audit record the
//! transaction appended. Every failure is reported as [`CyclesError::LedgerUnavailable`],
//! which the gate turns into DENY `LEDGER_UNAVAILABLE`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, NoTls, SimpleQueryMessage, Statement};

use super::{IdempotencyEntry, Ledger, LedgerTxn, Synchronous, scope_within};
use crate::audit::AuditRecord;
use crate::error::{CyclesError, Result};
use crate::model::{Budget, BudgetStatus, Reservation, ReservationStatus, Unit};

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
    hash TEXT NOT NULL
);
INSERT INTO cycles_audit_head (id, seq, hash) VALUES (1, 0, '');
CREATE TABLE cycles_kv (
    ns TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (ns, key)
);
"#;

/// Key of the advisory lock that serialises schema creation between processes.
const MIGRATION_LOCK: i64 = 0x6379_636c_6573; // "cycles"

const BEGIN_WRITE: &str = "BEGIN ISOLATION LEVEL READ COMMITTED; \
     SET LOCAL synchronous_commit TO off; \
     SELECT seq, hash FROM cycles_audit_head WHERE id = 1 FOR UPDATE";
const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
/// A transaction of its own that writes one WAL record (a logical decoding message, which
/// nothing consumes) so that its commit, with `synchronous_commit = on`, waits for the WAL
/// flush past its own commit record, which comes after ours. (A transaction that only takes
/// an xid, such as `SELECT txid_current()`, writes no WAL before its commit record and is
/// committed asynchronously: the crash test caught exactly that.)
const DURABILITY_BARRIER: &str = "SELECT pg_logical_emit_message(true, 'cycles', '')";

const FLUSH: &str = "WITH
b AS (
  INSERT INTO cycles_budgets (scope, unit, allocated, spent, reserved, debt, overdraft_limit, status, is_over_limit)
  SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::text[], $9::bool[])
  ON CONFLICT (scope, unit) DO UPDATE SET allocated = EXCLUDED.allocated, spent = EXCLUDED.spent,
    reserved = EXCLUDED.reserved, debt = EXCLUDED.debt, overdraft_limit = EXCLUDED.overdraft_limit,
    status = EXCLUDED.status, is_over_limit = EXCLUDED.is_over_limit
  RETURNING 1),
r AS (
  INSERT INTO cycles_reservations (id, status, deadline_ms, body)
  SELECT * FROM unnest($10::text[], $11::text[], $12::int8[], $13::text[])
  ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, deadline_ms = EXCLUDED.deadline_ms,
    body = EXCLUDED.body
  RETURNING 1),
i AS (
  INSERT INTO cycles_idempotency (op, key, request_digest, result)
  SELECT * FROM unnest($14::text[], $15::text[], $16::text[], $17::text[])
  ON CONFLICT (op, key) DO UPDATE SET request_digest = EXCLUDED.request_digest, result = EXCLUDED.result
  RETURNING 1),
a AS (
  INSERT INTO cycles_audit (seq, time_ms, kind, hash, body)
  SELECT * FROM unnest($18::int8[], $19::int8[], $20::text[], $21::text[], $22::text[])
  RETURNING 1),
k AS (
  INSERT INTO cycles_kv (ns, key, value)
  SELECT * FROM unnest($23::text[], $24::text[], $25::text[])
  ON CONFLICT (ns, key) DO UPDATE SET value = EXCLUDED.value
  RETURNING 1),
h AS (
  UPDATE cycles_audit_head SET seq = $26, hash = $27
  WHERE id = 1 AND $28::bool AND seq = $29
  RETURNING 1)
SELECT (SELECT count(*) FROM b), (SELECT count(*) FROM r), (SELECT count(*) FROM i),
       (SELECT count(*) FROM a), (SELECT count(*) FROM k), (SELECT count(*) FROM h)";

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
fn pg_msg(e: &postgres::Error) -> String {
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
        let mut config: postgres::Config = url
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
        let c = &mut conn.client;
        let run = |c: &mut Client| -> std::result::Result<i32, postgres::Error> {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            if let Some(s) = &self.options.schema {
                // The name is validated: lowercase, digits, underscore.
                tx.batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {s}; SET LOCAL search_path TO {s}"
                ))?;
            }
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS cycles_schema_version (
                     id INT PRIMARY KEY CHECK (id = 1), version INT NOT NULL)",
            )?;
            let version: i32 = tx
                .query_opt(
                    "SELECT version FROM cycles_schema_version WHERE id = 1",
                    &[],
                )?
                .map_or(0, |r| r.get(0));
            if version > SCHEMA_VERSION {
                return Ok(version);
            }
            for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > version) {
                tx.batch_execute(sql)?;
                tx.execute(
                    "INSERT INTO cycles_schema_version (id, version) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
                    &[v],
                )?;
            }
            tx.commit()?;
            // Fails early (and closed) where the durability barrier is not permitted.
            c.simple_query(DURABILITY_BARRIER)?;
            Ok(version)
        };
        let version = run(c).map_err(|e| {
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
        let row = conn
            .client
            .query_one(
                "SELECT version FROM cycles_schema_version WHERE id = 1",
                &[],
            )
            .map_err(|e| unavailable(format!("{}: {}", self.describe, pg_msg(&e))))?;
        Ok(row.get(0))
    }

    /// The options this ledger runs with.
    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    /// Test hook: runs raw SQL in the ledger's schema (to simulate tampering). Not stable API.
    #[doc(hidden)]
    pub fn execute_raw(&self, sql: &str) -> Result<()> {
        let mut conn = self.checkout()?;
        conn.client
            .batch_execute(sql)
            .map_err(|e| unavailable(format!("{}: {}", self.describe, pg_msg(&e))))
    }

    /// Most attempts of one operation: enough to skip every stale pooled connection after a
    /// server restart, then one more.
    fn max_attempts(&self) -> u32 {
        self.options.pool_size + 3
    }

    fn write_once(
        &self,
        conn: &mut PgConn,
        f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>,
    ) -> std::result::Result<(), Attempt> {
        let head = begin_write(conn)?;
        let mut txn = PgTxn::new(conn, true, Some(head));
        let outcome = f(&mut txn);
        let outcome = outcome.and_then(|()| txn.flush());
        if let Some(fault) = txn.fault.take() {
            return Err(abort(conn, fault));
        }
        if let Err(e) = outcome {
            rollback(conn);
            return Err(Attempt::Fail(e));
        }
        let appended = txn.last_appended.take();
        drop(txn);
        if let Err(e) = conn.client.batch_execute("COMMIT") {
            return match classify(&conn.client, &e) {
                Fault::Lost => {
                    conn.broken = true;
                    self.resolve_commit(appended, &e)
                }
                fault => Err(abort(conn, (fault, pg_msg(&e)))),
            };
        }
        if self.options.synchronous == Synchronous::Full
            && let Err(e) = conn.client.simple_query(DURABILITY_BARRIER)
        {
            conn.broken = true;
            // Committed, but not known to be durable: check it from a new session.
            return self.resolve_commit(appended, &e);
        }
        Ok(())
    }

    /// After the connection was lost while committing: waits for the chain head (so the old
    /// session's transaction has finished one way or the other), then looks for the last
    /// audit record the transaction appended. Found: committed, and made durable here. Absent:
    /// never committed, so the operation may run again.
    fn resolve_commit(
        &self,
        appended: Option<(u64, String)>,
        cause: &postgres::Error,
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
        let mut conn = self.checkout().map_err(|e| unknown(e.to_string()))?;
        let found = (|| -> std::result::Result<Option<String>, postgres::Error> {
            let mut tx = conn.client.transaction()?;
            tx.query_one(
                "SELECT seq FROM cycles_audit_head WHERE id = 1 FOR UPDATE",
                &[],
            )?;
            let row = tx.query_opt(
                "SELECT hash FROM cycles_audit WHERE seq = $1",
                &[&(seq as i64)],
            )?;
            tx.commit()?;
            Ok(row.map(|r| r.get(0)))
        })();
        match found {
            Err(e) => {
                conn.broken = true;
                Err(unknown(pg_msg(&e)))
            }
            Ok(Some(h)) if h == hash => {
                if self.options.synchronous == Synchronous::Full
                    && let Err(e) = conn.client.simple_query(DURABILITY_BARRIER)
                {
                    conn.broken = true;
                    return Err(unknown(pg_msg(&e)));
                }
                Ok(())
            }
            Ok(_) => Err(Attempt::Retry(unavailable(format!(
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
        if let Err(e) = conn.client.batch_execute(BEGIN_READ) {
            let fault = classify(&conn.client, &e);
            return Err(abort(conn, (fault, pg_msg(&e))));
        }
        let mut txn = PgTxn::new(conn, false, None);
        let outcome = f(&mut txn);
        if let Some(fault) = txn.fault.take() {
            return Err(abort(conn, fault));
        }
        drop(txn);
        // A read-only transaction has nothing to commit; end it either way.
        rollback(conn);
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

fn describe(config: &postgres::Config, schema: Option<&str>) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
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
    /// Anything else (lock timeout, constraint violation): give up.
    Other,
}

fn classify(client: &Client, e: &postgres::Error) -> Fault {
    if client.is_closed() || e.is_closed() {
        return Fault::Lost;
    }
    match e.code() {
        // No SQLSTATE: an I/O or protocol error, so the session cannot be trusted.
        None => Fault::Lost,
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => Fault::Conflict,
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => Fault::Conflict,
        // Connection exceptions and operator intervention (shutdown, terminated session).
        Some(c) if c.code().starts_with("08") || c.code().starts_with("57P") => Fault::Lost,
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

fn rollback(conn: &mut PgConn) {
    if conn.client.batch_execute("ROLLBACK").is_err() {
        conn.broken = true;
    }
}

/// Ends a transaction that hit `fault` and says whether the operation may run again.
fn abort(conn: &mut PgConn, (fault, msg): (Fault, String)) -> Attempt {
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
        Fault::Other => {
            rollback(conn);
            Attempt::Fail(err)
        }
    }
}

/// `BEGIN`, then the chain head lock, in one round trip. Returns the head.
fn begin_write(conn: &mut PgConn) -> std::result::Result<(u64, String), Attempt> {
    let msgs = match conn.client.simple_query(BEGIN_WRITE) {
        Ok(m) => m,
        Err(e) => {
            let fault = classify(&conn.client, &e);
            return Err(abort(conn, (fault, pg_msg(&e))));
        }
    };
    let head = msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some((
            r.get(0).and_then(|s| s.parse::<u64>().ok()),
            r.get(1).map(str::to_string),
        )),
        _ => None,
    });
    match head {
        Some((Some(seq), Some(hash))) => Ok((seq, hash)),
        _ => {
            rollback(conn);
            Err(Attempt::Fail(corrupt(
                "the audit chain head row is missing",
            )))
        }
    }
}

/// A pooled session: the client and its prepared statements.
struct PgConn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    broken: bool,
}

struct Manager {
    config: postgres::Config,
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
        Ok(PgConn {
            client: self
                .config
                .connect(NoTls)
                .map_err(|e| ConnectError(pg_msg(&e)))?,
            statements: HashMap::new(),
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> std::result::Result<(), ConnectError> {
        conn.client
            .simple_query("")
            .map(|_| ())
            .map_err(|e| ConnectError(pg_msg(&e)))
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.broken || conn.client.is_closed()
    }
}

/// One transaction. Writes are buffered and sent in one statement ([`FLUSH`]) before a list
/// query or the commit; point reads are cached, which is sound because a write transaction
/// holds the chain head and so no other writer can change a row under it.
struct PgTxn<'a> {
    conn: &'a mut PgConn,
    writable: bool,
    /// `(seq, hash)` of the chain head, including our own appends (write transactions).
    head: Option<(u64, String)>,
    /// The head as read under the lock: the flush checks that nobody moved it.
    locked_seq: u64,
    budgets: HashMap<(String, Unit), Option<Budget>>,
    reservations: HashMap<String, Option<Reservation>>,
    idempotency: HashMap<(String, String), Option<IdempotencyEntry>>,
    kv: HashMap<(String, String), Option<serde_json::Value>>,
    pending: Pending,
    last_appended: Option<(u64, String)>,
    fault: Option<(Fault, String)>,
}

#[derive(Default)]
struct Pending {
    budgets: BTreeMap<(String, Unit), Budget>,
    reservations: BTreeMap<String, Reservation>,
    idempotency: BTreeMap<(String, String), IdempotencyEntry>,
    audit: Vec<AuditRecord>,
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

fn limit_param(limit: usize) -> i64 {
    limit.min(i64::MAX as usize) as i64
}

fn budget_from_row(r: &postgres::Row) -> Result<Budget> {
    let get = |e: postgres::Error| corrupt(format!("budget row: {}", pg_msg(&e)));
    let unit: String = r.try_get(1).map_err(get)?;
    let status: String = r.try_get(7).map_err(get)?;
    Ok(Budget {
        scope: r.try_get(0).map_err(get)?,
        unit: Unit::parse(&unit).map_err(|_| corrupt(format!("budget unit {unit:?}")))?,
        allocated: r.try_get(2).map_err(get)?,
        spent: r.try_get(3).map_err(get)?,
        reserved: r.try_get(4).map_err(get)?,
        debt: r.try_get(5).map_err(get)?,
        overdraft_limit: r.try_get(6).map_err(get)?,
        status: BudgetStatus::parse(&status)
            .map_err(|_| corrupt(format!("budget status {status:?}")))?,
        is_over_limit: r.try_get(8).map_err(get)?,
    })
}

impl<'a> PgTxn<'a> {
    fn new(conn: &'a mut PgConn, writable: bool, head: Option<(u64, String)>) -> Self {
        PgTxn {
            conn,
            writable,
            locked_seq: head.as_ref().map_or(0, |h| h.0),
            head,
            budgets: HashMap::new(),
            reservations: HashMap::new(),
            idempotency: HashMap::new(),
            kv: HashMap::new(),
            pending: Pending::default(),
            last_appended: None,
            fault: None,
        }
    }

    /// Records a database error (so the caller can decide to retry) and converts it.
    fn db_error(&mut self, e: postgres::Error) -> CyclesError {
        let fault = classify(&self.conn.client, &e);
        if fault == Fault::Lost {
            self.conn.broken = true;
        }
        let msg = pg_msg(&e);
        if self.fault.is_none() {
            self.fault = Some((fault, msg.clone()));
        }
        unavailable(msg)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>> {
        if let Some((_, msg)) = &self.fault {
            // The transaction is already aborted on the server.
            return Err(unavailable(msg.clone()));
        }
        let stmt = match self.conn.statements.get(sql) {
            Some(s) => s.clone(),
            None => match self.conn.client.prepare(sql) {
                Ok(s) => {
                    self.conn.statements.insert(sql, s.clone());
                    s
                }
                Err(e) => return Err(self.db_error(e)),
            },
        };
        match self.conn.client.query(&stmt, params) {
            Ok(rows) => Ok(rows),
            Err(e) => Err(self.db_error(e)),
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(unavailable("write attempted in a read transaction"))
        }
    }

    /// Sends every buffered write in one statement.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let p = std::mem::take(&mut self.pending);
        let b: Vec<&Budget> = p.budgets.values().collect();
        let b_scope: Vec<&str> = b.iter().map(|b| b.scope.as_str()).collect();
        let b_unit: Vec<&str> = b.iter().map(|b| b.unit.as_str()).collect();
        let b_alloc: Vec<i64> = b.iter().map(|b| b.allocated).collect();
        let b_spent: Vec<i64> = b.iter().map(|b| b.spent).collect();
        let b_reserved: Vec<i64> = b.iter().map(|b| b.reserved).collect();
        let b_debt: Vec<i64> = b.iter().map(|b| b.debt).collect();
        let b_od: Vec<i64> = b.iter().map(|b| b.overdraft_limit).collect();
        let b_status: Vec<&str> = b.iter().map(|b| b.status.as_str()).collect();
        let b_over: Vec<bool> = b.iter().map(|b| b.is_over_limit).collect();
        let r: Vec<&Reservation> = p.reservations.values().collect();
        let r_id: Vec<&str> = r.iter().map(|r| r.reservation_id.as_str()).collect();
        let r_status: Vec<&str> = r.iter().map(|r| r.status.as_str()).collect();
        let r_deadline: Vec<i64> = r
            .iter()
            .map(|r| r.expires_at_ms.saturating_add(r.grace_ms))
            .collect();
        let r_body: Vec<String> = r.iter().map(to_json).collect();
        let i_op: Vec<&str> = p.idempotency.keys().map(|k| k.0.as_str()).collect();
        let i_key: Vec<&str> = p.idempotency.keys().map(|k| k.1.as_str()).collect();
        let i_digest: Vec<&str> = p
            .idempotency
            .values()
            .map(|e| e.request_digest.as_str())
            .collect();
        let i_result: Vec<String> = p.idempotency.values().map(|e| to_json(&e.result)).collect();
        let a_seq: Vec<i64> = p.audit.iter().map(|a| a.seq as i64).collect();
        let a_time: Vec<i64> = p.audit.iter().map(|a| a.time_ms).collect();
        let a_kind: Vec<&str> = p.audit.iter().map(|a| a.kind.as_str()).collect();
        let a_hash: Vec<&str> = p.audit.iter().map(|a| a.hash.as_str()).collect();
        let a_body: Vec<String> = p.audit.iter().map(to_json).collect();
        let k_ns: Vec<&str> = p.kv.keys().map(|k| k.0.as_str()).collect();
        let k_key: Vec<&str> = p.kv.keys().map(|k| k.1.as_str()).collect();
        let k_value: Vec<String> = p.kv.values().map(to_json).collect();
        let moved = !p.audit.is_empty();
        let (head_seq, head_hash) = match (&self.head, p.audit.last()) {
            (_, Some(last)) => (last.seq as i64, last.hash.clone()),
            (Some((s, h)), None) => (*s as i64, h.clone()),
            (None, None) => (0, String::new()),
        };
        let locked_seq = self.locked_seq as i64;
        let rows = self.query(
            FLUSH,
            &[
                &b_scope,
                &b_unit,
                &b_alloc,
                &b_spent,
                &b_reserved,
                &b_debt,
                &b_od,
                &b_status,
                &b_over,
                &r_id,
                &r_status,
                &r_deadline,
                &r_body,
                &i_op,
                &i_key,
                &i_digest,
                &i_result,
                &a_seq,
                &a_time,
                &a_kind,
                &a_hash,
                &a_body,
                &k_ns,
                &k_key,
                &k_value,
                &head_seq,
                &head_hash,
                &moved,
                &locked_seq,
            ],
        )?;
        let counts: Vec<i64> = match rows.first() {
            Some(row) => (0..6).map(|i| row.get::<_, i64>(i)).collect(),
            None => return Err(corrupt("flush returned no row")),
        };
        let expected = [
            b.len() as i64,
            r.len() as i64,
            i_op.len() as i64,
            a_seq.len() as i64,
            k_ns.len() as i64,
            moved as i64,
        ];
        if counts != expected {
            return Err(corrupt(format!(
                "flush wrote {counts:?} rows, expected {expected:?} \
                 (a writer that bypassed the chain head lock?)"
            )));
        }
        if moved {
            self.locked_seq = head_seq as u64;
        }
        Ok(())
    }
}

impl LedgerTxn for PgTxn<'_> {
    fn budget(&mut self, scope: &str, unit: Unit) -> Result<Option<Budget>> {
        let key = (scope.to_string(), unit);
        if let Some(b) = self.budgets.get(&key) {
            return Ok(b.clone());
        }
        let rows = self.query(
            "SELECT scope, unit, allocated, spent, reserved, debt, overdraft_limit, status, \
             is_over_limit FROM cycles_budgets WHERE scope = $1 AND unit = $2",
            &[&scope, &unit.as_str()],
        )?;
        let b = rows.first().map(budget_from_row).transpose()?;
        if self.writable {
            self.budgets.insert(key, b.clone());
        }
        Ok(b)
    }

    fn put_budget(&mut self, budget: &Budget) -> Result<()> {
        self.check_writable()?;
        let key = (budget.scope.clone(), budget.unit);
        self.budgets.insert(key.clone(), Some(budget.clone()));
        self.pending.budgets.insert(key, budget.clone());
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
        if let Some(r) = self.reservations.get(id) {
            return Ok(r.clone());
        }
        let rows = self.query("SELECT body FROM cycles_reservations WHERE id = $1", &[&id])?;
        let r: Option<Reservation> = rows
            .first()
            .map(|row| parse_json(&format!("reservation {id}"), row.get::<_, &str>(0)))
            .transpose()?;
        if self.writable {
            self.reservations.insert(id.to_string(), r.clone());
        }
        Ok(r)
    }

    fn put_reservation(&mut self, r: &Reservation) -> Result<()> {
        self.check_writable()?;
        self.reservations
            .insert(r.reservation_id.clone(), Some(r.clone()));
        self.pending
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
        if let Some(e) = self.idempotency.get(&k) {
            return Ok(e.clone());
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
            self.idempotency.insert(k, e.clone());
        }
        Ok(e)
    }

    fn put_idempotency(&mut self, op: &str, key: &str, entry: &IdempotencyEntry) -> Result<()> {
        self.check_writable()?;
        let k = (op.to_string(), key.to_string());
        self.idempotency.insert(k.clone(), Some(entry.clone()));
        self.pending.idempotency.insert(k, entry.clone());
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
        Ok(self.head.clone().filter(|(seq, _)| *seq > 0))
    }

    fn append_audit(&mut self, record: &AuditRecord) -> Result<()> {
        self.check_writable()?;
        let expected = self.head.as_ref().map_or(0, |h| h.0) + 1;
        if record.seq != expected {
            return Err(corrupt(format!(
                "audit record {} appended where {expected} was expected",
                record.seq
            )));
        }
        self.head = Some((record.seq, record.hash.clone()));
        self.last_appended = self.head.clone();
        self.pending.audit.push(record.clone());
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
        if let Some(v) = self.kv.get(&k) {
            return Ok(v.clone());
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
            self.kv.insert(k, v.clone());
        }
        Ok(v)
    }

    fn kv_put(&mut self, ns: &str, key: &str, value: &serde_json::Value) -> Result<()> {
        self.check_writable()?;
        let k = (ns.to_string(), key.to_string());
        self.kv.insert(k.clone(), Some(value.clone()));
        self.pending.kv.insert(k, value.clone());
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
        self.run(f, Self::write_once)
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
