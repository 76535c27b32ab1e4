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
    let path = &*rooted(path);
    let path_parts = components(path);
    let parts = &path_parts.parts;
    // A relative path that climbs two or more levels above where it starts may reach `/` from
    // wherever the tool runs (`../../../../etc/hosts`): it is read as absolute too.
    // A Windows path from a drive's root (`C:\Program Files\...`) is absolute too.
    let drive_root = path.as_bytes().get(..3).is_some_and(|b| {
        b[0].is_ascii_alphabetic() && b[1] == b':' && matches!(b[2], b'/' | b'\\')
    });
    let absolute =
        path.starts_with('/') || path.starts_with('\\') || drive_root || path_parts.escapes >= 2;

    if path_parts.short_name_readings().iter().any(gate_config) {
        return Some((Tier::T4, "path.gate_config"));
    }
    if absolute && data_store(&path_parts) {
        return Some((Tier::T4, "path.data_store"));
    }
    if runs_later(&path_parts) {
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

/// The gate's own configuration and code: the policy and ledger, the hook and MCP
/// configuration that puts the gate in front of the agent, and the gate's binaries and
/// libraries (a script written over `~/.cargo/bin/cycles` keeps its exec bit and answers
/// "allow" to every later call).
fn gate_config(path: &Components) -> bool {
    let (parts, last, parent) = (&path.parts, path.last(), path.parent());
    let (has, has_seq) = (|n: &str| path.has(n), |s: &[&str]| path.has_seq(s));
    let policy_or_ledger = has(".cycles") || last == "cycles.toml" || last.starts_with("cycles.db");
    // Claude Code: project and user settings, the hooks directory, `~/.claude.json` (where
    // `claude mcp add` keeps servers), managed settings (they can define or disable hooks).
    let claude = (has(".claude") && last.starts_with("settings") && last.ends_with(".json"))
        || has_seq(&[".claude", "hooks"])
        || matches!(
            last,
            ".claude.json"
                | "managed-settings.json"
                | "managed-mcp.json"
                | "claude_desktop_config.json"
                | ".mcp.json"
        );
    // Other editors' MCP and hook files: they can put an ungated server beside the gate.
    let editors = matches!(
        (parent, last),
        (".cursor", "mcp.json" | "hooks.json")
            | (".vscode", "mcp.json")
            | (".gemini", "settings.json")
    );
    // In a bin directory, and where npm (`%APPDATA%\npm`) and pnpm (`$PNPM_HOME`,
    // `~/.local/share/pnpm`) put global commands.
    let binary = matches!(parent, "bin" | ".bin" | "scripts" | "npm" | "pnpm")
        && matches!(
            last.trim_end_matches(".exe")
                .trim_end_matches(".cmd")
                .trim_end_matches(".ps1"),
            "cycles" | "cycles-mcp-gate"
        );
    // The bindings' native modules and packages (`cycles.linux-x64-gnu.node`,
    // `site-packages/cycles/_cycles.abi3.so`); the npm package `cycles-node` is also the MCP
    // gate (`node_modules/cycles-node/mcp-gate/gate.mjs`, its loader `cycles.js`).
    let library = (last.starts_with("cycles.") && last.ends_with(".node"))
        || parts
            .iter()
            .skip_while(|p| *p != "node_modules")
            .any(|p| p == "cycles-node")
        || parts.windows(2).any(|w| {
            matches!(w[0].as_str(), "site-packages" | "dist-packages")
                && (w[1] == "cycles" || w[1].starts_with("cycles-"))
        });
    policy_or_ledger || claude || editors || binary || library
}

/// Data stores' files: writing one corrupts or destroys the store.
fn data_store(path: &Components) -> bool {
    let (parts, has_seq) = (&path.parts, |s: &[&str]| path.has_seq(s));
    const STORES: [&str; 16] = [
        "postgresql",
        "postgres",
        "pgsql",
        "mysql",
        "mariadb",
        "mongodb",
        "mongo",
        "redis",
        "etcd",
        "elasticsearch",
        "opensearch",
        "cassandra",
        "clickhouse",
        "influxdb",
        "neo4j",
        "couchdb",
    ];
    let store = |name: &str| {
        // `postgresql@16`, `mysql-8.0`, `var-16` under Postgres.app are versions of one store.
        let base = name.split(['@', '-']).next().unwrap_or(name);
        STORES.contains(&base)
    };
    // The store's name is a directory's, not the file's (`var/mongo-seed.json` is a file).
    let dirs = &parts[..parts.len().saturating_sub(1)];
    dirs.windows(3).any(|w| w[0] == "var" && w[1] == "lib" && store(&w[2]))
        // Homebrew keeps data in `<prefix>/var/<store>`.
        || dirs.windows(2).any(|w| w[0] == "var" && store(&w[1]))
        || has_seq(&["var", "lib", "docker", "volumes"])
        // Rootless Docker.
        || has_seq(&[".local", "share", "docker", "volumes"])
        || has_seq(&["containers", "storage", "volumes"])
        // MongoDB's default `dbPath` (also the official image's).
        || parts.len() > 2 && parts[0] == "data" && matches!(parts[1].as_str(), "db" | "configdb")
        // Windows installers: `C:\Program Files\PostgreSQL\16\data`, `C:\ProgramData\MySQL\MySQL
        // Server 8.0\Data`.
        || dirs.windows(2).enumerate().any(|(i, w)| {
            matches!(
                w[0].as_str(),
                "program files" | "program files (x86)" | "programdata"
            ) && store(&w[1])
                && dirs[i + 2..].iter().any(|d| d == "data")
        })
        // Postgres.app.
        || has_seq(&["application support", "postgres"])
}

/// Files that run code later, outside any gate.
fn runs_later(path: &Components) -> bool {
    let (parts, last, parent) = (&path.parts, path.last(), path.parent());
    let (has, has_seq) = (|n: &str| path.has(n), |s: &[&str]| path.has_seq(s));
    // Git: hooks (also of submodules under `.git/modules/*/hooks` and of bare repositories,
    // `app.git/hooks`), hook directories named by `core.hooksPath`, and config, whose
    // `core.fsmonitor`, `core.hooksPath`, `core.pager` and `!` aliases run commands.
    let git = parts
        .windows(2)
        .any(|w| w[0].ends_with(".git") && w[1] == "hooks")
        || (has(".git") && (has("hooks") || last == "config"))
        || has(".husky")
        || has(".githooks")
        || last == ".gitconfig"
        || has_seq(&[".config", "git"]) && last == "config";
    let shell_startup = matches!(
        last,
        ".bashrc"
            | ".bash_profile"
            | ".bash_login"
            | ".bash_logout"
            | ".bash_aliases"
            | ".profile"
            | ".zshrc"
            | ".zshenv"
            | ".zprofile"
            | ".zlogin"
            | ".envrc"
            | "config.fish"
    ) || has_seq(&["fish", "conf.d"])
        || has_seq(&["etc", "profile.d"])
        || (last.ends_with("profile.ps1") && (has("powershell") || has("windowspowershell")));
    let ssh = matches!(
        last,
        "authorized_keys" | "authorized_keys2" | "administrators_authorized_keys"
    ) || (has(".ssh") && matches!(last, "config" | "rc" | "environment"));
    let privilege = has_seq(&["etc", "sudoers.d"])
        || last == "sudoers"
        || last == "ld.so.preload"
        || has_seq(&["etc", "ld.so.conf.d"]);
    let scheduled = last == "crontab"
        || parts.iter().any(|p| p.starts_with("cron")) && (has("etc") || has_seq(&["var", "spool"]))
        // systemd units and their drop-ins (`x.service.d/override.conf` can replace ExecStart).
        || has("systemd")
            && ([".service", ".timer", ".socket", ".path", ".mount"]
                .iter()
                .any(|s| last.ends_with(s))
                || parent.ends_with(".d"))
        || has("launchagents")
        || has("launchdaemons")
        || has_seq(&[".config", "autostart"])
        || has_seq(&["xdg", "autostart"])
        || has_seq(&["start menu", "programs", "startup"]);
    // Python runs `.pth` files and `sitecustomize` at every interpreter start.
    let python = (has("site-packages") || has("dist-packages"))
        && (last.ends_with(".pth") || matches!(last, "sitecustomize.py" | "usercustomize.py"));
    git || shell_startup || ssh || privilege || scheduled || python
}

/// A path's components and how many levels its `..`s climb above its start.
struct Components {
    parts: Vec<String>,
    escapes: usize,
}

impl Components {
    /// The file's name ("" for none).
    fn last(&self) -> &str {
        self.parts.last().map_or("", String::as_str)
    }

    /// The name of the directory holding the file ("" for none).
    fn parent(&self) -> &str {
        self.parts
            .len()
            .checked_sub(2)
            .map_or("", |i| self.parts[i].as_str())
    }

    /// The path as read with each 8.3 short name (`CLAUDE~1`) taken as every gate name it
    /// may stand for (the path itself first); a few short names at most are expanded.
    fn short_name_readings(&self) -> Vec<Components> {
        let mut readings = vec![Components {
            parts: self.parts.clone(),
            escapes: self.escapes,
        }];
        for (i, part) in self.parts.iter().enumerate() {
            let targets = short_name_targets(part);
            if targets.is_empty() || readings.len() > 64 {
                continue;
            }
            let mut more = Vec::new();
            for reading in &readings {
                for target in &targets {
                    let mut parts = reading.parts.clone();
                    parts[i] = target.to_string();
                    more.push(Components {
                        parts,
                        escapes: reading.escapes,
                    });
                }
            }
            readings.extend(more);
        }
        readings
    }

    /// Whether any component is `name`.
    fn has(&self, name: &str) -> bool {
        self.parts.iter().any(|p| p == name)
    }

    /// Whether the components hold `seq` consecutively, e.g. `[".git", "hooks"]`.
    fn has_seq(&self, seq: &[&str]) -> bool {
        self.parts
            .windows(seq.len())
            .any(|w| w.iter().eq(seq.iter()))
    }
}

/// The path's components, case-folded, with `\` read as `/` and `.`/`..` resolved. Each
/// component is read as Windows and case-insensitive file systems open it: an NTFS stream
/// suffix (`settings.json::$DATA` is the file itself) and trailing dots and spaces are
/// dropped, and letters compare by case folding (`ſ` is `s` on APFS), not only lowercase.
fn components(path: &str) -> Components {
    let mut parts: Vec<String> = Vec::new();
    let mut escapes = 0;
    for (i, part) in path.split(['/', '\\']).enumerate() {
        // A drive (`C:`) keeps its colon, and what follows it is a name in the drive's current
        // directory (`C:.claude` is `.claude`); elsewhere a colon starts a stream name.
        let drive = i == 0
            && part.len() >= 2
            && part.as_bytes()[0].is_ascii_alphabetic()
            && part.as_bytes()[1] == b':';
        let part = if drive {
            parts.push(fold(&part[..2]));
            &part[2..]
        } else {
            part
        };
        let part = match part.find(':') {
            Some(at) => &part[..at],
            None => part,
        };
        let part = match part {
            "." | ".." => part,
            p => p.trim_end_matches(['.', ' ']),
        };
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    escapes += 1;
                }
            }
            p => parts.push(fold(p)),
        }
    }
    Components { parts, escapes }
}

