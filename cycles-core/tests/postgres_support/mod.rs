//! Shared helpers of the `postgres_*` tests: the server URL, one fresh schema per test, a
//! plain client for inspection, and id normalisation for comparing runs on two ledgers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cycles_core::ledger::LedgerTxn;
use cycles_core::{AuditRecord, PostgresLedger, PostgresOptions};
use serde_json::Value;

/// The server under test. The tests never fall back to anything else: without a server they
/// fail, they are never silently skipped.
pub fn url() -> String {
    std::env::var("CYCLES_PG_URL").expect(
        "CYCLES_PG_URL is not set: run scripts/pg-test.sh, which starts a PostgreSQL server",
    )
}

/// A schema name no other test (or process, or earlier run) uses.
pub fn unique_schema(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t_{tag}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Options for a test ledger in `schema`: small pool, short timeouts.
pub fn options(schema: &str) -> PostgresOptions {
    PostgresOptions {
        pool_size: 4,
        connect_timeout: Duration::from_secs(2),
        ..PostgresOptions::default()
    }
    .schema(schema)
}

/// A ledger in `schema` (created if absent).
pub fn ledger(schema: &str) -> PostgresLedger {
    PostgresLedger::connect_with(&url(), options(schema)).expect("postgres ledger connects")
}

/// A plain client with `search_path` set to `schema`, for looking at the tables directly.
pub fn admin(schema: &str) -> postgres::Client {
    let mut c = postgres::Client::connect(&url(), postgres::NoTls).expect("admin connects");
    c.batch_execute(&format!("SET search_path TO {schema}"))
        .unwrap();
    c
}

/// A test's schema, dropped when the test ends (so runs against a long-lived server leave
/// nothing behind).
pub struct Schema(pub String);

impl Schema {
    /// A fresh schema name (the ledger creates the schema on connect).
    pub fn new(tag: &str) -> Schema {
        Schema(unique_schema(tag))
    }
    /// A ledger in this schema.
    pub fn ledger(&self) -> PostgresLedger {
        ledger(&self.0)
    }
    /// A plain client in this schema.
    pub fn admin(&self) -> postgres::Client {
        admin(&self.0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&url(), postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0));
        }
    }
}

/// Replaces generated ids (`rsv_…`, `evt_…`) by their order of first appearance and drops
/// hashes (which depend on the ids), so outputs of the same sequence on two ledgers compare equal.
#[derive(Default)]
pub struct Normalizer {
    ids: Vec<String>,
}

impl Normalizer {
    pub fn apply(&mut self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.replace_ids(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.apply(x)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "hash" | "prev_hash" | "head_hash"))
                    .map(|(k, x)| (k.clone(), self.apply(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Replaces every `rsv_`/`evt_`/`apr_` + 32 hex digits inside `s`.
    fn replace_ids(&mut self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(pos) = ["rsv_", "evt_", "apr_"]
            .iter()
            .filter_map(|p| rest.find(p))
            .filter(|&i| is_generated_id(rest.get(i..i + 36).unwrap_or("")))
            .min()
        {
            let id = &rest[pos..pos + 36];
            let n = match self.ids.iter().position(|x| x == id) {
                Some(n) => n,
                None => {
                    self.ids.push(id.to_string());
                    self.ids.len() - 1
                }
            };
            out.push_str(&rest[..pos]);
            out.push_str(&format!("{}#{n}", &id[..3]));
            rest = &rest[pos + 36..];
        }
        out.push_str(rest);
        out
    }
}

fn is_generated_id(s: &str) -> bool {
    s.len() == 36
        && ["rsv_", "evt_", "apr_"].iter().any(|p| s.starts_with(p))
        && s[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The whole audit trail, normalised. Records are compared in chain order: every ledger lists
/// expired reservations in the same order (deadline, then id), so one sweep's `expire` records,
/// and the budgets each one leaves, come out alike.
pub fn audit_trail(auth: &cycles_core::Authority, n: &mut Normalizer) -> Vec<Value> {
    auth.audit(&cycles_core::AuditQuery::default())
        .expect("audit readable")
        .iter()
        .map(|r| n.apply(&serde_json::to_value(r).unwrap()))
        .collect()
}

/// Seals `rec` after the chain head and appends it, as the state machine does.
pub fn append(txn: &mut dyn LedgerTxn, rec: AuditRecord) -> cycles_core::Result<()> {
    let head = txn.audit_head()?;
    txn.append_audit(rec.seal_after(head))
}

/// Terminates every server session whose `application_name` is `app`; how many there were.
pub fn terminate_sessions(admin: &mut postgres::Client, app: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1) t",
            &[&app],
        )
        .unwrap()
        .get(0)
}
