//! SQL: parsed with `sqlparser` (every statement of the string, nested statements included).
//!
//! SELECT/SHOW/EXPLAIN 0 · INSERT 2 · UPDATE/DELETE with a WHERE 2, without one (or with a
//! trivially true one such as `WHERE 1=1`) 3 · DROP, TRUNCATE, ALTER ... DROP, GRANT, REVOKE 4 ·
//! SQL that does not parse 4 (fail closed). A data-modifying statement anywhere (a CTE body,
//! `INSERT ... SELECT`, `EXPLAIN ANALYZE`, which runs its statement) counts like a top-level one.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};
use sqlparser::ast::{
    BinaryOperator, CopyTarget, Expr, SetExpr, Statement, Value, visit_expressions,
    visit_statements,
};
use sqlparser::dialect::{
    BigQueryDialect, Dialect, DuckDbDialect, GenericDialect, MsSqlDialect, MySqlDialect,
    PostgreSqlDialect, SQLiteDialect, SnowflakeDialect,
};
use sqlparser::parser::Parser;

use super::Verdict;
use crate::model::Tier;

/// Longest SQL text parsed; longer text is tier 4 (`sql.too_long`) without parsing.
pub const MAX_SQL_LEN: usize = 1 << 20;
/// Deepest expression nesting parsed; deeper SQL is unparsable (tier 4).
const RECURSION_LIMIT: usize = 64;

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

/// Raises `v` by the statements of `sql`.
pub(crate) fn apply(sql: &str, dialect: SqlDialect, v: &mut Verdict) {
    if sql.len() > MAX_SQL_LEN {
        v.raise(Tier::T4, "sql.too_long");
        return;
    }
    let parsed = Parser::new(dialect.dialect())
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements());
    let statements = match parsed {
        Ok(s) => s,
        Err(_) => {
            v.raise(Tier::T4, "sql.unparsable");
            return;
        }
    };
    if statements.is_empty() {
        v.raise(Tier::T0, "sql.empty");
    }
    for top in &statements {
        // EXPLAIN without ANALYZE only plans its statement; with ANALYZE it runs it.
        if let Statement::Explain { analyze: false, .. } | Statement::ExplainTable { .. } = top {
            v.raise(Tier::T0, "sql.explain");
            continue;
        }
        let _ = visit_statements(top, |s| {
            statement(s, v);
            ControlFlow::<()>::Continue(())
        });
        let _ = visit_expressions(top, |e| {
            if let Expr::Function(f) = e
                && let Some(last) = f.name.0.last()
                && let Some(ident) = last.as_ident()
            {
                let name = ident.value.as_str();
                if let Some((_, tier)) = SIDE_EFFECT_FUNCTIONS
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                {
                    v.raise(*tier, "sql.side_effect_function");
                }
            }
            ControlFlow::<()>::Continue(())
        });
    }
}

/// A WHERE clause that selects every row (`1=1`, `true`, `x = x`, `... OR 1=1`).
fn trivially_true(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Boolean(b) => *b,
            Value::Number(n, _) => n.parse::<f64>().is_ok_and(|n| n != 0.0),
            _ => false,
        },
        Expr::Nested(inner) => trivially_true(inner),
        Expr::IsNotNull(inner) => {
            matches!(inner.as_ref(), Expr::Value(v) if v.value != Value::Null)
        }
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::Or => trivially_true(left) || trivially_true(right),
            BinaryOperator::And => trivially_true(left) && trivially_true(right),
            BinaryOperator::Eq | BinaryOperator::GtEq | BinaryOperator::LtEq => {
                left == right && !matches!(left.as_ref(), Expr::Value(v) if v.value == Value::Null)
            }
            BinaryOperator::NotEq => {
                matches!((left.as_ref(), right.as_ref()), (Expr::Value(a), Expr::Value(b)) if a.value != b.value && a.value != Value::Null && b.value != Value::Null)
            }
            _ => false,
        },
        _ => false,
    }
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

fn statement(s: &Statement, v: &mut Verdict) {
    match s {
        Statement::Query(q) => {
            let into = matches!(q.body.as_ref(), SetExpr::Select(sel) if sel.into.is_some());
            if into {
                v.raise(Tier::T2, "sql.select_into");
            } else {
                v.raise(Tier::T0, "sql.select");
            }
        }
        Statement::Insert(i) => {
            if i.overwrite {
                v.raise(Tier::T3, "sql.insert_overwrite");
            } else {
                v.raise(Tier::T2, "sql.insert");
            }
        }
        Statement::Update(u) => where_rule(
            v,
            u.selection.as_ref(),
            "sql.update_where",
            "sql.update_all_rows",
        ),
        Statement::Delete(d) => where_rule(
            v,
            d.selection.as_ref(),
            "sql.delete_where",
            "sql.delete_all_rows",
        ),
        Statement::Merge(_) => v.raise(Tier::T3, "sql.merge"),
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
            if drops {
                v.raise(Tier::T4, "sql.alter_drop");
            } else {
                v.raise(Tier::T3, "sql.alter");
            }
        }
        Statement::Explain { .. } => v.raise(Tier::T0, "sql.explain"),
        Statement::Copy { to, target, .. } => {
            let program = matches!(target, CopyTarget::Program { .. });
            if program {
                // COPY ... TO/FROM PROGRAM runs a shell command on the server.
                v.raise(Tier::T4, "sql.copy_program");
            } else if *to {
                match target {
                    CopyTarget::Stdout => v.raise(Tier::T0, "sql.copy_out"),
                    _ => v.raise(Tier::T2, "sql.copy_to_file"),
                }
            } else {
                v.raise(Tier::T2, "sql.copy_in");
            }
        }
        other => by_keyword(other, v),
    }
}

/// Statements without a dedicated rule, by their leading keyword.
fn by_keyword(s: &Statement, v: &mut Verdict) {
    let text = s.to_string();
    let first = text
        .split(|c: char| !c.is_ascii_alphabetic())
        .find(|w| !w.is_empty())
        .unwrap_or("")
        .to_ascii_uppercase();
    let (tier, rule) = match first.as_str() {
        "DROP" => (Tier::T4, "sql.drop"),
        "TRUNCATE" => (Tier::T4, "sql.truncate"),
        "DELETE" => (Tier::T3, "sql.delete_all_rows"),
        "GRANT" | "REVOKE" | "DENY" => (Tier::T4, "sql.grant"),
        "ALTER" | "RENAME" => (Tier::T3, "sql.alter"),
        "CREATE" => (Tier::T2, "sql.create"),
        "INSERT" | "REPLACE" | "UPSERT" | "LOAD" | "PUT" | "UNLOAD" | "EXPORT" | "ATTACH"
        | "DETACH" | "INSTALL" => (Tier::T2, "sql.write"),
        "KILL" | "CALL" | "EXECUTE" | "EXEC" | "REMOVE" => (Tier::T3, "sql.execute"),
        "VACUUM" | "ANALYZE" | "OPTIMIZE" | "REFRESH" | "PRAGMA" | "COMMENT" | "FLUSH" | "MSCK"
        | "CACHE" | "UNCACHE" | "DISCARD" => (Tier::T1, "sql.maintenance"),
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