/// `path` with a prefix that names a root written as one: a `file:` URL's path
/// (`file:///var/lib/...`, percent-decoded), and the home directory (`~`, `~user`, `$HOME`,
/// `${HOME}`, `%USERPROFILE%`) as a directory one level below `/`, so that
/// `~/../../var/lib/postgresql` climbs to the root (home is at least one level deep: `/root`).
fn rooted(path: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    let mut out = Cow::Borrowed(path);
    if let Some(rest) = path
        .get(..5)
        .filter(|scheme| scheme.eq_ignore_ascii_case("file:"))
        .map(|_| &path[5..])
    {
        // `file://host/path`: the host ends at the next slash.
        let rest = match rest.strip_prefix("//") {
            Some(host_and_path) => host_and_path
                .find('/')
                .map_or("/", |at| &host_and_path[at..]),
            None => rest,
        };
        // `file:///C:/x` names `C:/x`.
        let rest = match rest.as_bytes() {
            [b'/', d, b':', ..] if d.is_ascii_alphabetic() => &rest[1..],
            _ => rest,
        };
        out = Cow::Owned(percent_decoded(rest));
    }
    let first = out.split(['/', '\\']).next().unwrap_or("");
    let home = first.starts_with('~')
        || ["$home", "${home}", "%userprofile%", "$env:userprofile"]
            .iter()
            .any(|h| first.eq_ignore_ascii_case(h));
    if home && first.len() < out.len() {
        out = Cow::Owned(format!("/~{}", &out[first.len()..]));
    } else if home {
        out = Cow::Borrowed("/~");
    }
    out
}

