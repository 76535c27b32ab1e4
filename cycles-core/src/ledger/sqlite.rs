//! The embedded default: one SQLite file (WAL), safe for several threads and processes.
//!
//! Writes run in `BEGIN IMMEDIATE` transactions so concurrent writers queue on SQLite's lock
//! (with a busy timeout) instead of failing on upgrade; `synchronous=FULL` by default makes
//! every acknowledged operation durable across power loss.
//!
//! # Group commit
//!
//! With `synchronous=FULL` every transaction pays one fsync, which caps a file at a few
//! thousand transactions per second however many threads call it. With group commit (on by
//! default, [`SqliteOptions::group_commit`]) the threads of one process that write at the same
//! time share one transaction:
//!
//! - The first writer to take the connection opens `BEGIN IMMEDIATE` and runs its operation.
//!   Each later writer that finds that transaction open runs its own operation inside it,
//!   wrapped in a `SAVEPOINT`: an operation that fails (a validation error, `BUDGET_EXCEEDED`
//!   under `REJECT`, a panic) rolls back to its savepoint and leaves the others intact.
//! - A writer that finishes while other writers are waiting for the connection hands the open
//!   transaction on and waits; the one that finishes with nobody waiting (or when the batch is
//!   full) commits, then wakes the others. Nobody waits on a timer: a lone caller commits at
//!   once, exactly as without group commit.
//! - Every caller's `write` returns only after the transaction holding its operation is
//!   committed (durable under FULL). If that commit fails, every operation in it fails with
//!   `LEDGER_UNAVAILABLE` and none of them changed anything.
//! - Each closure runs on its caller's own thread (the connection moves between threads under
//!   a mutex, the closures never do), so no `unsafe` is needed and a closure may borrow
//!   anything from its caller's stack.
//! - Operations apply one after another on one connection, each reading the state its
//!   predecessors left, so the batch is equivalent to running them serially in that order; the
//!   audit chain, whose head each operation reads inside its savepoint, records that order.
//!
//! Several processes sharing a file still serialize on SQLite's write lock (`BEGIN IMMEDIATE`
//! with the busy timeout); a batch holds that lock for at most [`MAX_BATCH_OPS`] operations.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::checkpoint::Checkpointer;
use super::{IdempotencyEntry, Ledger, LedgerTxn};
use crate::audit::{AuditRecord, SealedRecord};
use crate::error::{CyclesError, Result};
use crate::model::{Budget, BudgetStatus, Reservation, ReservationStatus, Unit};

/// The budget columns, in the order `budget_from_row` reads them (a macro so that SQL using
/// it is a literal, prepared and looked up in the statement cache without formatting).
macro_rules! budget_cols {
    () => {
        "scope, unit, allocated, spent, reserved, debt, overdraft_limit, status, is_over_limit"
    };
}

/// The schema version this code writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

/// The longest [`SqliteOptions::busy_timeout`] accepted (SQLite takes it in `i32` milliseconds).
pub const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// The most operations one group-commit transaction takes before it commits, so that a
/// stream of writers cannot hold SQLite's write lock (and delay other processes) for long.
pub const MAX_BATCH_OPS: usize = 64;

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
    /// How long a writer waits for another process's lock (default 10 s, at most
    /// [`MAX_BUSY_TIMEOUT`]; more is `INVALID_REQUEST` at open).
    pub busy_timeout: Duration,
    /// Group commit (default on): concurrent writers of this process share one transaction,
    /// each operation in its own savepoint, each caller answered after the shared commit.
    /// See the [module documentation](self). Off: one transaction per operation.
    pub group_commit: bool,
    /// WAL checkpoints (default on) on a thread of the ledger's own while writes are sparse,
    /// instead of inside the commit that fills the WAL, which then waits for the copy and an
    /// fsync; while writes are dense they stay inline, as SQLite does. Off: SQLite's automatic
    /// checkpoint throughout.
    pub background_checkpoint: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(10),
            group_commit: true,
            background_checkpoint: true,
        }
    }
}

