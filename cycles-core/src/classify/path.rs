//! File paths a tool writes to (an editor's `Write`/`Edit`, a notebook edit): most are ordinary
//! work, rated by the registration, but some are not ordinary files.
//!
//! - The gate's own configuration (`path.gate_config`, tier 4): the Cycles policy and ledger
//!   (`.cycles/`, `cycles.toml`, `cycles.db`), the hook and MCP configuration that puts the gate
//!   in front of the agent (`.claude/settings*.json`, `.mcp.json`, Claude Desktop's config). An
//!   agent that can edit these can remove its own gate; an edit needs an approval.
//! - Files that run code later, outside any gate (`path.runs_later`, tier 3): git hooks and
//!   config, shell start-up files, `.envrc`, SSH `authorized_keys`/`config`/`rc`, cron and
//!   systemd units, sudoers.
//! - Data stores' files (`path.data_store`, tier 4) and system directories (`path.system`,
//!   tier 3).
//!
//! Paths are read lexically: `\` counts as `/`, `.` and `..` are resolved, and names compare
//! without case (case-insensitive file systems open `.Claude/Settings.json` too). A path that
//! cannot be read that way (empty, or with a NUL) is `path.unreadable`, tier 4.

use super::Verdict;
use crate::model::Tier;

/// Raises `v` by what writing to `path` touches.
pub(crate) fn apply(path: &str, v: &mut Verdict) {
    match critical(path) {
        Some((tier, rule)) => v.raise(tier, rule),
        None => v.raise(Tier::T0, "path.ordinary"),
    }
}

/// The tier and rule of a path that is not an ordinary file, or `None` (also read by the shell
/// classifier for the files a command writes).
pub(crate) fn critical(path: &str) -> Option<(Tier, &'static str)> {
    if path.trim().is_empty() || path.contains('\0') {
        return Some((Tier::T4, "path.unreadable"));
    }
    let parts = components(path);
    let last = parts.last().map(String::as_str).unwrap_or("");
    let has = |name: &str| parts.iter().any(|p| p == name);
    // Consecutive components, e.g. [".git", "hooks"].
    let has_seq = |seq: &[&str]| parts.windows(seq.len()).any(|w| w.iter().eq(seq.iter()));
    let absolute = path.starts_with('/') || path.starts_with('\\');

    let gate_config = has(".cycles")
        || matches!(
            last,
            "cycles.toml" | "claude_desktop_config.json" | ".mcp.json"
        )
        || last.starts_with("cycles.db")
        || (has(".claude") && last.starts_with("settings") && last.ends_with(".json"))
        || has_seq(&[".claude", "hooks"]);
    if gate_config {
        return Some((Tier::T4, "path.gate_config"));
    }
    let data_store = [
        "postgresql",
        "mysql",
        "mongodb",
        "redis",
        "etcd",
        "elasticsearch",
    ]
    .iter()
    .any(|d| has_seq(&["var", "lib", d]))
        || has_seq(&["var", "lib", "docker", "volumes"]);
    if absolute && data_store {
        return Some((Tier::T4, "path.data_store"));
    }
    let runs_later = has_seq(&[".git", "hooks"])
        || (has(".git") && last == "config")
        || matches!(
            last,
            ".bashrc"
                | ".bash_profile"
                | ".bash_login"
                | ".bash_logout"
                | ".profile"
                | ".zshrc"
                | ".zshenv"
                | ".zprofile"
                | ".zlogin"
                | ".envrc"
                | "config.fish"
                | "authorized_keys"
                | "authorized_keys2"
                | "crontab"
        )
        || (has(".ssh") && matches!(last, "config" | "rc" | "environment"))
        || has_seq(&["etc", "sudoers.d"])
        || last == "sudoers"
        || parts.iter().any(|p| p.starts_with("cron"))
            && (has("etc") || has_seq(&["var", "spool"]))
        || has("systemd") && (last.ends_with(".service") || last.ends_with(".timer"))
        || has_seq(&["etc", "profile.d"]);
    if runs_later {
        return Some((Tier::T3, "path.runs_later"));
    }
    let system = absolute
        && matches!(
            parts.first().map(String::as_str),
            Some(
                "etc"
                    | "boot"
                    | "usr"
                    | "bin"
                    | "sbin"
                    | "lib"
                    | "lib64"
                    | "var"
                    | "opt"
                    | "sys"
                    | "proc"
                    | "dev"
            )
        );
    if system {
        return Some((Tier::T3, "path.system"));
    }
    None
}

/// The path's components, lowercased, with `\` read as `/` and `.`/`..` resolved (a `..` above
/// the start is dropped, as the root's parent is the root).
fn components(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p.to_lowercase()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(path: &str) -> (u8, Vec<&'static str>) {
        let mut v = Verdict::default();
        apply(path, &mut v);
        (v.tier.get(), v.rules)
    }

    #[test]
    fn the_gates_own_files_need_an_approval() {
        for p in [
            ".claude/settings.json",
            "/home/me/app/.claude/settings.local.json",
            "~/.claude/settings.json",
            "C:\\Users\\me\\app\\.Claude\\Settings.JSON",
            "src/../.claude/./settings.json",
            ".cycles/cycles.toml",
            ".cycles/policy.toml",
            "cycles.toml",
            "/srv/agent/cycles.db",
            "/srv/agent/cycles.db-wal",
            ".mcp.json",
            "/home/me/.config/Claude/claude_desktop_config.json",
            ".claude/hooks/pre.sh",
        ] {
            assert_eq!(tier(p), (4, vec!["path.gate_config"]), "{p}");
        }
    }

    #[test]
    fn files_that_run_code_later_and_system_paths() {
        for p in [
            ".git/hooks/pre-commit",
            "repo/.git/config",
            "/home/me/.bashrc",
            "~/.zshrc",
            ".envrc",
            "/root/.ssh/authorized_keys",
            "~/.ssh/config",
            "/etc/cron.d/job",
            "/etc/sudoers.d/agent",
            "/home/me/.config/systemd/user/x.service",
        ] {
            assert_eq!(tier(p), (3, vec!["path.runs_later"]), "{p}");
        }
        assert_eq!(tier("/etc/hosts"), (3, vec!["path.system"]));
        assert_eq!(tier("/usr/local/bin/tool"), (3, vec!["path.system"]));
        assert_eq!(
            tier("/var/lib/postgresql/15/main/PG_VERSION"),
            (4, vec!["path.data_store"])
        );
    }

    #[test]
    fn ordinary_files_stay_ordinary() {
        for p in [
            "src/lib.rs",
            "README.md",
            "/home/me/project/docs/settings.json",
            "config/settings.json",
            "notes/cycles-design.md",
            "/tmp/out.txt",
            "src/.github/workflows/ci.yml",
            "etc/app.conf",
            "crontab.md",
        ] {
            assert_eq!(tier(p), (0, vec!["path.ordinary"]), "{p}");
        }
    }

    #[test]
    fn unreadable_paths_fail_closed() {
        assert_eq!(tier(""), (4, vec!["path.unreadable"]));
        assert_eq!(tier("  "), (4, vec!["path.unreadable"]));
        assert_eq!(tier("a\0b"), (4, vec!["path.unreadable"]));
    }
}
