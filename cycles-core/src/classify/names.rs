//! Name heuristics: a destructive verb in a name is tier 3, with a critical noun tier 4.
//!
//! Names are split into lowercase words at every non-alphanumeric character and at camelCase
//! boundaries (`volumeDelete` → `volume`, `delete`; `DROP_DATABASE` → `drop`, `database`), and
//! words are matched exactly, so `dropdown` or `model` never match `drop` or `del`.

use super::Verdict;
use crate::model::Tier;

/// Verbs (and their inflections) that destroy what they act on.
const DESTRUCTIVE: &[&str] = &[
    "delete",
    "deletes",
    "deleted",
    "deleting",
    "deletion",
    "del",
    "destroy",
    "destroys",
    "destroyed",
    "destroying",
    "destruction",
    "drop",
    "drops",
    "dropped",
    "dropping",
    "purge",
    "purges",
    "purged",
    "purging",
    "wipe",
    "wipes",
    "wiped",
    "wiping",
    "terminate",
    "terminates",
    "terminated",
    "terminating",
    "termination",
    "truncate",
    "truncates",
    "truncated",
    "truncating",
    "erase",
    "erases",
    "erased",
    "erasing",
    "nuke",
    "nukes",
    "nuked",
    "shred",
    "rm",
    "rmrf",
    "deprovision",
    "deprovisions",
    "deprovisioned",
    "deprovisioning",
    "decommission",
    "decommissions",
    "decommissioned",
    "decommissioning",
    "teardown",
    "teardowns",
];

/// Verbs that name many reversible operations (`removeLabel`, `resetPassword`) but destroy a
/// critical thing (`removeVolume`, `databaseReset`, `flushDb`): with a critical noun tier 4,
/// alone nothing.
const DESTRUCTIVE_WITH_CRITICAL: &[&str] = &[
    "remove",
    "removes",
    "removed",
    "removing",
    "removal",
    "reset",
    "resets",
    "clear",
    "clears",
    "flush",
    "flushes",
    "format",
    "formats",
    "empty",
    "reinit",
    "reinitialize",
    "overwrite",
    "overwrites",
    "detach",
    "rebuild",
    "reimage",
    "uninstall",
    "uninstalls",
    "recreate",
    "recreates",
];

/// The verbs of [`DESTRUCTIVE_WITH_CRITICAL`] that empty a data store in place (`clear_table`,
/// Algolia's `clearIndex`, `reset_schema`): every row gone, the store kept.
const EMPTYING_VERBS: &[&str] = &[
    "clear",
    "clears",
    "empty",
    "flush",
    "flushes",
    "reset",
    "resets",
    "recreate",
    "recreates",
];

/// Restoring a backup over a live volume or database replaces the data in it: like
/// [`DESTRUCTIVE_WITH_CRITICAL`] in the name of an operation (a tool, an API action, a GraphQL
/// field: `volumeInstanceBackupRestore`). Not in a shell command's words, which the shell
/// rates by its own restore rules (`shell.db_load`).
const RESTORE_VERBS: &[&str] = &[
    "restore",
    "restores",
    "restored",
    "restoring",
    "rollback",
    "rollbacks",
];

/// Things whose destruction is irreversible or unbounded.
const CRITICAL: &[&str] = &[
    "backup",
    "backups",
    "volume",
    "volumes",
    "vol",
    "database",
    "databases",
    "db",
    "dbs",
    "prod",
    "production",
    "cluster",
    "clusters",
    "snapshot",
    "snapshots",
    "project",
    "projects",
    "environment",
    "environments",
    "bucket",
    "buckets",
    "vols",
    "proj",
    "projs",
    "bak",
    "baks",
    "pvc",
    "pvcs",
    "persistentvolume",
    "persistentvolumes",
    "persistentvolumeclaim",
    "persistentvolumeclaims",
];

/// Things whose deletion deletes everything in them (a Kubernetes namespace, a CloudFormation
/// or Pulumi stack, a repository with its history), critical only next to a destructive verb
/// in the same name: alone they are everyday API paths (`POST /api/v1/namespaces/x/pods`).
const CRITICAL_WHEN_DESTROYED: &[&str] = &[
    "namespace",
    "namespaces",
    "stack",
    "stacks",
    "repository",
    "repositories",
    "tables",
];