/// Counts of committed write transactions and of the operations they carried, since open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupCommitStats {
    /// Write transactions committed.
    pub transactions: u64,
    /// Successful write operations (closures that returned `Ok`) in those transactions.
    pub operations: u64,
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
    state: Mutex<ConnState>,
    /// Writers that have asked for `state` and not yet got it: a writer that finishes while
    /// this is non-zero hands its open transaction on instead of committing it.
    waiting: AtomicUsize,
    group_commit: bool,
    transactions: AtomicU64,
    operations: AtomicU64,
    /// Runs WAL checkpoints between sparse writes ([`SqliteOptions::background_checkpoint`]).
    /// Declared after `state`, so the ledger's connection closes before it stops.
    checkpointer: Option<Checkpointer>,
    path: PathBuf,
}

/// The connection and the group-commit transaction open on it, if any.
#[derive(Debug)]
struct ConnState {
    conn: Connection,
    batch: Option<Batch>,
}

/// An open group-commit transaction.
#[derive(Debug, Default)]
struct Batch {
    /// Operations run in it (successful or not).
    ops: usize,
    /// Operations run in it that succeeded.
    ok_ops: u64,
    /// Where callers that handed the transaction on wait for its outcome.
    waiters: Option<Arc<BatchOutcome>>,
}

/// The outcome of one batch, published once by whoever ends it.
#[derive(Debug, Default)]
struct BatchOutcome {
    /// `Some(Ok)` committed, `Some(Err(message))` rolled back.
    done: Mutex<Option<std::result::Result<(), String>>>,
    cv: Condvar,
}

impl BatchOutcome {
    fn publish(&self, outcome: std::result::Result<(), String>) {
        *self.done.lock() = Some(outcome);
        self.cv.notify_all();
    }

    fn wait(&self) -> std::result::Result<(), String> {
        let mut done = self.done.lock();
        loop {
            if let Some(outcome) = done.as_ref() {
                return outcome.clone();
            }
            self.cv.wait(&mut done);
        }
    }
}

/// Runs one transaction-control statement (prepared once per connection).
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Rolls back whatever transaction is open; errors are ignored because SQLite may already
/// have rolled it back itself (after an I/O error, say).
fn abandon(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}

/// Commits the open transaction; on failure rolls it back so the connection is reusable.
fn commit(conn: &Connection) -> std::result::Result<(), String> {
    match control(conn, "COMMIT") {
        Ok(()) => Ok(()),
        Err(e) => {
            abandon(conn);
            Err(format!("commit failed: {e}"))
        }
    }
}

/// What a caller's closure did.
enum Ran {
    Ok,
    Failed(CyclesError),
    Panicked(Box<dyn Any + Send>),
}

