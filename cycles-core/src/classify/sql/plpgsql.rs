//! PostgreSQL anonymous code blocks (`DO $$ ... $$`), which the parser does not take: the
//! PL/pgSQL body is read statement by statement, each SQL statement by the SQL rules, each
//! condition and expression as a `SELECT` of it, `EXECUTE` of a literal by the SQL rules and of
//! anything else as dynamic SQL (4). What is not understood fails closed (`sql.unparsable`, 4),
//! and so does a block in another language (`plpython3u` runs anything).
//!
//! Agents write such blocks for idempotent migrations (`IF NOT EXISTS (...) THEN CREATE TYPE
//! ...`); read whole, they were all tier 4.

use sqlparser::tokenizer::{Token, Tokenizer};

use super::{SqlDialect, apply_nested, run_sql_text};
use crate::classify::Verdict;
use crate::model::Tier;

/// Rates `sql` when it holds a `DO` block among its top-level statements (the others by the
/// SQL rules, each on its own); returns whether it did. Text without one is left alone.
pub(super) fn apply_do_blocks(
    sql: &str,
    dialect: SqlDialect,
    depth: usize,
    v: &mut Verdict,
) -> bool {
    if !matches!(dialect, SqlDialect::Postgres | SqlDialect::Generic) {
        return false;
    }
    let Ok(tokens) = Tokenizer::new(dialect.dialect(), sql).tokenize() else {
        return false;
    };
    let statements = split_statements(&tokens);
    if !statements.iter().any(|s| is_do(s)) {
        return false;
    }
    for statement in statements {
        if is_do(statement) {
            do_block(statement, depth, v);
        } else if statement.iter().any(|t| !is_blank(t)) {
            apply_nested(&text(statement), dialect, depth, v);
        }
    }
    true
}

/// Whitespace and comments.
fn is_blank(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_))
}

/// The tokens as text (strings quoted and escaped again).
fn text(tokens: &[Token]) -> String {
    tokens.iter().map(|t| t.to_string()).collect()
}

/// The tokens split at top-level semicolons (outside parentheses and brackets).
fn split_statements(tokens: &[Token]) -> Vec<&[Token]> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::LParen | Token::LBracket => depth += 1,
            Token::RParen | Token::RBracket => depth -= 1,
            Token::SemiColon if depth <= 0 => {
                out.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&tokens[start..]);
    out
}

/// The words of a statement, blanks skipped.
fn words(tokens: &[Token]) -> Vec<&Token> {
    tokens.iter().filter(|t| !is_blank(t)).collect()
}

