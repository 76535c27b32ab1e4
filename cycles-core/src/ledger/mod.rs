//! Where state lives. A backend supplies atomic transactions; the rules live in
//! the crate's `machine` module and are never copied into a backend.

use serde::{Deserialize, Serialize};

use crate::audit::{AuditRecord, CapsCounter, SealedRecord};
use crate::error::Result;
use crate::model::{Budget, Reservation, ReservationStatus, Unit};
use crate::policy::{CAPS_NS, caps_counter};

mod checkpoint;
pub mod location;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

#[cfg(feature = "postgres")]
pub use self::postgres::{PostgresLedger, PostgresOptions};
pub use location::{LedgerLocation, LedgerOptions, open_ledger};
pub use memory::MemoryLedger;
pub use sqlite::{SqliteLedger, SqliteOptions, Synchronous};

/// A stored idempotent result: the digest of the request that produced it, and the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyEntry {
    /// SHA-256 of the canonical request.
    pub request_digest: String,
    /// The original outcome, replayed verbatim.
    pub result: serde_json::Value,
}

/// One serializable transaction over the ledger's tables.
///
/// Everything written through a transaction becomes visible atomically when the closure
/// passed to [`Ledger::write`] returns `Ok`, and is discarded when it returns `Err`.
pub trait LedgerTxn {
    /// The budget of `scope` in `unit`.
    fn budget(&mut self, scope: &str, unit: Unit) -> Result<Option<Budget>>;
    /// Inserts or replaces a budget.
    fn put_budget(&mut self, budget: &Budget) -> Result<()>;
    /// Every budget, or those of `scope` and the scopes below it, ordered by scope and unit.
    fn budgets(&mut self, scope: Option<&str>) -> Result<Vec<Budget>>;
    /// A reservation by id.
    fn reservation(&mut self, id: &str) -> Result<Option<Reservation>>;
    /// Inserts or replaces a reservation.
    fn put_reservation(&mut self, reservation: &Reservation) -> Result<()>;
    /// Reservations, optionally only those with `status`, oldest first, at most `limit`.
    fn reservations(
        &mut self,
        status: Option<ReservationStatus>,
        limit: usize,
    ) -> Result<Vec<Reservation>>;
    /// Ids of ACTIVE reservations whose expiry plus grace is before `now_ms`, at most `limit`,
    /// earliest deadline (expiry plus grace) first, then by id: every backend must list them
    /// in this order, since expiries are applied and recorded in it.
    fn expired_reservation_ids(&mut self, now_ms: i64, limit: usize) -> Result<Vec<String>>;
    /// The stored result of an idempotent operation.
    fn idempotency(&mut self, op: &str, key: &str) -> Result<Option<IdempotencyEntry>>;
    /// Stores the result of an idempotent operation.
    fn put_idempotency(&mut self, op: &str, key: &str, entry: &IdempotencyEntry) -> Result<()>;
    /// Every stored idempotent result as `(op, key, entry)`, ordered by op then key (`verify`
    /// checks each names what the audit chain did).
    fn idempotency_entries(&mut self) -> Result<Vec<(String, String, IdempotencyEntry)>>;
    /// `(seq, hash)` of the last audit record.
    fn audit_head(&mut self) -> Result<Option<(u64, String)>>;
    /// Appends a sealed audit record (its `seq` follows the head). It carries the JSON to
    /// store, so a backend does not serialize the record a second time.
    fn append_audit(&mut self, record: SealedRecord) -> Result<()>;
    /// Up to `limit` audit records with `seq > after_seq`, in order. A record that cannot be
    /// read is an error naming its sequence number.
    fn audit_page(&mut self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>>;
    /// A value in a namespace of extension state (approvals, cooldowns).
    fn kv_get(&mut self, ns: &str, key: &str) -> Result<Option<serde_json::Value>>;
    /// Stores a value in a namespace.
    fn kv_put(&mut self, ns: &str, key: &str, value: &serde_json::Value) -> Result<()>;
    /// Every `(key, value)` of a namespace, ordered by key.
    fn kv_list(&mut self, ns: &str) -> Result<Vec<(String, serde_json::Value)>>;
    /// The budgets written through this transaction since the last call, last write of each
    /// `(scope, unit)` only. The transaction the state machine runs in tracks them (the next
    /// audit record carries them); a backend's own transaction keeps this default.
    fn take_written_budgets(&mut self) -> Vec<Budget> {
        Vec::new()
    }
    /// The caps counters written through this transaction since the last call (key-value
    /// namespace `caps`), last write of each key only; tracked like
    /// [`take_written_budgets`](Self::take_written_budgets).
    fn take_written_caps(&mut self) -> Vec<CapsCounter> {
        Vec::new()
    }
}

/// The transaction the state machine is given: the backend's, plus the budgets written since
/// the last audit record, which that record carries (see [`AuditRecord::budgets`]). Here, and
/// not in each operation, so that no operation can change a budget without its record saying so.
struct Tracked<'a> {
    inner: &'a mut dyn LedgerTxn,
    written: Vec<Budget>,
    caps: Vec<CapsCounter>,
}