/// Like [`CRITICAL_WHEN_DESTROYED`], stores and containers whose deletion deletes the data in
/// them (`drop_table`, `delete_env`, `delete_index`, `apps_destroy`), unless the name also
/// names a part of them (`delete_table_row`, `delete_env_var`, `delete_org_member`), which is an
/// ordinary deletion: these and [`DATA_STORES`] (a store is either, see [`is_store_noun`]).
const OTHER_STORES: &[&str] = &[
    "repo",
    "repos",
    "env",
    "envs",
    "pv",
    "pvs",
    "workspace",
    "workspaces",
    "org",
    "orgs",
    "organization",
    "organizations",
    "tenant",
    "tenants",
    "snap",
    "snaps",
    "ns",
    "app",
    "apps",
    "resourcegroup",
    "resourcegroups",
    "storageaccount",
    "storageaccounts",
];

/// The stores that hold data a restore replaces in place
/// (`restore_table`; an app or a repository rolled back or restored keeps its data).
const DATA_STORES: &[&str] = &[
    "table",
    "tables",
    "collection",
    "collections",
    "index",
    "indexes",
    "indices",
    "keyspace",
    "keyspaces",
    "dataset",
    "datasets",
    "disk",
    "disks",
    "postgres",
    "postgresql",
    "mysql",
    "mariadb",
    "redis",
    "mongo",
    "mongodb",
    "filesystem",
    "filesystems",
    "schema",
    "schemas",
];

/// Whether `w` names a store ([`OTHER_STORES`] or [`DATA_STORES`]).
fn is_store_noun(w: &str) -> bool {
    OTHER_STORES.contains(&w) || DATA_STORES.contains(&w)
}

/// Words between a part and the store it is in (`delete_row_from_table`).
const PREPOSITIONS: &[&str] = &["from", "in", "of", "on", "inside", "within", "at"];

/// Parts of a store: next to one of them a store noun names where the deleted thing is.
const PARTS: &[&str] = &[
    "row",
    "rows",
    "record",
    "records",
    "item",
    "items",
    "entry",
    "entries",
    "column",
    "columns",
    "field",
    "fields",
    "var",
    "vars",
    "variable",
    "variables",
    "document",
    "documents",
    "key",
    "keys",
    "value",
    "values",
    "tag",
    "tags",
    "label",
    "labels",
    "comment",
    "comments",
    "member",
    "members",
    "user",
    "users",
    "permission",
    "permissions",
    "file",
    "files",
    "object",
    "objects",
    "attribute",
    "attributes",
    "token",
    "tokens",
    "webhook",
    "webhooks",
    "alias",
    "aliases",
    "pattern",
    "patterns",
    "invite",
    "invites",
    "invitation",
    "role",
    "roles",
    "filter",
    "filters",
    "selection",
];

/// Adjacent word pairs that together destroy a whole store: Redis's `flushAll`, Prisma's
/// `migrate reset` (drops the database), Supabase's `reset_branch`, a device's
/// `factory_reset`, `format_disk`, Azure's resource group (`delete_resource_group` deletes
/// everything in it, with a destructive verb).
const CRITICAL_PAIRS: &[(&str, &str)] = &[
    ("flush", "all"),
    ("migrate", "reset"),
    ("migration", "reset"),
    ("migrations", "reset"),
    ("reset", "branch"),
    ("factory", "reset"),
    ("format", "disk"),
    ("format", "disks"),
    ("format", "drive"),
    ("format", "partition"),
    ("flush", "everything"),
    ("wipe", "everything"),
    // Laravel's `migrate:fresh` and `migrate:refresh` drop every table first.
    ("migrate", "fresh"),
    ("migrate", "refresh"),
];

/// The first words of [`CRITICAL_PAIRS`] and of `tear down`, `resource group` and `file system`.
const PAIR_WORDS: &[&str] = &[
    "flush",
    "migrate",
    "migration",
    "migrations",
    "reset",
    "factory",
    "format",
    "tear",
    "resource",
    "file",
    "wipe",
    "storage",
    "log",
    "user",
    "key",
];

