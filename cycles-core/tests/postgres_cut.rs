//! A session cut at the worst moments of a commit, through a TCP proxy between the ledger and a
//! real server (scripts/pg-test.sh): just before `COMMIT` reaches the server (the transaction
//! must roll back and the operation run again), and after `COMMIT` but before the durability
//! barrier (committed, every answer lost: the ledger must find its record, make it durable and
//! answer as committed). Either way the operation is applied exactly once and the chain and the
//! ledger's state verify.
#![cfg(feature = "postgres")]

mod postgres_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cycles_core::*;
use postgres_support::Schema;
use serde_json::json;

/// Where to cut the session that carries the next commit.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cut {
    /// Forward everything up to the `COMMIT` message, not it.
    BeforeCommit,
    /// Forward `COMMIT`, not the durability barrier after it.
    BeforeBarrier,
}

impl Cut {
    /// The text of the simple-query message to stop at (NUL-terminated in the protocol).
    fn marker(self) -> &'static [u8] {
        match self {
            Cut::BeforeCommit => b"COMMIT\0",
            Cut::BeforeBarrier => b"SELECT pg_logical_emit_message(",
        }
    }
}

#[derive(Default)]
struct ProxyState {
    armed: Mutex<Option<Cut>>,
    cuts: AtomicU32,
    accepted: AtomicU32,
}

/// A TCP proxy to the server that, once armed, cuts one session at the chosen point: it forwards
/// the client's bytes up to the start of the marked message, stops forwarding the server's
/// answers, waits until the server has handled what it got, then closes both sides.
struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ProxyState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                st.accepted.fetch_add(1, Ordering::SeqCst);
                let muted = Arc::new(AtomicBool::new(false));
                let (c2, s2, m2) = (
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    muted.clone(),
                );
                std::thread::spawn(move || answers(s2, c2, m2));
                let st = st.clone();
                std::thread::spawn(move || requests(client, server, muted, st));
            }
        });
        Proxy { port, state }
    }

    fn arm(&self, cut: Cut) {
        *self.state.armed.lock().unwrap() = Some(cut);
    }
}

/// Server to client, until the session is muted (answers lost) or closed.
fn answers(mut server: TcpStream, mut client: TcpStream, muted: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) if !muted.load(Ordering::SeqCst) => {
                if client.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Ok(_) => {}
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

/// Client to server. The last bytes read are held back a moment (until more come or the client
/// pauses), so a marker split across two reads is still found.
fn requests(
    mut client: TcpStream,
    mut server: TcpStream,
    muted: Arc<AtomicBool>,
    st: Arc<ProxyState>,
) {
    const HOLD: usize = 64;
    client
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // The client waits for answers: nothing more is coming now.
                if !pending.is_empty() && server.write_all(&pending).is_err() {
                    break;
                }
                pending.clear();
                continue;
            }
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        let cut = *st.armed.lock().unwrap();
        if let Some(cut) = cut
            && let Some(at) = find(&pending, cut.marker())
        {
            // The message starts with its type byte and a 4-byte length before the text.
            let start = at.saturating_sub(5);
            *st.armed.lock().unwrap() = None;
            muted.store(true, Ordering::SeqCst);
            let _ = server.write_all(&pending[..start]);
            // Let the server handle what it got (and commit, if COMMIT was in it) before the
            // session goes away, so the outcome does not depend on a race.
            std::thread::sleep(Duration::from_millis(500));
            st.cuts.fetch_add(1, Ordering::SeqCst);
            let _ = server.shutdown(Shutdown::Both);
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        let keep = pending.len().min(HOLD);
        let send = pending.len() - keep;
        if server.write_all(&pending[..send]).is_err() {
            break;
        }
        pending.drain(..send);
    }
    let _ = server.shutdown(Shutdown::Both);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `postgres://user@host:port/db` with the port replaced.
fn through(url: &str, port: u16) -> (String, String) {
    let rest = url.split_once("://").unwrap().1;
    let host_port = rest
        .split('/')
        .next()
        .unwrap()
        .rsplit('@')
        .next()
        .unwrap()
        .to_string();
    let (host, _) = host_port.rsplit_once(':').unwrap();
    (
        url.replacen(&host_port, &format!("{host}:{port}"), 1),
        host_port,
    )
}

fn count(admin: &mut postgres::Client, sql: &str) -> i64 {
    admin.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn a_session_cut_before_or_after_commit_applies_the_operation_exactly_once() {
    for cut in [Cut::BeforeCommit, Cut::BeforeBarrier] {
        let schema = Schema::new("cut");
        let (proxied, upstream) = through(&postgres_support::url(), 0);
        let proxy = Proxy::start(upstream);
        let (proxied, _) = through(&proxied, proxy.port);
        let ledger =
            PostgresLedger::connect_with(&proxied, postgres_support::options(&schema.0)).unwrap();
        let auth = Authority::builder()
            .policy(
                Policy::default()
                    .register("write_file", Tier::T1)
                    .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 100)),
            )
            .ledger(ledger)
            .build()
            .unwrap();
        let bot = Subject::new().tenant("acme").agent("bot");
        let mut admin = schema.admin();

        // A reserve whose commit is cut.
        let sessions = proxy.state.accepted.load(Ordering::SeqCst);
        proxy.arm(cut);
        let r = auth
            .reserve(&ReserveRequest::new(
                bot.clone(),
                ToolCall::new("write_file", json!({"path": "a"})),
            ))
            .unwrap_or_else(|e| panic!("{cut:?}: {e}"));
        assert_eq!(proxy.state.cuts.load(Ordering::SeqCst), 1, "{cut:?}");
        assert!(
            proxy.state.accepted.load(Ordering::SeqCst) > sessions,
            "{cut:?}: the ledger went on through a new session"
        );
        let hold = r.holds[0].amount;
        assert!(hold > 0);
        assert_eq!(
            count(&mut admin, "SELECT count(*) FROM cycles_reservations"),
            1,
            "{cut:?}: reserved exactly once"
        );
        assert_eq!(
            count(
                &mut admin,
                "SELECT count(*) FROM cycles_audit WHERE kind = 'reserve'"
            ),
            1,
            "{cut:?}"
        );
        assert_eq!(
            count(&mut admin, "SELECT reserved FROM cycles_budgets"),
            hold,
            "{cut:?}"
        );

        // Its commit, cut the same way.
        proxy.arm(cut);
        let c = auth
            .commit(&r.reservation_id, &CommitRequest::default())
            .unwrap_or_else(|e| panic!("{cut:?}: {e}"));
        assert_eq!(proxy.state.cuts.load(Ordering::SeqCst), 2, "{cut:?}");
        assert_eq!(c.charged[0].amount, hold);
        assert_eq!(
            count(&mut admin, "SELECT spent FROM cycles_budgets"),
            hold,
            "{cut:?}: charged exactly once"
        );
        assert_eq!(
            count(&mut admin, "SELECT reserved FROM cycles_budgets"),
            0,
            "{cut:?}"
        );
        assert_eq!(
            count(
                &mut admin,
                "SELECT count(*) FROM cycles_audit WHERE kind = 'commit'"
            ),
            1,
            "{cut:?}"
        );
        let v = auth.verify().unwrap();
        assert!(v.ok, "{cut:?}: {v:?}");
    }
}
