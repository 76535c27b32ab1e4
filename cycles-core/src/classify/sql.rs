//! SQL: parsed with `sqlparser` (every statement of the string, nested statements included).
//!
//! SELECT/SHOW/EXPLAIN 0 · INSERT 2 · UPDATE/DELETE with a WHERE 2, without one (or with a
//! trivially true one such as `WHERE 1=1`) 3 · DROP, TRUNCATE, ALTER ... DROP, GRANT, REVOKE 4 ·
//! SQL that does not parse 4 (fail closed). A data-modifying statement anywhere (a CTE body,
//! `INSERT ... SELECT`, `EXPLAIN ANALYZE` or `EXPLAIN (ANALYZE)`, which run their statement)
//! counts like a top-level one, and so does SQL text handed to a function or statement that runs
//! it (`dblink_exec`, `query_to_xml`, `EXEC('...')`); such text that is not a literal is 4.
//!
//! Where the server could split the text differently than the configured dialect does (the
//! generic dialect stands for any server; a backslash in a string depends on
//! `standard_conforming_strings` / `NO_BACKSLASH_ESCAPES`; nested comments, `--` at a carriage
//! return, dollar quotes), the text is also read the other ways and the highest tier wins.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};
use sqlparser::ast::{
    BinaryOperator, CopyTarget, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName,
    SetExpr, Statement, TableFactor, UnaryOperator, Value, Visit, Visitor, visit_expressions,
    visit_statements,
};
use sqlparser::dialect::{
    BigQueryDialect, Dialect, DuckDbDialect, GenericDialect, MsSqlDialect, MySqlDialect,
    PostgreSqlDialect, SQLiteDialect, SnowflakeDialect,
};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::Verdict;
use crate::model::Tier;

mod plpgsql;
mod scan;

/// Longest SQL text parsed; longer text is tier 4 (`sql.too_long`) without parsing.
pub const MAX_SQL_LEN: usize = 1 << 20;
/// Deepest expression nesting parsed; deeper SQL is unparsable (tier 4).
const RECURSION_LIMIT: usize = 64;
/// Deepest nesting of SQL text run by SQL (`EXEC('EXEC(''...'')')`) followed.
const MAX_NESTED_SQL: usize = 8;

/// The SQL dialect a tool's queries are parsed with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqlDialect {
    /// Accepts the union of common syntax (default).
    #[default]
    Generic,
    /// PostgreSQL.
    #[serde(alias = "postgresql")]
    Postgres,
    /// MySQL / MariaDB.
    #[serde(alias = "mariadb")]
    Mysql,
    /// SQLite.
    Sqlite,
    /// Microsoft SQL Server.
    Mssql,
    /// Snowflake.
    Snowflake,
    /// BigQuery.
    Bigquery,
    /// DuckDB.
    Duckdb,
}

impl SqlDialect {
    fn dialect(self) -> &'static dyn Dialect {
        match self {
            SqlDialect::Generic => &GenericDialect {},
            SqlDialect::Postgres => &PostgreSqlDialect {},
            SqlDialect::Mysql => &MySqlDialect {},
            SqlDialect::Sqlite => &SQLiteDialect {},
            SqlDialect::Mssql => &MsSqlDialect {},
            SqlDialect::Snowflake => &SnowflakeDialect,
            SqlDialect::Bigquery => &BigQueryDialect,
            SqlDialect::Duckdb => &DuckDbDialect {},
        }
    }
}

/// Functions whose call has a side effect, with their tier.
const SIDE_EFFECT_FUNCTIONS: &[(&str, Tier)] = &[
    ("pg_terminate_backend", Tier::T3),
    ("pg_cancel_backend", Tier::T2),
    ("pg_drop_replication_slot", Tier::T4),
    ("pg_reload_conf", Tier::T2),
    ("pg_promote", Tier::T3),
    ("pg_replication_origin_drop", Tier::T3),
    ("pg_replication_slot_advance", Tier::T3),
    // Consume a logical slot's changes (only `peek` leaves them): downstream CDC consumers
    // and logical replicas lose them, as with `pg_replication_slot_advance`.
    ("pg_logical_slot_get_changes", Tier::T3),
    ("pg_logical_slot_get_binary_changes", Tier::T3),
    ("pg_replication_origin_advance", Tier::T3),
    ("pg_wal_replay_pause", Tier::T2),
    ("pg_create_logical_replication_slot", Tier::T2),
    ("pg_create_physical_replication_slot", Tier::T2),
    ("pg_switch_wal", Tier::T1),
    ("pg_create_restore_point", Tier::T1),
    ("pg_rotate_logfile", Tier::T1),
    ("pg_truncate_visibility_map", Tier::T2),
    ("lo_truncate", Tier::T3),
    ("lo_truncate64", Tier::T3),
    ("lo_put", Tier::T2),
    ("lo_from_bytea", Tier::T2),
    ("lo_create", Tier::T2),
    ("lo_creat", Tier::T2),
    ("lowrite", Tier::T2),
    ("lo_write", Tier::T2),
    ("load_extension", Tier::T4),
    ("writefile", Tier::T2),
    ("edit", Tier::T2),
    ("sp_oacreate", Tier::T4),
    ("xp_regwrite", Tier::T4),
    ("pg_file_write", Tier::T3),
    ("pg_file_unlink", Tier::T3),
    ("pg_file_rename", Tier::T3),
    ("lo_unlink", Tier::T3),
    ("lo_import", Tier::T2),
    ("lo_export", Tier::T2),
    ("dblink_exec", Tier::T3),
    ("sys_exec", Tier::T4),
    ("sys_eval", Tier::T4),
    ("xp_cmdshell", Tier::T4),
    ("setval", Tier::T2),
    ("nextval", Tier::T1),
    ("set_config", Tier::T1),
    ("pg_stat_reset", Tier::T2),
    ("pg_stat_reset_shared", Tier::T2),
    ("pg_stat_statements_reset", Tier::T2),
    ("system$cancel_query", Tier::T2),
    ("system$cancel_all_queries", Tier::T3),
    ("system$abort_session", Tier::T3),
    // pg_cron: removing a job (often the nightly backup) or changing what it runs, which is
    // not read here.
    ("unschedule", Tier::T3),
    ("alter_job", Tier::T3),
];

/// Settings whose change makes later writes skip the binary log or foreign-key triggers
/// (`sql.set_unsafe`), however set.
const UNSAFE_SETTINGS: &[&str] = &["session_replication_role", "sql_log_bin"];

/// The last argument, in [`SQL_RUNNING_FUNCTIONS`].
const LAST: usize = usize::MAX;

/// Functions that run SQL text given as an argument, with the index of that argument for one
/// and for several arguments (`dblink(sql)`, `dblink(conn, sql)`).
/// `LAST` stands for the last argument; a qualified name (`cron.schedule`) matches only so
/// qualified.
const SQL_RUNNING_FUNCTIONS: &[(&str, usize, usize)] = &[
    ("cron.schedule", LAST, LAST),
    ("cron.schedule_in_database", 2, 2),
    ("pg_background_launch", 0, 0),
    ("openquery", 1, 1),
    ("openrowset", LAST, LAST),
    ("dblink", 0, 1),
    ("dblink_exec", 0, 1),
    ("dblink_send_query", 0, 1),
    ("dblink_open", 1, 2),
    ("query_to_xml", 0, 0),
    ("query_to_xmlschema", 0, 0),
    ("query_to_xml_and_xmlschema", 0, 0),
];

/// Classifies SQL text (one or several statements) in `dialect`.
///
/// ```
/// use cycles_core::classify::sql::{classify, SqlDialect};
/// use cycles_core::Tier;
/// assert_eq!(classify("SELECT * FROM users", SqlDialect::Postgres).tier, Tier::T0);
/// assert_eq!(classify("DELETE FROM users WHERE id = 7", SqlDialect::Postgres).tier, Tier::T2);
/// assert_eq!(classify("DELETE FROM users", SqlDialect::Postgres).tier, Tier::T3);
/// assert_eq!(classify("SELECT 1; DROP TABLE users", SqlDialect::Postgres).tier, Tier::T4);
/// assert_eq!(classify("SELEC * FRM", SqlDialect::Postgres).rules, ["sql.unparsable"]);
/// ```
pub fn classify(sql: &str, dialect: SqlDialect) -> Verdict {
    let mut v = Verdict::default();
    apply(sql, dialect, &mut v);
    v
}

/// The first word of text that may be SQL, lowercased, after blanks, comments (`--`, `/* */`),
/// semicolons and parentheses.
fn leading_keyword(text: &str) -> String {
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';' || c == '(');
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    rest.split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Statements that change the schema or the server: distinctive enough that text which
/// starts with one and parses is SQL.
const DDL_KEYWORDS: &[&str] = &[
    "drop", "truncate", "alter", "grant", "revoke", "create", "rename", "attach", "detach",
    "vacuum", "copy", "pragma", "call", "exec", "execute", "do", "undrop", "reset", "purge",
    "explain", "reassign", "load", "deny", "backup", "restore", "dbcc", "kill", "shutdown",
    // T-SQL runs a procedure without EXEC as a batch's first statement (`sp_MSforeachtable`).
    "sp", "xp",
];

/// Statements that read or write rows: text starting with one is SQL only if it also names
/// what it acts on (`FROM`, `INTO`, `SET`, ...), since `delete account howto` parses too.
const DML_KEYWORDS: &[&str] = &[
    "select", "insert", "update", "delete", "with", "merge", "replace", "upsert", "set", "begin",
];

/// The first word of each statement of text that may be SQL (split at every `;` and line
/// break, since T-SQL batches separate statements by lines; strings not respected: this only
/// decides whether to parse), after blanks, `--`, `/* */` and `#` comments (MySQL's and
/// BigQuery's) and parentheses: `USE prod; DROP TABLE users`, `USE prod\nGO\nDROP TABLE users`
/// and `START TRANSACTION; DELETE FROM users` start statements with `drop` and `delete` too.
fn statement_keywords(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split([';', '\n', '\r']).map(|piece| {
        let mut rest = piece;
        loop {
            let before = rest.len();
            rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
            if let Some(after) = rest.strip_prefix('#') {
                rest = after.split_once('\n').map_or("", |(_, r)| r);
            }
            rest = rest.trim_start();
            if rest.len() == before {
                break;
            }
        }
        leading_keyword(rest)
    })
}

/// Whether free text reads as SQL rather than words: a statement of it starts with a schema
/// keyword, or with a row keyword and the text names what it acts on.
fn reads_as_sql(text: &str) -> bool {
    let names_object = || {
        text.split(|c: char| !c.is_ascii_alphabetic()).any(|w| {
            [
                "from", "table", "into", "set", "database", "schema", "values", "where", "index",
                "view", "column", "using", "stage",
            ]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k))
        })
    };
    statement_keywords(text).any(|k| {
        DDL_KEYWORDS.contains(&k.as_str())
            || DML_KEYWORDS.contains(&k.as_str()) && names_object()
            // A function called for its effect (`SELECT pg_drop_replication_slot('s')`).
            || k == "select" && text.contains('(')
            // Snowflake's `REMOVE @stage`.
            || matches!(k.as_str(), "remove" | "rm") && text.contains('@')
    }) || statement_shaped(text)
}

