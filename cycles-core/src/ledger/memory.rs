//! An in-process ledger behind one `parking_lot` mutex: fast, not durable.

use std::collections::BTreeMap;

// SipHash (std's default) is built against hash flooding; keys here are scopes and ids the
// process itself creates, and lookups are on every decide, so a fast hash fits better.
use rustc_hash::FxHashMap as HashMap;

use parking_lot::Mutex;

use super::{IdempotencyEntry, Ledger, LedgerTxn, scope_within};
use crate::audit::{AuditRecord, SealedRecord};
use crate::error::{CyclesError, Result};
use crate::model::{Budget, Reservation, ReservationStatus, Unit};

#[derive(Debug, Default)]
struct State {
    budgets: HashMap<String, Vec<Budget>>,
    /// Boxed: a `Reservation` is over 600 bytes, and the table's rehashes move entries.
    reservations: HashMap<String, Box<Reservation>>,
    /// Insertion order of reservations, for stable listings.
    reservation_order: Vec<String>,
    idempotency: HashMap<(String, String), IdempotencyEntry>,
    audit: Trail,
    /// `(seq, hash)` of the last record.
    head: Option<(u64, String)>,
    kv: BTreeMap<(String, String), serde_json::Value>,
}

/// The audit trail as kept: each record's JSON (one string rather than the record's dozen)
/// appended to large text chunks, found by a compact index. Parsed back on reads (verify,
/// export, queries), which are rare next to appends.
///
/// Why chunks: a trail that only grows, kept as one allocation per record, grows the heap a few
/// pages at a time. In a thread's malloc arena (every caller but the main thread) each growth is
/// an `mprotect` system call: half of the allocation cost that made up a quarter of a decide's
/// profile (the other half, first-touch page faults, any growing memory pays). A chunk is one
/// `mmap` for hundreds of records, and the record's own string is freed straight away for the
/// next operation to reuse.
#[derive(Debug, Default)]
struct Trail {
    chunks: Vec<String>,
    index: Vec<TrailEntry>,
}

#[derive(Debug, Clone, Copy)]
struct TrailEntry {
    seq: u64,
    chunk: u32,
    start: u32,
    len: u32,
}

impl Trail {
    /// Above glibc's default mmap threshold (128 KiB): a chunk is mapped, not carved from the
    /// heap, and never freed before the ledger.
    const CHUNK: usize = 256 * 1024;

    fn push(&mut self, seq: u64, json: &str) {
        let entry = self.store(seq, json);
        self.index.push(entry);
    }

    /// Copies `json` into the last chunk, or a new one when it does not fit.
    fn store(&mut self, seq: u64, json: &str) -> TrailEntry {
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= json.len());
        if !fits {
            self.chunks
                .push(String::with_capacity(json.len().max(Self::CHUNK)));
        }
        let chunk_no = self.chunks.len() - 1;
        let chunk = &mut self.chunks[chunk_no];
        let start = chunk.len();
        chunk.push_str(json);
        // Chunks hold at most max(CHUNK, one record) bytes and a record's JSON is far below
        // 4 GiB, so the positions fit in 32 bits.
        let narrow = |n: usize| u32::try_from(n).expect("trail positions fit in 32 bits");
        TrailEntry {
            seq,
            chunk: narrow(chunk_no),
            start: narrow(start),
            len: narrow(json.len()),
        }
    }

    fn text(&self, e: TrailEntry) -> &str {
        let start = e.start as usize;
        &self.chunks[e.chunk as usize][start..start + e.len as usize]
    }

    fn parse(&self, e: TrailEntry) -> Result<AuditRecord> {
        crate::audit::parse_stored(e.seq, self.text(e))
    }

    /// Replaces record `seq`'s text (the tamper hook): the new text is appended and the index
    /// points at it; the old text stays in its chunk, unreachable.
    fn replace(&mut self, seq: u64, json: &str) {
        if let Some(pos) = self.index.iter().position(|e| e.seq == seq) {
            self.index[pos] = self.store(seq, json);
        }
    }
}