impl LedgerTxn for Tracked<'_> {
    fn budget(&mut self, scope: &str, unit: Unit) -> Result<Option<Budget>> {
        self.inner.budget(scope, unit)
    }
    fn put_budget(&mut self, budget: &Budget) -> Result<()> {
        self.inner.put_budget(budget)?;
        match self
            .written
            .iter_mut()
            .find(|b| b.scope == budget.scope && b.unit == budget.unit)
        {
            Some(b) => b.clone_from(budget),
            None => self.written.push(budget.clone()),
        }
        Ok(())
    }
    fn budgets(&mut self, scope: Option<&str>) -> Result<Vec<Budget>> {
        self.inner.budgets(scope)
    }
    fn reservation(&mut self, id: &str) -> Result<Option<Reservation>> {
        self.inner.reservation(id)
    }
    fn put_reservation(&mut self, reservation: &Reservation) -> Result<()> {
        self.inner.put_reservation(reservation)
    }
    fn reservations(
        &mut self,
        status: Option<ReservationStatus>,
        limit: usize,
    ) -> Result<Vec<Reservation>> {
        self.inner.reservations(status, limit)
    }
    fn expired_reservation_ids(&mut self, now_ms: i64, limit: usize) -> Result<Vec<String>> {
        self.inner.expired_reservation_ids(now_ms, limit)
    }
    fn idempotency(&mut self, op: &str, key: &str) -> Result<Option<IdempotencyEntry>> {
        self.inner.idempotency(op, key)
    }
    fn put_idempotency(&mut self, op: &str, key: &str, entry: &IdempotencyEntry) -> Result<()> {
        self.inner.put_idempotency(op, key, entry)
    }
    fn idempotency_entries(&mut self) -> Result<Vec<(String, String, IdempotencyEntry)>> {
        self.inner.idempotency_entries()
    }
    fn audit_head(&mut self) -> Result<Option<(u64, String)>> {
        self.inner.audit_head()
    }
    fn append_audit(&mut self, record: SealedRecord) -> Result<()> {
        self.inner.append_audit(record)
    }
    fn audit_page(&mut self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        self.inner.audit_page(after_seq, limit)
    }
    fn kv_get(&mut self, ns: &str, key: &str) -> Result<Option<serde_json::Value>> {
        self.inner.kv_get(ns, key)
    }
    fn kv_put(&mut self, ns: &str, key: &str, value: &serde_json::Value) -> Result<()> {
        self.inner.kv_put(ns, key, value)?;
        if ns == CAPS_NS {
            let counter = caps_counter(key, value)?;
            self.caps.retain(|c| c.key != counter.key);
            self.caps.push(counter);
        }
        Ok(())
    }
    fn kv_list(&mut self, ns: &str) -> Result<Vec<(String, serde_json::Value)>> {
        self.inner.kv_list(ns)
    }
    fn take_written_budgets(&mut self) -> Vec<Budget> {
        std::mem::take(&mut self.written)
    }
    fn take_written_caps(&mut self) -> Vec<CapsCounter> {
        std::mem::take(&mut self.caps)
    }
}

/// A storage backend. Implementations must be safe to share between threads; file and
/// server backends must also be safe to share between processes.
pub trait Ledger: Send + Sync + std::fmt::Debug {
    /// Runs `f` in one serializable write transaction; commits only if it returns `Ok`.
    fn write(&self, f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>) -> Result<()>;
    /// Runs `f` in a read transaction (a consistent snapshot); writes are not allowed.
    fn read(&self, f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>) -> Result<()> {
        self.write(f)
    }
    /// A short description for diagnostics (`memory`, `sqlite:/path`).
    fn describe(&self) -> String;
}

/// Runs `f` in a write transaction and returns its value.
pub(crate) fn write_with<L: Ledger + ?Sized, T>(
    ledger: &L,
    mut f: impl FnMut(&mut dyn LedgerTxn) -> Result<T>,
) -> Result<T> {
    let mut out = None;
    ledger.write(&mut |txn| {
        let mut tracked = Tracked {
            inner: txn,
            written: Vec::new(),
            caps: Vec::new(),
        };
        out = Some(f(&mut tracked)?);
        debug_assert!(
            tracked.written.is_empty() && tracked.caps.is_empty(),
            "a budget or caps counter was written after the operation's last audit record"
        );
        Ok(())
    })?;
    Ok(out.expect("write closure ran"))
}

/// Runs `f` in a read transaction and returns its value.
pub(crate) fn read_with<L: Ledger + ?Sized, T>(
    ledger: &L,
    mut f: impl FnMut(&mut dyn LedgerTxn) -> Result<T>,
) -> Result<T> {
    let mut out = None;
    ledger.read(&mut |txn| {
        out = Some(f(txn)?);
        Ok(())
    })?;
    Ok(out.expect("read closure ran"))
}

/// Whether `candidate` is `scope` or a scope below it.
pub(crate) fn scope_within(candidate: &str, scope: &str) -> bool {
    candidate == scope
        || (candidate.starts_with(scope) && candidate.as_bytes().get(scope.len()) == Some(&b'/'))
}