fn run_closure(conn: &Connection, f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>) -> Ran {
    let mut txn = SqliteTxn::new(conn);
    // The closure is caught only to undo its writes before the panic goes on.
    match catch_unwind(AssertUnwindSafe(|| f(&mut txn))) {
        Ok(Ok(())) => match txn.flush() {
            Ok(()) => Ran::Ok,
            Err(e) => Ran::Failed(e),
        },
        Ok(Err(e)) => Ran::Failed(e),
        Err(p) => Ran::Panicked(p),
    }
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

/// The reservations table of schema version 2, created with [`SCHEMA`] in a new file and by
/// the migration from version 1.
///
/// Every B-tree page an operation dirties is a 4 KiB frame written (and, under FULL, synced)
/// to the WAL, so the layout keeps the pages a reserve or commit touches few and shared by the
/// operations of a batch: the rowid is the creation order (appends go to the last page, and no
/// separate order index is needed), reservation ids are time-ordered (UUIDv7: their index also
/// grows at its end), and only ACTIVE reservations are indexed by deadline (what expiry scans).
/// Version 1 had random-order ids and an index more: a reserve wrote eight pages instead of
/// seven, a commit five instead of four (counted once by hand, docs/architecture.md;
/// tests/sqlite_schema.rs checks the layout itself).
const RESERVATIONS_V2: &str = "
CREATE TABLE reservations (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    deadline_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX reservations_active ON reservations (deadline_ms, id) WHERE status = 'ACTIVE';
";

/// Version 1 to 2, first step: the old table set aside and its indexes dropped (their names
/// are reused), before [`RESERVATIONS_V2`] creates the new one.
const MIGRATE_V1_TO_V2: &str = "
ALTER TABLE reservations RENAME TO reservations_v1;
DROP INDEX reservations_active;
DROP INDEX reservations_order;
";
/// Version 1 to 2, last step: every row copied in creation order (`created_seq`), which the
/// new rowid keeps, and the old table dropped. All three steps run in one transaction.
const MIGRATE_V1_TO_V2_COPY: &str = "
INSERT INTO reservations (id, status, deadline_ms, body)
    SELECT id, status, deadline_ms, body FROM reservations_v1 ORDER BY created_seq;
DROP TABLE reservations_v1;
";

/// A ledger starts from an empty file, and every schema version has the `budgets` and `audit`
/// tables: a file that holds tables but not those is another application's database (whatever
/// its `user_version` says). It is refused before anything is written to it (switching to WAL
/// alone rewrites the header), so a mistyped path never changes someone else's data.
fn refuse_foreign(conn: &Connection, path: &Path) -> Result<()> {
    let (tables, ours): (i64, i64) = conn.query_row(
        "SELECT count(*), count(*) FILTER (WHERE name IN ('budgets', 'audit'))
         FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if tables > 0 && ours < 2 {
        return Err(CyclesError::LedgerCorrupt(format!(
            "{}: not a Cycles ledger (it holds {tables} other tables); refusing to change \
             another application's database",
            path.display()
        )));
    }
    Ok(())
}

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
        // Checked before anything uses it: rusqlite panics on a timeout past i32::MAX ms, and a
        // panic in a binding's open aborts the host process.
        if options.busy_timeout > MAX_BUSY_TIMEOUT {
            return Err(CyclesError::invalid(
                "busy_timeout",
                format!("at most {} ms", MAX_BUSY_TIMEOUT.as_millis()),
            ));
        }
        let mut conn = Connection::open(&path)
            .map_err(|e| CyclesError::LedgerUnavailable(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(options.busy_timeout)?;
        refuse_foreign(&conn, &path)?;
        // journal_mode=WAL persists in the file. Switching a fresh file to it takes an exclusive
        // lock that SQLite does not wait for through the busy handler, so several processes
        // opening a new file at once retry here, within the same busy timeout.
        let deadline = std::time::Instant::now() + options.busy_timeout;
        let mode: String = retry_while_busy(deadline, || {
            conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        })?;
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
        loop {
            match Self::migrate(&mut conn, &path) {
                Err(CyclesError::LedgerUnavailable(msg))
                    if msg.contains("locked") && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                other => break other?,
            }
        }
        conn.set_prepared_statement_cache_capacity(64);
        let checkpointer = options
            .background_checkpoint
            .then(|| Checkpointer::start(&path, options.busy_timeout))
            .flatten();
        if let Some(cp) = &checkpointer {
            // Takes the place of SQLite's automatic checkpoint on this connection.
            conn.wal_hook(Some(cp.hook()))?;
        }
        Ok(SqliteLedger {
            state: Mutex::new(ConnState { conn, batch: None }),
            waiting: AtomicUsize::new(0),
            group_commit: options.group_commit,
            transactions: AtomicU64::new(0),
            operations: AtomicU64::new(0),
            checkpointer,
            path,
        })
    }

    fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        match version {
            0 => {
                tx.execute_batch(SCHEMA)?;
                tx.execute_batch(RESERVATIONS_V2)?;
                tx.execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION}"))?;
            }
            1 => {
                tx.execute_batch(MIGRATE_V1_TO_V2)?;
                tx.execute_batch(RESERVATIONS_V2)?;
                tx.execute_batch(MIGRATE_V1_TO_V2_COPY)?;
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
        self.lock_settled().conn.execute_batch(sql)?;
        Ok(())
    }

    /// Whether concurrent writers share transactions ([`SqliteOptions::group_commit`]).
    pub fn group_commit(&self) -> bool {
        self.group_commit
    }

    /// Committed write transactions and the operations they carried since this ledger was
    /// opened: `operations / transactions` is the mean batch size.
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            transactions: self.transactions.load(Ordering::Relaxed),
            operations: self.operations.load(Ordering::Relaxed),
        }
    }

    /// `(background, inline)` WAL checkpoints run since open by the ledger, both 0 when
    /// [`SqliteOptions::background_checkpoint`] is off. Not stable API.
    #[doc(hidden)]
    pub fn checkpoint_counts(&self) -> (u64, u64) {
        self.checkpointer
            .as_ref()
            .map_or((0, 0), Checkpointer::counts)
    }

    /// Test hook: writers currently waiting for the connection. Not stable API.
    #[doc(hidden)]
    pub fn waiting_writers(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Locks the connection and ends any open group-commit batch first, so what follows
    /// (a read, an unbatched write) sees only committed state.
    fn lock_settled(&self) -> MutexGuard<'_, ConnState> {
        let mut st = self.state.lock();
        if let Some(batch) = st.batch.take() {
            let outcome = commit(&st.conn);
            self.finish_batch(batch, outcome);
        }
        st
    }

    /// Counts a batch that ended and wakes the callers waiting for it.
    fn finish_batch(&self, batch: Batch, outcome: std::result::Result<(), String>) {
        if outcome.is_ok() {
            self.transactions.fetch_add(1, Ordering::Relaxed);
            self.operations.fetch_add(batch.ok_ops, Ordering::Relaxed);
        }
        if let Some(w) = batch.waiters {
            w.publish(outcome);
        }
    }

    /// One transaction per operation (group commit off).
    fn write_alone(&self, f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>) -> Result<()> {
        let st = self.lock_settled();
        control(&st.conn, "BEGIN IMMEDIATE")?;
        match run_closure(&st.conn, f) {
            Ran::Ok => {
                commit(&st.conn).map_err(CyclesError::LedgerUnavailable)?;
                self.finish_batch(
                    Batch {
                        ops: 1,
                        ok_ops: 1,
                        waiters: None,
                    },
                    Ok(()),
                );
                Ok(())
            }
            Ran::Failed(e) => {
                abandon(&st.conn);
                Err(e)
            }
            Ran::Panicked(p) => {
                abandon(&st.conn);
                drop(st);
                resume_unwind(p)
            }
        }
    }

    /// Group commit: join the open transaction or open one, then hand it on or commit it.
    fn write_grouped(&self, f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>) -> Result<()> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut st = self.state.lock();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let ran = if st.batch.is_none() {
            // First of a batch: alone in the transaction, so a failure rolls all of it back
            // and no savepoint is needed (the lone-caller path costs what it did before).
            control(&st.conn, "BEGIN IMMEDIATE")?;
            match run_closure(&st.conn, f) {
                Ran::Ok => {
                    st.batch = Some(Batch {
                        ops: 1,
                        ok_ops: 1,
                        waiters: None,
                    });
                    Ran::Ok
                }
                Ran::Failed(e) => {
                    abandon(&st.conn);
                    return Err(e);
                }
                Ran::Panicked(p) => {
                    abandon(&st.conn);
                    drop(st);
                    resume_unwind(p)
                }
            }
        } else {
            let (ran, intact) = run_in_savepoint(&st.conn, f);
            if !intact {
                // The shared transaction is gone or holds a failed operation's writes: end
                // it without committing; everyone in it fails and nothing of it persists.
                abandon(&st.conn);
                let batch = st.batch.take().expect("a batch is open");
                self.finish_batch(
                    batch,
                    Err("the shared transaction was rolled back after an error".into()),
                );
                drop(st);
                return match ran {
                    Ran::Ok => Err(CyclesError::LedgerUnavailable(
                        "the shared transaction was rolled back after an error".into(),
                    )),
                    Ran::Failed(e) => Err(e),
                    Ran::Panicked(p) => resume_unwind(p),
                };
            }
            let batch = st.batch.as_mut().expect("a batch is open");
            batch.ops += 1;
            batch.ok_ops += u64::from(matches!(ran, Ran::Ok));
            ran
        };
        let batch = st.batch.as_mut().expect("a batch is open");
        let shared = if self.waiting.load(Ordering::SeqCst) > 0 && batch.ops < MAX_BATCH_OPS {
            // Someone is queued for the connection: let them join; they (or a later joiner,
            // or a reader) commit, and publish the outcome here.
            let outcome = batch.waiters.get_or_insert_with(Default::default).clone();
            drop(st);
            if let Ran::Panicked(p) = ran {
                resume_unwind(p)
            }
            outcome.wait()
        } else {
            let batch = st.batch.take().expect("a batch is open");
            let outcome = commit(&st.conn);
            drop(st);
            self.finish_batch(batch, outcome.clone());
            if let Ran::Panicked(p) = ran {
                resume_unwind(p)
            }
            outcome
        };
        match (ran, shared) {
            // The operation's effects, successful or not, were read in a transaction that
            // did not commit: report the ledger failure.
            (_, Err(msg)) => Err(CyclesError::LedgerUnavailable(msg)),
            (Ran::Ok, Ok(())) => Ok(()),
            (Ran::Failed(e), Ok(())) => Err(e),
            (Ran::Panicked(_), Ok(())) => unreachable!("a panic was resumed above"),
        }
    }
}