/// Text with `/* */` comments made blanks, except MySQL's executable `/*! ... */`, whose text
/// runs and is kept.
fn without_block_comments(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("/*") {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("/*") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let (inner, tail) = after.split_once("*/").unwrap_or((after, ""));
        match inner.strip_prefix('!') {
            Some(code) => out.push_str(code.trim_start_matches(|c: char| c.is_ascii_digit())),
            None => out.push(' '),
        }
        out.push(' ');
        rest = tail;
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// What a statement may drop, create or alter (after modifiers such as `OR REPLACE`,
/// `TEMPORARY`, `IF EXISTS`): these and [`PROSE_KINDS`] ([`is_object_kind`]).
const SQL_ONLY_KINDS: &[&str] = &[
    "table",
    "tables",
    "database",
    "databases",
    "schema",
    "schemas",
    "views",
    "role",
    "roles",
    "login",
    "function",
    "procedure",
    "proc",
    "trigger",
    "sequence",
    "extension",
    "stage",
    "warehouse",
    "keyspace",
    "constraint",
    "owned",
    "tablespace",
    "publication",
    "subscription",
    "assembly",
    "certificate",
    "credential",
    "account",
    "system",
    "instance",
];

/// Words between a schema verb and the kind of object it acts on.
const SQL_MODIFIERS: &[&str] = &[
    "or",
    "replace",
    "if",
    "not",
    "exists",
    "temp",
    "temporary",
    "unique",
    "global",
    "local",
    "transient",
    "secure",
    "unlogged",
    "recursive",
    "clustered",
    "nonclustered",
    "external",
    "materialized",
    "volatile",
    "virtual",
    "snapshot",
    "search",
    "vector",
    "foreign",
    "all",
    "fulltext",
    "spatial",
    "online",
];

/// Privileges a GRANT or REVOKE names first.
const SQL_PRIVILEGES: &[&str] = &[
    "all",
    "select",
    "insert",
    "update",
    "delete",
    "usage",
    "execute",
    "create",
    "connect",
    "references",
    "ownership",
    "alter",
    "drop",
    "control",
    "impersonate",
    "role",
    "truncate",
    "monitor",
    "operate",
    "manage",
    "super",
    "reload",
    "shutdown",
    "process",
    "file",
    "grant",
];

/// Whether `w` is a kind of object a statement may drop, create or alter.
fn is_object_kind(w: &str) -> bool {
    SQL_ONLY_KINDS.contains(&w) || PROSE_KINDS.contains(&w)
}

/// Object kinds that are also common words (`create user account`): with a verb that only
/// adds or changes (`CREATE`, `ALTER`, `RENAME`) they do not make text SQL-shaped.
const PROSE_KINDS: &[&str] = &[
    "user",
    "users",
    "type",
    "event",
    "model",
    "row",
    "domain",
    "connection",
    "task",
    "stream",
    "share",
    "column",
    "policy",
    "endpoint",
    "partition",
    "capability",
    "collection",
    "index",
    "server",
    "snapshot",
    "volume",
    "integration",
    "dataset",
    "catalog",
    "pipe",
    "view",
    "dictionary",
    "language",
    "wrapper",
    "aggregate",
    "operator",
    "cast",
    "collation",
    "conversion",
    "statistics",
    "transform",
    "rule",
    "group",
    "synonym",
    "macro",
    "secret",
    "application",
    "package",
    "alert",
    "notebook",
    "method",
    "configuration",
    "parser",
    "template",
    "mapping",
];

/// Words of prose between `drop`/`truncate` and a kind (`drop the table of contents`): any
/// other word there is taken for a modifier this list does not know (`DROP DYNAMIC TABLE`).
const PROSE_FILLERS: &[&str] = &[
    "the", "a", "an", "this", "that", "these", "those", "my", "your", "our", "their", "its", "his",
    "her", "some", "any", "every", "each", "no", "one", "it", "them", "me", "us", "you", "to",
    "in", "of", "on", "for", "with", "from", "by", "vs", "versus", "and", "how", "what", "when",
    "why", "is", "are", "was", "be",
];

/// Whether text that no dialect parses still has the shape of a statement that changes
/// something (`DROP DATABASE [prod]`, `DELETE FROM t`, `EXEC sp_x`) at the start of one of its
/// statements (or after `BEGIN`, `THEN`, `ELSE`), as opposed to words that happen to start with
/// a statement keyword (`create a new app`, `do not delete from the list`).
fn statement_shaped(text: &str) -> bool {
    let text = without_block_comments(text);
    text.split(';').any(|piece| {
        let mut words: Vec<String> = Vec::new();
        // The byte offset of each word in `piece`.
        let mut at: Vec<usize> = Vec::new();
        // Whether each word begins a line: T-SQL batches put one statement on each.
        let mut line_start: Vec<bool> = Vec::new();
        // `#` and `--` comment lines are skipped.
        for line in piece
            .lines()
            .filter(|l| !l.trim_start().starts_with(['#', '-']))
        {
            let first = words.len();
            let line_at = line.as_ptr() as usize - piece.as_ptr() as usize;
            let is_word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '$');
            let mut start = None;
            for (k, c) in line
                .char_indices()
                .chain(std::iter::once((line.len(), ' ')))
            {
                match (is_word(c), start) {
                    (true, None) => start = Some(k),
                    (false, Some(s)) => {
                        start = None;
                        words.push(line[s..k].to_ascii_lowercase());
                        at.push(line_at + s);
                    }
                    _ => {}
                }
            }
            line_start.resize(words.len(), false);
            if let Some(start) = line_start.get_mut(first) {
                *start = true;
            }
        }
        let word = |i: usize| words.get(i).map_or("", String::as_str);
        // T-SQL's `IF OBJECT_ID('t') IS NOT NULL DROP TABLE t`: the statement follows the
        // condition, anywhere after the `IF`.
        let first_if = (0..words.len()).find(|&i| line_start[i] && word(i) == "if");
        let shaped_at = |i: usize| shaped_start(&words, i);
        // Read again for what follows a statement's object, once per piece and only if needed.
        let scan = std::cell::OnceCell::new();
        let follows =
            |i: usize| scan::takes_what_follows(scan.get_or_init(|| scan::Scan::new(piece)), at[i]);
        (0..words.len())
            .filter(|&i| {
                line_start[i]
                    || matches!(word(i - 1), "begin" | "then" | "else" | "go")
                    || first_if.is_some_and(|f| f < i)
            })
            .any(|i| shaped_at(i) && follows(i))
    })
}

/// The keyword check of [`statement_shaped`] on its words: whether word `i` starts a statement
/// that changes something (what follows its object is checked by
/// [`scan::takes_what_follows`]).
fn shaped_start(words: &[String], i: usize) -> bool {
    let word = |i: usize| words.get(i).map_or("", String::as_str);
    match word(i) {
        "drop" | "truncate" | "undrop" => {
            // A kind after modifiers, also up to two not listed (`DROP DYNAMIC
            // TABLE`, `DROP FOREIGN DATA WRAPPER`), unless a prose word comes first.
            let mut unknown = 0;
            for j in i + 1..i + 6 {
                let w = word(j);
                if is_object_kind(w) {
                    return true;
                }
                if w.is_empty() || PROSE_FILLERS.contains(&w) {
                    return false;
                }
                if !SQL_MODIFIERS.contains(&w) {
                    unknown += 1;
                    if unknown > 2 {
                        return false;
                    }
                }
            }
            false
        }
        // Statements that destroy data, history or the whole server whatever follows.
        "reset" => matches!(word(i + 1), "master" | "replica" | "slave" | "binary"),
        "purge" => matches!(word(i + 1), "binary" | "master" | "logs" | "recyclebin"),
        "restore" => matches!(word(i + 1), "database" | "log" | "table" | "schema"),
        "reassign" => word(i + 1) == "owned",
        "load" => {
            word(i + 1) == "data"
                && matches!(
                    word(i + 2),
                    "infile" | "local" | "low_priority" | "concurrent" | "overwrite" | "into"
                )
        }
        "dbcc" => !word(i + 1).is_empty(),
        "shutdown" => matches!(word(i + 1), "" | "with"),
        w if i == 0 && (w.starts_with("sp_") || w.starts_with("xp_")) => true,
        "alter" | "create" | "rename" => {
            let mut j = i + 1;
            while SQL_MODIFIERS.contains(&word(j)) && !is_object_kind(word(j)) {
                j += 1;
            }
            SQL_ONLY_KINDS.contains(&word(j))
        }
        "delete" => word(i + 1) == "from",
        "insert" => matches!(word(i + 1), "into" | "overwrite" | "or"),
        "replace" | "merge" | "upsert" => word(i + 1) == "into" || word(i + 2) == "using",
        "update" => word(i + 2) == "set",
        "grant" | "revoke" | "deny" => SQL_PRIVILEGES.contains(&word(i + 1)),
        "exec" | "execute" | "call" => {
            let next = word(i + 1);
            next == "immediate"
                || next.starts_with("sp_")
                || next.starts_with("xp_")
                || next.starts_with('@')
                || ["master", "msdb", "sys", "dbo"].contains(&next)
        }
        _ => false,
    }
}

/// The dialects free text is read in when the generic one does not parse it.
const ALL_DIALECTS: &[SqlDialect] = &[
    SqlDialect::Postgres,
    SqlDialect::Mysql,
    SqlDialect::Mssql,
    SqlDialect::Sqlite,
    SqlDialect::Snowflake,
    SqlDialect::Bigquery,
    SqlDialect::Duckdb,
];

/// SQL found in free text (a parameter that may hold SQL, a raw request body, a string in
/// code): rated by the SQL rules when it reads as SQL rather than words; returns whether it
/// did. The text is parsed in the generic dialect, else in every dialect (the highest tier of
/// those that parse it counts: T-SQL's `[prod]`, PostgreSQL's `WITH (FORCE)`, BigQuery's
/// scripts); SQL-shaped text that no dialect parses is `sql.unparsable`, 4 (fail closed).
///
/// Text that no dialect parses is also rated by the statements it names wherever they start
/// ([`scan`]: T-SQL's `USE master DROP DATABASE prod`, `EXEC ('...') AT linked`, meta-commands),
/// whether or not a statement of it starts where [`reads_as_sql`] looks: registering a tool
/// by name never rates such text lower than the SQL classifier does.
pub(crate) fn apply_if_sql(text: &str, v: &mut Verdict) -> bool {
    let shaped = reads_as_sql(text);
    let mut named = Verdict::default();
    let names = scan::apply(text, &mut named);
    if !shaped && !names {
        return false;
    }
    match best_parse(text) {
        Some(sql) if shaped || names => {
            for rule in &sql.rules {
                v.raise(sql.tier, rule);
            }
            true
        }
        _ => {
            for rule in &named.rules {
                v.raise(named.tier, rule);
            }
            if shaped && statement_shaped(text) {
                v.raise(Tier::T4, "sql.unparsable");
                return true;
            }
            names
        }
    }
}

/// The classification of `text` in the generic dialect if it parses there, else the highest
/// of the dialects that parse it; `None` when none does.
fn best_parse(text: &str) -> Option<Verdict> {
    let parsed = |dialect| {
        let sql = classify(text, dialect);
        (!sql.rules.contains(&"sql.unparsable")).then_some(sql)
    };
    parsed(SqlDialect::Generic).or_else(|| {
        ALL_DIALECTS
            .iter()
            .filter_map(|&d| parsed(d))
            .max_by_key(|sql| sql.tier)
    })
}

/// Whether text is positively a read: some dialect parses it (the generic one first, as
/// [`apply_if_sql`] reads it) and every statement only reads or sets the session. Text that is
/// not SQL, or that no dialect parses, is not (a query language this crate cannot read).
pub(crate) fn parses_as_read(text: &str) -> bool {
    const READS: &[&str] = &[
        "sql.select",
        "sql.read_or_session",
        "sql.explain",
        "sql.empty",
    ];
    let best = best_parse(text);
    best.is_some_and(|sql| sql.tier == Tier::T0 && sql.rules.iter().all(|r| READS.contains(r)))
}

/// Raises `v` by the statements of `sql`.
pub(crate) fn apply(sql: &str, dialect: SqlDialect, v: &mut Verdict) {
    if sql.len() <= OWN_STACK_BELOW {
        return apply_nested(sql, dialect, 0, v);
    }
    // A long text can make a deep tree whatever its operators (`x IN (1) IN (1) ...`,
    // `a #- b #- ...`, `x[1][1]...`, COLLATE chains): the parser builds such chains in a loop,
    // and walking or dropping the tree recurses, about 50 bytes of stack per level. On the
    // caller's stack (2 MiB on tokio's and many pools' threads) that overflows and aborts the
    // process; so a long text is read on a thread of its own whose stack covers the deepest
    // tree 1 MiB of text can make. The stack is reserved, not touched, unless used.
    let own = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("cycles-sql".into())
            .stack_size(LONG_SQL_STACK)
            .spawn_scoped(scope, || {
                let mut own = Verdict::default();
                apply_nested(sql, dialect, 0, &mut own);
                own
            })
            .ok()
            .and_then(|h| h.join().ok())
    });
    match own {
        Some(own) => {
            for rule in &own.rules {
                v.raise(own.tier, rule);
            }
        }
        // No thread (out of memory or threads), or a panic: fail closed.
        None => v.raise(Tier::T4, "sql.too_complex"),
    }
}