/// `%XX` escapes decoded (invalid ones and invalid UTF-8 left as they are).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|&b| hex(b)),
            bytes.get(i + 2).and_then(|&b| hex(b)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_string())
}

/// Names of the gate's files and directories whose NTFS 8.3 short name (`SETTIN~1.JSO`,
/// `CLAUDE~1`, `MCP~1.JSO`) opens them where short names are generated.
const GATE_LONG_NAMES: &[&str] = &[
    ".claude",
    ".cycles",
    ".cursor",
    ".vscode",
    ".gemini",
    "settings.json",
    "settings.local.json",
    "cycles.toml",
    ".mcp.json",
    ".claude.json",
    "mcp.json",
    "hooks.json",
    "managed-settings.json",
    "managed-mcp.json",
    "claude_desktop_config.json",
    "cycles-mcp-gate",
    "cycles-mcp-gate.cmd",
    "cycles-mcp-gate.ps1",
    "cycles-node",
    "node_modules",
    "site-packages",
    "claudecode",
    "claude-code",
    // The ledger's SQLite files: `cycles.db-wal` is `CYCLES~1.DB-` (its pages are replayed into
    // the ledger on the next open).
    "cycles.db",
    "cycles.db-wal",
    "cycles.db-shm",
    "cycles.db-journal",
];