/// Runs a joiner's closure in its own savepoint of the shared transaction. Returns what the
/// closure did and whether the shared transaction is intact (still open, and holding no
/// writes of a failed closure).
fn run_in_savepoint(
    conn: &Connection,
    f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>,
) -> (Ran, bool) {
    if let Err(e) = control(conn, "SAVEPOINT cycles_op") {
        return (Ran::Failed(e.into()), !conn.is_autocommit());
    }
    let ran = match run_closure(conn, f) {
        Ran::Ok => match control(conn, "RELEASE cycles_op") {
            Ok(()) => return (Ran::Ok, !conn.is_autocommit()),
            Err(e) => Ran::Failed(e.into()),
        },
        other => other,
    };
    // SQLite may have rolled the whole transaction back itself (I/O error, out of memory).
    if conn.is_autocommit() {
        return (ran, false);
    }
    let undone = control(conn, "ROLLBACK TO cycles_op").is_ok()
        && control(conn, "RELEASE cycles_op").is_ok();
    (ran, undone && !conn.is_autocommit())
}

/// The operations of one closure, over the connection that holds its transaction open.
/// Runs `f` again while SQLite answers BUSY or LOCKED, until `deadline`.
fn retry_while_busy<T>(
    deadline: std::time::Instant,
    mut f: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            other => return other,
        }
    }
}