/// Texts up to this length are read on the caller's stack: the deepest tree they can make is
/// a few hundred kilobytes of stack at most.
const OWN_STACK_BELOW: usize = 4 << 10;

/// The stack of the thread a longer text is read on: 1 MiB of text makes at most about 500,000
/// levels, about 25 MiB at 50 bytes each; ten times that, reserved, not committed.
const LONG_SQL_STACK: usize = 256 << 20;

/// Most binary operators (`+`, `||`, `AND`, `OR`, `=`, `::`, ...) in a text that is parsed. The
/// parser builds operator chains in a loop, so its recursion limit does not bound how deep the
/// tree gets, and every walk of the tree (dropping it included) recurses: 50,000 terms
/// overflow a 2 MiB thread stack, which aborts the process. Beyond this the text is tier 4
/// (`sql.too_complex`), unparsed. Real queries stay far below (long lists are `IN (...)`,
/// which are commas).
pub const MAX_SQL_OPERATORS: usize = 10_000;

/// Whether `sql` has more binary operators than [`MAX_SQL_OPERATORS`] (tokens outside strings
/// and comments; text that does not tokenise has none counted, the parser rejects it).
fn too_complex(sql: &str, dialect: SqlDialect) -> bool {
    // A text shorter than the bound cannot hold that many operators.
    if sql.len() <= MAX_SQL_OPERATORS {
        return false;
    }
    let Ok(tokens) = Tokenizer::new(dialect.dialect(), sql).tokenize() else {
        return false;
    };
    let operators = tokens
        .iter()
        .filter(|t| match t {
            Token::Word(w) => matches!(
                w.keyword,
                Keyword::AND | Keyword::OR | Keyword::XOR | Keyword::IS | Keyword::NOT
            ),
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Spaceship
            | Token::DoubleColon
            | Token::Pipe
            | Token::Caret
            | Token::Ampersand
            | Token::ShiftLeft
            | Token::ShiftRight
            | Token::Arrow
            | Token::LongArrow
            | Token::HashArrow
            | Token::HashLongArrow
            | Token::AtArrow
            | Token::ArrowAt
            | Token::Tilde
            | Token::ExclamationMark
            | Token::DuckIntDiv
            | Token::Overlap => true,
            _ => false,
        })
        .count();
    operators > MAX_SQL_OPERATORS
}

/// [`apply`] for SQL text found at nesting `depth` (0: the argument itself).
fn apply_nested(sql: &str, dialect: SqlDialect, depth: usize, v: &mut Verdict) {
    if sql.len() > MAX_SQL_LEN {
        v.raise(Tier::T4, "sql.too_long");
        return;
    }
    if depth > MAX_NESTED_SQL {
        v.raise(Tier::T4, "sql.nesting_too_deep");
        return;
    }
    if too_complex(sql, dialect) {
        v.raise(Tier::T4, "sql.too_complex");
        return;
    }
    if !classify_parsed(sql, dialect, depth, v) {
        // Client-side placeholders (`%s`, `%(id)s`, `?`) and PRAGMA values the parser does not
        // take (`journal_mode = WAL`) are not what makes SQL dangerous: read the text with
        // them as literals before failing closed.
        let literal = with_literals(sql);
        let spelled = parseable_spelling(literal.as_deref().unwrap_or(sql), dialect);
        match (literal, spelled) {
            (_, Some(normal)) | (Some(normal), None)
                if classify_parsed(&normal, dialect, depth, v) => {}
            _ if maintenance_unparsed(sql, dialect, v) => {}
            _ if plpgsql::apply_do_blocks(sql, dialect, depth, v) => {}
            _ => {
                v.raise(Tier::T4, "sql.unparsable");
                return;
            }
        }
    }
    // SQLite's schema table written directly (after `PRAGMA writable_schema`): the schema,
    // hence every table, is corrupted beyond repair.
    // Checked without lowercasing a copy of the text: this runs on every SQL call's decide.
    let mentions = |word: &str| {
        sql.as_bytes()
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
    };
    if (mentions("sqlite_master") || mentions("sqlite_schema"))
        && ["update", "delete", "insert", "replace"]
            .iter()
            .any(|k| mentions(k))
    {
        v.raise(Tier::T4, "sql.schema_table_write");
    }
    // Snowflake's `CREATE OR ALTER TABLE` (the parser keeps no `OR ALTER` for a table): every
    // column not listed is dropped with its data, as `ALTER TABLE ... DROP COLUMN`.
    if mentions("or alter") && creates_or_alters_table(sql) {
        v.raise(Tier::T4, "sql.create_or_replace");
    }
    // `COPY ... FROM STDIN;` takes the rest of the text as its data where psql reads a script
    // (and so does the parser), but a driver sending the text as one query runs the rest as
    // statements: their keywords count.
    if let Some(at) = sql
        .as_bytes()
        .windows(10)
        .position(|w| w.eq_ignore_ascii_case(b"from stdin"))
        && let Some(semi) = sql[at..].find(';')
    {
        let rest = &sql[at + semi + 1..];
        // Inline data ends at a line `\.` (psql); a server parses a whole query string before
        // running any of it, so data rows before it make a driver run nothing: only what
        // follows counts then.
        let rest = match rest.find("\n\\.") {
            Some(end) => &rest[end + 3..],
            None => rest,
        };
        if !rest.trim().is_empty() {
            let mut other = Verdict::default();
            lexical(rest, dialect, &mut other);
            if other.tier > v.tier {
                for r in &other.rules {
                    v.raise(other.tier, r);
                }
            }
        }
    }
    // MariaDB runs the text of `/*M! ... */` comments as MySQL runs `/*! ... */`.
    if sql.contains("/*M!") && matches!(dialect, SqlDialect::Mysql | SqlDialect::Generic) {
        let mut other = Verdict::default();
        apply_nested(
            &sql.replace("/*M!", "/*!"),
            SqlDialect::Mysql,
            depth,
            &mut other,
        );
        if other.tier > v.tier {
            for r in &other.rules {
                v.raise(other.tier, r);
            }
            v.raise(other.tier, "sql.ambiguous_lexing");
        }
    }
    // The same text as another server (or server setting) would split it: when that reading
    // is worse, it counts.
    for &alt in alternative_readings(sql, dialect) {
        let mut other = Verdict::default();
        if !classify_parsed(sql, alt, depth, &mut other) {
            other = Verdict::default();
            lexical(sql, alt, &mut other);
        }
        if other.tier > v.tier {
            for r in &other.rules {
                v.raise(other.tier, r);
            }
            v.raise(other.tier, "sql.ambiguous_lexing");
        }
    }
}

/// Whether `sql` has `CREATE OR ALTER [modifiers] TABLE|SCHEMA|DATABASE`.
fn creates_or_alters_table(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    words.windows(3).enumerate().any(|(i, w)| {
        w == ["create", "or", "alter"]
            && words[i + 3..]
                .iter()
                .take(4)
                .find(|k| {
                    !SQL_MODIFIERS.contains(&k.as_str())
                        && !matches!(k.as_str(), "dynamic" | "iceberg" | "hybrid")
                })
                .is_some_and(|k| matches!(k.as_str(), "table" | "schema" | "database"))
    })
}

/// Maintenance and read statements the parser does not take (`VACUUM (ANALYZE) t`,
/// `CLUSTER t`, `REINDEX TABLE t`, `CHECKPOINT`, MySQL `OPTIMIZE TABLE`, PostgreSQL `TABLE t`,
/// DuckDB `SUMMARIZE t`): one statement whose words hold no other statement keyword is rated
/// as what it is instead of failing closed. Returns whether it was.
fn maintenance_unparsed(sql: &str, dialect: SqlDialect, v: &mut Verdict) -> bool {
    let (read, maintenance) = (
        ["table", "summarize"],
        [
            "vacuum",
            "analyze",
            "cluster",
            "reindex",
            "checkpoint",
            "optimize",
            "checksum",
        ],
    );
    let first = leading_keyword(sql);
    let is_read = read.contains(&first.as_str());
    if !is_read && !maintenance.contains(&first.as_str()) {
        return false;
    }
    let Ok(tokens) = Tokenizer::new(dialect.dialect(), sql).tokenize() else {
        return false;
    };
    // One statement: no separator before the last word.
    let last_word = tokens.iter().rposition(|t| matches!(t, Token::Word(_)));
    if tokens
        .iter()
        .enumerate()
        .any(|(i, t)| *t == Token::SemiColon && last_word.is_some_and(|w| i < w))
    {
        return false;
    }
    let mut words = Verdict::default();
    lexical(sql, dialect, &mut words);
    if words.tier > Tier::T0 {
        return false;
    }
    if is_read {
        v.raise(Tier::T0, "sql.select");
    } else if first == "vacuum" && vacuum_drops_history(sql) {
        v.raise(Tier::T4, "sql.vacuum_history");
    } else if first == "optimize"
        && sql
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .any(|w| w.eq_ignore_ascii_case("deduplicate"))
    {
        // ClickHouse: keeps one row per key and deletes the others (as `by_keyword`).
        v.raise(Tier::T3, "sql.deduplicate");
    } else {
        v.raise(Tier::T1, "sql.maintenance");
    }
    true
}

/// Hours of history Delta Lake keeps by default (`delta.deletedFileRetentionDuration`).
const DELTA_DEFAULT_RETAIN_HOURS: f64 = 168.0;