/// Whether a token is the unquoted word `word`, in any case (PL/pgSQL's words are not all
/// keywords of the parser).
fn is_word(t: &Token, word: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn is_do(statement: &[Token]) -> bool {
    words(statement).first().is_some_and(|t| is_word(t, "DO"))
}

/// `DO [LANGUAGE name] body [LANGUAGE name]`.
fn do_block(statement: &[Token], depth: usize, v: &mut Verdict) {
    let w = words(statement);
    let mut body = None;
    let mut language_ok = true;
    let mut i = 1;
    while i < w.len() {
        match w[i] {
            Token::DollarQuotedString(s) if body.is_none() => body = Some(s.value.clone()),
            Token::SingleQuotedString(s) if body.is_none() => body = Some(s.clone()),
            t if is_word(t, "LANGUAGE") => {
                language_ok &= w.get(i + 1).is_some_and(|l| match l {
                    Token::Word(l) => l.value.eq_ignore_ascii_case("plpgsql"),
                    Token::SingleQuotedString(l) => l.eq_ignore_ascii_case("plpgsql"),
                    _ => false,
                });
                i += 1;
            }
            _ => language_ok = false,
        }
        i += 1;
    }
    match body {
        Some(body) if language_ok => block_body(&body, depth, v),
        _ => v.raise(Tier::T4, "sql.unparsable"),
    }
}

/// Most statements of one block body read; a longer one fails closed.
const MAX_BLOCK_STATEMENTS: usize = 10_000;

/// A PL/pgSQL body, statement by statement.
fn block_body(body: &str, depth: usize, v: &mut Verdict) {
    let Ok(tokens) = Tokenizer::new(SqlDialect::Postgres.dialect(), body).tokenize() else {
        v.raise(Tier::T4, "sql.unparsable");
        return;
    };
    let statements = split_statements(&tokens);
    if statements.len() > MAX_BLOCK_STATEMENTS {
        v.raise(Tier::T4, "sql.too_complex");
        return;
    }
    let mut declaring = false;
    for statement in statements {
        let w = words(statement);
        if w.is_empty() {
            continue;
        }
        plpgsql_statement(&w, &mut declaring, depth, v);
    }
    // Nothing in the body raised a rule (an empty block, only RAISE): it reads nothing either.
    v.raise(Tier::T0, "sql.code_block");
}

/// One statement of a body, with the block structure before it (`DECLARE`, `BEGIN`, `IF cond
/// THEN`, `LOOP`, `EXCEPTION WHEN x THEN`, labels) taken off.
fn plpgsql_statement(mut w: &[&Token], declaring: &mut bool, depth: usize, v: &mut Verdict) {
    loop {
        let Some(first) = w.first() else { return };
        // `<<label>>`
        if matches!(first, Token::ShiftLeft) {
            match w.iter().position(|t| matches!(t, Token::ShiftRight)) {
                Some(end) => w = &w[end + 1..],
                None => return fail(v),
            }
        } else if is_word(first, "DECLARE") {
            *declaring = true;
            w = &w[1..];
        } else if is_word(first, "BEGIN") {
            *declaring = false;
            w = &w[1..];
        } else if *declaring {
            return declaration(w, depth, v);
        } else if is_word(first, "END") {
            // `END`, `END IF`, `END LOOP`, `END CASE`, `END label`: nothing runs.
            if w.len() > 3 {
                fail(v);
            }
            return;
        } else if is_word(first, "EXCEPTION") || is_word(first, "ELSE") || is_word(first, "LOOP") {
            w = &w[1..];
        } else if is_word(first, "IF")
            || is_word(first, "ELSIF")
            || is_word(first, "ELSEIF")
            || is_word(first, "WHEN")
            || is_word(first, "WHILE")
        {
            // `IF cond THEN`, `WHILE cond LOOP`: the condition is evaluated. An exception
            // handler's `WHEN name [OR name] THEN` names conditions (a CASE statement, whose
            // WHEN would be evaluated, is not read and fails closed).
            let Some(end) = w
                .iter()
                .position(|t| is_word(t, "THEN") || is_word(t, "LOOP"))
            else {
                return fail(v);
            };
            if !is_word(first, "WHEN") {
                expression(&w[1..end], depth, v);
            }
            w = &w[end + 1..];
        } else if is_word(first, "FOR") || is_word(first, "FOREACH") {
            // `FOR x IN query LOOP`, `FOR i IN 1..10 LOOP`, `FOREACH x IN ARRAY a LOOP`.
            let (Some(into), Some(end)) = (
                w.iter().position(|t| is_word(t, "IN")),
                w.iter().position(|t| is_word(t, "LOOP")),
            ) else {
                return fail(v);
            };
            if into > end {
                return fail(v);
            }
            let mut source = &w[into + 1..end];
            if source.first().is_some_and(|t| is_word(t, "REVERSE")) {
                source = &source[1..];
            }
            if source.first().is_some_and(|t| is_word(t, "ARRAY")) {
                source = &source[1..];
            }
            iteration_source(source, depth, v);
            w = &w[end + 1..];
        } else {
            return action(w, depth, v);
        }
    }
}

/// A statement that acts, after the block structure.
fn action(w: &[&Token], depth: usize, v: &mut Verdict) {
    let first = w[0];
    let rest = &w[1..];
    if is_word(first, "NULL")
        || is_word(first, "COMMIT")
        || is_word(first, "ROLLBACK")
        || is_word(first, "FETCH")
        || is_word(first, "CLOSE")
        || is_word(first, "MOVE")
        || (is_word(first, "GET") && rest.iter().any(|t| is_word(t, "DIAGNOSTICS")))
    {
        return;
    }
    if is_word(first, "EXIT") || is_word(first, "CONTINUE") {
        // `EXIT [label] [WHEN cond]`: the condition is evaluated.
        if let Some(when) = rest.iter().position(|t| is_word(t, "WHEN")) {
            expression(&rest[when + 1..], depth, v);
        }
        return;
    }
    if is_word(first, "RAISE") {
        // `RAISE NOTICE 'fmt %', expr, ... [USING option = expr, ...]`: the expressions are
        // evaluated.
        let using = rest
            .iter()
            .position(|t| is_word(t, "USING"))
            .unwrap_or(rest.len());
        if let Some(format) = rest[..using]
            .iter()
            .position(|t| matches!(t, Token::SingleQuotedString(_)))
        {
            match rest[format + 1..using].first() {
                Some(Token::Comma) => expression(&rest[format + 2..using], depth, v),
                Some(_) => return fail(v),
                None => {}
            }
        }
        if using < rest.len() {
            for option in rest[using + 1..].split(|t| matches!(t, Token::Comma)) {
                match option {
                    [Token::Word(_), Token::Eq, value @ ..] => expression(value, depth, v),
                    _ => return fail(v),
                }
            }
        }
        return;
    }
    if is_word(first, "PERFORM") || is_word(first, "RETURN") || is_word(first, "ASSERT") {
        return expression(rest, depth, v);
    }
    if is_word(first, "EXECUTE") {
        return execute(rest, depth, v);
    }
    if is_word(first, "OPEN") {
        // `OPEN cur FOR query`, `OPEN cur FOR EXECUTE text`, `OPEN cur` (declared query).
        if let Some(f) = rest.iter().position(|t| is_word(t, "FOR")) {
            iteration_source(&rest[f + 1..], depth, v);
        }
        return;
    }
    // `target := expr` (also `=`): the expression is evaluated.
    if let Some(at) = w.iter().position(|t| matches!(t, Token::Assignment))
        && w[..at].iter().all(|t| {
            matches!(
                t,
                Token::Word(_)
                    | Token::Period
                    | Token::LBracket
                    | Token::RBracket
                    | Token::Number(..)
            )
        })
    {
        return expression(&w[at + 1..], depth, v);
    }
    if w.len() >= 2
        && matches!(w[0], Token::Word(_))
        && matches!(w[1], Token::Eq)
        && !is_word(w[0], "SET")
    {
        return expression(&w[2..], depth, v);
    }
    sql_statement(w, depth, v);
}

/// An SQL statement inside a body: `SELECT ... INTO var` and `... RETURNING ... INTO var`
/// assign variables there (no table is created), so that clause is taken off first.
fn sql_statement(w: &[&Token], depth: usize, v: &mut Verdict) {
    let mut kept: Vec<&Token> = Vec::with_capacity(w.len());
    let select = is_word(w[0], "SELECT") || is_word(w[0], "WITH");
    let mut returning = false;
    let mut paren = 0i32;
    let mut i = 0;
    while i < w.len() {
        let t = w[i];
        match t {
            Token::LParen => paren += 1,
            Token::RParen => paren -= 1,
            _ => {}
        }
        returning |= paren == 0 && is_word(t, "RETURNING");
        if paren == 0 && (select || returning) && is_word(t, "INTO") {
            // INTO [STRICT] target [, target ...]
            i += 1;
            if w.get(i).is_some_and(|t| is_word(t, "STRICT")) {
                i += 1;
            }
            while i < w.len() && matches!(w[i], Token::Word(_) | Token::Period | Token::Comma) {
                let end_of_list = matches!(w[i], Token::Word(_))
                    && !matches!(w.get(i + 1), Some(Token::Period | Token::Comma));
                i += 1;
                if end_of_list {
                    break;
                }
            }
            continue;
        }
        kept.push(t);
        i += 1;
    }
    let text: String = kept
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    apply_nested(&text, SqlDialect::Postgres, depth + 1, v);
}

/// `EXECUTE text [INTO ...] [USING ...]`: a literal is read by the SQL rules, anything
/// computed (`format(...)`, a variable, a concatenation) is dynamic SQL.
fn execute(rest: &[&Token], depth: usize, v: &mut Verdict) {
    let end = rest
        .iter()
        .position(|t| is_word(t, "INTO") || is_word(t, "USING"))
        .unwrap_or(rest.len());
    match &rest[..end] {
        [Token::SingleQuotedString(s)] => run_sql_text(Some(s), SqlDialect::Postgres, depth, v),
        [Token::DollarQuotedString(s)] => {
            run_sql_text(Some(&s.value), SqlDialect::Postgres, depth, v)
        }
        _ => run_sql_text(None, SqlDialect::Postgres, depth, v),
    }
}

/// What a `FOR ... IN` or `OPEN ... FOR` iterates: a query, `EXECUTE text`, or an expression
/// (`1..10`, an array).
fn iteration_source(source: &[&Token], depth: usize, v: &mut Verdict) {
    match source.first() {
        None => fail(v),
        Some(t) if is_word(t, "EXECUTE") => execute(&source[1..], depth, v),
        Some(t)
            if is_word(t, "SELECT")
                || is_word(t, "WITH")
                || is_word(t, "VALUES")
                || is_word(t, "TABLE") =>
        {
            sql_statement(source, depth, v)
        }
        Some(_) => {
            // `a..b [BY c]` is a range of expressions: read as `a, b, c`. The tokenizer reads
            // `1..10` as the numbers `1.` and `.10`.
            let mut parts: Vec<Token> = Vec::with_capacity(source.len() + 2);
            let mut i = 0;
            while i < source.len() {
                match (source[i], source.get(i + 1).copied()) {
                    (Token::Period, Some(Token::Period)) => {
                        parts.push(Token::Comma);
                        i += 1;
                    }
                    (Token::Period, Some(Token::Number(b, long))) if b.starts_with('.') => {
                        parts.push(Token::Comma);
                        parts.push(Token::Number(b[1..].to_string(), *long));
                        i += 1;
                    }
                    (Token::Number(a, long), next) if a.ends_with('.') => {
                        parts.push(Token::Number(a.trim_end_matches('.').to_string(), *long));
                        parts.push(Token::Comma);
                        match next {
                            Some(Token::Number(b, long)) if b.starts_with('.') => {
                                parts.push(Token::Number(b[1..].to_string(), *long));
                                i += 1;
                            }
                            Some(Token::Period) => i += 1,
                            _ => {}
                        }
                    }
                    (t, _) if is_word(t, "BY") => parts.push(Token::Comma),
                    (t, _) => parts.push(t.clone()),
                }
                i += 1;
            }
            expression(&parts.iter().collect::<Vec<_>>(), depth, v)
        }
    }
}

/// A declaration: `name [CONSTANT] type [NOT NULL] [:= | = | DEFAULT expr]`, or a cursor
/// `name CURSOR FOR query`. One that starts like a statement is not read as a declaration
/// (the server would reject it; nothing says it is harmless).
fn declaration(w: &[&Token], depth: usize, v: &mut Verdict) {
    let statement_like = [
        "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "DROP", "TRUNCATE", "ALTER", "CREATE",
        "GRANT", "REVOKE", "COPY", "CALL", "EXECUTE", "PERFORM", "DO", "VACUUM", "REINDEX",
        "CLUSTER", "LOCK", "SET", "RESET", "WITH", "COMMIT", "ROLLBACK",
    ];
    if statement_like.iter().any(|k| is_word(w[0], k)) {
        return fail(v);
    }
    if let Some(f) = w.iter().position(|t| is_word(t, "CURSOR")) {
        return match w[f..]
            .iter()
            .position(|t| is_word(t, "FOR") || is_word(t, "IS"))
        {
            Some(g) => iteration_source(&w[f + g + 1..], depth, v),
            None => fail(v),
        };
    }
    if let Some(at) = w
        .iter()
        .position(|t| matches!(t, Token::Assignment | Token::Eq) || is_word(t, "DEFAULT"))
    {
        expression(&w[at + 1..], depth, v);
    }
}

/// An expression the body evaluates, read as `SELECT expr` (its functions and subqueries
/// count); nothing to read is nothing to rate.
fn expression(w: &[&Token], depth: usize, v: &mut Verdict) {
    if w.is_empty() {
        return;
    }
    let text: String = w
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    apply_nested(
        &format!("SELECT {text}"),
        SqlDialect::Postgres,
        depth + 1,
        v,
    );
}

/// A construct not understood: fail closed.
fn fail(v: &mut Verdict) {
    v.raise(Tier::T4, "sql.unparsable");
}
