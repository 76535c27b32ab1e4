//! The ledgers the `state_check_*` suites run each case on: a memory ledger, a SQLite file
//! (kept as such too, for edits in SQL), and with the `pg-tests` feature a PostgreSQL schema
//! (the including crate declares `mod postgres_support`).
#![allow(dead_code)]

use std::sync::Arc;

use cycles_core::{Ledger, MemoryLedger, SqliteLedger};

/// A ledger under test, the same one as SQLite when it is, and what must live as long as it
/// (a PostgreSQL schema dropped with the test).
pub struct Under {
    pub ledger: Arc<dyn Ledger>,
    pub sqlite: Option<Arc<SqliteLedger>>,
    pub _schema: Option<Box<dyn std::any::Any>>,
}

/// A fresh memory ledger, a fresh SQLite file `NAME.db` in `dir` (and a fresh PostgreSQL
/// schema tagged `NAME` with `pg-tests`).
pub fn ledgers(dir: &tempfile::TempDir, name: &str) -> Vec<Under> {
    let sqlite = Arc::new(SqliteLedger::open(dir.path().join(format!("{name}.db"))).unwrap());
    #[allow(unused_mut)]
    let mut all = vec![
        Under {
            ledger: Arc::new(MemoryLedger::new()),
            sqlite: None,
            _schema: None,
        },
        Under {
            ledger: sqlite.clone(),
            sqlite: Some(sqlite),
            _schema: None,
        },
    ];
    #[cfg(feature = "pg-tests")]
    {
        let schema = crate::postgres_support::Schema::new(name);
        all.push(Under {
            ledger: Arc::new(schema.ledger()),
            sqlite: None,
            _schema: Some(Box::new(schema)),
        });
    }
    all
}