/// Whether a `VACUUM` keeps less history than Delta Lake's default (`VACUUM t RETAIN 0
/// HOURS`): the older data files, the table's time travel and its only in-place backup, are
/// deleted for good. A `DRY RUN` only lists them.
fn vacuum_drops_history(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    if words.windows(2).any(|w| w == ["dry", "run"]) {
        return false;
    }
    words.windows(2).any(|w| {
        w[0] == "retain"
            && w[1]
                .parse::<f64>()
                .ok()
                .is_none_or(|hours| hours.is_nan() || hours < DELTA_DEFAULT_RETAIN_HOURS)
    })
}

/// `sql` with client-side placeholders (`%s`, `%(name)s`, `?`) and bare PRAGMA values
/// (`= WAL`, `= ON`) written as literals, or `None` if it has neither.
fn with_literals(sql: &str) -> Option<String> {
    let mut out = String::with_capacity(sql.len());
    let mut changed = false;
    let mut rest = sql;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("%s") {
            out.push('1');
            rest = after;
            changed = true;
        } else if let Some(after) = rest.strip_prefix("%(")
            && let Some((name, tail)) = after.split_once(")s")
            && name.chars().all(|c| c.is_alphanumeric() || c == '_')
        {
            out.push('1');
            rest = tail;
            changed = true;
        } else if c == '?' && !rest[1..].starts_with(['|', '&', '?']) {
            out.push('1');
            rest = &rest[1..];
            changed = true;
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    // SQL Server clients split batches at lines that say `GO`.
    if out.lines().any(|l| l.trim().eq_ignore_ascii_case("go")) {
        out = out
            .lines()
            .map(|l| {
                if l.trim().eq_ignore_ascii_case("go") {
                    ";"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        changed = true;
    }
    let upper = out.trim_start().to_ascii_uppercase();
    if upper.starts_with("PRAGMA")
        && let Some((head, value)) = out.split_once('=')
    {
        let value = value.trim().trim_end_matches(';').trim();
        if !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out = format!("{head}= '{value}'");
            changed = true;
        }
    }
    changed.then_some(out)
}

/// `sql` with the spellings the parser rejects, though the server takes them, rewritten to
/// ones it takes with the same effect, or `None` if there are none: a PRAGMA argument that is a
/// bare name (`PRAGMA table_info(notes)` as `table_info('notes')`), `DROP INDEX CONCURRENTLY`
/// (as `DROP INDEX`), `DELETE TOP (n)` (as `DELETE`, which is rated as at least as many
/// rows). Rewritten token by token, so strings and comments are left as they are.
fn parseable_spelling(sql: &str, dialect: SqlDialect) -> Option<String> {
    let tokens = tokens_at(sql, dialect)?;
    // Indexes of the words, skipping whitespace and comments.
    let words: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].0, Token::Whitespace(_)))
        .collect();
    let keyword = |t: &Token, k: Keyword| matches!(t, Token::Word(w) if w.keyword == k && w.quote_style.is_none());
    let mut drop = vec![false; tokens.len()];
    let mut rename: Vec<Option<String>> = vec![None; tokens.len()];
    let mut changed = false;
    for (n, &i) in words.iter().enumerate() {
        let at = |k: usize| words.get(n + k).map(|&j| &tokens[j].0);
        // PRAGMA [schema.]name(bare_name)
        if keyword(&tokens[i].0, Keyword::PRAGMA) {
            let skip = if at(2) == Some(&Token::Period) { 2 } else { 0 };
            if let (
                Some(Token::Word(_)),
                Some(Token::LParen),
                Some(Token::Word(arg)),
                Some(Token::RParen),
            ) = (at(1 + skip), at(2 + skip), at(3 + skip), at(4 + skip))
                && arg.quote_style.is_none()
            {
                rename[words[n + 3 + skip]] = Some(format!("'{}'", arg.value.replace('\'', "''")));
                changed = true;
            }
        }
        if keyword(&tokens[i].0, Keyword::DROP)
            && at(1).is_some_and(|t| keyword(t, Keyword::INDEX))
            && at(2).is_some_and(|t| keyword(t, Keyword::CONCURRENTLY))
        {
            drop[words[n + 2]] = true;
            changed = true;
        }
        // DELETE TOP (n) / DELETE TOP n
        if keyword(&tokens[i].0, Keyword::DELETE) && at(1).is_some_and(|t| keyword(t, Keyword::TOP))
        {
            let span = match (at(2), at(3), at(4)) {
                (Some(Token::LParen), Some(Token::Number(..)), Some(Token::RParen)) => 4,
                (Some(Token::Number(..)), _, _) => 2,
                _ => 0,
            };
            for k in 1..=span {
                drop[words[n + k]] = true;
                changed = true;
            }
        }
    }
    if !changed {
        return None;
    }
    // Rebuilt from the original text of each token: a token's Display does not escape quotes
    // inside strings (the string `x'` prints as `'x''`), which would swallow what follows.
    let mut out = String::with_capacity(sql.len());
    for (i, (_, start)) in tokens.iter().enumerate() {
        let end = tokens.get(i + 1).map_or(sql.len(), |t| t.1);
        match (&rename[i], drop[i]) {
            (_, true) => out.push(' '),
            (Some(name), _) => out.push_str(name),
            (None, false) => out.push_str(&sql[*start..end]),
        }
    }
    Some(out)
}

/// The tokens of `sql` with the byte offset where each starts; a token ends where the next
/// starts (blanks and comments are tokens too). `None` if the text does not tokenise. Text is
/// cut from the original at these offsets, never printed from the tokens: a token's Display
/// does not escape quotes inside strings.
pub(super) fn tokens_at(sql: &str, dialect: SqlDialect) -> Option<Vec<(Token, usize)>> {
    let tokens = Tokenizer::new(dialect.dialect(), sql)
        .tokenize_with_location()
        .ok()?;
    let mut out = Vec::with_capacity(tokens.len());
    // The tokenizer counts lines at `\n` and columns in characters: walk the text once.
    let (mut line, mut column, mut byte) = (1u64, 1u64, 0usize);
    let mut chars = sql.char_indices().peekable();
    for t in tokens {
        let want = (t.span.start.line, t.span.start.column);
        while (line, column) < want {
            match chars.next() {
                Some((_, '\n')) => {
                    line += 1;
                    column = 1;
                }
                Some(_) => column += 1,
                None => break,
            }
            byte = chars.peek().map_or(sql.len(), |(i, _)| *i);
        }
        out.push((t.token, byte));
    }
    Some(out)
}

/// Dialects whose reading of `sql` could differ from `dialect`'s in where strings, comments
/// and statements end (only when the text has a character where they differ).
fn alternative_readings(sql: &str, dialect: SqlDialect) -> &'static [SqlDialect] {
    let backslash = sql.contains('\\');
    match dialect {
        SqlDialect::Generic
            if backslash
                || sql.contains(['$', '#', '\r', '[', '`'])
                || sql.contains("--")
                || sql.contains("/*") =>
        {
            &[
                SqlDialect::Postgres,
                SqlDialect::Mysql,
                SqlDialect::Sqlite,
                SqlDialect::Mssql,
            ]
        }
        // standard_conforming_strings = off: backslashes escape.
        SqlDialect::Postgres if backslash => &[SqlDialect::Mysql],
        // NO_BACKSLASH_ESCAPES (or ANSI_QUOTES): backslashes are plain characters.
        SqlDialect::Mysql if backslash => &[SqlDialect::Generic],
        _ => &[],
    }
}

/// A reading that does not parse as a whole: its words outside strings and comments, by the
/// statement keywords among them (a server that runs statements one by one runs those before
/// the one it cannot parse). Where it does not even tokenise (an unterminated string), the text
/// before the error is read so; text that cannot be read at all is tier 4.
fn lexical(sql: &str, dialect: SqlDialect, v: &mut Verdict) {
    let mut text = sql;
    let mut tries = 0;
    let tokens = loop {
        match Tokenizer::new(dialect.dialect(), text).tokenize() {
            Ok(t) => break t,
            Err(e) => {
                let end = byte_offset(text, e.location.line, e.location.column);
                tries += 1;
                match end {
                    Some(end) if end < text.len() && tries < 8 => text = &text[..end],
                    _ => {
                        v.raise(Tier::T4, "sql.unparsable");
                        return;
                    }
                }
            }
        }
    };
    for t in &tokens {
        if let Token::Word(w) = t
            && w.quote_style.is_none()
        {
            let tier = match w.value.to_ascii_uppercase().as_str() {
                "DROP" | "TRUNCATE" | "GRANT" | "REVOKE" | "DENY" | "SHUTDOWN" => Tier::T4,
                "DELETE" | "UPDATE" | "MERGE" | "ALTER" | "RENAME" | "CALL" | "EXEC"
                | "EXECUTE" | "KILL" | "PURGE" | "RESET" | "DO" | "COPY" => Tier::T3,
                "INSERT" | "REPLACE" | "CREATE" | "LOAD" | "ATTACH" => Tier::T2,
                _ => continue,
            };
            v.raise(tier, "sql.lexical_keyword");
        }
    }
    if v.rules.is_empty() {
        v.raise(Tier::T0, "sql.lexical_keyword");
    }
}

/// The byte offset of a tokenizer location (1-based line, 1-based column in characters).
fn byte_offset(text: &str, line: u64, column: u64) -> Option<usize> {
    let mut start = 0;
    for _ in 1..line {
        start += text[start..].find('\n')? + 1;
    }
    let col = usize::try_from(column.checked_sub(1)?).ok()?;
    match text[start..].char_indices().nth(col) {
        Some((i, _)) => Some(start + i),
        None => Some(text.len()),
    }
}

/// Parses `sql` in `dialect` and raises `v` by its statements; false if it does not parse.
fn classify_parsed(sql: &str, dialect: SqlDialect, depth: usize, v: &mut Verdict) -> bool {
    let parsed = Parser::new(dialect.dialect())
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements());
    let Ok(statements) = parsed else {
        return false;
    };
    if statements.is_empty() {
        v.raise(Tier::T0, "sql.empty");
    }
    for top in &statements {
        // EXPLAIN without ANALYZE only plans its statement; with ANALYZE (also written as the
        // option `(ANALYZE)` or `(ANALYZE true)`) it runs it.
        if let Statement::Explain {
            analyze: false,
            options,
            ..
        } = top
            && !options
                .iter()
                .flatten()
                .any(|o| analyze_option(&o.name.value, o.arg.as_ref()))
        {
            v.raise(Tier::T0, "sql.explain");
            continue;
        }
        if let Statement::ExplainTable { .. } = top {
            v.raise(Tier::T0, "sql.explain");
            continue;
        }
        let _ = visit_statements(top, |s| {
            statement(s, dialect, depth, v);
            ControlFlow::<()>::Continue(())
        });
        let _ = top.visit(&mut Functions { dialect, depth, v });
        if dialect == SqlDialect::Generic {
            keyword_aliases(top, sql, depth, v);
        }
    }
    true
}

/// Statement keywords that SQL Server never takes for a column alias: there, a select item
/// followed by one ends the statement and the keyword starts the next (`SELECT 1 DELETE FROM
/// users` deletes every row), where the generic dialect reads an alias.
const TSQL_STATEMENT_WORDS: &[&str] = &[
    "DELETE", "UPDATE", "INSERT", "MERGE", "DROP", "TRUNCATE", "EXEC", "EXECUTE", "ALTER",
    "CREATE", "GRANT", "REVOKE", "DENY", "BACKUP", "RESTORE", "KILL", "SHUTDOWN", "DBCC",
];