/// Single words that wipe a whole data store (`redis.flushall`, `upstash.flushdb`).
const WHOLE_STORE_WIPES: &[&str] = &[
    "flushall",
    "flushdb",
    "dropdb",
    "resetdb",
    "wipedb",
    "nukedb",
    "deldb",
    "rmdb",
    "dbdrop",
    "dropdbs",
    "rmvol",
    "rmvolume",
    "rmvolumes",
    "deleteenv",
    "destroyall",
    "dropall",
    "factoryreset",
];

/// Rule id: a destructive verb in a name.
pub const RULE_DESTRUCTIVE: &str = "name.destructive";
/// Rule id: a destructive verb and a critical noun in a name.
pub const RULE_DESTRUCTIVE_CRITICAL: &str = "name.destructive_critical";

/// Calls `f` with each lowercase word of `name` until it returns true; returns whether it did.
///
/// Works on a small stack buffer: no allocation for words up to 48 bytes (longer words are
/// skipped: no word of interest is that long).
pub(crate) fn any_word(name: &str, mut f: impl FnMut(&str) -> bool) -> bool {
    let mut buf = [0u8; 48];
    let mut len = 0usize;
    let mut overflow = false;
    let mut prev: Option<char> = None;
    let mut chars = name.chars().peekable();
    let flush =
        |buf: &[u8; 48], len: &mut usize, overflow: &mut bool, f: &mut dyn FnMut(&str) -> bool| {
            let hit =
                *len > 0 && !*overflow && std::str::from_utf8(&buf[..*len]).is_ok_and(&mut *f);
            *len = 0;
            *overflow = false;
            hit
        };
    while let Some(c) = chars.next() {
        if !c.is_ascii_alphanumeric() {
            if flush(&buf, &mut len, &mut overflow, &mut f) {
                return true;
            }
            prev = None;
            continue;
        }
        // camelCase: a boundary before an upper-case letter that follows a lower-case letter or
        // digit, or that starts a new word after an acronym (`HTTPRequest` → `http`, `request`).
        let boundary = c.is_ascii_uppercase()
            && prev.is_some_and(|p| {
                p.is_ascii_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_ascii_uppercase()
                        && chars.peek().is_some_and(|n| n.is_ascii_lowercase()))
            });
        if boundary && flush(&buf, &mut len, &mut overflow, &mut f) {
            return true;
        }
        if len < buf.len() {
            buf[len] = c.to_ascii_lowercase() as u8;
            len += 1;
        } else {
            overflow = true;
        }
        prev = Some(c);
    }
    flush(&buf, &mut len, &mut overflow, &mut f)
}

/// Whether `word` (lowercase) is a destructive verb.
pub(crate) fn is_destructive(word: &str) -> bool {
    DESTRUCTIVE.contains(&word)
}

/// Whether `word` (lowercase) is a critical noun.
pub(crate) fn is_critical(word: &str) -> bool {
    CRITICAL.contains(&word)
}

/// Destructive verbs and critical nouns looked for inside one unsplit word (`volumedelete`,
/// `DELETEVOLUME`): the case-less spelling of `volumeDelete` that a case-insensitive executor
/// runs as the same tool. Only long, specific stems, and only both together, so `dropdown` or
/// `production` alone never match.
const COMPOUND_VERBS: &[&str] = &[
    "delete",
    "destroy",
    "drop",
    "purge",
    "wipe",
    "terminate",
    "truncate",
    "erase",
    "nuke",
    "shred",
];
const COMPOUND_NOUNS: &[&str] = &[
    "backup",
    "volume",
    "database",
    "cluster",
    "snapshot",
    "project",
    "environment",
    "bucket",
    "prod",
];

/// Whether one word (lowercase) glues a destructive verb to a critical noun.
fn is_compound_destructive_critical(word: &str) -> bool {
    word.len() > 6
        && COMPOUND_VERBS.iter().any(|v| word.contains(v))
        && COMPOUND_NOUNS.iter().any(|n| word.contains(n))
}

/// What the words of `name` say: `(destructive verb present, critical noun present)`.
/// Restores are not counted ([`scan_operation`] counts them).
pub(crate) fn scan(name: &str) -> (bool, bool) {
    scan_with(name, false, false)
}

/// [`scan`] for the name of an operation (a tool, an API action, a GraphQL field), where a
/// restore with a critical noun replaces the data of a store (`restore_backup`).
pub(crate) fn scan_operation(name: &str) -> (bool, bool) {
    scan_with(name, true, false)
}

