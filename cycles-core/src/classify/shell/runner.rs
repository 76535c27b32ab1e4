//! Package managers and runners that run another program: `npx`, `npm exec`, `pnpm dlx`,
//! `yarn <bin>`, `bunx`, `bundle exec`, `poetry run`, `uv run`, `uvx`, `pipx run`,
//! `pipenv run`, `pdm run`, `hatch run`, `rye run`, `conda run`.
//!
//! What they run is what counts: `npx prisma migrate reset --force` drops the database the
//! project points at, however harmless `npx` looks.

/// The package managers and runners this module knows.
const RUNNERS: &[&str] = &[
    "npx",
    "bunx",
    "pnpx",
    "uvx",
    "npm",
    "yarn",
    "pnpm",
    "bun",
    "bundle",
    "poetry",
    "pdm",
    "pipenv",
    "rye",
    "conda",
    "mamba",
    "micromamba",
    "pipx",
    "hatch",
    "uv",
];

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
        "yarn" => &[
            "--cwd",
            "-p",
            "--package",
            "--mutex",
            "--network-timeout",
            "--modules-folder",
            "--cache-folder",
            "--registry",
        ],
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
        "bundle" => &["--gemfile"],
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

/// What a runner invocation runs.
pub(super) struct Run {
    /// Where the program's words start in the runner's arguments.
    pub(super) start: usize,
    /// The runner fetches a package to run it (`npx`, `pnpm dlx`, `uvx`): an unknown program
    /// is someone else's code, not one of the project's own scripts or binaries.
    pub(super) fetches: bool,
}

/// Subcommands of `bun` that are its own (any other word names a script, a file or a
/// package's program: `bun prisma migrate reset`).
const BUN_BUILTINS: &[&str] = &[
    "install", "i", "add", "a", "remove", "rm", "update", "link", "unlink", "pm", "build", "test",
    "init", "create", "c", "upgrade", "repl", "outdated", "publish", "patch", "audit", "info",
    "why", "exec",
];

/// The first operand at or after `from` that is one of `words`, and the operand after it.
fn after_word(rest: &[String], from: usize, opts: &[&str], words: &[&str]) -> Option<usize> {
    let mut i = from;
    while let Some(at) = first_operand(rest, i, opts) {
        if words.contains(&rest[at].as_str()) {
            return first_operand(rest, at + 1, opts);
        }
        i = at + 1;
    }
    None
}

/// What `runner` runs, or `None` when this invocation runs no other program (`npm install`,
/// `poetry add`, `bundle install`).
pub(super) fn command_start(runner: &str, rest: &[String]) -> Option<Run> {
    // Every shell command comes through here: other programs leave at once.
    if !RUNNERS.contains(&runner) {
        return None;
    }
    let opts = value_options(runner);
    let run = |start: Option<usize>, fetches: bool| start.map(|start| Run { start, fetches });
    if matches!(runner, "npx" | "bunx" | "pnpx" | "uvx") {
        return run(first_operand(rest, 0, opts), true);
    }
    let sub = first_operand(rest, 0, opts)?;
    let word = rest[sub].as_str();
    match runner {
        // `npm exec` fetches a package that is not installed; `npm run` runs a script.
        "npm" => {
            let exec = after_word(rest, 0, opts, &["exec", "x"]);
            let script = after_word(rest, 0, opts, &["run", "run-script", "rum", "urn"]);
            match (exec, script) {
                (Some(e), Some(s)) if s < e => run(Some(s), false),
                (Some(e), _) => run(Some(e), true),
                (None, s) => run(s, false),
            }
        }
        "yarn" | "pnpm" => match word {
            "dlx" => run(first_operand(rest, sub + 1, opts), true),
            "exec" | "run" => run(first_operand(rest, sub + 1, opts), false),
            // `yarn workspace NAME <command>`
            "workspace" => {
                let name = first_operand(rest, sub + 1, opts)?;
                run(first_operand(rest, name + 1, opts), false)
            }
            // `yarn workspaces foreach -A run <script>`, `pnpm recursive exec <program>`
            "workspaces" | "recursive" => {
                run(after_word(rest, sub + 1, opts, &["exec", "run"]), false)
            }
            w if YARN_PNPM_BUILTINS.contains(&w) => None,
            _ => run(Some(sub), false),
        },
        "bun" => match word {
            "x" => run(first_operand(rest, sub + 1, opts), true),
            "run" => run(first_operand(rest, sub + 1, opts), false),
            w if BUN_BUILTINS.contains(&w) => None,
            _ => run(Some(sub), false),
        },
        "bundle" if word == "exec" => run(first_operand(rest, sub + 1, opts), false),
        "poetry" | "pdm" | "pipenv" | "rye" | "conda" | "mamba" | "micromamba" if word == "run" => {
            run(first_operand(rest, sub + 1, opts), false)
        }
        "pipx" if word == "run" => run(first_operand(rest, sub + 1, opts), true),
        // `hatch run [ENV:]CMD`, `hatch env run -e ENV CMD`
        "hatch" if word == "run" => run(first_operand(rest, sub + 1, opts), false),
        "hatch" if word == "env" => run(after_word(rest, sub + 1, opts, &["run"]), false),
        "uv" if word == "run" => run(first_operand(rest, sub + 1, opts), false),
        "uv" if word == "tool" => run(after_word(rest, sub + 1, opts, &["run"]), true),
        _ => None,
    }
}

/// The program a package name or a runner's word runs: `prisma@5.2.0` → `prisma`,
/// `@mikro-orm/cli` → `mikro-orm` (a scope's `cli` package is the scope's program),
/// `@scope/tool` → `tool`.
pub(super) fn package_program(word: &str) -> &str {
    let unscoped = match word.strip_prefix('@') {
        Some(scoped) => match scoped.split_once('/') {
            Some((scope, "cli")) => scope,
            Some((scope, name)) if name.starts_with("cli@") => scope,
            Some((_, name)) => name,
            None => scoped,
        },
        None => word,
    };
    let package = unscoped.split('@').next().unwrap_or(unscoped);
    // npm packages whose program has another name.
    match package {
        "aws-cdk" => "cdk",
        "cdktf-cli" => "cdktf",
        "firebase-tools" => "firebase",
        "netlify-cli" => "netlify",
        "aws-amplify" | "amplify-cli" => "amplify",
        other => other,
    }
}