/// The generic dialect stands for any server: an unquoted alias that is a statement keyword
/// (`SELECT 1 DELETE FROM users`) is read as SQL Server reads it, the text from that keyword on
/// as statements of their own.
fn keyword_aliases(top: &Statement, sql: &str, depth: usize, v: &mut Verdict) {
    let mut starts: Vec<usize> = Vec::new();
    struct Aliases<'a> {
        sql: &'a str,
        starts: &'a mut Vec<usize>,
    }
    impl Visitor for Aliases<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, q: &sqlparser::ast::Query) -> ControlFlow<()> {
            if let SetExpr::Select(sel) = q.body.as_ref() {
                for item in &sel.projection {
                    if let sqlparser::ast::SelectItem::ExprWithAlias { alias, .. } = item
                        && alias.quote_style.is_none()
                        && TSQL_STATEMENT_WORDS
                            .iter()
                            .any(|k| k.eq_ignore_ascii_case(&alias.value))
                        && let Some(at) =
                            byte_offset(self.sql, alias.span.start.line, alias.span.start.column)
                        && at < self.sql.len()
                        && self.sql[at..]
                            .get(..alias.value.len())
                            .is_some_and(|w| w.eq_ignore_ascii_case(&alias.value))
                        // With an explicit `AS` (`SELECT status AS delete`) no server reads
                        // the keyword as a new statement.
                        && !explicit_as(&self.sql[..at])
                    {
                        self.starts.push(at);
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = top.visit(&mut Aliases {
        sql,
        starts: &mut starts,
    });
    for at in starts {
        let mut other = Verdict::default();
        apply_nested(&sql[at..], SqlDialect::Generic, depth, &mut other);
        if other.tier > v.tier {
            for r in &other.rules {
                v.raise(other.tier, r);
            }
            v.raise(other.tier, "sql.ambiguous_lexing");
        }
    }
}

/// Whether `before` (the text before an alias) ends with the word `AS`.
fn explicit_as(before: &str) -> bool {
    let t = before.trim_end();
    let Some(head) = t
        .len()
        .checked_sub(2)
        .and_then(|k| t.get(k..).map(|w| (k, w)))
    else {
        return false;
    };
    head.1.eq_ignore_ascii_case("as")
        && !t[..head.0]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// Whether an EXPLAIN option turns ANALYZE on (any value but an explicit false).
fn analyze_option(name: &str, arg: Option<&Expr>) -> bool {
    if !(name.eq_ignore_ascii_case("analyze") || name.eq_ignore_ascii_case("analyse")) {
        return false;
    }
    let off = |s: &str| {
        matches!(
            s.to_ascii_lowercase().as_str(),
            "false" | "off" | "0" | "no"
        )
    };
    match arg {
        None => true,
        Some(Expr::Value(v)) => match &v.value {
            Value::Boolean(b) => *b,
            Value::Number(n, _) => !off(n),
            other => !other.clone().into_string().is_some_and(|s| off(&s)),
        },
        Some(Expr::Identifier(i)) => !off(&i.value),
        Some(_) => true,
    }
}

/// Calls of functions (in expressions and as table functions in FROM) with side effects.
struct Functions<'v> {
    dialect: SqlDialect,
    depth: usize,
    v: &'v mut Verdict,
}

impl Visitor for Functions<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            let args: &[FunctionArg] = match &f.args {
                FunctionArguments::List(l) => &l.args,
                _ => &[],
            };
            self.call(&f.name, args);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        match t {
            TableFactor::Table {
                name,
                args: Some(a),
                ..
            } => self.call(name, &a.args),
            TableFactor::Function { name, args, .. } => self.call(name, args),
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

impl Functions<'_> {
    fn call(&mut self, name: &ObjectName, args: &[FunctionArg]) {
        let full = name;
        let Some(name) = name.0.last().and_then(|p| p.as_ident()) else {
            return;
        };
        let name = name.value.as_str();
        // A function of the database's own whose name says it destroys something critical
        // (`SELECT drop_all_tables()`, `SELECT public.wipe_database()`): as `CALL` would.
        if super::names::scan(name) == (true, true) {
            self.v
                .raise(Tier::T4, super::names::RULE_DESTRUCTIVE_CRITICAL);
        }
        if let Some((_, tier)) = SIDE_EFFECT_FUNCTIONS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            self.v.raise(*tier, "sql.side_effect_function");
            // A file written, exported or removed by the server: over its own data directory
            // or a backup, that is the database or the backup gone (as `COPY ... TO`).
            let critical_file = args.iter().any(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => {
                    literal(e).is_some_and(|p| crate::classify::shell::is_critical_path(&p))
                }
                _ => false,
            });
            if critical_file
                && matches!(
                    name.to_ascii_lowercase().as_str(),
                    "writefile"
                        | "lo_export"
                        | "pg_file_write"
                        | "pg_file_unlink"
                        | "pg_file_rename"
                        | "edit"
                )
            {
                self.v.raise(Tier::T4, "sql.write_critical_file");
            }
            // The file a function writes is rated by the path rules (`writefile('.claude/
            // settings.json', ...)` is `path.gate_config`, 4, as `echo x > ...` is).
            let path_arg = match name.to_ascii_lowercase().as_str() {
                "writefile" | "pg_file_write" => Some(0),
                "lo_export" => Some(1),
                _ => None,
            };
            if let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(e))) =
                path_arg.and_then(|k| args.get(k))
                && let Some(path) = literal(e)
            {
                crate::classify::shell::written_to(self.v, &path);
            }
            // sqlite3's `edit(text, editor)` runs the editor through the shell.
            if name.eq_ignore_ascii_case("edit") && args.len() > 1 {
                self.v.raise(Tier::T4, "sql.shell_escape");
            }
        }
        let qualified = full
            .0
            .iter()
            .filter_map(|p| p.as_ident())
            .map(|i| i.value.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(".");
        // `set_config('session_replication_role', 'replica', false)` is the `SET` it spells.
        if name.eq_ignore_ascii_case("set_config")
            && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(e))) = args.first()
            && let Some(setting) = literal(e)
            && UNSAFE_SETTINGS.contains(&setting.trim().to_ascii_lowercase().as_str())
        {
            self.v.raise(Tier::T3, "sql.set_unsafe");
        }
        // pg_cron keys jobs on their name: `cron.schedule(name, schedule, command)` and
        // `cron.schedule_in_database` replace a job of that name (often the nightly backup).
        if (qualified.ends_with("cron.schedule") && args.len() >= 3)
            || qualified.ends_with("cron.schedule_in_database")
        {
            self.v.raise(Tier::T3, "sql.cron_replace");
        }
        if let Some((_, one, many)) = SQL_RUNNING_FUNCTIONS.iter().find(|(n, _, _)| {
            if n.contains('.') {
                qualified.ends_with(n)
            } else {
                n.eq_ignore_ascii_case(name)
            }
        }) {
            let i = if args.len() > 1 { *many } else { *one };
            let i = if i == LAST {
                args.len().saturating_sub(1)
            } else {
                i
            };
            let text = args.get(i).and_then(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
                | FunctionArg::Named {
                    arg: FunctionArgExpr::Expr(e),
                    ..
                }
                | FunctionArg::ExprNamed {
                    arg: FunctionArgExpr::Expr(e),
                    ..
                } => literal(e),
                _ => None,
            });
            run_sql_text(text.as_deref(), self.dialect, self.depth, self.v);
        }
    }
}

/// The text of a string literal expression.
fn literal(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(v) => v.value.clone().into_string(),
        Expr::Nested(inner) => literal(inner),
        _ => None,
    }
}

/// SQL text that a statement or function runs: classified when it is a literal, tier 4 when it
/// is computed (a variable, a concatenation): nothing says what it will be.
fn run_sql_text(text: Option<&str>, dialect: SqlDialect, depth: usize, v: &mut Verdict) {
    match text {
        Some(t) => apply_nested(t, dialect, depth + 1, v),
        None => v.raise(Tier::T4, "sql.dynamic_sql"),
    }
}

/// An expression that reads no column: the same for every row, so a WHERE made of it selects
/// all rows or none (`2 > 1`, `NOT false`, `EXISTS (SELECT 1 FROM u)`).
fn column_free(e: &Expr) -> bool {
    visit_expressions(e, |x| match x {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_continue()
}

/// A constant condition that is never true (`false`, `0`, `NULL`, `NULL = NULL`, `x AND false`).
fn trivially_false(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Boolean(b) => !*b,
            Value::Null => true,
            Value::Number(n, _) => n.parse::<f64>().is_ok_and(|n| n == 0.0),
            _ => false,
        },
        Expr::Nested(inner) => trivially_false(inner),
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::And => trivially_false(left) || trivially_false(right),
            BinaryOperator::Or => trivially_false(left) && trivially_false(right),
            BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq => [left, right]
                .iter()
                .any(|x| matches!(x.as_ref(), Expr::Value(v) if v.value == Value::Null)),
            _ => false,
        },
        _ => false,
    }
}

/// A WHERE clause that selects every row (`1=1`, `true`, `x = x`, `... OR 1=1`), or may (one
/// that reads no column, or an OR with such a side).
fn trivially_true(e: &Expr) -> bool {
    truth(e).1
}

/// `(reads no column, trivially true, trivially false)` of a condition, in one pass down its
/// AND/OR chains (a chain of n terms costs n, not n²).
fn truth(e: &Expr) -> (bool, bool, bool) {
    match e {
        Expr::Nested(inner) => truth(inner),
        Expr::BinaryOp {
            left,
            op: op @ (BinaryOperator::And | BinaryOperator::Or),
            right,
        } => {
            let (lfree, ltrue, lfalse) = truth(left);
            let (rfree, rtrue, rfalse) = truth(right);
            let free = lfree && rfree;
            let (t, f) = if *op == BinaryOperator::And {
                (ltrue && rtrue, lfalse || rfalse)
            } else {
                (
                    ltrue || rtrue || lfree || rfree || complementary(left, right),
                    lfalse && rfalse,
                )
            };
            (free, (free && !f) || t, f)
        }
        _ => {
            let free = column_free(e);
            let f = trivially_false(e);
            (free, (free && !f) || leaf_true(e), f)
        }
    }
}

/// A condition other than AND/OR that holds for every row (`true`, `1`, `x = x`, `1 <> 2`).
fn leaf_true(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Boolean(b) => *b,
            Value::Number(n, _) => n.parse::<f64>().is_ok_and(|n| n != 0.0),
            _ => false,
        },
        Expr::IsNotNull(inner) => {
            matches!(inner.as_ref(), Expr::Value(v) if v.value != Value::Null)
        }
        Expr::IsNotDistinctFrom(a, b) => same_operand(a, b),
        // `(id = id) IS NOT FALSE`, `(1=1) IS TRUE`.
        Expr::IsNotFalse(inner) | Expr::IsTrue(inner) => trivially_true(inner),
        // `id IN (id, 7)`.
        Expr::In {
            expr,
            target: sqlparser::ast::InTarget::List(list),
            negated: false,
            ..
        } => list.iter().any(|x| same_operand(expr, x)),
        // `id BETWEEN id AND id`.
        Expr::Between {
            expr,
            negated: false,
            low,
            high,
        } => same_operand(expr, low) && same_operand(expr, high),
        // `name LIKE '%'`: every value that is not NULL.
        Expr::Like {
            negated: false,
            any: false,
            pattern,
            ..
        }
        | Expr::ILike {
            negated: false,
            any: false,
            pattern,
            ..
        } => literal(pattern).is_some_and(|p| !p.is_empty() && p.chars().all(|c| c == '%')),
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::Eq | BinaryOperator::GtEq | BinaryOperator::LtEq => {
                same_operand(left, right)
                    && !matches!(left.as_ref(), Expr::Value(v) if v.value == Value::Null)
            }
            BinaryOperator::NotEq => {
                matches!((left.as_ref(), right.as_ref()), (Expr::Value(a), Expr::Value(b)) if a.value != b.value && a.value != Value::Null && b.value != Value::Null)
            }
            _ => false,
        },
        _ => false,
    }
}