/// The in-memory ledger. Transactions run under one lock; writes go to an overlay that is
/// applied only when the transaction succeeds, so a failed operation changes nothing.
///
/// ```
/// use cycles_core::{Authority, MemoryLedger};
/// let auth = Authority::builder().ledger(MemoryLedger::new()).build().unwrap();
/// assert!(auth.verify().unwrap().ok);
/// ```
#[derive(Debug, Default)]
pub struct MemoryLedger {
    state: Mutex<State>,
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Test hook: lets a test tamper with a stored audit record to check that `verify()`
    /// notices. Not part of the stable API.
    #[doc(hidden)]
    pub fn tamper_audit(&self, seq: u64, f: impl FnOnce(&mut AuditRecord)) {
        let mut st = self.state.lock();
        let last = st.audit.index.last().map(|e| e.seq);
        if let Some(&entry) = st.audit.index.iter().find(|e| e.seq == seq) {
            let mut r = st.audit.parse(entry).expect("stored records parse");
            f(&mut r);
            let json = serde_json::to_string(&r).expect("records serialize");
            st.audit.replace(seq, &json);
            // The head is the last record's (seq, hash): keep it so, as a stored head would be.
            if last == Some(seq) {
                st.head = Some((r.seq, r.hash));
            }
        }
    }
}

#[derive(Default)]
struct Overlay {
    budgets: Vec<Budget>,
    reservations: Vec<Reservation>,
    idempotency: Vec<((String, String), IdempotencyEntry)>,
    audit: Vec<SealedRecord>,
    kv: Vec<((String, String), serde_json::Value)>,
}

struct MemTxn<'a> {
    state: &'a State,
    overlay: Overlay,
    writable: bool,
}

impl MemTxn<'_> {
    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(CyclesError::LedgerUnavailable(
                "write attempted in a read transaction".into(),
            ))
        }
    }
}

fn upsert<T>(list: &mut Vec<T>, item: T, same: impl Fn(&T) -> bool) {
    match list.iter_mut().find(|x| same(x)) {
        Some(slot) => *slot = item,
        None => push_sized(list, item),
    }
}

/// Pushes with room for just one item at first. Most transactions write one item of a kind; a
/// first `push` would reserve four, and four reservations (2.5 KB) are a "large" request to
/// glibc's malloc, which then consolidates its free lists on every operation. Later pushes
/// grow as usual (amortized), for the rare transaction that writes many.
fn push_sized<T>(list: &mut Vec<T>, item: T) {
    if list.capacity() == 0 {
        list.reserve_exact(1);
    }
    list.push(item);
}

