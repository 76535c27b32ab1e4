//! Package managers and runners that run another program: `npx`, `npm exec`, `pnpm dlx`,
//! `yarn <bin>`, `bunx`, `bundle exec`, `poetry run`, `uv run`, `uvx`, `pipx run`,
//! `pipenv run`, `pdm run`, `hatch run`, `rye run`, `conda run`.
//!
//! What they run is what counts: `npx prisma migrate reset --force` drops the database the
//! project points at, however harmless `npx` looks.

/// Options that take a value, per runner (before and after the subcommand).
fn value_options(runner: &str) -> &'static [&'static str] {
    match runner {
        "npx" | "bunx" | "pnpx" => &["-p", "--package", "-c", "--call"],
        "npm" => &[
            "-p",
            "--package",
            "--prefix",
            "-w",
            "--workspace",
            "-C",
            "-c",
            "--call",
        ],
        "pnpm" => &["-C", "--dir", "-F", "--filter", "--package", "-c", "--call"],
        "yarn" => &["--cwd", "-p", "--package"],
        "bun" => &["--cwd", "-p", "--package"],
        "uv" | "uvx" => &[
            "--with",
            "--with-editable",
            "--with-requirements",
            "-p",
            "--python",
            "--project",
            "--directory",
            "--env-file",
            "--extra",
            "--group",
            "--package",
            "--index",
            "--index-url",
            "--extra-index-url",
            "--from",
        ],
        "poetry" | "pdm" => &["-C", "--directory", "-P", "--project", "-p"],
        "pipx" => &["--spec", "--python", "--pip-args"],
        "hatch" => &["-e", "--env"],
        "conda" | "mamba" | "micromamba" => &["-n", "--name", "-p", "--prefix", "--cwd"],
        _ => &[],
    }
}

/// Subcommands of `yarn` and `pnpm` that are their own (any other word names a script or a
/// package's program: `yarn prisma migrate reset`).
const YARN_PNPM_BUILTINS: &[&str] = &[
    "add",
    "install",
    "i",
    "remove",
    "rm",
    "upgrade",
    "up",
    "update",
    "init",
    "create",
    "info",
    "why",
    "list",
    "ls",
    "outdated",
    "audit",
    "cache",
    "config",
    "global",
    "link",
    "unlink",
    "pack",
    "publish",
    "version",
    "versions",
    "workspaces",
    "set",
    "plugin",
    "node",
    "constraints",
    "dedupe",
    "explain",
    "npm",
    "patch",
    "patch-commit",
    "rebuild",
    "search",
    "stage",
    "unplug",
    "bin",
    "import",
    "licenses",
    "login",
    "logout",
    "owner",
    "policies",
    "tag",
    "team",
    "check",
    "autoclean",
    "help",
    "store",
    "prune",
    "fetch",
    "deploy",
    "env",
    "setup",
    "server",
    "root",
    "doctor",
    "test",
    "start",
    "build",
    "unpublish",
    "deprecate",
    "dist-tag",
    "access",
    "whoami",
];

/// The first word at or after `from` that is not an option (nor an option's value); after
/// `--`, the word that follows it.
fn first_operand(rest: &[String], from: usize, with_value: &[&str]) -> Option<usize> {
    let mut i = from;
    while i < rest.len() {
        let a = rest[i].as_str();
        if a == "--" {
            return (i + 1 < rest.len()).then_some(i + 1);
        }
        if !a.starts_with('-') || a.len() == 1 {
            return Some(i);
        }
        i += if with_value.contains(&a) { 2 } else { 1 };
    }
    None
}

/// Where the program a runner runs starts in `rest`, or `None` when this invocation runs no
/// other program (`npm install`, `poetry add`, `bundle install`).
pub(super) fn command_start(runner: &str, rest: &[String]) -> Option<usize> {
    let opts = value_options(runner);
    match runner {
        "npx" | "bunx" | "pnpx" | "uvx" => first_operand(rest, 0, opts),
        _ => {
            let sub = first_operand(rest, 0, opts)?;
            let after = |words: &[&str]| {
                if words.contains(&rest[sub].as_str()) {
                    first_operand(rest, sub + 1, opts)
                } else {
                    None
                }
            };
            match runner {
                "npm" => after(&["exec", "x", "run", "run-script", "rum", "urn"]),
                "pnpm" if !YARN_PNPM_BUILTINS.contains(&rest[sub].as_str()) => {
                    after(&["dlx", "exec", "run"]).or(Some(sub))
                }
                "yarn" if rest[sub] == "workspace" => {
                    // `yarn workspace NAME <command>`
                    let name = first_operand(rest, sub + 1, opts)?;
                    first_operand(rest, name + 1, opts)
                }
                "yarn" if !YARN_PNPM_BUILTINS.contains(&rest[sub].as_str()) => {
                    after(&["dlx", "exec", "run"]).or(Some(sub))
                }
                "bun" => after(&["x", "run", "exec"]),
                "bundle" => after(&["exec"]),
                "poetry" | "pdm" | "pipenv" | "rye" | "hatch" | "pipx" | "conda" | "mamba"
                | "micromamba" => after(&["run"]),
                "uv" if rest[sub] == "tool" => {
                    let run = first_operand(rest, sub + 1, opts)?;
                    (rest[run] == "run")
                        .then(|| first_operand(rest, run + 1, opts))
                        .flatten()
                }
                "uv" => after(&["run"]),
                _ => None,
            }
        }
    }
}

/// Whether the runner fetches a package to run it (so an unknown program is someone else's
/// code, not one of the project's scripts).
pub(super) fn fetches(runner: &str, rest: &[String]) -> bool {
    matches!(runner, "npx" | "bunx" | "pnpx" | "uvx")
        || rest
            .iter()
            .any(|w| matches!(w.as_str(), "dlx" | "x" | "exec" | "tool"))
            && matches!(runner, "npm" | "pnpm" | "yarn" | "bun" | "uv")
        || runner == "pipx"
}

/// The program a package name runs: `prisma@5.2.0` → `prisma`, `@prisma/cli` → `cli`,
/// `sequelize-cli@latest` → `sequelize-cli`.
pub(super) fn program_name(word: &str) -> &str {
    let unscoped = match word.strip_prefix('@') {
        Some(scoped) => scoped.split_once('/').map_or(scoped, |(_, name)| name),
        None => word,
    };
    unscoped.split('@').next().unwrap_or(unscoped)
}