/// `id IN (SELECT id FROM <the table itself>)` or `id = ANY (SELECT id FROM <it>)`, the
/// subquery without WHERE, LIMIT or join: every row whose `id` is not NULL.
fn in_own_rows(e: &Expr, table: &ObjectName) -> bool {
    let (expr, query) = match e {
        Expr::Nested(inner) => return in_own_rows(inner, table),
        Expr::In {
            expr,
            target: sqlparser::ast::InTarget::Subquery(q),
            negated: false,
            ..
        } => (expr.as_ref(), q.as_ref()),
        Expr::AnyOp {
            left,
            compare_op: BinaryOperator::Eq,
            right,
            ..
        } => match right.as_ref() {
            Expr::Subquery(q) => (left.as_ref(), q.as_ref()),
            Expr::Nested(inner) => match inner.as_ref() {
                Expr::Subquery(q) => (left.as_ref(), q.as_ref()),
                _ => return false,
            },
            _ => return false,
        },
        _ => return false,
    };
    let last = |n: &ObjectName| {
        n.0.last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_ascii_lowercase())
    };
    let SetExpr::Select(sel) = query.body.as_ref() else {
        return false;
    };
    query.limit_clause.is_none()
        && query.fetch.is_none()
        && sel.selection.is_none()
        && sel.from.len() == 1
        && sel.from[0].joins.is_empty()
        && matches!(&sel.from[0].relation, TableFactor::Table { name, .. } if last(name) == last(table))
        && matches!(sel.projection.as_slice(), [sqlparser::ast::SelectItem::UnnamedExpr(x)] if same_operand(x, expr))
}

/// Whether two operands are the same: equal expressions, or the same column however it is
/// spelled (`id`, `ID`, `"id"`, `t.id`, `(id)`; PostgreSQL folds unquoted names to lower case,
/// and in a single-table UPDATE or DELETE a qualifier names that table).
fn same_operand(a: &Expr, b: &Expr) -> bool {
    /// Parentheses, a unary `+`, `+ 0`, `- 0` and `* 1` change no value.
    fn strip(e: &Expr) -> &Expr {
        let zero_or_one = |x: &Expr, one: bool| {
            matches!(x, Expr::Value(v) if matches!(&v.value, Value::Number(n, _)
                if n.parse::<f64>().is_ok_and(|n| n == if one { 1.0 } else { 0.0 })))
        };
        match e {
            Expr::Nested(inner) => strip(inner),
            Expr::UnaryOp {
                op: UnaryOperator::Plus,
                expr,
            } => strip(expr),
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::Plus | BinaryOperator::Minus if zero_or_one(right, false) => {
                    strip(left)
                }
                BinaryOperator::Plus if zero_or_one(left, false) => strip(right),
                BinaryOperator::Multiply if zero_or_one(right, true) => strip(left),
                BinaryOperator::Multiply if zero_or_one(left, true) => strip(right),
                _ => e,
            },
            other => other,
        }
    }
    /// `(qualifier, column)`, lowercased.
    fn column(e: &Expr) -> Option<(Option<String>, String)> {
        let lower = |i: &sqlparser::ast::Ident| i.value.to_ascii_lowercase();
        match e {
            Expr::Identifier(i) => Some((None, lower(i))),
            Expr::CompoundIdentifier(parts) => {
                let (last, qualifier) = parts.split_last()?;
                let qualifier = qualifier.iter().map(lower).collect::<Vec<_>>().join(".");
                Some((Some(qualifier), lower(last)))
            }
            _ => None,
        }
    }
    let (a, b) = (strip(a), strip(b));
    // `a.id = b.id` (a join) compares two tables' columns; `t.id = id` one.
    a == b
        || matches!((column(a), column(b)), (Some((qa, ca)), Some((qb, cb)))
            if ca == cb && (qa.is_none() || qb.is_none() || qa == qb))
}

/// `x OR NOT x`: true for every row where `x` is not NULL; `x IS NULL OR x IS NOT NULL`.
fn complementary(a: &Expr, b: &Expr) -> bool {
    let negated = |n: &Expr, x: &Expr| matches!(n, Expr::UnaryOp { op: UnaryOperator::Not, expr } if same_operand(expr, x));
    // `x IS NULL OR x IS NOT NULL`: the three-valued form, true for every row.
    let null_or_not = |n: &Expr, x: &Expr| matches!((n, x), (Expr::IsNull(p), Expr::IsNotNull(q)) if same_operand(p, q));
    negated(a, b) || negated(b, a) || null_or_not(a, b) || null_or_not(b, a)
}

/// Rows-affected rule for UPDATE/DELETE: with a selective WHERE 2, else 3.
fn where_rule(
    v: &mut Verdict,
    selection: Option<&Expr>,
    with: &'static str,
    without: &'static str,
) {
    match selection {
        Some(e) if !trivially_true(e) => v.raise(Tier::T2, with),
        _ => v.raise(Tier::T3, without),
    }
}

fn statement(s: &Statement, dialect: SqlDialect, depth: usize, v: &mut Verdict) {
    match s {
        Statement::Query(q) => {
            // `WITH s AS (SELECT * FROM t) INSERT INTO t SELECT * FROM s ON CONFLICT DO
            // UPDATE`: the insert reads its own table through the CTE.
            if let SetExpr::Insert(Statement::Insert(i)) = q.body.as_ref()
                && let Some(with) = &q.with
            {
                let ctes: Vec<&sqlparser::ast::Query> =
                    with.cte_tables.iter().map(|c| c.query.as_ref()).collect();
                if upserts_from(i, &ctes) {
                    v.raise(Tier::T3, "sql.update_all_rows");
                }
            }
            if selects_into(&q.body) {
                v.raise(Tier::T2, "sql.select_into");
            } else {
                v.raise(Tier::T0, "sql.select");
            }
        }
        Statement::Insert(i) => {
            if let sqlparser::ast::TableObject::TableName(n) = &i.table {
                catalog_target(n, v);
            }
            if i.overwrite {
                v.raise(Tier::T3, "sql.insert_overwrite");
            } else {
                v.raise(Tier::T2, "sql.insert");
            }
            if upserts_from(i, &[]) {
                v.raise(Tier::T3, "sql.update_all_rows");
            }
        }
        Statement::Update(u) => {
            if let TableFactor::Table { name, .. } = &u.table.relation {
                catalog_target(name, v);
            }
            if let TableFactor::Table { name, .. } = &u.table.relation
                && u.selection.as_ref().is_some_and(|e| in_own_rows(e, name))
            {
                v.raise(Tier::T3, "sql.update_all_rows");
            }
            where_rule(
                v,
                u.selection.as_ref(),
                "sql.update_where",
                "sql.update_all_rows",
            )
        }
        Statement::Delete(d) => {
            let (sqlparser::ast::FromTable::WithFromKeyword(from)
            | sqlparser::ast::FromTable::WithoutKeyword(from)) = &d.from;
            for n in &d.tables {
                catalog_target(n, v);
            }
            for t in from {
                if let TableFactor::Table { name, .. } = &t.relation {
                    catalog_target(name, v);
                    if from.len() == 1 && d.selection.as_ref().is_some_and(|e| in_own_rows(e, name))
                    {
                        v.raise(Tier::T3, "sql.delete_all_rows");
                    }
                }
            }
            where_rule(
                v,
                d.selection.as_ref(),
                "sql.delete_where",
                "sql.delete_all_rows",
            )
        }
        Statement::Merge(m) => {
            if let TableFactor::Table { name, .. } = &m.table {
                catalog_target(name, v);
            }
            v.raise(Tier::T3, "sql.merge")
        }
        Statement::Truncate(_) => v.raise(Tier::T4, "sql.truncate"),
        Statement::Grant(_)
        | Statement::Revoke(_)
        | Statement::GrantRole(_)
        | Statement::RevokeRole(_)
        | Statement::Deny(_)
        | Statement::AlterDefaultPrivileges(_) => v.raise(Tier::T4, "sql.grant"),
        Statement::AlterTable(a) => {
            let drops = a.operations.iter().any(|op| {
                op.to_string()
                    .trim_start()
                    .to_ascii_uppercase()
                    .starts_with("DROP")
            });
            // A new owner holds every privilege on the table, DROP included: a grant.
            let new_owner = a.operations.iter().any(|op| {
                op.to_string()
                    .to_ascii_uppercase()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .windows(2)
                    .any(|w| w == ["OWNER", "TO"])
            });
            if drops {
                v.raise(Tier::T4, "sql.alter_drop");
            } else if new_owner {
                v.raise(Tier::T4, "sql.grant");
            } else {
                v.raise(Tier::T3, "sql.alter");
            }
        }
        Statement::Explain { .. } => v.raise(Tier::T0, "sql.explain"),
        Statement::Execute {
            name, parameters, ..
        } => execute(name.as_ref(), parameters, dialect, depth, v),
        Statement::Call(f) => {
            v.raise(Tier::T3, "sql.execute");
            // The procedure's name often says what it does (`CALL drop_old_backups()`).
            super::names::apply(&f.name.to_string(), v);
        }
        Statement::Copy { to, target, .. } => {
            let program = matches!(target, CopyTarget::Program { .. });
            if program {
                // COPY ... TO/FROM PROGRAM runs a shell command on the server.
                v.raise(Tier::T4, "sql.copy_program");
            } else if *to {
                match target {
                    CopyTarget::Stdout => v.raise(Tier::T0, "sql.copy_out"),
                    // The server writes the file: over its own data directory or a backup,
                    // that is the database or the backup gone.
                    CopyTarget::File { filename }
                        if crate::classify::shell::is_critical_path(filename) =>
                    {
                        v.raise(Tier::T4, "sql.copy_to_critical_file")
                    }
                    CopyTarget::File { filename } => {
                        v.raise(Tier::T2, "sql.copy_to_file");
                        // The file written is rated by the path rules (`.claude/settings.json`,
                        // `.cycles/...`, `~/.bashrc`).
                        crate::classify::shell::written_to(v, filename);
                    }
                    _ => v.raise(Tier::T2, "sql.copy_to_file"),
                }
            } else {
                v.raise(Tier::T2, "sql.copy_in");
            }
        }
        other => by_keyword(other, v),
    }
}

