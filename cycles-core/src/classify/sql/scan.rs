//! Free text that no dialect parses, read for the statements it names wherever they start.
//!
//! T-SQL needs no `;` between statements (`USE master DROP DATABASE prod` runs both), SQL
//! runs inside `TRY` blocks, labels, `CREATE EVENT ... DO`, `EXEC ('...') AT linked`, and
//! psql/sqlite3 meta-commands run shell commands: text the parser rejects may still run a
//! destructive statement. Such text is rated as the statements it mentions would be (strings
//! and comments included: `EXEC('DROP TABLE t')` runs its string), each by a keyword sequence
//! distinctive enough that prose does not have it (`drop the table` has a prose word before
//! the kind and is no statement).

use super::{PROSE_FILLERS, SQL_MODIFIERS, is_object_kind};
use crate::classify::Verdict;
use crate::model::Tier;

/// The rule that marks a rating by this scan (with the statements' own rules).
pub(super) const RULE: &str = "sql.unparsed_statement";

/// A word of the text, lowercased, with its byte span; `.`, `@`, `#`, `$` and `_` stay inside a
/// word (`master.dbo.xp_cmdshell`, `@@version`), brackets and quotes split.
struct Word {
    lower: String,
    start: usize,
    end: usize,
}

fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut start = None;
    let ends = text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')));
    for (k, c) in ends {
        let inside = c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '#' | '$');
        match (inside, start) {
            (true, None) => start = Some(k),
            (false, Some(s)) => {
                start = None;
                let raw = &text[s..k];
                let lead = raw.len() - raw.trim_start_matches('.').len();
                let t = raw.trim_matches('.');
                if !t.is_empty() {
                    out.push(Word {
                        lower: t.to_ascii_lowercase(),
                        start: s + lead,
                        end: s + lead + t.len(),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Words that start a statement: a clause that starts with one reads as SQL, so a statement
/// named later in it runs (`USE master DROP DATABASE prod`, `SELECT 1 DELETE FROM t`).
const LEADS: &[&str] = &[
    "use",
    "select",
    "set",
    "declare",
    "print",
    "exec",
    "execute",
    "begin",
    "if",
    "while",
    "save",
    "commit",
    "rollback",
    "go",
    "with",
    "insert",
    "update",
    "delete",
    "drop",
    "create",
    "alter",
    "truncate",
    "grant",
    "revoke",
    "deny",
    "merge",
    "backup",
    "restore",
    "dbcc",
    "waitfor",
    "raiserror",
    "throw",
    "return",
    "open",
    "close",
    "fetch",
    "deallocate",
    "end",
    "else",
    "do",
    "call",
    "start",
    "lock",
    "unlock",
    "show",
    "explain",
    "vacuum",
    "analyze",
    "copy",
    "load",
    "kill",
    "shutdown",
    "disable",
    "enable",
    "install",
    "uninstall",
    "clone",
    "rename",
    "undrop",
    "replace",
    "upsert",
    "values",
    "from",
    "where",
];

/// Words after which a statement starts (`BEGIN TRY DROP ...`, `... THEN DELETE ...`).
const OPENERS: &[&str] = &["go", "begin", "try", "then", "else", "do", "catch", "as"];

/// Statement keywords that may follow a complete statement in a batch without `;`.
const NEXT_STATEMENTS: &[&str] = &[
    "select",
    "insert",
    "update",
    "delete",
    "drop",
    "create",
    "alter",
    "truncate",
    "go",
    "exec",
    "execute",
    "declare",
    "commit",
    "rollback",
    "end",
    "grant",
    "revoke",
    "deny",
    "merge",
    "restore",
    "backup",
    "dbcc",
    "shutdown",
    "kill",
    "waitfor",
    "raiserror",
    "throw",
    "print",
    "use",
];

/// The words of a text with their context: where each statement could start and what follows.
pub(super) struct Scan<'a> {
    text: &'a str,
    w: Vec<Word>,
    /// Index of the first word of the clause (split at `;`, line breaks and `GO`) of each word.
    clause: Vec<usize>,
}

impl<'a> Scan<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        let w = words(text);
        let mut clause = Vec::with_capacity(w.len());
        for i in 0..w.len() {
            let new = i == 0
                || w[i - 1].lower == "go"
                || text[w[i - 1].end..w[i].start].contains([';', '\n', '\r']);
            clause.push(if new { i } else { clause[i - 1] });
        }
        Scan { text, w, clause }
    }

    fn word(&self, i: usize) -> &str {
        self.w.get(i).map_or("", |x| x.lower.as_str())
    }

    /// The text between word `i - 1` (or the start) and word `i` (or the end).
    fn gap(&self, i: usize) -> &'a str {
        let from = if i == 0 {
            0
        } else {
            self.w.get(i - 1).map_or(self.text.len(), |x| x.end)
        };
        let to = self.w.get(i).map_or(self.text.len(), |x| x.start);
        &self.text[from.min(to)..to]
    }

    /// The text after word `i`.
    fn after(&self, i: usize) -> &'a str {
        self.w.get(i).map_or("", |x| &self.text[x.end..])
    }

    /// Whether a statement may start at word `i`: at the start of the text, of a line, after
    /// `;`, a quote (a string run by `EXEC`), a label's `:`, or an opener (`BEGIN TRY`, `GO`),
    /// or inside a clause that itself starts with a statement keyword (`USE master DROP ...`,
    /// `SELECT * FROM t DROP ...`). Prose (`drag and drop table rows`) has none of these.
    fn may_start(&self, i: usize) -> bool {
        i == 0
            || self.gap(i).contains([';', '\n', '\r', '\'', '"', ':'])
            || OPENERS.contains(&self.word(i - 1))
            || LEADS.contains(&self.word(self.clause[i]))
            || self.text[..self.w[self.clause[i]].start].ends_with(['\'', '"', '('])
    }

    /// Whether a statement ends before word `j`: the end of the text, `;`, a line break, or
    /// the end of a string.
    fn ends_before(&self, j: usize) -> bool {
        j >= self.w.len() || self.gap(j).contains([';', '\n', '\r', '\'', '"'])
    }

    /// Whether an object named from word `j` on (unless `need_name`, none at the end of a
    /// statement, as in `sp_MSforeachtable 'DROP TABLE ?'`) is followed by the end of the
    /// statement, another statement or one of `clauses`, not by prose (`drop column sorting
    /// in v2`). Names may be qualified (`[dbo].[t]`) and listed (`a, b`).
    fn object_then(&self, mut j: usize, need_name: bool, clauses: &[&str]) -> bool {
        if self.word(j) == "if" {
            while matches!(self.word(j), "if" | "not" | "exists") {
                j += 1;
            }
        }
        if self.ends_before(j) {
            return !need_name;
        }
        loop {
            if PROSE_FILLERS.contains(&self.word(j)) {
                return false;
            }
            j += 1;
            while j < self.w.len() && is_qualifier(self.gap(j)) {
                j += 1;
            }
            if self.ends_before(j) {
                return true;
            }
            if self.gap(j).contains(',') {
                continue;
            }
            break;
        }
        let next = self.word(j);
        // A column or parameter list (`INSERT INTO t (a, b)`, `CREATE TABLE t (`), an option
        // (`DROP ACCOUNT a GRACE_PERIOD_IN_DAYS = 3`).
        if clauses.contains(&"(") && self.gap(j).contains('(')
            || clauses.contains(&"=") && self.then_char(j, '=')
        {
            return true;
        }
        if next == "from" && clauses.contains(&"from") {
            return !PROSE_FILLERS.contains(&self.word(j + 1)) && !self.word(j + 1).is_empty();
        }
        NEXT_STATEMENTS.contains(&next) || clauses.contains(&next)
    }

    /// [`Scan::object_then`] for the statements that destroy at once (`DROP <kind>`,
    /// `TRUNCATE TABLE`), failing closed: besides a listed clause, anything after the object
    /// counts as SQL (a dialect's option the lists miss, `DROP DATABASE prod SYNC`; a second
    /// name, `DROP TABLE t1 t2`; a typo) unless it is a word of prose (`drop table rows not
    /// working`). The object may be any word here (`DROP DATABASE one FORCE`).
    fn destroys_then(&self, mut j: usize, clauses: &[&str]) -> bool {
        if self.object_then(j, false, clauses) {
            return true;
        }
        while matches!(self.word(j), "if" | "not" | "exists") {
            j += 1;
        }
        if self.ends_before(j) {
            return true;
        }
        // A name that is itself a word of prose (`drop index when table is empty`) counts only
        // before the end or a listed clause (`DROP TABLE a CASCADE CONSTRAINTS`).
        // A quoted name (`[errors]`, `` `docs` ``) is a name, never prose.
        let quoted = self.gap(j).ends_with(['[', '`', '"']);
        let prose_name = !quoted && PROSE_AFTER_OBJECT.contains(&self.word(j));
        j += 1;
        while j < self.w.len() && is_qualifier(self.gap(j)) {
            j += 1;
        }
        if self.ends_before(j) {
            return true;
        }
        let next = self.word(j);
        // Clauses that start with a word of prose: ClickHouse's `ON CLUSTER c` and `IN
        // PARTITION p` (`ALTER TABLE t ON CLUSTER c DELETE WHERE 1`).
        if matches!(
            (next, self.word(j + 1)),
            ("on", "cluster") | ("in", "partition")
        ) {
            return true;
        }
        if prose_name {
            return clauses.contains(&next);
        }
        !PROSE_AFTER_OBJECT.contains(&next)
    }

    /// [`Scan::destroys_then`] for `DELETE FROM t WHER ...`: a name is needed, and a prose
    /// filler is none (`delete from the list`).
    fn names_then(&self, j: usize, clauses: &[&str]) -> bool {
        !self.ends_before(j)
            && !PROSE_FILLERS.contains(&self.word(j))
            && self.destroys_then(j, clauses)
    }

    /// After `TOP (n) [PERCENT]` (T-SQL's `DELETE TOP (100) PERCENT FROM t`), from word `j`.
    fn skip_top(&self, mut j: usize) -> usize {
        if self.word(j) == "top" {
            j += 2;
            if self.word(j) == "percent" {
                j += 1;
            }
        }
        j
    }

    /// Whether the text after word `j` starts with `c` (after blanks and closing quotes).
    fn then_char(&self, j: usize, c: char) -> bool {
        self.after(j)
            .trim_start_matches(|x: char| x.is_whitespace() || matches!(x, ']' | '"' | '`'))
            .starts_with(c)
    }
}