/// [`scan_operation`] for a name below another that names a critical thing (`remove` in
/// GraphQL's `volume { remove }`): a verb that destroys only critical things counts.
pub(crate) fn scan_in(name: &str, critical_context: bool) -> (bool, bool) {
    scan_with(name, true, critical_context)
}

fn scan_with(name: &str, restores: bool, critical_context: bool) -> (bool, bool) {
    let mut destructive = false;
    let mut weak = false;
    let mut critical = false;
    let mut container = false;
    let mut store = false;
    let mut data_store = false;
    // A part counts when it comes after a store (`delete_table_row`) or before one with a
    // preposition between (`delete_row_from_table`); before one without, it names the store
    // (`delete_users_table`) or something else (`mcp__file_store__drop_table`).
    let mut part = false;
    let mut part_before_store = false;
    let mut preposition_after_part = false;
    let mut restoring = false;
    let mut migration = false;
    let mut rolls_back = false;
    let mut all = false;
    // Pairs count as adjacent words in order (`flush all`, not `reset_migration_status`).
    let mut prev: Option<&str> = None;
    let mut pair = false;
    let mut tear_down = false;
    let mut resource_group = false;
    // A destructive verb with `everything` (or `all` after a verb that only acts on whole
    // stores) as the name's last words (`drop_everything`, `truncate_all`): nothing named is
    // spared. (Rails' `User.delete_all` deletes a table's rows: a plain destruction.)
    let mut last_destructive = false;
    let mut last_whole_store_verb = false;
    let mut ends_destroying_all = false;
    let mut emptying = false;
    let mut emptied_store = false;
    let mut schema = false;
    // KMS's `ScheduleKeyDeletion`: every datum encrypted under the key becomes unreadable.
    let mut schedule = false;
    let mut key_deletion = false;
    any_word(name, |w| {
        destructive |= is_destructive(w);
        weak |= DESTRUCTIVE_WITH_CRITICAL.contains(&w) || restores && RESTORE_VERBS.contains(&w);
        critical |= is_critical(w);
        container |= CRITICAL_WHEN_DESTROYED.contains(&w);
        // AWS's `DeleteFileSystem`: `file system` is one store; so are Azure's `storage
        // account`, CloudWatch's `log group` and Cognito's `user pool`.
        let file_system = prev == Some("file") && matches!(w, "system" | "systems");
        let two_word_store = matches!(
            (prev, w),
            (Some("storage"), "account" | "accounts")
                | (Some("log"), "group" | "groups")
                | (Some("user"), "pool" | "pools")
        );
        let is_store = is_store_noun(w) || file_system || two_word_store;
        if is_store && part_before_store && preposition_after_part {
            part = true;
        }
        store |= is_store;
        data_store |= DATA_STORES.contains(&w) || file_system;
        if PARTS.contains(&w) {
            if store {
                part = true;
            } else {
                part_before_store = true;
                preposition_after_part = false;
            }
        }
        preposition_after_part |= part_before_store && PREPOSITIONS.contains(&w);
        restoring |= restores && matches!(w, "restore" | "restores" | "restored" | "restoring");
        migration |= matches!(w, "migrate" | "migration" | "migrations");
        rolls_back |= matches!(
            w,
            "rollback" | "revert" | "rollbacks" | "reverts" | "undo" | "undone"
        );
        let is_all = matches!(w, "all" | "everything");
        all |= is_all;
        ends_destroying_all = match w {
            "everything" => last_destructive,
            "all" => last_whole_store_verb,
            _ => false,
        };
        last_destructive = is_destructive(w);
        last_whole_store_verb = matches!(
            w,
            "drop" | "truncate" | "purge" | "wipe" | "nuke" | "erase" | "shred"
        );
        emptying |= EMPTYING_VERBS.contains(&w);
        emptied_store |= matches!(
            w,
            "table"
                | "tables"
                | "index"
                | "indexes"
                | "indices"
                | "collection"
                | "collections"
                | "keyspace"
                | "keyspaces"
                | "dataset"
                | "datasets"
                | "schema"
                | "schemas"
        );
        schema |= matches!(w, "schema" | "schemas");
        schedule |= w == "schedule";
        key_deletion |= prev == Some("key") && matches!(w, "deletion" | "deletions");
        if is_compound_destructive_critical(w) || WHOLE_STORE_WIPES.contains(&w) {
            destructive = true;
            critical = true;
        }
        let after = |a: &str| prev == Some(a);
        pair |= CRITICAL_PAIRS.iter().any(|(a, b)| after(a) && w == *b);
        tear_down |= after("tear") && w == "down";
        resource_group |= after("resource") && matches!(w, "group" | "groups");
        prev = PAIR_WORDS.iter().copied().find(|p| *p == w);
        false
    });
    if pair {
        destructive = true;
        critical = true;
    }
    destructive |= tear_down;
    if ends_destroying_all || schedule && key_deletion {
        destructive = true;
        critical = true;
    }

    // Rolling back every migration drops the tables they created (`migrations_rollback_all`);
    // one step back is a destructive schema change.
    if migration && rolls_back {
        destructive = true;
        critical |= all;
    }
    let critical = critical
        || critical_context
        || destructive && (container || ((store || resource_group) && !part))
        // A restore over a table or a database replaces its data in place.
        || restoring && data_store && !part;
    // Emptying a table or an index in place deletes every row, the store kept (3, as
    // `delete_all_rows`); a schema reset drops everything in it (4).
    if emptying && emptied_store && !part && !critical {
        return (true, schema);
    }
    (destructive || (weak && critical), critical)
}