/// A row write (INSERT, UPDATE, DELETE, MERGE) whose target is a system catalog: PostgreSQL's
/// `pg_catalog` (`pg_authid` makes a superuser, `pg_auth_members` a role member, `pg_class` and
/// `pg_database` rows removed lose the table or database), MySQL's grant tables
/// (`mysql.user`), SQL Server's `sys`: a grant, a credential change or a catalog corrupted
/// (`sql.catalog_write`, 4). pg_cron's `cron.job` holds the scheduled jobs (`sql.cron_replace`,
/// 3, as `cron.alter_job`).
fn catalog_target(name: &ObjectName, v: &mut Verdict) {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(|i| i.value.to_ascii_lowercase())
        .collect();
    let Some((last, qualifiers)) = parts.split_last() else {
        return;
    };
    let schema = qualifiers.last().map(String::as_str);
    let catalog = match schema {
        Some("pg_catalog" | "sys") => true,
        None => last.starts_with("pg_"),
        Some("mysql") => matches!(
            last.as_str(),
            "user"
                | "db"
                | "tables_priv"
                | "columns_priv"
                | "procs_priv"
                | "proxies_priv"
                | "global_grants"
                | "role_edges"
                | "default_roles"
                | "password_history"
        ),
        Some(_) => false,
    };
    if catalog {
        v.raise(Tier::T4, "sql.catalog_write");
    }
    if schema == Some("cron") && last == "job" {
        v.raise(Tier::T3, "sql.cron_replace");
    }
}

/// `EXECUTE name`, `EXEC proc args`, `EXEC('sql')`, `EXECUTE IMMEDIATE 'sql'`.
fn execute(
    name: Option<&ObjectName>,
    parameters: &[Expr],
    dialect: SqlDialect,
    depth: usize,
    v: &mut Verdict,
) {
    let proc = name
        .and_then(|n| n.0.last())
        .and_then(|p| p.as_ident())
        .map(|i| i.value.to_ascii_lowercase());
    // Named parameters whose value is SQL a procedure runs (SQL Agent job steps, Database
    // Mail queries, `sp_executesql @stmt=`).
    for p in parameters {
        if let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = p
            && let Expr::Identifier(id) = left.as_ref()
            && matches!(
                id.value.to_ascii_lowercase().as_str(),
                "@command" | "@query" | "@stmt" | "@statement"
            )
        {
            run_sql_text(literal(right).as_deref(), dialect, depth, v);
        }
    }
    match proc.as_deref() {
        // Dynamic SQL: the text is what runs; a procedure named by a variable is unknown.
        // Outside the dialects that know `EXECUTE IMMEDIATE` (Snowflake, BigQuery, Oracle),
        // the parser reads `IMMEDIATE` as the procedure's name and the text as its argument.
        None | Some("sp_executesql" | "sp_sqlexec" | "immediate") => {
            v.raise(Tier::T3, "sql.execute");
            match parameters.first() {
                Some(p) => run_sql_text(literal(p).as_deref(), dialect, depth, v),
                None => v.raise(Tier::T4, "sql.dynamic_sql"),
            }
        }
        Some(p) if p.starts_with('@') => v.raise(Tier::T4, "sql.dynamic_sql"),
        // Run their text for every table or database (`?` stands for each).
        Some("sp_msforeachtable" | "sp_msforeachdb") => {
            v.raise(Tier::T3, "sql.execute");
            let text = parameters
                .first()
                .and_then(literal)
                .map(|t| t.replace('?', "t"));
            run_sql_text(text.as_deref(), dialect, depth, v);
        }
        // Role membership is a grant; dropping logins, users and servers a drop.
        Some("sp_addsrvrolemember" | "sp_addrolemember" | "sp_grantdbaccess" | "sp_grantlogin") => {
            v.raise(Tier::T4, "sql.grant")
        }
        Some(p) if p.starts_with("sp_drop") => v.raise(Tier::T4, "sql.drop"),
        Some("xp_cmdshell" | "sp_oacreate" | "sp_oamethod" | "xp_regwrite") => {
            v.raise(Tier::T4, "sql.side_effect_function")
        }
        // The maintenance-plan cleanup: deletes backup (`.bak`) and report files by folder.
        Some("xp_delete_file" | "xp_delete_files") => v.raise(Tier::T4, "sql.delete_backup_files"),
        // Sets a login's password (deprecated, still in SQL Server), as `ALTER LOGIN` does.
        Some("sp_password") => v.raise(Tier::T4, "sql.credentials"),
        Some(other) => {
            v.raise(Tier::T3, "sql.execute");
            super::names::apply(other, v);
        }
    }
}

/// Whether a query body creates a table with `SELECT ... INTO`, also inside a set operation
/// (`SELECT * INTO x FROM t UNION SELECT ...`) or parentheses.
fn selects_into(body: &SetExpr) -> bool {
    match body {
        // MySQL `SELECT ... INTO @v` sets a session variable, not a table.
        SetExpr::Select(sel) => sel.into.as_ref().is_some_and(|into| {
            into.targets.is_empty()
                || !into
                    .targets
                    .iter()
                    .all(|target| target.to_string().starts_with('@'))
        }),
        SetExpr::Query(q) => selects_into(&q.body),
        SetExpr::SetOperation { left, right, .. } => selects_into(left) || selects_into(right),
        _ => false,
    }
}

