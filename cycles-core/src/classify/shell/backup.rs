//! Backup, snapshot and key-value store tools (`restic`, `borg`, `kopia`, `velero`,
//! `pgbackrest`, `wal-g`, `barman`, `duplicity`, `tarsnap`, `btrfs`, `etcdctl`, `consul`).
//!
//! Deleting backups or snapshots cannot be undone: tier 4 (`shell.backup_delete`), also when
//! a retention policy decides which (`restic forget --keep-last 1`, `borg prune`), since the
//! policy may keep nothing. Reclaiming only data that no backup references is tier 3
//! (`shell.backup_prune`); deleting a key tree tier 4, one key tier 3.

use super::{has, operands, short_flag, unknown_command};
use crate::classify::Verdict;
use crate::model::Tier;

/// Programs this module rates.
pub(super) const PROGRAMS: &[&str] = &[
    "restic",
    "borg",
    "borgbackup",
    "kopia",
    "velero",
    "pgbackrest",
    "wal-g",
    "wal-e",
    "barman",
    "duplicity",
    "tarsnap",
    "btrfs",
    "etcdctl",
    "consul",
];

/// Rates a backup tool's command.
pub(super) fn classify(name: &str, rest: &[String], v: &mut Verdict) {
    let ops = operands(rest);
    let op = |w: &str| ops.contains(&w);
    let any = |ws: &[&str]| ws.iter().any(|w| ops.contains(w));
    let rated: Option<(Tier, &'static str)> = match name {
        "restic" => {
            if op("forget") {
                Some((Tier::T4, "shell.backup_delete"))
            } else if op("prune") {
                Some((Tier::T3, "shell.backup_prune"))
            } else if op("restore") {
                Some((Tier::T2, "shell.restore"))
            } else if any(&[
                "snapshots",
                "ls",
                "cat",
                "stats",
                "check",
                "diff",
                "find",
                "list",
                "dump",
                "version",
                "help",
            ]) {
                Some((Tier::T0, "shell.read"))
            } else if any(&["backup", "init", "copy", "tag", "cache"]) {
                Some((Tier::T1, "shell.local_write"))
            } else {
                None
            }
        }
        "borg" | "borgbackup" => {
            if any(&["delete", "prune"]) {
                Some((Tier::T4, "shell.backup_delete"))
            } else if any(&["compact", "recreate"]) {
                Some((Tier::T3, "shell.backup_prune"))
            } else if op("extract") {
                Some((Tier::T2, "shell.restore"))
            } else if any(&["list", "info", "check", "diff", "version", "help"]) {
                Some((Tier::T0, "shell.read"))
            } else if any(&["create", "init", "rcreate"]) {
                Some((Tier::T1, "shell.local_write"))
            } else {
                None
            }
        }
        "kopia" => {
            if any(&["delete", "expire"])
                && (any(&["snapshot", "snapshots", "snap"]) || op("repository"))
                || op("purge")
            {
                Some((Tier::T4, "shell.backup_delete"))
            } else if op("maintenance") && op("run") {
                Some((Tier::T3, "shell.backup_prune"))
            } else if op("restore") {
                Some((Tier::T2, "shell.restore"))
            } else if any(&["list", "ls", "show", "status", "info", "verify", "diff"]) {
                Some((Tier::T0, "shell.read"))
            } else if op("create") {
                Some((Tier::T1, "shell.local_write"))
            } else {
                None
            }
        }
        "velero" => {
            if op("delete") && any(&["backup", "backups", "backup-location"]) {
                Some((Tier::T4, "shell.backup_delete"))
            } else if op("delete") {
                Some((Tier::T3, "shell.cloud_delete"))
            } else if any(&["get", "describe", "logs", "version"]) {
                Some((Tier::T0, "shell.read"))
            } else if op("restore") {
                Some((Tier::T2, "shell.restore"))
            } else {
                None
            }
        }
        "pgbackrest" => {
            if any(&["stanza-delete", "expire", "repo-rm"]) {
                Some((Tier::T4, "shell.backup_delete"))
            } else if op("restore") {
                Some((Tier::T2, "shell.restore"))
            } else if any(&["info", "check", "version", "help", "repo-ls", "repo-get"]) {
                Some((Tier::T0, "shell.read"))
            } else if any(&["backup", "stanza-create", "stanza-upgrade", "archive-push"]) {
                Some((Tier::T1, "shell.local_write"))
            } else {
                None
            }
        }
        "wal-g" | "wal-e" => {
            if op("delete") && op("garbage") {
                Some((Tier::T3, "shell.backup_prune"))
            } else if op("delete") {
                Some((Tier::T4, "shell.backup_delete"))
            } else if ops.iter().any(|o| o.ends_with("-fetch") || *o == "restore") {
                Some((Tier::T2, "shell.restore"))
            } else if ops
                .iter()
                .any(|o| o.ends_with("-list") || o.ends_with("-show") || o.ends_with("-verify"))
                || op("st") && op("ls")
            {
                Some((Tier::T0, "shell.read"))
            } else if ops.iter().any(|o| o.ends_with("-push")) {
                Some((Tier::T1, "shell.local_write"))
            } else {
                None
            }
        }
        "barman" => {
            if op("delete") {
                Some((Tier::T4, "shell.backup_delete"))
            } else if any(&["recover", "restore"]) {
                Some((Tier::T2, "shell.restore"))
            } else if ops.iter().any(|o| {
                o.starts_with("list-")
                    || o.starts_with("show-")
                    || matches!(*o, "check" | "status" | "diagnose" | "check-backup")
            }) {
                Some((Tier::T0, "shell.read"))
            } else if any(&["backup", "cron", "switch-wal", "archive-wal"]) {
                Some((Tier::T1, "shell.local_write"))
            } else {
                None
            }
        }
        "duplicity" => {
            let removes = ops.iter().any(|o| o.starts_with("remove-"));
            if removes && has(rest, &["--force"]) {
                Some((Tier::T4, "shell.backup_delete"))
            } else if op("cleanup") && has(rest, &["--force"]) {
                Some((Tier::T3, "shell.backup_prune"))
            } else if removes
                || op("cleanup")
                || any(&["collection-status", "list-current-files", "verify"])
            {
                // Without --force these only list what they would delete.
                Some((Tier::T0, "shell.read"))
            } else if op("restore") {
                Some((Tier::T2, "shell.restore"))
            } else {
                Some((Tier::T1, "shell.local_write"))
            }
        }
        "tarsnap" => {
            if rest
                .iter()
                .any(|a| short_flag(a, 'd') || a == "--nuke" || a == "--fsck-prune")
            {
                Some((Tier::T4, "shell.backup_delete"))
            } else if rest.iter().any(|a| short_flag(a, 'x')) {
                Some((Tier::T2, "shell.restore"))
            } else if rest.iter().any(|a| short_flag(a, 'c')) {
                Some((Tier::T1, "shell.local_write"))
            } else {
                Some((Tier::T0, "shell.read"))
            }
        }
        "btrfs" => {
            // btrfs takes any unambiguous prefix of its command words.
            let is = |o: Option<&&str>, full: &str| {
                o.is_some_and(|o| !o.is_empty() && full.starts_with(*o))
            };
            if is(ops.first(), "subvolume") && is(ops.get(1), "delete") {
                Some((Tier::T4, "shell.backup_delete"))
            } else if ops.iter().skip(1).take(1).any(|o| {
                ["list", "show", "df", "usage", "get", "find-new"]
                    .iter()
                    .any(|r| r.starts_with(*o) && o.len() >= 2)
            }) {
                Some((Tier::T0, "shell.read"))
            } else {
                Some((Tier::T2, "shell.system_change"))
            }
        }
        "etcdctl" => {
            if any(&["del", "delete"]) {
                // `--prefix=true`, `--from-key=true`: the Go flag spellings.
                if rest.iter().any(|a| {
                    let (flag, value) = a.split_once('=').unwrap_or((a, "true"));
                    matches!(flag, "--prefix" | "--from-key") && !matches!(value, "false" | "0")
                }) {
                    Some((Tier::T4, "shell.kv_delete_recursive"))
                } else {
                    Some((Tier::T3, "shell.kv_delete"))
                }
            } else if any(&["get", "watch", "endpoint", "version", "check"])
                || op("member") && op("list")
                || op("snapshot") && op("status")
            {
                Some((Tier::T0, "shell.read"))
            } else if op("snapshot") && op("save") {
                Some((Tier::T1, "shell.local_write"))
            } else {
                None
            }
        }
        "consul" if ops.first() == Some(&"kv") => match ops.get(1).copied() {
            Some("delete") if rest.iter().any(|a| a.trim_start_matches('-') == "recurse") => {
                Some((Tier::T4, "shell.kv_delete_recursive"))
            }
            Some("delete") => Some((Tier::T3, "shell.kv_delete")),
            Some("get" | "export") => Some((Tier::T0, "shell.read")),
            _ => Some((Tier::T2, "shell.system_change")),
        },
        _ => None,
    };
    match rated {
        Some((tier, rule)) => v.raise(tier, rule),
        None => {
            // A command without a rule here: an unknown command, named by its words.
            unknown_command(name, &ops, v);
        }
    }
}
