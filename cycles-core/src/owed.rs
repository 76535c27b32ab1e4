//! Settlements the ledger could not take when they were made, kept to be made later.
//!
//! A call that ran must be paid for even when the ledger is briefly unreachable as it ends (a
//! PostgreSQL failover, a SQLite file locked past the busy timeout). Each integration used to
//! keep (or drop) such settlements its own way; [`Authority::settle_or_owe`] keeps them here,
//! in the core, and the authority retries them as soon as the ledger answers again (after the
//! next operation that reached it) or when asked ([`Authority::retry_owed`]). Retrying is
//! safe without an idempotency key: a reservation is finalized once, so a settlement that did
//! land after all (an ambiguous failure) is found finalized and dropped, never made twice.
//!
//! Owed settlements live in the process's memory: a process that exits with some still owed
//! loses them (their holds then expire uncharged), so hosts retry at shutdown and log what is
//! left (the Python and Node bindings and the MCP gate do).
//!
//! [`Authority::settle_or_owe`]: crate::Authority::settle_or_owe
//! [`Authority::retry_owed`]: crate::Authority::retry_owed

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

use crate::error::CyclesError;
use crate::request::SettleRequest;

/// A settlement the ledger refused as unavailable, waiting to be made.
///
/// ```
/// use cycles_core::*;
/// let o = OwedSettlement {
///     reservation_id: "rsv_1".into(),
///     request: SettleRequest::new(CallOutcome::Completed),
///     attempts: 1,
///     last_error: "database is locked".into(),
///     since_ms: 1_000,
/// };
/// assert_eq!(serde_json::to_value(&o).unwrap()["request"]["outcome"], "COMPLETED");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwedSettlement {
    /// The reservation to settle.
    pub reservation_id: String,
    /// The settlement, as it was asked for.
    pub request: SettleRequest,
    /// Tries so far, the first included.
    pub attempts: u32,
    /// The ledger's last refusal.
    pub last_error: String,
    /// When the first try failed (ledger clock, ms).
    pub since_ms: i64,
}

/// The owed settlements of one authority.
#[derive(Debug, Default)]
pub(crate) struct OwedQueue {
    /// Oldest first. An entry stays listed while a retry is trying it, and leaves only once
    /// its try has returned: a concurrent `list` (or a retry that returns at once because one
    /// is under way) never misses an entry still owed.
    entries: Mutex<Entries>,
    /// `entries.len()`: read on every operation, so that the common case (nothing owed) costs
    /// one atomic load.
    count: AtomicUsize,
    /// A retry is under way (on some thread, or further up this one's stack).
    retrying: AtomicBool,
}

#[derive(Debug, Default)]
struct Entries {
    next_id: u64,
    list: Vec<(u64, OwedSettlement)>,
}

/// Clears the retrying mark when a pass ends, by a panic in `settle` too.
struct PassMark<'a>(&'a AtomicBool);

impl Drop for PassMark<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl OwedQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    pub(crate) fn push(&self, owed: OwedSettlement) {
        let mut entries = self.entries.lock();
        let id = entries.next_id;
        entries.next_id += 1;
        entries.list.push((id, owed));
        self.count.store(entries.list.len(), Ordering::Release);
    }

    pub(crate) fn list(&self) -> Vec<OwedSettlement> {
        self.entries
            .lock()
            .list
            .iter()
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Tries each owed settlement once with `settle`, oldest first, and returns what is still
    /// owed. A retry already under way (another thread's, or one that is settling further up
    /// this stack) is left to finish: this returns the list at once.
    ///
    /// `settle` answers `Err(LedgerUnavailable)` to keep an entry owed; the first such answer
    /// stops the pass (the ledger is still unreachable, and each try may wait for a lock).
    /// `Ok` ends the entry (made, or nothing left to make).
    pub(crate) fn retry(
        &self,
        mut settle: impl FnMut(&OwedSettlement) -> Result<(), CyclesError>,
    ) -> Vec<OwedSettlement> {
        if self.retrying.swap(true, Ordering::AcqRel) {
            return self.list();
        }
        let _mark = PassMark(&self.retrying);
        let pass: Vec<(u64, OwedSettlement)> = self.entries.lock().list.clone();
        for (id, owed) in pass {
            let answer = settle(&owed);
            let mut entries = self.entries.lock();
            let Some(at) = entries.list.iter().position(|(e, _)| *e == id) else {
                continue;
            };
            match answer {
                Err(CyclesError::LedgerUnavailable(msg)) => {
                    let kept = &mut entries.list[at].1;
                    kept.attempts = kept.attempts.saturating_add(1);
                    kept.last_error = msg;
                    break;
                }
                _ => {
                    entries.list.remove(at);
                    self.count.store(entries.list.len(), Ordering::Release);
                }
            }
        }
        self.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::CallOutcome;

    fn owed(id: &str) -> OwedSettlement {
        OwedSettlement {
            reservation_id: id.into(),
            request: SettleRequest::new(CallOutcome::Completed),
            attempts: 1,
            last_error: "down".into(),
            since_ms: 0,
        }
    }

    #[test]
    fn a_pass_stops_at_the_first_unavailable_answer_and_keeps_the_order() {
        let q = OwedQueue::default();
        for id in ["a", "b", "c"] {
            q.push(owed(id));
        }
        let mut tried = Vec::new();
        let left = q.retry(|o| {
            tried.push(o.reservation_id.clone());
            match o.reservation_id.as_str() {
                "a" => Ok(()),
                _ => Err(CyclesError::LedgerUnavailable("still down".into())),
            }
        });
        assert_eq!(
            tried,
            ["a", "b"],
            "c is not tried once b found the ledger down"
        );
        let ids: Vec<_> = left.iter().map(|o| o.reservation_id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(
            (left[0].attempts, left[0].last_error.as_str()),
            (2, "still down")
        );
        assert_eq!(left[1].attempts, 1, "not tried, not counted");
        assert!(!q.is_empty());
        let left = q.retry(|_| Ok(()));
        assert!(left.is_empty(), "Ok ends the entry");
        assert!(q.is_empty());
    }

    #[test]
    fn a_retry_inside_a_retry_returns_at_once() {
        let q = OwedQueue::default();
        q.push(owed("a"));
        let mut inner = None;
        q.retry(|_| {
            inner = Some(q.retry(|_| panic!("the nested pass must not settle anything")));
            Ok(())
        });
        assert_eq!(
            inner.map(|v| v.len()),
            Some(1),
            "the entry the outer pass is trying is still listed"
        );
        assert!(q.is_empty());
    }

    #[test]
    fn a_panic_while_settling_loses_nothing_and_leaves_the_queue_usable() {
        let q = OwedQueue::default();
        q.push(owed("a"));
        q.push(owed("b"));
        let caught =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.retry(|_| panic!("boom"))));
        assert!(caught.is_err());
        let ids: Vec<_> = q.list().into_iter().map(|o| o.reservation_id).collect();
        assert_eq!(ids, ["a", "b"], "the entry being settled is kept too");
        assert!(q.retry(|_| Ok(())).is_empty(), "a later pass runs");
        assert!(q.is_empty());
    }

    #[test]
    fn what_is_owed_during_a_pass_is_kept_after_the_older_entries() {
        let q = OwedQueue::default();
        q.push(owed("a"));
        q.push(owed("b"));
        let left = q.retry(|o| {
            if o.reservation_id == "a" {
                q.push(owed("c"));
                Ok(())
            } else {
                Err(CyclesError::LedgerUnavailable("down".into()))
            }
        });
        let ids: Vec<_> = left.iter().map(|o| o.reservation_id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(left[0].attempts, 2);
    }
}