struct SqliteTxn<'a> {
    conn: &'a Connection,
    /// Budget rows this operation read or wrote, by `(scope, unit)`; `None` caches absence.
    /// The state machine reads the same few rows several times and writes each one up to
    /// twice per operation, so rows are read once and written back once, when the closure
    /// succeeds ([`SqliteTxn::flush`]). Nobody else writes while the closure runs: it holds
    /// the connection and SQLite's write lock.
    budgets: Vec<CachedBudget>,
}

struct CachedBudget {
    scope: String,
    unit: Unit,
    value: Option<Budget>,
    dirty: bool,
}

impl<'a> SqliteTxn<'a> {
    fn new(conn: &'a Connection) -> Self {
        SqliteTxn {
            conn,
            budgets: Vec::new(),
        }
    }

    fn cached(&mut self, scope: &str, unit: Unit) -> Option<&mut CachedBudget> {
        self.budgets
            .iter_mut()
            .find(|c| c.unit == unit && c.scope == scope)
    }

    /// Writes changed budget rows back.
    fn flush(&mut self) -> Result<()> {
        for c in self.budgets.iter_mut().filter(|c| c.dirty) {
            let b = c.value.as_ref().expect("a written budget is present");
            // Measured: INSERT OR REPLACE costs fewer instructions here than an UPDATE.
            self.conn
                .prepare_cached(concat!(
                    "INSERT OR REPLACE INTO budgets (",
                    budget_cols!(),
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
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
            c.dirty = false;
        }
        Ok(())
    }
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

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, body: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|e| corrupt(format!("{what}: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("ledger values serialize")
}

impl LedgerTxn for SqliteTxn<'_> {
    fn budget(&mut self, scope: &str, unit: Unit) -> Result<Option<Budget>> {
        if let Some(c) = self.cached(scope, unit) {
            return Ok(c.value.clone());
        }
        let row = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                budget_cols!(),
                " FROM budgets WHERE scope = ?1 AND unit = ?2"
            ))?
            .query_row(params![scope, unit.as_str()], budget_from_row)
            .optional()?;
        let value = row.map(finish_budget).transpose()?;
        self.budgets.push(CachedBudget {
            scope: scope.to_string(),
            unit,
            value: value.clone(),
            dirty: false,
        });
        Ok(value)
    }

    fn put_budget(&mut self, b: &Budget) -> Result<()> {
        match self.cached(&b.scope, b.unit) {
            Some(c) => {
                c.value = Some(b.clone());
                c.dirty = true;
            }
            None => self.budgets.push(CachedBudget {
                scope: b.scope.clone(),
                unit: b.unit,
                value: Some(b.clone()),
                dirty: true,
            }),
        }
        Ok(())
    }

    fn budgets(&mut self, scope: Option<&str>) -> Result<Vec<Budget>> {
        self.flush()?;
        let mut stmt = self.conn.prepare_cached(concat!(
            "SELECT ",
            budget_cols!(),
            " FROM budgets
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
            .conn
            .prepare_cached("SELECT body FROM reservations WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        body.map(|b| parse_json(&format!("reservation {id}"), &b))
            .transpose()
    }

    fn put_reservation(&mut self, r: &Reservation) -> Result<()> {
        let deadline = r.expires_at_ms.saturating_add(r.grace_ms);
        // One statement for both cases; an existing row keeps its `seq` (creation order).
        self.conn
            .prepare_cached(
                "INSERT INTO reservations (id, status, deadline_ms, body)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET
                     status = excluded.status, deadline_ms = excluded.deadline_ms, body = excluded.body",
            )?
            .execute(params![r.reservation_id, r.status.as_str(), deadline, to_json(r)])?;
        Ok(())
    }

    fn reservations(
        &mut self,
        status: Option<ReservationStatus>,
        limit: usize,
    ) -> Result<Vec<Reservation>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, body FROM reservations WHERE ?1 IS NULL OR status = ?1
             ORDER BY seq LIMIT ?2",
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
        let mut stmt = self.conn.prepare_cached(
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
            .conn
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

    fn idempotency_entries(&mut self) -> Result<Vec<(String, String, IdempotencyEntry)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT op, key, request_digest, result FROM idempotency ORDER BY op, key",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(op, key, request_digest, result)| {
                let result = parse_json(&format!("idempotency {op}/{key}"), &result)?;
                Ok((
                    op,
                    key,
                    IdempotencyEntry {
                        request_digest,
                        result,
                    },
                ))
            })
            .collect()
    }

    fn put_idempotency(&mut self, op: &str, key: &str, e: &IdempotencyEntry) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO idempotency (op, key, request_digest, result) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![op, key, e.request_digest, to_json(&e.result)])?;
        Ok(())
    }

