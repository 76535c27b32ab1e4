//! PostgreSQL anonymous code blocks (`DO $$ ... $$`), which the parser does not take: the
//! PL/pgSQL body is read statement by statement, each SQL statement by the SQL rules, each
//! expression it evaluates (conditions, assignments, `PERFORM`, `RAISE` and `EXECUTE ... USING`
//! arguments, cursor arguments, `FETCH` counts, declaration defaults) as a `SELECT` of it,
//! `EXECUTE` of a literal by the SQL rules and of anything else as dynamic SQL (4). What is not
//! understood fails closed (`sql.unparsable`, 4), and so does a block in another language
//! (`plpython3u` runs anything).
//!
//! Agents write such blocks for idempotent migrations (`IF NOT EXISTS (...) THEN CREATE TYPE
//! ...`); read whole, they were all tier 4. Statement text is always cut from the original at
//! token offsets ([`tokens_at`]), never printed from tokens (which drops doubled quotes).

use sqlparser::tokenizer::Token;

use super::{SqlDialect, apply_nested, run_sql_text, tokens_at};
use crate::classify::Verdict;
use crate::model::Tier;

/// A token that is not blank, with the byte range of its text in the source.
#[derive(Clone, Copy)]
struct W<'a> {
    token: &'a Token,
    start: usize,
    end: usize,
}

/// The words (non-blank tokens) of tokenised text, with their ranges.
fn words(tokens: &[(Token, usize)]) -> Vec<W<'_>> {
    (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].0, Token::Whitespace(_)))
        .map(|i| W {
            token: &tokens[i].0,
            start: tokens[i].1,
            end: tokens.get(i + 1).map_or(usize::MAX, |t| t.1),
        })
        .collect()
}

