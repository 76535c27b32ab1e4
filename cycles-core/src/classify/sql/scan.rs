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

/// Words of the text, lowercased; `.`, `@`, `#`, `$` and `_` stay inside a word
/// (`master.dbo.xp_cmdshell`, `@@version`), brackets and quotes split.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '#' | '$')))
        .map(|w| w.trim_matches('.'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
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
    let w = words(text);
    let word = |i: usize| w.get(i).map_or("", String::as_str);
    // The last part of a possibly qualified name (`master.dbo.xp_cmdshell`).
    let base = |i: usize| word(i).rsplit('.').next().unwrap_or("");
    let has = |x: &str| w.iter().any(|y| y == x);
    for i in 0..w.len() {
        match word(i) {
            "drop" | "undrop" if drops_a_kind(&w, i) => found.raise(Tier::T4, "sql.drop"),
            "truncate" if word(i + 1) == "table" => found.raise(Tier::T4, "sql.truncate"),
            "delete" if deletes(&w, i) => found.raise(Tier::T3, "sql.delete_all_rows"),
            "update" if word(i + 2) == "set" && !PROSE_FILLERS.contains(&word(i + 1)) => {
                found.raise(Tier::T3, "sql.update_all_rows")
            }
            "insert" if word(i + 1) == "into" && !PROSE_FILLERS.contains(&word(i + 2)) => {
                found.raise(Tier::T2, "sql.insert")
            }
            "merge" if word(i + 1) == "into" && !PROSE_FILLERS.contains(&word(i + 2)) => {
                found.raise(Tier::T3, "sql.merge")
            }
            "grant" | "revoke" | "deny"
                if super::SQL_PRIVILEGES.contains(&word(i + 1))
                    && (has("to") || has("from") || has("on")) =>
            {
                found.raise(Tier::T4, "sql.grant")
            }
            "alter" if matches!(word(i + 1), "authorization") => found.raise(Tier::T4, "sql.grant"),
            "alter" if word(i + 1) == "server" && word(i + 2) == "role" => {
                found.raise(Tier::T4, "sql.grant")
            }
            "add" if word(i + 1) == "member" && has("alter") => found.raise(Tier::T4, "sql.grant"),
            "alter" | "create"
                if matches!(word(i + 1), "user" | "role" | "login")
                    && w[i + 1..].iter().take(12).any(|x| {
                        matches!(
                            x.as_str(),
                            "superuser" | "sysadmin" | "createrole" | "bypassrls"
                        )
                    }) =>
            {
                found.raise(Tier::T4, "sql.grant")
            }
            "alter"
                if matches!(word(i + 1), "user" | "role" | "login")
                    && w[i + 1..]
                        .iter()
                        .take(12)
                        .any(|x| matches!(x.as_str(), "identified" | "password")) =>
            {
                found.raise(Tier::T4, "sql.credentials")
            }
            // MySQL: `SET PASSWORD [FOR account] = ...`; the `=` tells it from prose.
            "set" if word(i + 1) == "password" && text.contains('=') => {
                found.raise(Tier::T4, "sql.credentials")
            }
            "rename" if word(i + 1) == "user" && has("to") && text.contains(['\'', '`', '@']) => {
                found.raise(Tier::T4, "sql.credentials")
            }
            // MySQL events: code run on a schedule, unseen by later calls.
            "create" | "alter" if event_at(&w, i) => {
                found.raise(Tier::T3, "sql.create_routine");
                if w[i..].iter().any(|x| {
                    matches!(
                        x.as_str(),
                        "drop" | "truncate" | "grant" | "revoke" | "delete" | "update"
                    )
                }) {
                    found.raise(Tier::T4, "sql.create_routine_destructive");
                }
            }
            "create" if word(i + 1) == "or" && matches!(word(i + 2), "replace" | "alter") => {
                let kinds = &w[i + 3..(i + 6).min(w.len())];
                if kinds
                    .iter()
                    .any(|k| matches!(k.as_str(), "table" | "database" | "schema" | "stage"))
                {
                    found.raise(Tier::T4, "sql.create_or_replace");
                } else {
                    found.raise(Tier::T3, "sql.create_routine");
                }
            }
            // A procedural block in an untrusted language runs any code on the server.
            "language" if UNTRUSTED_LANGUAGES.contains(&word(i + 1)) => {
                found.raise(Tier::T4, "sql.unparsable")
            }
            // `BACKUP LOG|DATABASE ... TO DISK = 'NUL'`: a backup thrown away breaks the log
            // chain (point-in-time recovery lost).
            "backup" if matches!(word(i + 1), "log" | "database") && has("nul") => {
                found.raise(Tier::T4, "sql.backup_discarded")
            }
            "disable" if word(i + 1) == "trigger" => found.raise(Tier::T3, "sql.alter"),
            "install" if word(i + 1) == "plugin" => found.raise(Tier::T4, "sql.load_library"),
            "uninstall" if word(i + 1) == "plugin" => found.raise(Tier::T3, "sql.alter"),
            // MySQL `CLONE INSTANCE FROM`: replaces the recipient's whole data directory.
            "clone" if word(i + 1) == "instance" => found.raise(Tier::T4, "sql.clone_instance"),
            _ => {}
        }
        // Procedures named with or without their database and schema (`master.dbo.xp_...`).
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
            p if p.starts_with("sp_drop") => found.raise(Tier::T4, "sql.drop"),
            "sp_msforeachtable" | "sp_msforeachdb" | "sp_executesql" => {
                found.raise(Tier::T3, "sql.execute")
            }
            _ => {}
        }
    }
    // `EXEC ('...')`, `EXECUTE ('...') AS USER`: its string runs (rated above by its words).
    if w.iter().any(|x| x == "exec" || x == "execute") {
        let compact: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        if compact.contains("exec(") || compact.contains("execute(") {
            found.raise(Tier::T3, "sql.execute");
        }
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

/// `DROP` followed by a kind of object after modifiers (also up to two not listed: `DROP
/// ACCESS METHOD`), without a prose word first (`drop the table`).
fn drops_a_kind(w: &[String], i: usize) -> bool {
    let mut unknown = 0;
    for x in w.iter().skip(i + 1).take(5) {
        let x = x.as_str();
        if is_object_kind(x) {
            return true;
        }
        if PROSE_FILLERS.contains(&x) {
            return false;
        }
        if !SQL_MODIFIERS.contains(&x) {
            unknown += 1;
            if unknown > 2 {
                return false;
            }
        }
    }
    false
}

/// `DELETE FROM t` (not `delete from the list`), or T-SQL's `DELETE t` / `DELETE dbo.t` as the
/// last words or before `WHERE`/`OUTPUT`/`FROM` (`delete old users` is prose).
fn deletes(w: &[String], i: usize) -> bool {
    let word = |k: usize| w.get(k).map_or("", String::as_str);
    let next = word(i + 1);
    if next == "from" {
        return !word(i + 2).is_empty() && !PROSE_FILLERS.contains(&word(i + 2));
    }
    if next.is_empty() || PROSE_FILLERS.contains(&next) {
        return false;
    }
    next.contains('.')
        || matches!(
            word(i + 2),
            "" | "where" | "output" | "from" | "commit" | "go" | "end"
        )
}

/// `CREATE [DEFINER = x] EVENT ... DO` / `ALTER EVENT ... DO`.
fn event_at(w: &[String], i: usize) -> bool {
    let rest = &w[i + 1..(i + 6).min(w.len())];
    rest.iter().any(|x| x == "event") && w[i..].iter().any(|x| x == "do" || x == "schedule")
}

/// psql's and sqlite3's meta-commands at the start of a line: a shell escape (`\!`,
/// `.shell`, `.system`) is `sql.shell_escape`, one that writes or reads files
/// (`.restore`, `\copy`, `\o`) fails closed (`sql.unparsable`).
fn meta_commands(text: &str, v: &mut Verdict) {
    for line in text.lines() {
        let line = line.trim_start();
        if let Some(rest) = line.strip_prefix('\\') {
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
                v.raise(Tier::T4, "sql.unparsable");
            }
        } else if line.starts_with('.') {
            let name: String = line
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_lowercase();
            if SQLITE_SHELL.contains(&name.as_str()) {
                v.raise(Tier::T4, "sql.shell_escape");
            } else if SQLITE_FILE.contains(&name.as_str()) {
                v.raise(Tier::T4, "sql.unparsable");
            }
        }
    }
}