impl LedgerTxn for MemTxn<'_> {
    fn budget(&mut self, scope: &str, unit: Unit) -> Result<Option<Budget>> {
        if let Some(b) = self
            .overlay
            .budgets
            .iter()
            .find(|b| b.unit == unit && b.scope == scope)
        {
            return Ok(Some(b.clone()));
        }
        Ok(self
            .state
            .budgets
            .get(scope)
            .and_then(|v| v.iter().find(|b| b.unit == unit))
            .cloned())
    }

    fn put_budget(&mut self, budget: &Budget) -> Result<()> {
        self.check_writable()?;
        upsert(&mut self.overlay.budgets, budget.clone(), |b| {
            b.unit == budget.unit && b.scope == budget.scope
        });
        Ok(())
    }

    fn budgets(&mut self, scope: Option<&str>) -> Result<Vec<Budget>> {
        let mut all: BTreeMap<(String, Unit), Budget> = BTreeMap::new();
        for list in self.state.budgets.values() {
            for b in list {
                all.insert((b.scope.clone(), b.unit), b.clone());
            }
        }
        for b in &self.overlay.budgets {
            all.insert((b.scope.clone(), b.unit), b.clone());
        }
        Ok(all
            .into_values()
            .filter(|b| scope.is_none_or(|s| scope_within(&b.scope, s)))
            .collect())
    }

    fn reservation(&mut self, id: &str) -> Result<Option<Reservation>> {
        if let Some(r) = self
            .overlay
            .reservations
            .iter()
            .find(|r| r.reservation_id == id)
        {
            return Ok(Some(r.clone()));
        }
        Ok(self
            .state
            .reservations
            .get(id)
            .map(|r| Reservation::clone(r)))
    }

    fn put_reservation(&mut self, reservation: &Reservation) -> Result<()> {
        self.check_writable()?;
        upsert(&mut self.overlay.reservations, reservation.clone(), |r| {
            r.reservation_id == reservation.reservation_id
        });
        Ok(())
    }

    fn reservations(
        &mut self,
        status: Option<ReservationStatus>,
        limit: usize,
    ) -> Result<Vec<Reservation>> {
        let mut out = Vec::new();
        let ids = self
            .state
            .reservation_order
            .iter()
            .chain(self.overlay.reservations.iter().filter_map(|r| {
                (!self.state.reservations.contains_key(&r.reservation_id))
                    .then_some(&r.reservation_id)
            }))
            .cloned()
            .collect::<Vec<_>>();
        for id in ids {
            if out.len() >= limit {
                break;
            }
            if let Some(r) = self.reservation(&id)?
                && status.is_none_or(|s| r.status == s)
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn expired_reservation_ids(&mut self, now_ms: i64, limit: usize) -> Result<Vec<String>> {
        // The latest version of each reservation: the overlay's when this transaction changed
        // it (extended, finished), the stored one otherwise.
        let changed: std::collections::HashSet<&str> = self
            .overlay
            .reservations
            .iter()
            .map(|r| r.reservation_id.as_str())
            .collect();
        let latest = self.overlay.reservations.iter().chain(
            self.state
                .reservations
                .values()
                .map(|r| &**r)
                .filter(|r| !changed.contains(r.reservation_id.as_str())),
        );
        let deadline = |r: &Reservation| r.expires_at_ms.saturating_add(r.grace_ms);
        let mut due: Vec<(i64, &str)> = latest
            .filter(|r| r.status == ReservationStatus::Active && deadline(r) < now_ms)
            .map(|r| (deadline(r), r.reservation_id.as_str()))
            .collect();
        // The order the SQL ledgers use (deadline, then id): expiries are applied, and their
        // records written, in the same order on every backend.
        due.sort_unstable();
        Ok(due
            .into_iter()
            .take(limit)
            .map(|(_, id)| id.to_string())
            .collect())
    }

    fn idempotency(&mut self, op: &str, key: &str) -> Result<Option<IdempotencyEntry>> {
        let k = (op.to_string(), key.to_string());
        if let Some((_, e)) = self.overlay.idempotency.iter().find(|(kk, _)| *kk == k) {
            return Ok(Some(e.clone()));
        }
        Ok(self.state.idempotency.get(&k).cloned())
    }

    fn put_idempotency(&mut self, op: &str, key: &str, entry: &IdempotencyEntry) -> Result<()> {
        self.check_writable()?;
        let k = (op.to_string(), key.to_string());
        upsert(
            &mut self.overlay.idempotency,
            (k.clone(), entry.clone()),
            |(kk, _)| *kk == k,
        );
        Ok(())
    }

    fn idempotency_entries(&mut self) -> Result<Vec<(String, String, IdempotencyEntry)>> {
        let mut all: BTreeMap<(String, String), IdempotencyEntry> = self
            .state
            .idempotency
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        for (k, e) in &self.overlay.idempotency {
            all.insert(k.clone(), e.clone());
        }
        Ok(all.into_iter().map(|((op, key), e)| (op, key, e)).collect())
    }

    fn audit_head(&mut self) -> Result<Option<(u64, String)>> {
        Ok(match self.overlay.audit.last() {
            Some(r) => Some((r.seq(), r.hash().to_string())),
            None => self.state.head.clone(),
        })
    }

    fn append_audit(&mut self, record: SealedRecord) -> Result<()> {
        self.check_writable()?;
        push_sized(&mut self.overlay.audit, record);
        Ok(())
    }

    fn audit_page(&mut self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        // Records are stored in sequence order; find the start by position when intact.
        let trail = &self.state.audit;
        let start = trail.index.partition_point(|e| e.seq <= after_seq);
        let mut out = Vec::new();
        for &entry in trail.index.iter().skip(start).filter(|e| e.seq > after_seq) {
            if out.len() >= limit {
                return Ok(out);
            }
            out.push(trail.parse(entry)?);
        }
        for sealed in self.overlay.audit.iter().filter(|r| r.seq() > after_seq) {
            if out.len() >= limit {
                break;
            }
            out.push(sealed.to_record()?);
        }
        Ok(out)
    }

    fn kv_get(&mut self, ns: &str, key: &str) -> Result<Option<serde_json::Value>> {
        let k = (ns.to_string(), key.to_string());
        if let Some((_, v)) = self.overlay.kv.iter().find(|(kk, _)| *kk == k) {
            return Ok(Some(v.clone()));
        }
        Ok(self.state.kv.get(&k).cloned())
    }

    fn kv_put(&mut self, ns: &str, key: &str, value: &serde_json::Value) -> Result<()> {
        self.check_writable()?;
        let k = (ns.to_string(), key.to_string());
        upsert(
            &mut self.overlay.kv,
            (k.clone(), value.clone()),
            |(kk, _)| *kk == k,
        );
        Ok(())
    }

    fn kv_list(&mut self, ns: &str) -> Result<Vec<(String, serde_json::Value)>> {
        let mut all: BTreeMap<String, serde_json::Value> = self
            .state
            .kv
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        for ((n, k), v) in &self.overlay.kv {
            if n == ns {
                all.insert(k.clone(), v.clone());
            }
        }
        Ok(all.into_iter().collect())
    }
}

impl State {
    fn apply(&mut self, overlay: Overlay) {
        for b in overlay.budgets {
            let list = self.budgets.entry(b.scope.clone()).or_default();
            upsert(list, b.clone(), |x| x.unit == b.unit);
        }
        for r in overlay.reservations {
            match self.reservations.get_mut(&r.reservation_id) {
                Some(slot) => **slot = r,
                None => {
                    self.reservation_order.push(r.reservation_id.clone());
                    self.reservations
                        .insert(r.reservation_id.clone(), Box::new(r));
                }
            }
        }
        self.idempotency.extend(overlay.idempotency);
        for sealed in overlay.audit {
            let seq = sealed.seq();
            let (hash, json) = sealed.into_hash_and_json();
            self.audit.push(seq, &json);
            self.head = Some((seq, hash));
        }
        self.kv.extend(overlay.kv);
    }
}

impl Ledger for MemoryLedger {
    fn write(&self, f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>) -> Result<()> {
        let mut guard = self.state.lock();
        let mut txn = MemTxn {
            state: &guard,
            overlay: Overlay::default(),
            writable: true,
        };
        f(&mut txn)?;
        let overlay = txn.overlay;
        guard.apply(overlay);
        Ok(())
    }

    fn read(&self, f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>) -> Result<()> {
        let guard = self.state.lock();
        let mut txn = MemTxn {
            state: &guard,
            overlay: Overlay::default(),
            writable: false,
        };
        f(&mut txn)
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct texts of varied lengths, as records would be.
    fn text(i: u64) -> String {
        format!(
            "{{\"seq\":{i},\"pad\":\"{}\"}}",
            "x".repeat((i % 700) as usize)
        )
    }

    #[test]
    fn the_trail_returns_every_text_across_chunks() {
        let mut trail = Trail::default();
        let n = 2_000; // ~0.7 MB: several chunks
        for i in 1..=n {
            trail.push(i, &text(i));
        }
        assert!(trail.chunks.len() >= 3, "{} chunks", trail.chunks.len());
        assert_eq!(trail.index.len(), n as usize);
        for (i, &e) in (1..=n).zip(trail.index.iter()) {
            assert_eq!(e.seq, i);
            assert_eq!(trail.text(e), text(i));
        }
        // A chunk never grows past its capacity (which would move the texts already in it).
        assert!(trail.chunks.iter().all(|c| c.capacity() == Trail::CHUNK));
    }

    #[test]
    fn a_text_larger_than_a_chunk_gets_a_chunk_of_its_own() {
        let mut trail = Trail::default();
        trail.push(1, "small");
        let big = "y".repeat(Trail::CHUNK + 10);
        trail.push(2, &big);
        trail.push(3, "after");
        assert_eq!(trail.text(trail.index[0]), "small");
        assert_eq!(trail.text(trail.index[1]), big);
        assert_eq!(trail.text(trail.index[2]), "after");
        assert_eq!(trail.chunks.len(), 3);
    }

    #[test]
    fn replacing_a_text_changes_that_record_only() {
        let mut trail = Trail::default();
        for i in 1..=3 {
            trail.push(i, &text(i));
        }
        trail.replace(2, "changed");
        trail.replace(9, "no such record");
        let texts: Vec<&str> = trail.index.iter().map(|&e| trail.text(e)).collect();
        assert_eq!(texts, [text(1).as_str(), "changed", text(3).as_str()]);
    }
}