/// Text between the parts of a qualified name (`[dbo].[t]`, `"s"."t"`).
fn is_qualifier(gap: &str) -> bool {
    gap.contains('.')
        && gap
            .chars()
            .all(|c| matches!(c, '[' | ']' | '"' | '`' | '.'))
}

/// Untrusted procedural languages: a block in one runs any code as the server's user.
const UNTRUSTED_LANGUAGES: &[&str] = &[
    "plpythonu",
    "plpython2u",
    "plpython3u",
    "plperlu",
    "pltclu",
    "plsh",
    "plr",
    "plv8",
    "pljava",
    "pllua",
    "plluau",
];

/// sqlite3 dot-commands that run a shell command, and ones that write or read files.
const SQLITE_SHELL: &[&str] = &[".shell", ".system"];
const SQLITE_FILE: &[&str] = &[
    ".restore", ".import", ".load", ".read", ".output", ".once", ".save", ".backup", ".clone",
    ".recover", ".open", ".excel", ".cd",
];
/// psql meta-commands that write or read files, run the query buffer's output, or import.
const PSQL_FILE: &[&str] = &[
    "copy",
    "o",
    "out",
    "w",
    "write",
    "i",
    "ir",
    "include",
    "include_relative",
    "gexec",
    "g",
    "gx",
    "lo_import",
    "lo_export",
    "lo_unlink",
    "setenv",
    "cd",
];