/// The gate names an 8.3 short name (`settin~1.jso`, folded) may stand for: those whose name
/// without dots starts with the part before `~`, and whose extension starts with the short
/// one. Empty for a name that is not a short name.
fn short_name_targets(name: &str) -> Vec<&'static str> {
    let Some((stem, tail)) = name.split_once('~') else {
        return Vec::new();
    };
    let (digits, ext) = tail.split_once('.').unwrap_or((tail, ""));
    let short = (1..=6).contains(&stem.len())
        && !stem.contains('.')
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && ext.len() <= 3
        && !ext.contains('~');
    if !short {
        return Vec::new();
    }
    GATE_LONG_NAMES
        .iter()
        .copied()
        .filter(|long| {
            let trimmed = long.trim_start_matches('.');
            let (base, long_ext) = match trimmed.rsplit_once('.') {
                Some((b, e)) => (b, e),
                None => (trimmed, ""),
            };
            let base: String = base.chars().filter(|c| !matches!(c, '.' | ' ')).collect();
            base.starts_with(stem)
                && (ext.is_empty() && long_ext.is_empty()
                    || !ext.is_empty() && long_ext.starts_with(ext))
        })
        .collect()
}

/// Case folding, closely enough for names compared with ASCII ones: upper then lower case
/// maps `ſ` to `s` and `K` (Kelvin) to `k` as Unicode's folding does.
fn fold(name: &str) -> String {
    if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        name.to_uppercase().to_lowercase()
    }
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
            // The gate's binaries and libraries, replaced by a script that answers "allow".
            "/home/me/.cargo/bin/cycles",
            "C:\\Users\\me\\.cargo\\bin\\cycles.exe",
            "/home/me/app/node_modules/.bin/cycles-mcp-gate",
            "/home/me/app/node_modules/@cycles/core/cycles.linux-x64-gnu.node",
            "/home/me/.venv/lib/python3.12/site-packages/cycles/_cycles.abi3.so",
            // Claude Code's other configuration; other editors' MCP and hook files.
            "/home/me/.claude.json",
            "/etc/claude-code/managed-settings.json",
            "/Library/Application Support/ClaudeCode/managed-settings.json",
            "/home/me/app/.cursor/mcp.json",
            "/home/me/app/.vscode/mcp.json",
            "/home/me/.gemini/settings.json",
            // Names Windows and case-insensitive file systems open as the gate's files: an
            // NTFS stream of the file itself, trailing dots, case folding (`ſ` is `s`).
            "C:\\Users\\me\\app\\.claude\\settings.json::$DATA",
            ".claude\\settings.json.",
            ".claude/settings.json ",
            ".claude/\u{17f}ettings.json",
            ".cycle\u{17f}/policy.toml",
            // The npm package (the MCP gate) and npm/pnpm global commands.
            "/home/me/app/node_modules/cycles-node/mcp-gate/gate.mjs",
            "/home/me/app/node_modules/.pnpm/cycles-node@0.1.0/node_modules/cycles-node/index.js",
            "C:\\Users\\me\\AppData\\Roaming\\npm\\cycles-mcp-gate.ps1",
            "/home/me/.local/share/pnpm/cycles",
            // Drive-relative paths, 8.3 short names, home and file: URL prefixes.
            "C:.claude\\settings.json",
            "c:.cycles/policy.toml",
            "C:\\app\\.claude\\SETTIN~2.JSO",
            "C:\\app\\MCP~1.JSO",
            "C:\\app\\CYCLES~1.TOM",
            "file:///home/me/app/.claude/settings.json",
            "file://localhost/home/me/app/.c%6Caude/settings.json",
        ] {
            assert_eq!(tier(p), (4, vec!["path.gate_config"]), "{p}");
        }
    }

    #[test]
    fn relative_paths_that_climb_to_the_root_are_read_as_absolute() {
        assert_eq!(
            tier("../../../../../../../../var/lib/postgresql/16/main/global/pg_control"),
            (4, vec!["path.data_store"])
        );
        assert_eq!(tier("../../../../etc/hosts"), (3, vec!["path.system"]));
        // One level up is a sibling directory, not the root.
        assert_eq!(tier("../etc/app.conf"), (0, vec!["path.ordinary"]));
        assert_eq!(tier("../src/main.rs"), (0, vec!["path.ordinary"]));
        // The home directory is at least one level below the root (`/root`).
        assert_eq!(tier("~/../etc/hosts"), (3, vec!["path.system"]));
        assert_eq!(tier("${HOME}/../../etc/hosts"), (3, vec!["path.system"]));
        assert_eq!(tier("~/notes/etc/hosts"), (0, vec!["path.ordinary"]));
    }

    #[test]
    fn data_stores_of_other_layouts() {
        for p in [
            "/var/lib/pgsql/data/global/pg_control",
            "/var/lib/mongo/WiredTiger",
            "/var/lib/mysql-8.0/ibdata1",
            "/opt/homebrew/var/postgresql@16/PG_VERSION",
            "/usr/local/var/mysql/ibdata1",
            "/var/lib/containers/storage/volumes/pgdata/_data/PG_VERSION",
            "/Users/me/Library/Application Support/Postgres/var-16/global/pg_control",
        ] {
            assert_eq!(tier(p), (4, vec!["path.data_store"]), "{p}");
        }
        // A file named after a store is not its data directory.
        assert_eq!(
            tier("/home/me/app/var/mongo-seed.json"),
            (0, vec!["path.ordinary"])
        );
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
            "/home/me/.gitconfig",
            "/home/me/.config/git/config",
            "/home/me/app/.git/modules/vendor/hooks/pre-commit",
            "/srv/git/app.git/hooks/post-receive",
            "/home/me/app/.husky/pre-commit",
            "/home/me/app/.githooks/pre-push",
            "/home/me/.bash_aliases",
            "/home/me/.config/fish/conf.d/x.fish",
            "/Users/me/Library/LaunchAgents/com.example.agent.plist",
            "/Library/LaunchDaemons/com.example.plist",
            "/home/me/.config/autostart/x.desktop",
            "/home/me/.config/systemd/user/backup.service.d/override.conf",
            "/home/me/app/.venv/lib/python3.12/site-packages/zzz.pth",
            "/usr/lib/python3/dist-packages/sitecustomize.py",
            "/etc/ld.so.preload",
            "C:\\Users\\me\\AppData\\Roaming\\Microsoft\\Windows\\Start Menu\\Programs\\Startup\\x.bat",
            "C:\\Users\\me\\Documents\\PowerShell\\Microsoft.PowerShell_profile.ps1",
            "C:\\ProgramData\\ssh\\administrators_authorized_keys",
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
            "src/bin/cycles.rs",
            "/home/me/cycles/src/lib.rs",
            "/home/me/app/hooks/useAuth.ts",
            "/home/me/app/src/git/config.ts",
            "/home/me/app/.vscode/settings.json",
            "/home/me/app/docs/settings.json",
            "/home/me/app/site-packages.md",
        ] {
            assert_eq!(tier(p), (0, vec!["path.ordinary"]), "{p}");
        }
    }

    #[test]
    fn unreadable_paths_fail_closed() {
        assert_eq!(tier(""), (4, vec!["path.unreadable"]));
        assert_eq!(tier("  "), (4, vec!["path.unreadable"]));
        assert_eq!(tier("a\0b"), (4, vec!["path.unreadable"]));
        // A multi-byte character where a scheme or a drive would be is a name.
        assert_eq!(tier("abcd\u{e9}x/y"), (0, vec!["path.ordinary"]));
        assert_eq!(tier("\u{e9}:x"), (0, vec!["path.ordinary"]));
    }
}
