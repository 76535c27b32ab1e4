//! WAL checkpoints for the SQLite ledger: on a thread of their own while the writes are
//! sparse, inline (as SQLite does) while they are dense.
//!
//! SQLite copies the WAL back into the database file (a checkpoint) once the WAL holds 1,000
//! pages, inside the `COMMIT` that crossed the line: that operation waits for the copy and the
//! database file's fsync, a few milliseconds, which is the p99 of a lone caller. An agent's
//! calls are usually sparse (a tool call takes far longer than its gate), so the copy can run
//! between them instead.
//!
//! The ledger's connection reports the WAL's size after each commit (SQLite's WAL hook, which
//! takes the place of its automatic checkpoint). Past [`CHECKPOINT_PAGES`]:
//!
//! - if commits are sparse (the mean gap between recent commits, an exponential average over
//!   about eight, is at least [`DENSE_GAP`]), a thread with its own connection runs a passive
//!   checkpoint, which neither waits for nor blocks the writer, and usually finishes before
//!   the next call;
//! - if commits are dense, the committing connection checkpoints itself, exactly as SQLite
//!   would have. Measured: a background pass racing a writer that never pauses cannot finish
//!   (new frames keep coming, and the WAL restarts from its beginning only once every frame is
//!   copied), and its I/O slowed the commits by 25–40% on this machine's disk;
//! - past [`INLINE_PAGES`] the committing connection checkpoints whatever the gaps, so the WAL
//!   stays bounded.
//!
//! Every checkpoint, wherever it runs, syncs the WAL before and the database after copying, so
//! durability does not change. When the last connection closes SQLite checkpoints and removes
//! the WAL as usual.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;
use rusqlite::hooks::Wal;

/// WAL size (pages) that calls for a checkpoint: SQLite's own `wal_autocheckpoint` default.
pub(crate) const CHECKPOINT_PAGES: i32 = 1_000;

/// WAL size (pages) past which the committing connection checkpoints in any case.
pub(crate) const INLINE_PAGES: i32 = 4 * CHECKPOINT_PAGES;

/// Commits whose mean gap is below this are dense: the checkpoint stays inline. About what a
/// checkpoint of 1,000 pages takes here (4–6 ms): a background pass pays only if the writer
/// pauses longer than it runs. (A reserve and its commit come microseconds apart even from a
/// sparse caller, hence a mean; a busy FULL ledger commits about every millisecond.)
pub(crate) const DENSE_GAP: Duration = Duration::from_millis(5);

/// The checkpoint thread of one ledger; stopped and joined on drop.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// When the ledger opened: commit times are kept as nanoseconds since.
    epoch: Instant,
    last_commit_ns: AtomicU64,
    /// Exponential average of the gaps between commits (weight 1/8 for the newest).
    mean_gap_ns: AtomicU64,
    background: AtomicU64,
    inline: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    requested: bool,
    stop: bool,
}

impl Checkpointer {
    /// Starts the thread with a connection of its own to `path`. `None` if that fails: the
    /// caller then leaves SQLite's automatic checkpoint in place.
    pub(crate) fn start(path: &Path, busy_timeout: Duration) -> Option<Checkpointer> {
        let conn = Connection::open(path).ok()?;
        conn.busy_timeout(busy_timeout).ok()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            epoch: Instant::now(),
            last_commit_ns: AtomicU64::new(0),
            // Starts sparse: a ledger's first checkpoint is a background one unless the
            // writes that filled the WAL came densely.
            mean_gap_ns: AtomicU64::new(DENSE_GAP.as_nanos() as u64 * 8),
            background: AtomicU64::new(0),
            inline: AtomicU64::new(0),
        });
        let on_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("cycles-sqlite-checkpoint".into())
            .spawn(move || run(&conn, &on_thread))
            .ok()?;
        Some(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    /// The WAL hook for the ledger's connection: SQLite calls it after each commit with the
    /// WAL's size in pages.
    pub(crate) fn hook(
        &self,
    ) -> impl FnMut(&mut Wal, i32) -> rusqlite::Result<()> + Send + 'static {
        let shared = self.shared.clone();
        move |wal, pages| {
            // The hook runs under the ledger's connection lock: one commit at a time.
            let now = shared.epoch.elapsed().as_nanos() as u64;
            let gap = now.saturating_sub(shared.last_commit_ns.swap(now, Ordering::Relaxed));
            let mean = shared.mean_gap_ns.load(Ordering::Relaxed);
            let mean = mean - mean / 8 + gap / 8;
            shared.mean_gap_ns.store(mean, Ordering::Relaxed);
            if pages < CHECKPOINT_PAGES {
                return Ok(());
            }
            let dense = mean < DENSE_GAP.as_nanos() as u64;
            if dense || pages >= INLINE_PAGES {
                // A failed checkpoint leaves the frames in the WAL, as safe as before; the
                // commit itself succeeded and must not be reported as failed.
                let _ = wal.checkpoint();
                shared.inline.fetch_add(1, Ordering::Relaxed);
            } else {
                let mut st = shared.state.lock();
                st.requested = true;
                shared.wake.notify_one();
            }
            Ok(())
        }
    }

    /// `(background, inline)` checkpoints run since open.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.shared.background.load(Ordering::Relaxed),
            self.shared.inline.load(Ordering::Relaxed),
        )
    }
}

fn run(conn: &Connection, shared: &Shared) {
    loop {
        {
            let mut st = shared.state.lock();
            while !st.requested && !st.stop {
                shared.wake.wait(&mut st);
            }
            if st.stop {
                return;
            }
            st.requested = false;
        }
        // BUSY (another checkpoint is running) or an I/O error leaves the pages in the WAL,
        // as safe as before; the next commit past the threshold asks again.
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        shared.background.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        {
            let mut st = self.shared.state.lock();
            st.stop = true;
            self.shared.wake.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