/// Raises `v` by the statements `text` names (see the module); returns whether it named any.
pub(super) fn apply(text: &str, v: &mut Verdict) -> bool {
    let mut found = Verdict::default();
    meta_commands(text, &mut found);
    statements(&Scan::new(text), &mut found);
    // A comment between the words of a statement (`DROP /* the */ DATABASE prod`): read again
    // without comments (strings kept).
    if text.contains("--") || text.contains("/*") {
        statements(&Scan::new(&without_comments(text)), &mut found);
    }
    if found.rules.is_empty() {
        return false;
    }
    for rule in &found.rules {
        v.raise(found.tier, rule);
    }
    v.raise(found.tier, RULE);
    true
}

/// Text with `--` and `/* */` comments outside strings made blanks (a line comment keeps its
/// line break).
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                out.push(c);
            }
            '-' if chars.peek() == Some(&'-') => {
                for x in chars.by_ref() {
                    if x == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for x in chars.by_ref() {
                    if last == '*' && x == '/' {
                        break;
                    }
                    last = x;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

/// The statements a text names, each where a statement may start ([`Scan::may_start`]) and
/// followed by what that statement takes, not prose ([`Scan::object_then`]).
fn statements(s: &Scan<'_>, found: &mut Verdict) {
    let word = |i: usize| s.word(i);
    // The last part of a possibly qualified name (`master.dbo.xp_cmdshell`).
    let base = |i: usize| word(i).rsplit('.').next().unwrap_or("");
    let has = |x: &str| s.w.iter().any(|y| y.lower == x);
    let filler = |i: usize| word(i).is_empty() || PROSE_FILLERS.contains(&word(i));
    for i in 0..s.w.len() {
        // Procedures named with or without their database and schema (`master.dbo.xp_...`):
        // distinctive wherever they are.
        match base(i) {
            "xp_cmdshell" | "sp_oacreate" | "sp_oamethod" | "xp_regwrite" => {
                found.raise(Tier::T4, "sql.side_effect_function")
            }
            "xp_delete_file" | "xp_delete_files" => {
                found.raise(Tier::T4, "sql.delete_backup_files")
            }
            "sp_addsrvrolemember" | "sp_addrolemember" | "sp_grantdbaccess" | "sp_grantlogin" => {
                found.raise(Tier::T4, "sql.grant")
            }
            "sp_password" => found.raise(Tier::T4, "sql.credentials"),
            "sp_detach_db" => found.raise(Tier::T4, "sql.drop"),
            p if p.starts_with("sp_drop") => found.raise(Tier::T4, "sql.drop"),
            // A statement built from pieces (`N'DR' + N'OP ...'`, `@s`) runs unseen.
            "sp_executesql" if dynamic_argument(s.after(i)) => {
                found.raise(Tier::T4, "sql.dynamic_sql")
            }
            "sp_msforeachtable" | "sp_msforeachdb" | "sp_executesql" => {
                found.raise(Tier::T3, "sql.execute")
            }
            _ => {}
        }
        // A block in an untrusted language runs any code on the server.
        if word(i) == "language" && UNTRUSTED_LANGUAGES.contains(&word(i + 1)) {
            found.raise(Tier::T4, "sql.unparsable");
        }
        if !s.may_start(i) {
            continue;
        }
        match word(i) {
            "drop" | "undrop"
                if drops_a_kind(s, i).is_some_and(|k| {
                    // `ON` follows only what belongs to a table (`DROP INDEX i ON t`), not
                    // `drop database connection on timeout`.
                    let on = matches!(
                        word(k),
                        "index" | "trigger" | "policy" | "rule" | "statistics"
                    );
                    let clauses: &[&str] = if on {
                        &["cascade", "restrict", "with", "purge", "force", "on"]
                    } else {
                        &["cascade", "restrict", "with", "purge", "force"]
                    };
                    s.destroys_then(k + 1, clauses)
                }) =>
            {
                found.raise(Tier::T4, "sql.drop")
            }
            "truncate"
                if word(i + 1) == "table"
                    && s.destroys_then(
                        i + 2,
                        &[
                            "cascade",
                            "restrict",
                            "restart",
                            "continue",
                            "with",
                            "partition",
                            "drop",
                            "reuse",
                        ],
                    ) =>
            {
                found.raise(Tier::T4, "sql.truncate")
            }
            "delete" if deletes(s, i) => found.raise(Tier::T3, "sql.delete_all_rows"),
            "update" if updates(s, i) => found.raise(Tier::T3, "sql.update_all_rows"),
            "insert" if word(i + 1) == "into" && s.object_then(i + 2, true, INSERT_CLAUSES) => {
                found.raise(Tier::T2, "sql.insert")
            }
            // `MERGE [INTO] t [AS] s USING ...` (INTO is optional in T-SQL).
            "merge" => {
                let j = if word(i + 1) == "into" { i + 2 } else { i + 1 };
                if !filler(j) && (j + 1..j + 5).any(|k| word(k) == "using") {
                    found.raise(Tier::T3, "sql.merge");
                }
            }
            "grant" | "revoke" | "deny"
                if super::SQL_PRIVILEGES.contains(&word(i + 1))
                    && matches!(word(after_privileges(s, i)), "to" | "from" | "on") =>
            {
                found.raise(Tier::T4, "sql.grant")
            }
            "alter" if word(i + 1) == "authorization" && word(i + 2) == "on" => {
                found.raise(Tier::T4, "sql.grant")
            }
            "alter"
                if word(i + 1) == "server"
                    && word(i + 2) == "role"
                    && (i + 3..i + 7).any(|k| word(k) == "member") =>
            {
                found.raise(Tier::T4, "sql.grant")
            }
            // `ALTER DATABASE prod SET OFFLINE | SINGLE_USER | EMERGENCY`: the database stops
            // serving (as the SQL classifier rates it, unparsed: 4).
            "alter"
                if word(i + 1) == "database"
                    && !filler(i + 2)
                    && (i + 3..i + 5).any(|k| word(k) == "set")
                    && (i + 4..i + 7).any(|k| {
                        matches!(
                            word(k),
                            "offline" | "single_user" | "emergency" | "read_only"
                        )
                    }) =>
            {
                found.raise(Tier::T4, "sql.unparsable")
            }
            "add" if word(i + 1) == "member" && has("alter") => found.raise(Tier::T4, "sql.grant"),
            "alter" | "create"
                if matches!(word(i + 1), "user" | "role" | "login")
                    && !filler(i + 2)
                    && s.w[i + 1..].iter().take(12).any(|x| {
                        matches!(
                            x.lower.as_str(),
                            "superuser" | "sysadmin" | "createrole" | "bypassrls"
                        )
                    }) =>
            {
                found.raise(Tier::T4, "sql.grant")
            }
            // `IDENTIFIED BY 'x'`, `[WITH] PASSWORD = 'x'` / `PASSWORD 'x'`, not `password
            // policy`.
            "alter"
                if matches!(word(i + 1), "user" | "role" | "login")
                    && !filler(i + 2)
                    && (i + 2..i + 14).any(|k| {
                        word(k) == "identified" && matches!(word(k + 1), "by" | "with" | "via")
                            || word(k) == "password"
                                && (s.then_char(k, '=')
                                    || s.then_char(k, '\'')
                                    || word(k + 1) == "null")
                    }) =>
            {
                found.raise(Tier::T4, "sql.credentials")
            }
            // MySQL: `SET PASSWORD [FOR account] = ...`; the `=` tells it from prose.
            "set" if word(i + 1) == "password" && s.text.contains('=') => {
                found.raise(Tier::T4, "sql.credentials")
            }
            "rename" if word(i + 1) == "user" && has("to") && s.text.contains(['\'', '`', '@']) => {
                found.raise(Tier::T4, "sql.credentials")
            }
            // MySQL events: code run on a schedule, unseen by later calls.
            "create" | "alter" if event_at(s, i) => {
                found.raise(Tier::T3, "sql.create_routine");
                if s.w[i..].iter().any(|x| {
                    matches!(
                        x.lower.as_str(),
                        "drop" | "truncate" | "grant" | "revoke" | "delete" | "update"
                    )
                }) {
                    found.raise(Tier::T4, "sql.create_routine_destructive");
                }
            }
            "create" if word(i + 1) == "or" && matches!(word(i + 2), "replace" | "alter") => {
                let kinds = &s.w[i + 3..(i + 6).min(s.w.len())];
                if kinds
                    .iter()
                    .any(|k| matches!(k.lower.as_str(), "table" | "database" | "schema" | "stage"))
                {
                    found.raise(Tier::T4, "sql.create_or_replace");
                } else {
                    found.raise(Tier::T3, "sql.create_routine");
                }
            }
            // `BACKUP LOG|DATABASE ... TO DISK = 'NUL'`: a backup thrown away breaks the log
            // chain (point-in-time recovery lost).
            "backup" if matches!(word(i + 1), "log" | "database") && has("nul") => {
                found.raise(Tier::T4, "sql.backup_discarded")
            }
            // Statements that overwrite or stop the whole database or server, rated as the
            // SQL classifier rates them unparsed (4).
            "restore"
                if matches!(word(i + 1), "database" | "log")
                    && s.object_then(i + 2, true, &["from", "with"]) =>
            {
                found.raise(Tier::T4, "sql.unparsable")
            }
            // Replication and history reset, ownership moved, server files loaded: as the
            // SQL classifier rates them unparsed (4).
            "reset"
                if matches!(word(i + 1), "master" | "replica" | "slave")
                    && s.object_then(i + 2, false, &["to", "all"]) =>
            {
                found.raise(Tier::T4, "sql.unparsable")
            }
            "purge"
                if matches!(word(i + 1), "binary" | "master")
                    && word(i + 2) == "logs"
                    && matches!(word(i + 3), "to" | "before") =>
            {
                found.raise(Tier::T4, "sql.unparsable")
            }
            "reassign" if word(i + 1) == "owned" && word(i + 2) == "by" => {
                found.raise(Tier::T4, "sql.unparsable")
            }
            "load" if word(i + 1) == "data" && (i + 2..i + 5).any(|k| word(k) == "infile") => {
                found.raise(Tier::T4, "sql.unparsable")
            }
            "shutdown" if s.ends_before(i + 1) || matches!(word(i + 1), "with" | "go") => {
                found.raise(Tier::T4, "sql.unparsable")
            }
            "dbcc"
                if !filler(i + 1)
                    && s.w[i + 1..]
                        .iter()
                        .take(8)
                        .any(|x| x.lower.starts_with("repair_")) =>
            {
                found.raise(Tier::T4, "sql.unparsable")
            }
            "kill"
                if word(i + 1).bytes().all(|b| b.is_ascii_digit())
                    && !word(i + 1).is_empty()
                    && (s.ends_before(i + 2)
                        || NEXT_STATEMENTS.contains(&word(i + 2))
                        || word(i + 2) == "with") =>
            {
                found.raise(Tier::T3, "sql.other")
            }
            "exec" | "execute" => exec_at(s, i, found),
            "disable"
                if word(i + 1) == "trigger"
                    && !filler(i + 2)
                    && (s.ends_before(i + 3) || word(i + 3) == "on") =>
            {
                found.raise(Tier::T3, "sql.alter")
            }
            "install" if word(i + 1) == "plugin" && word(i + 3) == "soname" => {
                found.raise(Tier::T4, "sql.load_library")
            }
            "uninstall" if word(i + 1) == "plugin" && s.object_then(i + 2, true, &[]) => {
                found.raise(Tier::T3, "sql.alter")
            }
            // Oracle `FLASHBACK DATABASE|TABLE ... TO TIMESTAMP|SCN|BEFORE DROP|RESTORE POINT`:
            // every change since that point is undone, as a restore (4).
            "flashback"
                if matches!(word(i + 1), "database" | "table" | "pluggable")
                    && (i + 2..i + 7).any(|k| {
                        word(k) == "to"
                            && matches!(word(k + 1), "timestamp" | "scn" | "before" | "restore")
                    }) =>
            {
                found.raise(Tier::T4, "sql.flashback")
            }
            // Oracle `PURGE TABLE|INDEX|TABLESPACE x`, `PURGE [DBA_|USER_]RECYCLEBIN`: what was
            // dropped is gone for good (no `FLASHBACK ... TO BEFORE DROP` any more).
            "purge"
                if matches!(word(i + 1), "table" | "index" | "tablespace")
                    && !filler(i + 2)
                    && s.object_then(i + 2, true, &["user", "including", "keep"])
                    || matches!(
                        word(i + 1),
                        "recyclebin" | "dba_recyclebin" | "user_recyclebin"
                    ) && (s.ends_before(i + 2) || NEXT_STATEMENTS.contains(&word(i + 2))) =>
            {
                found.raise(Tier::T4, "sql.purge")
            }
            // `DROP BACKUP b` (Spanner, Cloud SQL): a backup deleted.
            "drop"
                if word(i + 1) == "backup"
                    && !filler(i + 2)
                    && s.object_then(i + 2, true, &["on", "if"]) =>
            {
                found.raise(Tier::T4, "sql.drop")
            }
            // `REPLACE TABLE t AS SELECT ...` (Databricks, Delta Lake): the table's rows are
            // replaced, as `CREATE OR REPLACE TABLE`.
            "replace"
                if word(i + 1) == "table"
                    && !filler(i + 2)
                    && (i + 3..i + 6).any(|k| matches!(word(k), "as" | "using" | "clone")) =>
            {
                found.raise(Tier::T4, "sql.create_or_replace")
            }
            // ClickHouse `OPTIMIZE TABLE t [FINAL] DEDUPLICATE`: keeps one row per key and
            // deletes the others.
            "optimize"
                if word(i + 1) == "table"
                    && !filler(i + 2)
                    && (i + 3..i + 12).any(|k| word(k) == "deduplicate") =>
            {
                found.raise(Tier::T3, "sql.deduplicate")
            }
            // MySQL `CLONE INSTANCE FROM`: replaces the recipient's whole data directory.
            "clone" if word(i + 1) == "instance" && word(i + 2) == "from" => {
                found.raise(Tier::T4, "sql.clone_instance")
            }
            _ => {}
        }
    }
}

/// `EXEC @p ...` (a procedure chosen at run time), `EXEC (@s)`, `EXEC ('a' + 'b')` (a statement
/// built from pieces): `sql.dynamic_sql`, 4, as the SQL classifier rates them; `EXEC ('...')`
/// of one string whose text is a statement: `sql.execute` (its words are rated too).
fn exec_at(s: &Scan<'_>, i: usize, found: &mut Verdict) {
    let after = s.after(i).trim_start();
    if let Some(inner) = after.strip_prefix('(') {
        if dynamic_argument(inner) {
            found.raise(Tier::T4, "sql.dynamic_sql");
        } else if let Some(literal) = string_literal(inner.trim_start()) {
            let first = super::leading_keyword(literal);
            if super::DDL_KEYWORDS.contains(&first.as_str())
                || super::DML_KEYWORDS.contains(&first.as_str())
            {
                found.raise(Tier::T3, "sql.execute");
            }
        }
    } else if s.word(i + 1).starts_with('@')
        && !s.word(i + 1).starts_with("@@")
        && !s.then_char(i + 1, '=')
    {
        found.raise(Tier::T4, "sql.dynamic_sql");
    }
}

/// The text of the string literal `text` starts with (`'...'`, `N'...'`), if it does.
fn string_literal(text: &str) -> Option<&str> {
    let body = text
        .strip_prefix('\'')
        .or_else(|| text.strip_prefix("N'"))
        .or_else(|| text.strip_prefix("n'"))?;
    let mut end = body.len();
    let bytes = body.as_bytes();
    let mut k = 0;
    while k < bytes.len() {
        if bytes[k] == b'\'' {
            if bytes.get(k + 1) == Some(&b'\'') {
                k += 2;
                continue;
            }
            end = k;
            break;
        }
        k += 1;
    }
    Some(&body[..end])
}

/// Whether the argument `text` starts with is not one string literal: a variable (`@s`), a
/// concatenation (`'DR' + 'OP ...'`) or a function's result (`REVERSE('...')`).
fn dynamic_argument(text: &str) -> bool {
    let text = text.trim_start();
    if text.starts_with('@') {
        return true;
    }
    match string_literal(text) {
        Some(literal) => {
            let prefix = text.find('\'').unwrap_or(0) + 1;
            let rest = text[(prefix + literal.len() + 1).min(text.len())..].trim_start();
            rest.starts_with('+') || rest.starts_with("||")
        }
        None => {
            // A function of a string (`REVERSE('...')`, `CONCAT(...)`, `CHAR(...)`).
            let name: String = text
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            !name.is_empty() && text[name.len()..].trim_start().starts_with('(') && {
                let inner = text[name.len()..].trim_start()[1..].trim_start();
                inner.starts_with('\'') || inner.starts_with("N'") || inner.starts_with('@')
            }
        }
    }
}

/// `DROP` followed by a kind of object after modifiers (also up to two not listed: `DROP
/// ACCESS METHOD`), without a prose word first (`drop the table`): the index of the kind.
fn drops_a_kind(s: &Scan<'_>, i: usize) -> Option<usize> {
    let mut unknown = 0;
    for k in i + 1..(i + 6).min(s.w.len()) {
        let x = s.word(k);
        if is_object_kind(x) {
            return Some(k);
        }
        if PROSE_FILLERS.contains(&x) {
            return None;
        }
        if !SQL_MODIFIERS.contains(&x) {
            unknown += 1;
            if unknown > 2 {
                return None;
            }
        }
    }
    None
}

/// Clauses that may follow the table of a `DELETE`.
const DELETE_CLAUSES: &[&str] = &[
    "where",
    "output",
    "option",
    "returning",
    "using",
    "limit",
    "order",
    "from",
    "with",
];

/// `DELETE [TOP (n) [PERCENT]] [FROM] t` followed by the end, another statement or a clause of
/// DELETE (`delete from the list`, `delete from cart not persisting`, `delete old users` are
/// prose).
fn deletes(s: &Scan<'_>, i: usize) -> bool {
    let j = s.skip_top(i + 1);
    if s.word(j) == "from" {
        // `DELETE FROM t` followed by a typo or a clause the list lacks (`DELETE FROM users
        // WHER id = 1`, ClickHouse's `IN PARTITION p`, CQL's `IF EXISTS`) fails closed unless
        // prose follows (`delete from cache after logout`).
        return s.object_then(j + 1, true, DELETE_CLAUSES) || s.names_then(j + 1, DELETE_CLAUSES);
    }
    s.object_then(j, true, DELETE_CLAUSES)
}

/// `UPDATE [TOP (n) [PERCENT]] t [WITH (hints)] SET col = ...` (`update component set state` is
/// prose: no `=`).
fn updates(s: &Scan<'_>, i: usize) -> bool {
    let mut j = s.skip_top(i + 1);
    let name = s.word(j);
    if name.is_empty() || PROSE_FILLERS.contains(&name) {
        return false;
    }
    j += 1;
    while j < s.w.len() && is_qualifier(s.gap(j)) {
        j += 1;
    }
    if s.word(j) == "with" {
        j = match (j + 1..j + 6).find(|&k| s.word(k) == "set") {
            Some(k) => k,
            None => return false,
        };
    }
    s.word(j) == "set" && !s.word(j + 1).is_empty() && s.then_char(j + 1, '=')
}

/// `CREATE [DEFINER = x] EVENT ... DO` / `ALTER EVENT ... DO`.
fn event_at(s: &Scan<'_>, i: usize) -> bool {
    let rest = &s.w[i + 1..(i + 6).min(s.w.len())];
    rest.iter().any(|x| x.lower == "event")
        && s.w[i..]
            .iter()
            .any(|x| x.lower == "do" || x.lower == "schedule")
}

/// psql's and sqlite3's meta-commands: a shell escape (`\!`, `.shell`, `.system`, and the
/// abbreviations sqlite3 takes: `.sh`, `.sys`; psql's `\g |cmd`, `\o |cmd` after a query on the
/// same line) is `sql.shell_escape`, one that writes or reads files (`.restore`, `.o`,
/// `\copy`, `\o`) fails closed (`sql.unparsable`). psql meta-commands count at a line start,
/// and after a blank when they run a shell command; sqlite3 dot-commands at a line start.
fn meta_commands(text: &str, v: &mut Verdict) {
    for line in text.lines() {
        let line = line.trim_start();
        for (at, _) in line.match_indices('\\') {
            if at > 0 && !line[..at].ends_with(char::is_whitespace) {
                continue;
            }
            let rest = &line[at + 1..];
            if rest.starts_with('!') {
                v.raise(Tier::T4, "sql.shell_escape");
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
                .to_ascii_lowercase();
            if PSQL_FILE.contains(&name.as_str()) {
                let arg = rest[name.len()..].trim_start();
                if arg.starts_with('|') {
                    v.raise(Tier::T4, "sql.shell_escape");
                } else if at == 0 {
                    // Mid-line, only a pipe counts: `[^ \w]` in a regular expression is no
                    // meta-command.
                    v.raise(Tier::T4, "sql.unparsable");
                }
            }
        }
        if let Some(rest) = line.strip_prefix('.') {
            let name: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_lowercase();
            // sqlite3 takes any prefix of a dot-command's name (`.sh` runs `.shell`).
            let abbreviates = |full: &&str| {
                name.chars().all(|c| c.is_ascii_alphabetic())
                    && !name.is_empty()
                    && full[1..].starts_with(name.as_str())
            };
            if name.len() >= 2 && SQLITE_SHELL.iter().any(abbreviates) {
                v.raise(Tier::T4, "sql.shell_escape");
            } else if SQLITE_FILE.iter().any(abbreviates) {
                v.raise(Tier::T4, "sql.unparsable");
            }
        }
    }
}

/// Whether the statement that starts at byte `at` of the text `s` reads (a line start that
/// [`super::statement_shaped`] found) is followed, after its object, by what that statement
/// takes: the end of the text or line, a terminator, another statement or one of its clauses,
/// not prose (`merge into main fails`, `insert into array at index`, `deny all requests from
/// bots`, `create table component docs`). Short exact statements (`drop table users`) count
/// (prose and SQL cannot be told apart there: fail closed). Statements not listed here, and a
/// start this reading does not find, count as before.
pub(super) fn takes_what_follows(s: &Scan<'_>, at: usize) -> bool {
    let Ok(i) = s.w.binary_search_by_key(&at, |x| x.start) else {
        return true;
    };
    let word = |k: usize| s.word(k);
    // A question comparing statements (`truncate table vs delete`) names them as SQL does:
    // fail closed for a tool that may run it.
    let compared = (i + 1..i + 6).any(|k| {
        matches!(word(k), "vs" | "versus")
            && !s.ends_before(k)
            && NEXT_STATEMENTS.contains(&word(k + 1))
    });
    compared || follows_object(s, i)
}

/// The per-statement part of [`takes_what_follows`], for the statement at word `i`.
fn follows_object(s: &Scan<'_>, i: usize) -> bool {
    let word = |k: usize| s.word(k);
    match word(i) {
        "drop" | "truncate" | "undrop" => match drops_a_kind(s, i) {
            // `ON` follows only what belongs to a table (`DROP INDEX i ON t`), not
            // `drop database connection on timeout`.
            Some(k)
                if matches!(
                    word(k),
                    "index" | "trigger" | "policy" | "rule" | "statistics"
                ) =>
            {
                s.destroys_then(k + 1, DROP_CLAUSES)
            }
            Some(k) => s.destroys_then(k + 1, &DROP_CLAUSES[1..]),
            None => true,
        },
        "delete" => {
            let mut j = s.skip_top(i + 1);
            if word(j) == "from" {
                j += 1;
            }
            s.object_then(j, false, DELETE_CLAUSES)
        }
        "insert" | "replace" | "upsert" if word(i + 1) != "merge" => {
            let mut j = i + 1;
            if word(j) == "or" {
                j += 2;
            }
            while matches!(
                word(j),
                "into"
                    | "overwrite"
                    | "table"
                    | "ignore"
                    | "low_priority"
                    | "delayed"
                    | "high_priority"
            ) {
                j += 1;
            }
            s.object_then(j, false, INSERT_CLAUSES)
                || word(i) != "insert" && (i + 2..i + 6).any(|k| word(k) == "using")
        }
        "merge" => {
            let j = if word(i + 1) == "into" { i + 2 } else { i + 1 };
            s.object_then(j, false, &["using", "as", "with"])
                || !PROSE_FILLERS.contains(&word(j)) && (j + 1..j + 4).any(|k| word(k) == "using")
        }
        "grant" | "revoke" | "deny" => {
            let j = after_privileges(s, i);
            s.ends_before(j) || matches!(word(j), "on" | "to" | "from")
        }
        "update" => {
            updates(s, i) || (i + 2..i + 4).any(|k| word(k) == "set" && s.gap(k + 1).contains('('))
        }
        "alter" | "create" | "rename" => {
            let mut j = i + 1;
            while SQL_MODIFIERS.contains(&word(j)) && !is_object_kind(word(j)) {
                j += 1;
            }
            // `ON` follows only what belongs to a table (`CREATE TRIGGER t ON x`), not
            // `alter table layout on mobile`.
            let clauses = if matches!(word(j), "trigger" | "index" | "policy" | "rule") {
                DDL_CLAUSES
            } else {
                &DDL_CLAUSES[1..]
            };
            s.object_then(j + 1, false, clauses)
                // `ALTER TABLE t` followed by a clause the list lacks (ClickHouse's `ON CLUSTER c
                // DELETE WHERE 1`, `CLEAR COLUMN c`, `REPLACE PARTITION`, T-SQL's `NOCHECK
                // CONSTRAINT ALL`) fails closed unless prose follows (`alter table layout on
                // mobile`).
                || word(i) == "alter"
                    && word(j) == "table"
                    && !PROSE_FILLERS.contains(&word(j + 1))
                    && s.destroys_then(j + 1, clauses)
                // No name: `ALTER SYSTEM SET`, `ALTER INSTANCE DISABLE ...`.
                || matches!(word(j), "system" | "instance" | "database" | "schema")
                    && clauses.contains(&word(j + 1))
                    && !PROSE_FILLERS.contains(&word(j + 1))
                || word(j + 1).starts_with('@')
                || s.gap(j + 1).contains('(')
        }
        _ => true,
    }
}

/// The word after the privileges of the `GRANT` / `REVOKE` / `DENY` at word `i` (`ALL
/// [PRIVILEGES]`, `SELECT (a, b), INSERT`, `GRANT OPTION FOR ...`).
fn after_privileges(s: &Scan<'_>, i: usize) -> usize {
    let mut j = i + 1;
    if s.word(i) == "revoke" && s.word(j) == "grant" && s.word(j + 1) == "option" {
        j += 3;
    }
    while super::SQL_PRIVILEGES.contains(&s.word(j))
        || matches!(s.word(j), "privileges" | "priv")
        // MySQL's `REVOKE ALL PRIVILEGES, GRANT OPTION FROM u`.
        || s.word(j) == "grant" && s.word(j + 1) == "option" && s.gap(j).contains(',')
    {
        if s.word(j) == "grant" {
            j += 1;
        }
        j += 1;
        // A column list (`SELECT (a, b)`).
        if j < s.w.len() && s.gap(j).contains('(') {
            while j < s.w.len() && !s.gap(j + 1).contains(')') {
                j += 1;
            }
            j += 1;
        }
    }
    j
}

/// What may follow the object of `DROP` / `TRUNCATE` (`ON` first: only after some kinds).
/// Words of prose that may follow the object of a `DROP <kind>` or `TRUNCATE TABLE` in an
/// issue title or a search (`drop table rows not working`, `truncate table header on mobile`):
/// after these the statement is taken for prose; after anything else, for SQL.
const PROSE_AFTER_OBJECT: &[&str] = &[
    // Reserved words, so never a table's bare name.
    "column", "columns", "row", "rows", "not", "is", "isn't", "are", "aren't", "was", "wasn't",
    "were", "does", "doesn't", "do", "don't", "did", "didn't", "can", "can't", "cannot", "could",
    "should", "would", "will", "won't", "has", "have", "had", "fails", "failing", "failed", "fail",
    "works", "working", "broken", "breaks", "crash", "crashes", "throws", "causes", "when",
    "while", "after", "before", "in", "on", "at", "for", "from", "to", "of", "by", "into", "the",
    "a", "an", "this", "that", "my", "our", "your", "how", "why", "what", "where", "which", "vs",
    "versus", "removes", "deletes", "returns", "shows", "leaves", "keeps", "still", "also", "only",
    "never", "always",
];

const DROP_CLAUSES: &[&str] = &[
    "on",
    "=",
    "cascade",
    "restrict",
    "with",
    "purge",
    "force",
    "restart",
    "continue",
    "partition",
    "drop",
    "reuse",
    "if",
    "from",
    "in",
];

/// What may follow the table of `INSERT` / `REPLACE` / `UPSERT`.
const INSERT_CLAUSES: &[&str] = &[
    "(",
    "values",
    "value",
    "select",
    "with",
    "default",
    "set",
    "partition",
    "by",
    "overriding",
    "table",
    "as",
    "on",
    "returning",
    "output",
    "from",
];

/// What may follow the object of `CREATE` / `ALTER` / `RENAME` (`ON` first: only after some
/// kinds; generous: a statement no
/// dialect parses but shaped like DDL stays failed closed).
const DDL_CLAUSES: &[&str] = &[
    "on",
    "=",
    "(",
    "as",
    "like",
    "clone",
    "copy",
    "to",
    "for",
    "from",
    "in",
    "of",
    "with",
    "without",
    "using",
    "add",
    "drop",
    "alter",
    "modify",
    "change",
    "rename",
    "set",
    "reset",
    "owner",
    "enable",
    "disable",
    "attach",
    "detach",
    "validate",
    "cluster",
    "inherit",
    "no",
    "not",
    "replica",
    "force",
    "engine",
    "default",
    "character",
    "charset",
    "collate",
    "comment",
    "swap",
    "suspend",
    "resume",
    "refresh",
    "compile",
    "returns",
    "return",
    "language",
    "security",
    "options",
    "partition",
    "partitioned",
    "authorization",
    "before",
    "after",
    "instead",
    "start",
    "increment",
    "minvalue",
    "maxvalue",
    "cache",
    "cycle",
    "owned",
    "schema",
    "version",
    "cascade",
    "restrict",
    "upgrade",
    "execute",
    "is",
    "begin",
    "declare",
    "tablespace",
    "location",
    "stored",
    "row",
    "tblproperties",
    "order",
    "primary",
    "auto_increment",
    "encoding",
    "connection",
    "template",
    "lc_collate",
    "lc_ctype",
    "allow_connections",
    "connection_limit",
    "is_template",
    "containment",
    "log",
    "file",
    "filegroup",
    "check",
    "lock",
    "algorithm",
    "identified",
    "password",
    "login",
    "superuser",
    "nosuperuser",
    "createdb",
    "createrole",
    "noinherit",
    "valid",
    "member",
    "data_retention_time_in_days",
    "change_tracking",
    "tag",
    "unset",
    "url",
    "storage_integration",
    "credentials",
    "file_format",
    "warehouse",
    "target_lag",
    "query",
    "schedule",
    "do",
    "when",
    "each",
    "exec",
    "procedure",
    "function",
    "type",
    "values",
    "select",
];