/// The source text from the first word to the last.
fn text<'s>(src: &'s str, w: &[W<'_>]) -> &'s str {
    match (w.first(), w.last()) {
        (Some(a), Some(b)) => &src[a.start..b.end.min(src.len())],
        _ => "",
    }
}

/// Whether a token is the unquoted word `word`, in any case (PL/pgSQL's words are not all
/// keywords of the parser).
fn is_word(t: &Token, word: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// The first word at nesting level 0 (outside parentheses, brackets and `CASE ... END`) that
/// `hit` accepts.
fn position_top(w: &[W<'_>], hit: impl Fn(&Token) -> bool) -> Option<usize> {
    let (mut paren, mut case) = (0i64, 0i64);
    for (i, x) in w.iter().enumerate() {
        if paren == 0 && case == 0 && hit(x.token) {
            return Some(i);
        }
        match x.token {
            Token::LParen | Token::LBracket => paren += 1,
            Token::RParen | Token::RBracket => paren -= 1,
            t if is_word(t, "CASE") => case += 1,
            t if is_word(t, "END") && case > 0 => case -= 1,
            _ => {}
        }
    }
    None
}

/// The words split at commas at nesting level 0.
fn split_top<'w, 'a>(w: &'w [W<'a>]) -> Vec<&'w [W<'a>]> {
    let mut out = Vec::new();
    let mut rest = w;
    while let Some(c) = position_top(rest, |t| matches!(t, Token::Comma)) {
        out.push(&rest[..c]);
        rest = &rest[c + 1..];
    }
    out.push(rest);
    out
}

/// The words split into statements at semicolons at nesting level 0 (parentheses only: a
/// `CASE` statement's branches end in semicolons too).
fn statements<'w, 'a>(w: &'w [W<'a>]) -> Vec<&'w [W<'a>]> {
    let mut out = Vec::new();
    let (mut paren, mut start) = (0i64, 0);
    for (i, x) in w.iter().enumerate() {
        match x.token {
            Token::LParen | Token::LBracket => paren += 1,
            Token::RParen | Token::RBracket => paren -= 1,
            Token::SemiColon if paren <= 0 => {
                out.push(&w[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&w[start..]);
    out
}

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
    let Some(tokens) = tokens_at(sql, dialect) else {
        return false;
    };
    let all = words(&tokens);
    let parts = statements(&all);
    let is_do = |s: &[W<'_>]| s.first().is_some_and(|w| is_word(w.token, "DO"));
    if !parts.iter().any(|s| is_do(s)) {
        return false;
    }
    for statement in parts {
        if is_do(statement) {
            do_block(statement, depth, v);
        } else if !statement.is_empty() {
            apply_nested(text(sql, statement), dialect, depth, v);
        }
    }
    true
}

/// `DO [LANGUAGE name] body [LANGUAGE name]`.
fn do_block(statement: &[W<'_>], depth: usize, v: &mut Verdict) {
    let mut body = None;
    let mut language_ok = true;
    let mut i = 1;
    while i < statement.len() {
        match statement[i].token {
            Token::DollarQuotedString(s) if body.is_none() => body = Some(s.value.clone()),
            Token::SingleQuotedString(s) if body.is_none() => body = Some(s.clone()),
            t if is_word(t, "LANGUAGE") => {
                language_ok &= statement.get(i + 1).is_some_and(|l| match l.token {
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
        Some(body) if language_ok => Body { src: &body, depth }.read(v),
        _ => fail(v),
    }
}

/// Most statements of one block body read; a longer one fails closed.
const MAX_BLOCK_STATEMENTS: usize = 10_000;

/// A PL/pgSQL body being read.
struct Body<'s> {
    src: &'s str,
    depth: usize,
}

impl Body<'_> {
    fn read(&self, v: &mut Verdict) {
        let Some(tokens) = tokens_at(self.src, SqlDialect::Postgres) else {
            return fail(v);
        };
        let all = words(&tokens);
        // A body is a block: `[<<label>>] [DECLARE ...] BEGIN ... END`.
        let mut head = &all[..];
        while let [first, ..] = head {
            if matches!(first.token, Token::ShiftLeft) {
                match head
                    .iter()
                    .position(|t| matches!(t.token, Token::ShiftRight))
                {
                    Some(end) => head = &head[end + 1..],
                    None => return fail(v),
                }
            } else {
                break;
            }
        }
        if !head
            .first()
            .is_some_and(|w| is_word(w.token, "DECLARE") || is_word(w.token, "BEGIN"))
        {
            return fail(v);
        }
        let parts = statements(&all);
        if parts.len() > MAX_BLOCK_STATEMENTS {
            return v.raise(Tier::T4, "sql.too_complex");
        }
        let mut declaring = false;
        for statement in parts {
            self.statement(statement, &mut declaring, v);
        }
        // Nothing in the body raised a rule (an empty block, only RAISE): it reads nothing
        // either.
        v.raise(Tier::T0, "sql.code_block");
    }

    /// One statement, with the block structure before it (`DECLARE`, `BEGIN`, `IF cond THEN`,
    /// `LOOP`, `EXCEPTION WHEN x THEN`, labels) taken off.
    fn statement(&self, mut w: &[W<'_>], declaring: &mut bool, v: &mut Verdict) {
        loop {
            let Some(first) = w.first().map(|x| x.token) else {
                return;
            };
            if matches!(first, Token::ShiftLeft) {
                // `<<label>>`
                match w.iter().position(|t| matches!(t.token, Token::ShiftRight)) {
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
                return self.declaration(w, v);
            } else if is_word(first, "END") {
                // `END`, `END IF`, `END LOOP`, `END CASE`, `END label`: nothing runs.
                if w.len() > 3 {
                    fail(v);
                }
                return;
            } else if is_word(first, "EXCEPTION")
                || is_word(first, "ELSE")
                || is_word(first, "LOOP")
            {
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
                let Some(end) = position_top(&w[1..], |t| is_word(t, "THEN") || is_word(t, "LOOP"))
                else {
                    return fail(v);
                };
                if !is_word(first, "WHEN") {
                    self.expression(&w[1..end + 1], v);
                }
                w = &w[end + 2..];
            } else if is_word(first, "FOR") || is_word(first, "FOREACH") {
                // `FOR x IN query LOOP`, `FOR i IN 1..10 LOOP`, `FOREACH x IN ARRAY a LOOP`.
                let (Some(into), Some(end)) = (
                    position_top(w, |t| is_word(t, "IN")),
                    position_top(w, |t| is_word(t, "LOOP")),
                ) else {
                    return fail(v);
                };
                if into > end {
                    return fail(v);
                }
                let mut source = &w[into + 1..end];
                for skip in ["REVERSE", "ARRAY"] {
                    if source.first().is_some_and(|t| is_word(t.token, skip)) {
                        source = &source[1..];
                    }
                }
                self.iteration_source(source, v);
                w = &w[end + 1..];
            } else {
                return self.action(w, v);
            }
        }
    }

    /// A statement that acts, after the block structure.
    fn action(&self, w: &[W<'_>], v: &mut Verdict) {
        let first = w[0].token;
        let rest = &w[1..];
        if is_word(first, "NULL")
            || is_word(first, "COMMIT")
            || is_word(first, "ROLLBACK")
            || (is_word(first, "GET") && rest.iter().any(|t| is_word(t.token, "DIAGNOSTICS")))
        {
            return;
        }
        if is_word(first, "EXIT") || is_word(first, "CONTINUE") {
            // `EXIT [label] [WHEN cond]`: the condition is evaluated.
            if let Some(when) = rest.iter().position(|t| is_word(t.token, "WHEN")) {
                self.expression(&rest[when + 1..], v);
            }
            return;
        }
        if is_word(first, "FETCH") || is_word(first, "MOVE") {
            return self.fetch(rest, v);
        }
        if is_word(first, "CLOSE") {
            return;
        }
        if is_word(first, "RAISE") {
            return self.raise(rest, v);
        }
        if is_word(first, "PERFORM") || is_word(first, "RETURN") || is_word(first, "ASSERT") {
            return self.expression(rest, v);
        }
        if is_word(first, "EXECUTE") {
            return self.execute(rest, v);
        }
        if is_word(first, "OPEN") {
            return self.open(rest, v);
        }
        // `target := expr` (also `=`): the expression is evaluated.
        if let Some(at) = position_top(w, |t| matches!(t, Token::Assignment))
            && w[..at].iter().all(|t| {
                matches!(
                    t.token,
                    Token::Word(_)
                        | Token::Period
                        | Token::LBracket
                        | Token::RBracket
                        | Token::Number(..)
                )
            })
        {
            return self.expression(&w[at + 1..], v);
        }
        if w.len() >= 2
            && matches!(w[0].token, Token::Word(_))
            && matches!(w[1].token, Token::Eq)
            && !is_word(w[0].token, "SET")
        {
            return self.expression(&w[2..], v);
        }
        self.sql(w, v);
    }

    /// An SQL statement inside a body: `SELECT ... INTO var` and `... RETURNING ... INTO var`
    /// assign variables there (no table is created), so that clause is taken off first.
    fn sql(&self, w: &[W<'_>], v: &mut Verdict) {
        let select = is_word(w[0].token, "SELECT") || is_word(w[0].token, "WITH");
        let mut kept: Vec<&[W<'_>]> = Vec::new();
        let (mut paren, mut returning, mut run) = (0i64, false, 0);
        let mut i = 0;
        while i < w.len() {
            match w[i].token {
                Token::LParen => paren += 1,
                Token::RParen => paren -= 1,
                _ => {}
            }
            returning |= paren == 0 && is_word(w[i].token, "RETURNING");
            if paren == 0 && (select || returning) && is_word(w[i].token, "INTO") {
                kept.push(&w[run..i]);
                // INTO [STRICT] target [, target ...]
                i += 1;
                if w.get(i).is_some_and(|t| is_word(t.token, "STRICT")) {
                    i += 1;
                }
                while i < w.len() {
                    let last = matches!(w[i].token, Token::Word(_))
                        && !matches!(
                            w.get(i + 1).map(|t| t.token),
                            Some(Token::Period | Token::Comma)
                        );
                    if !matches!(w[i].token, Token::Word(_) | Token::Period | Token::Comma) {
                        break;
                    }
                    i += 1;
                    if last {
                        break;
                    }
                }
                run = i;
                continue;
            }
            i += 1;
        }
        kept.push(&w[run..]);
        let statement: Vec<&str> = kept
            .iter()
            .filter(|k| !k.is_empty())
            .map(|k| text(self.src, k))
            .collect();
        apply_nested(
            &statement.join(" "),
            SqlDialect::Postgres,
            self.depth + 1,
            v,
        );
    }

    /// `EXECUTE text [INTO [STRICT] target] [USING expr, ...]`: a literal is read by the SQL
    /// rules, anything computed (`format(...)`, a variable, a concatenation) is dynamic SQL;
    /// the `USING` expressions are evaluated.
    fn execute(&self, rest: &[W<'_>], v: &mut Verdict) {
        let end =
            position_top(rest, |t| is_word(t, "INTO") || is_word(t, "USING")).unwrap_or(rest.len());
        match rest[..end] {
            [
                W {
                    token: Token::SingleQuotedString(s),
                    ..
                },
            ] => run_sql_text(Some(s), SqlDialect::Postgres, self.depth, v),
            [
                W {
                    token: Token::DollarQuotedString(s),
                    ..
                },
            ] => run_sql_text(Some(&s.value), SqlDialect::Postgres, self.depth, v),
            _ => run_sql_text(None, SqlDialect::Postgres, self.depth, v),
        }
        if let Some(using) = position_top(rest, |t| is_word(t, "USING")) {
            self.expression(&rest[using + 1..], v);
        }
    }

    /// `OPEN cur [[NO] SCROLL] FOR query | FOR EXECUTE text`, or `OPEN cur [(args)]` of a
    /// declared cursor, whose arguments are evaluated (`name := expr` too).
    fn open(&self, rest: &[W<'_>], v: &mut Verdict) {
        if let Some(f) = position_top(rest, |t| is_word(t, "FOR")) {
            return self.iteration_source(&rest[f + 1..], v);
        }
        match rest {
            [_] | [] => {}
            [_name, open, args @ .., close]
                if matches!(open.token, Token::LParen) && matches!(close.token, Token::RParen) =>
            {
                for arg in split_top(args) {
                    let value =
                        match position_top(arg, |t| matches!(t, Token::Assignment | Token::RArrow))
                        {
                            Some(at) => &arg[at + 1..],
                            None => arg,
                        };
                    self.expression(value, v);
                }
            }
            _ => fail(v),
        }
    }

    /// `FETCH|MOVE [direction [count]] [FROM|IN] cur [INTO target]`: a count is evaluated.
    fn fetch(&self, rest: &[W<'_>], v: &mut Verdict) {
        let end = position_top(rest, |t| is_word(t, "FROM") || is_word(t, "IN"))
            .or_else(|| position_top(rest, |t| is_word(t, "INTO")))
            .unwrap_or(rest.len());
        let directions = [
            "NEXT", "PRIOR", "FIRST", "LAST", "ABSOLUTE", "RELATIVE", "ALL", "FORWARD", "BACKWARD",
        ];
        let mut count = &rest[..end];
        while count
            .first()
            .is_some_and(|t| directions.iter().any(|d| is_word(t.token, d)))
        {
            count = &count[1..];
        }
        self.expression(count, v);
    }

    /// `RAISE [level] ['fmt', expr, ...] [USING option = expr, ...]`: the expressions are
    /// evaluated.
    fn raise(&self, rest: &[W<'_>], v: &mut Verdict) {
        let using = position_top(rest, |t| is_word(t, "USING")).unwrap_or(rest.len());
        if let Some(format) = rest[..using]
            .iter()
            .position(|t| matches!(t.token, Token::SingleQuotedString(_)))
        {
            match rest[format + 1..using].first().map(|t| t.token) {
                Some(Token::Comma) => self.expression(&rest[format + 2..using], v),
                Some(_) => return fail(v),
                None => {}
            }
        }
        if using < rest.len() {
            for option in split_top(&rest[using + 1..]) {
                match option {
                    [name, eq, value @ ..]
                        if matches!(name.token, Token::Word(_))
                            && matches!(eq.token, Token::Eq | Token::Assignment) =>
                    {
                        self.expression(value, v)
                    }
                    _ => return fail(v),
                }
            }
        }
    }

    /// What a `FOR ... IN` or `OPEN ... FOR` iterates: a query, `EXECUTE text`, or an
    /// expression (`1..10`, an array).
    fn iteration_source(&self, source: &[W<'_>], v: &mut Verdict) {
        let Some(first) = source.first().map(|t| t.token) else {
            return fail(v);
        };
        if is_word(first, "EXECUTE") {
            return self.execute(&source[1..], v);
        }
        if ["SELECT", "WITH", "VALUES", "TABLE"]
            .iter()
            .any(|k| is_word(first, k))
        {
            return self.sql(source, v);
        }
        // `a..b [BY c]` is a range of expressions: read as `a, b, c`. The tokenizer reads
        // `1..10` as the numbers `1.` and `.10`, and `n..1` as `n`, `.`, `.1`.
        let mut parts: Vec<String> = Vec::with_capacity(source.len() + 2);
        let mut i = 0;
        while i < source.len() {
            let next = source.get(i + 1).map(|t| t.token);
            match (source[i].token, next) {
                (Token::Period, Some(Token::Period)) => {
                    parts.push(",".into());
                    i += 1;
                }
                (Token::Period, Some(Token::Number(b, _))) if b.starts_with('.') => {
                    parts.push(format!(", {}", &b[1..]));
                    i += 1;
                }
                (Token::Number(a, _), next) if a.ends_with('.') => {
                    parts.push(format!("{} ,", a.trim_end_matches('.')));
                    match next {
                        Some(Token::Number(b, _)) if b.starts_with('.') => {
                            parts.push(b[1..].to_string());
                            i += 1;
                        }
                        Some(Token::Period) => i += 1,
                        _ => {}
                    }
                }
                (t, _) if is_word(t, "BY") => parts.push(",".into()),
                _ => parts.push(text(self.src, &source[i..=i]).to_string()),
            }
            i += 1;
        }
        self.select(&parts.join(" "), v);
    }

    /// A declaration: `name [CONSTANT] type [NOT NULL] [:= | = | DEFAULT expr]`, or a cursor
    /// `name [[NO] SCROLL] CURSOR [(args)] FOR|IS query`. One that starts like a statement is
    /// not read as a declaration (the server would reject it; nothing says it is harmless).
    fn declaration(&self, w: &[W<'_>], v: &mut Verdict) {
        let statement_like = [
            "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "DROP", "TRUNCATE", "ALTER", "CREATE",
            "GRANT", "REVOKE", "COPY", "CALL", "EXECUTE", "PERFORM", "DO", "VACUUM", "REINDEX",
            "CLUSTER", "LOCK", "SET", "RESET", "WITH", "COMMIT", "ROLLBACK",
        ];
        if statement_like.iter().any(|k| is_word(w[0].token, k)) {
            return fail(v);
        }
        let cursor_at = match w {
            [_, c, ..] if is_word(c.token, "CURSOR") => Some(1),
            [_, s, c, ..] if is_word(s.token, "SCROLL") && is_word(c.token, "CURSOR") => Some(2),
            [_, n, s, c, ..]
                if is_word(n.token, "NO")
                    && is_word(s.token, "SCROLL")
                    && is_word(c.token, "CURSOR") =>
            {
                Some(3)
            }
            _ => None,
        };
        if let Some(c) = cursor_at {
            return match position_top(&w[c..], |t| is_word(t, "FOR") || is_word(t, "IS")) {
                Some(f) => self.iteration_source(&w[c + f + 1..], v),
                None => fail(v),
            };
        }
        if let Some(at) = position_top(w, |t| {
            matches!(t, Token::Assignment | Token::Eq) || is_word(t, "DEFAULT")
        }) {
            self.expression(&w[at + 1..], v);
        }
    }

    /// An expression the body evaluates, read as `SELECT expr` (its functions and
    /// subqueries count); nothing to read is nothing to rate.
    fn expression(&self, w: &[W<'_>], v: &mut Verdict) {
        if !w.is_empty() {
            self.select(text(self.src, w), v);
        }
    }

    fn select(&self, expression: &str, v: &mut Verdict) {
        apply_nested(
            &format!("SELECT {expression}"),
            SqlDialect::Postgres,
            self.depth + 1,
            v,
        );
    }
}

/// A construct not understood: fail closed.
fn fail(v: &mut Verdict) {
    v.raise(Tier::T4, "sql.unparsable");
}