/// `INSERT INTO t SELECT ... FROM t ... ON CONFLICT DO UPDATE` (or MySQL's `ON DUPLICATE KEY
/// UPDATE`, `REPLACE INTO`, SQLite's `INSERT OR REPLACE`): every row read from the table
/// conflicts with itself, so the insert is an UPDATE of all those rows. The table may also be
/// read through one of `ctes` (the `WITH` of the insert).
fn upserts_from(i: &sqlparser::ast::Insert, ctes: &[&sqlparser::ast::Query]) -> bool {
    use sqlparser::ast::{OnConflict, OnConflictAction, OnInsert, SqliteOnConflict, TableObject};
    let updates = matches!(
        &i.on,
        Some(
            OnInsert::DuplicateKeyUpdate(_)
                | OnInsert::OnConflict(OnConflict {
                    action: OnConflictAction::DoUpdate(_),
                    ..
                })
        )
    ) || i.replace_into
        || i.or == Some(SqliteOnConflict::Replace);
    let (TableObject::TableName(target), Some(source)) = (&i.table, &i.source) else {
        return false;
    };
    let name = |n: &ObjectName| {
        n.0.last()
            .and_then(|p| p.as_ident())
            .map(|id| id.value.to_ascii_lowercase())
    };
    let target = name(target);
    let reads_target = |q: &sqlparser::ast::Query| {
        sqlparser::ast::visit_relations(q, |r| {
            if name(r) == target {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .is_break()
    };
    updates && (reads_target(source) || ctes.iter().any(|q| reads_target(q)))
}

/// Whether a Snowflake `REMOVE @stage` names the whole stage: no path after the stage's name
/// and no `PATTERN`.
fn removes_whole_stage(text: &str) -> bool {
    let Some(at) = text.find('@') else {
        return false;
    };
    let stage = text[at..].split_whitespace().next().unwrap_or("");
    let path = stage
        .trim_matches(['\'', '"'])
        .split_once('/')
        .map(|(_, p)| p);
    path.is_none_or(str::is_empty) && pattern_matches_all(text)
}

/// Whether a `REMOVE`'s `PATTERN` is absent or matches every file (`'.*'`, `'^.+$'`).
fn pattern_matches_all(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    let Some(at) = upper.find("PATTERN") else {
        return true;
    };
    let value = text[at + "PATTERN".len()..]
        .trim_start()
        .trim_start_matches('=')
        .trim_start();
    let Some(quote @ ('\'' | '"')) = value.chars().next() else {
        return false;
    };
    let Some(pattern) = value[1..].split(quote).next() else {
        return false;
    };
    let core: String = pattern
        .chars()
        .filter(|c| !matches!(c, '^' | '$' | '(' | ')'))
        .collect();
    core.replace(".*", "").replace(".+", "").is_empty()
}

/// Binary-log settings in a `SET GLOBAL|PERSIST` (`statement`, as printed): expiring binary
/// logs within a week deletes them at the next rotation (`FLUSH LOGS`, a restart), which is
/// `PURGE BINARY LOGS` on a delay: point-in-time recovery is gone (4); turning the binary log
/// or GTIDs off stops it for later writes (3). `None` for other settings.
fn binlog_setting(statement: &str) -> Option<Tier> {
    let lower = statement.to_ascii_lowercase();
    let value = |name: &str| -> Option<Option<f64>> {
        let at = lower.find(name)?;
        let rest = lower[at + name.len()..]
            .trim_start()
            .trim_start_matches(['=', ':'])
            .trim_start()
            .trim_start_matches('\'')
            .trim_start();
        let number: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        Some(number.parse::<f64>().ok())
    };
    // 0 turns automatic purging off; an expression or a name is not known: fail closed.
    if let Some(n) = value("binlog_expire_logs_seconds") {
        return Some(if n.is_some_and(|n| n == 0.0 || n >= 7.0 * 86_400.0) {
            Tier::T2
        } else {
            Tier::T4
        });
    }
    if let Some(n) = value("expire_logs_days") {
        return Some(if n.is_some_and(|n| n == 0.0 || n >= 7.0) {
            Tier::T2
        } else {
            Tier::T4
        });
    }
    if lower.contains("binlog_expire_logs_auto_purge") {
        return Some(Tier::T3);
    }
    if ["log_bin", "sql_log_bin", "gtid_mode"]
        .iter()
        .any(|k| lower.contains(k))
    {
        return Some(Tier::T3);
    }
    None
}

/// Statements without a dedicated rule, by their leading keyword.
fn by_keyword(s: &Statement, v: &mut Verdict) {
    let text = s.to_string();
    let words: Vec<String> = text
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .take(12)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let first = words.first().map_or("", |w| w.as_str());
    let second = words.get(1).map_or("", |w| w.as_str());
    let head = |set: &[&str]| words.iter().any(|w| set.contains(&w.as_str()));
    // Every alphabetic word of the statement, uppercased (`RSA_PUBLIC_KEY` is three).
    let alpha: Vec<String> = text
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_uppercase())
        .collect();
    // Role membership (`ALTER ROLE db_owner ADD MEMBER x`, SQL Server's `sp_addrolemember`).
    let joins = || alpha.windows(2).any(|w| w == ["ADD", "MEMBER"]);
    let credentials = || {
        alpha.iter().any(|w| {
            matches!(
                w.as_str(),
                "PASSWORD" | "IDENTIFIED" | "AUTHENTICATION" | "CERTIFICATE"
            )
        }) || alpha.windows(3).any(|w| w == ["RSA", "PUBLIC", "KEY"])
    };
    // Role attributes that amount to a GRANT.
    let privileged = || {
        text.split(|c: char| !c.is_ascii_alphabetic()).any(|w| {
            matches!(
                w.to_ascii_uppercase().as_str(),
                "SUPERUSER" | "CREATEROLE" | "BYPASSRLS" | "REPLICATION" | "ADMIN" | "SYSADMIN"
            )
        })
    };
    match first {
        "CREATE" => {
            // Snowflake and T-SQL `CREATE OR ALTER`: a table so created loses every column not
            // listed, with its data, as `ALTER TABLE ... DROP COLUMN`.
            let or_replace =
                second == "OR" && words.get(2).is_some_and(|w| w == "REPLACE" || w == "ALTER");
            let object = words
                .iter()
                .skip(if or_replace { 3 } else { 1 })
                .find(|w| {
                    !matches!(
                        w.as_str(),
                        "TEMPORARY"
                            | "TEMP"
                            | "TRANSIENT"
                            | "VOLATILE"
                            | "EXTERNAL"
                            | "SECURE"
                            | "GLOBAL"
                            | "LOCAL"
                            | "UNLOGGED"
                            | "MATERIALIZED"
                            | "RECURSIVE"
                            | "DYNAMIC"
                            | "ICEBERG"
                            | "HYBRID"
                    )
                })
                .map_or("", |w| w.as_str());
            if or_replace && matches!(object, "TABLE" | "DATABASE" | "SCHEMA" | "STAGE") {
                // Replacing a table or database drops what was there.
                v.raise(Tier::T4, "sql.create_or_replace");
            } else if matches!(
                object,
                "FUNCTION" | "PROCEDURE" | "TRIGGER" | "RULE" | "EVENT" | "CONSTRAINT"
            ) || (object == "DEFINER"
                && head(&["FUNCTION", "PROCEDURE", "TRIGGER", "EVENT"]))
            {
                // Code that runs later, from other calls, without its own check.
                v.raise(Tier::T3, "sql.create_routine");
                let destructive = text.split(|c: char| !c.is_ascii_alphabetic()).any(|w| {
                    matches!(
                        w.to_ascii_uppercase().as_str(),
                        "DROP" | "TRUNCATE" | "GRANT" | "REVOKE"
                    )
                });
                if destructive {
                    v.raise(Tier::T4, "sql.create_routine_destructive");
                }
            } else if matches!(object, "ROLE" | "USER" | "LOGIN" | "GROUP")
                && (privileged()
                    // Membership of another role (`CREATE ROLE x IN ROLE postgres`) is a
                    // grant of it.
                    || alpha
                        .windows(2)
                        .any(|w| w[0] == "IN" && matches!(w[1].as_str(), "ROLE" | "GROUP")))
            {
                v.raise(Tier::T4, "sql.grant");
            } else {
                v.raise(Tier::T2, "sql.create");
            }
            return;
        }
        "ALTER" if matches!(second, "ROLE" | "USER" | "LOGIN") && (privileged() || joins()) => {
            v.raise(Tier::T4, "sql.grant");
            return;
        }
        // A new password or key gives whoever set it the role's access and locks out every
        // client that used the old one.
        "ALTER" if matches!(second, "ROLE" | "USER" | "LOGIN") && credentials() => {
            v.raise(Tier::T4, "sql.credentials");
            return;
        }
        // A new owner holds every privilege on the object, DROP included: a grant.
        "ALTER" if alpha.windows(2).any(|w| w == ["OWNER", "TO"]) => {
            v.raise(Tier::T4, "sql.grant");
            return;
        }
        // ClickHouse: keeps one row per key and deletes the others.
        "OPTIMIZE" if head(&["DEDUPLICATE"]) => {
            v.raise(Tier::T3, "sql.deduplicate");
            return;
        }
        // Snowflake: removing a whole stage (no path after its name, no pattern) deletes every
        // file in it, as `DROP STAGE` does.
        "REMOVE" | "RM" if removes_whole_stage(&text) => {
            v.raise(Tier::T4, "sql.remove_stage");
            return;
        }
        "RESET" if matches!(second, "MASTER" | "SLAVE" | "REPLICA" | "BINARY") => {
            // Deletes the binary logs (point-in-time recovery) or the replication state.
            v.raise(Tier::T4, "sql.reset_replication");
            return;
        }
        // MySQL `SET PASSWORD = 'x'`: the current account's password.
        "SET" if second == "PASSWORD" => {
            v.raise(Tier::T4, "sql.credentials");
            return;
        }
        "SET" if matches!(second, "GLOBAL" | "PERSIST" | "PERSIST_ONLY") => {
            match binlog_setting(&text) {
                Some(tier) if tier > Tier::T2 => v.raise(tier, "sql.retention"),
                _ => v.raise(Tier::T2, "sql.set_global"),
            }
            return;
        }
        _ => {}
    }
    let (tier, rule) = match first {
        "DROP" => (Tier::T4, "sql.drop"),
        "TRUNCATE" => (Tier::T4, "sql.truncate"),
        "DELETE" => (Tier::T3, "sql.delete_all_rows"),
        "GRANT" | "REVOKE" | "DENY" => (Tier::T4, "sql.grant"),
        "ALTER" | "RENAME" => (Tier::T3, "sql.alter"),
        // PostgreSQL's `LOAD 'lib.so'` and DuckDB's `LOAD ext` load code into the server;
        // MySQL's `LOAD DATA`/`LOAD XML` load rows.
        "LOAD" if !matches!(second, "DATA" | "XML" | "INDEX") => (Tier::T4, "sql.load_library"),
        "PRAGMA" if words.iter().any(|w| w == "WRITABLE") => (Tier::T3, "sql.writable_schema"),
        // Setting the schema cookie by hand can corrupt the database (SQLite's docs), as
        // `writable_schema` can.
        "PRAGMA" if words.windows(2).any(|w| w == ["SCHEMA", "VERSION"]) && text.contains('=') => {
            (Tier::T3, "sql.writable_schema")
        }
        // No journal or no syncing: a crash in the middle of a write can corrupt the file.
        "PRAGMA"
            if words.iter().any(|w| w == "JOURNAL" || w == "SYNCHRONOUS")
                && words.last().is_some_and(|w| w == "OFF") =>
        {
            (Tier::T2, "sql.durability_off")
        }
        "INSERT" | "REPLACE" | "UPSERT" | "LOAD" | "PUT" | "UNLOAD" | "EXPORT" | "ATTACH"
        | "DETACH" | "INSTALL" => (Tier::T2, "sql.write"),
        "KILL" | "CALL" | "EXECUTE" | "EXEC" | "REMOVE" => (Tier::T3, "sql.execute"),
        "VACUUM" | "ANALYZE" | "OPTIMIZE" | "REFRESH" | "PRAGMA" | "COMMENT" | "FLUSH" | "MSCK"
        | "CACHE" | "UNCACHE" | "DISCARD" => (Tier::T1, "sql.maintenance"),
        // Writes that skip the binary log (no replica, no point-in-time recovery) or skip
        // foreign-key triggers.
        "SET"
            if words
                .windows(3)
                .any(|w| w == ["SQL", "LOG", "BIN"] || w == ["SESSION", "REPLICATION", "ROLE"]) =>
        {
            (Tier::T3, "sql.set_unsafe")
        }
        "SHOW" | "DESCRIBE" | "DESC" | "USE" | "SET" | "RESET" | "BEGIN" | "START" | "COMMIT"
        | "END" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "DECLARE" | "FETCH" | "CLOSE" | "OPEN"
        | "PREPARE" | "DEALLOCATE" | "LISTEN" | "UNLISTEN" | "NOTIFY" | "LOCK" | "UNLOCK"
        | "ASSERT" | "PRINT" | "RAISERROR" | "THROW" | "RETURN" | "WAITFOR" | "LIST" | "VALUES"
        | "SELECT" | "WITH" | "TABLE" => (Tier::T0, "sql.read_or_session"),
        _ => (Tier::T3, "sql.other"),
    };
    v.raise(tier, rule);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sql: &str) -> Tier {
        classify(sql, SqlDialect::Postgres).tier
    }

    /// Review 20 #8 residual: a line-start statement is shaped only when what follows its
    /// object is the end, a terminator, another statement or a clause it takes.
    #[test]
    fn statement_shaped_needs_what_follows_the_object() {
        for prose in [
            "merge into main fails",
            "insert into array at index",
            "deny all requests from bots",
            "grant all permissions to admins",
            "create table component docs",
            "alter table layout on mobile",
            "delete from cache after logout",
            "drop database connection on timeout",
            "revoke all tokens on logout",
            "notes\nmerge into main fails",
        ] {
            assert!(!statement_shaped(prose), "{prose}");
        }
        for sql in [
            "drop table users",
            "truncate table header",
            "drop table users;",
            "DROP TABLE [dbo].[users] CASCADE",
            "DROP INDEX i ON users",
            "MERGE INTO t USING s ON t.id = s.id",
            "merge into t tgt using s on 1 = 1",
            "INSERT INTO t (a, b) VALUES (1,, 2)",
            "insert into t select 1",
            "DENY SELECT ON t TO bob",
            "GRANT SELECT (a, b), INSERT ON t TO bob",
            "REVOKE GRANT OPTION FOR ALL ON t FROM bob",
            "DELETE FROM t WHERE",
            "CREATE TABLE t (id int,",
            "CREATE TABLE IF NOT EXISTS t (",
            "ALTER TABLE t ADD COLUMN x",
            "ALTER SYSTEM SET x = 1",
            "DROP ACCOUNT prod_acct GRACE_PERIOD_IN_DAYS = 3",
            "truncate table vs delete",
            "-- note\nDROP TABLE users\nGO",
            "DROP TABLE a\nDROP TABLE b",
        ] {
            assert!(statement_shaped(sql), "{sql}");
        }
    }

    #[test]
    fn token_offsets_cut_the_original_text() {
        // Multibyte characters, newlines, doubled quotes, dollar quotes and comments: each
        // token's slice is its exact source text, and the slices rebuild the text.
        let sql =
            "SELECT 'é''x' AS \"ü\"\"q\" -- c\n, $t$a'b$t$ /* ö */ FROM t;\r\nDROP TABLE \"x\"";
        let tokens = tokens_at(sql, SqlDialect::Postgres).unwrap();
        let mut rebuilt = String::new();
        for (i, (token, start)) in tokens.iter().enumerate() {
            let end = tokens.get(i + 1).map_or(sql.len(), |t| t.1);
            let text = &sql[*start..end];
            if let Token::SingleQuotedString(s) = token {
                assert_eq!(text, format!("'{}'", s.replace('\'', "''")));
            }
            rebuilt.push_str(text);
        }
        assert_eq!(rebuilt, sql);
        assert!(
            tokens
                .iter()
                .any(|(t, s)| matches!(t, Token::Word(w) if w.value == "DROP")
                    && sql[*s..].starts_with("DROP"))
        );
    }

    #[test]
    fn basic_tiers() {
        assert_eq!(t("SELECT 1"), Tier::T0);
        assert_eq!(t("INSERT INTO t VALUES (1)"), Tier::T2);
        assert_eq!(t("UPDATE t SET a = 1 WHERE id = 2"), Tier::T2);
        assert_eq!(t("UPDATE t SET a = 1"), Tier::T3);
        assert_eq!(t("UPDATE t SET a = 1 WHERE 1 = 1"), Tier::T3);
        assert_eq!(t("DELETE FROM t WHERE id = 1 OR true"), Tier::T3);
        assert_eq!(t("DROP TABLE t"), Tier::T4);
        assert_eq!(t("TRUNCATE t"), Tier::T4);
        assert_eq!(t("ALTER TABLE t DROP COLUMN a"), Tier::T4);
        assert_eq!(t("ALTER TABLE t ADD COLUMN a int"), Tier::T3);
        assert_eq!(t("GRANT ALL ON t TO bob"), Tier::T4);
        assert_eq!(t("not sql at all"), Tier::T4);
    }

    #[test]
    fn nested_statements_count() {
        let cte = "WITH gone AS (DELETE FROM users RETURNING *) SELECT count(*) FROM gone";
        let v = classify(cte, SqlDialect::Postgres);
        assert_eq!(v.tier, Tier::T3, "{v:?}");
        assert!(v.rules.contains(&"sql.delete_all_rows"), "{v:?}");
        assert_eq!(t("EXPLAIN DELETE FROM t"), Tier::T0);
        assert_eq!(t("EXPLAIN ANALYZE DELETE FROM t"), Tier::T3);
        assert_eq!(t("SELECT pg_terminate_backend(42)"), Tier::T3);
    }
}