    fn audit_head(&mut self) -> Result<Option<(u64, String)>> {
        let row: Option<(i64, String)> = self
            .conn
            .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.map(|(s, h)| (s as u64, h)))
    }

    fn append_audit(&mut self, sealed: SealedRecord) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO audit (seq, time_ms, kind, hash, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                sealed.seq() as i64,
                sealed.time_ms(),
                sealed.kind().as_str(),
                sealed.hash(),
                sealed.json()
            ])?;
        Ok(())
    }

    fn audit_page(&mut self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let mut stmt = self
            .conn
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
            .conn
            .prepare_cached("SELECT value FROM kv WHERE ns = ?1 AND key = ?2")?
            .query_row(params![ns, key], |r| r.get(0))
            .optional()?;
        v.map(|v| parse_json(&format!("kv {ns}/{key}"), &v))
            .transpose()
    }

    fn kv_put(&mut self, ns: &str, key: &str, value: &serde_json::Value) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?1, ?2, ?3)")?
            .execute(params![ns, key, to_json(value)])?;
        Ok(())
    }

    fn kv_list(&mut self, ns: &str) -> Result<Vec<(String, serde_json::Value)>> {
        let mut stmt = self
            .conn
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
        if self.group_commit {
            self.write_grouped(f)
        } else {
            self.write_alone(f)
        }
    }

    fn read(&self, f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>) -> Result<()> {
        let st = self.lock_settled();
        control(&st.conn, "BEGIN")?;
        let ran = run_closure(&st.conn, f);
        // A read keeps nothing.
        abandon(&st.conn);
        match ran {
            Ran::Ok => Ok(()),
            Ran::Failed(e) => Err(e),
            Ran::Panicked(p) => {
                drop(st);
                resume_unwind(p)
            }
        }
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}