/// Classifies a name: a destructive verb is tier 3 (`name.destructive`), with a critical noun
/// tier 4 (`name.destructive_critical`); anything else is tier 0 with no rule.
///
/// ```
/// use cycles_core::classify::names;
/// use cycles_core::Tier;
/// assert_eq!(names::classify("railway.volumeDelete").tier, Tier::T4);
/// assert_eq!(names::classify("github.delete_comment").tier, Tier::T3);
/// assert_eq!(names::classify("ui.render_dropdown").tier, Tier::T0);
/// ```
pub fn classify(name: &str) -> Verdict {
    let mut v = Verdict::default();
    apply_operation(name, &mut v);
    v
}

/// Raises `v` by the name heuristics for `name` (restores not counted: see [`scan`]).
pub(crate) fn apply(name: &str, v: &mut Verdict) {
    rate(scan(name), v);
}

/// Raises `v` by the name heuristics for the name of an operation (a tool, an action):
/// restores of critical things count.
pub(crate) fn apply_operation(name: &str, v: &mut Verdict) {
    rate(scan_operation(name), v);
}

fn rate(scan: (bool, bool), v: &mut Verdict) {
    match scan {
        (true, true) => v.raise(Tier::T4, RULE_DESTRUCTIVE_CRITICAL),
        (true, false) => v.raise(Tier::T3, RULE_DESTRUCTIVE),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        let mut out = Vec::new();
        any_word(s, |w| {
            out.push(w.to_string());
            false
        });
        out
    }

    #[test]
    fn splits_words() {
        assert_eq!(words("volumeDelete"), ["volume", "delete"]);
        assert_eq!(words("DROP_DATABASE"), ["drop", "database"]);
        assert_eq!(words("HTTPRequest.v2"), ["http", "request", "v2"]);
        assert_eq!(
            words("railway.delete-volume"),
            ["railway", "delete", "volume"]
        );
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(words("é-delete"), ["delete"]);
    }

    #[test]
    fn tiers() {
        assert_eq!(classify("deleteBackup").tier, Tier::T4);
        assert_eq!(classify("deleteBackup").rules, [RULE_DESTRUCTIVE_CRITICAL]);
        assert_eq!(classify("purge_cache").tier, Tier::T3);
        assert_eq!(classify("list_volumes").tier, Tier::T0);
        assert!(classify("list_volumes").rules.is_empty());
        assert_eq!(classify("model.predict").tier, Tier::T0);
        // The same tool spelled without case: one word, still a verb and a critical noun.
        assert_eq!(classify("railway.volumedelete").tier, Tier::T4);
        assert_eq!(classify("RAILWAY.DELETEVOLUME").tier, Tier::T4);
        assert_eq!(classify("dropdatabase").tier, Tier::T4);
        assert_eq!(classify("ui.dropdown").tier, Tier::T0);
        assert_eq!(classify("productionstatus").tier, Tier::T0);
        assert_eq!(classify("listvolumes").tier, Tier::T0);
    }
}
