//! Commands hidden in an option, a configuration key or an environment variable of another
//! program: `git -c core.pager='rm -rf /' log`, `GIT_SSH_COMMAND=... git fetch`,
//! `tar --to-command=...`, `ssh -o ProxyCommand=...`, `rsync -e ...`, `vim -c '!...'`,
//! `make --eval=...`, `gdb -ex 'shell ...'`, `socat EXEC:...`, `nc -e /bin/sh`, text `expect`
//! sends to a program it spawns, ...
//!
//! Each hidden command is classified by the same machinery as a command written out
//! ([`script`] / [`command`]), so the program is rated at least as high as what it runs; a
//! command we cannot read (a hooks directory, an included config file, a makefile on a pipe)
//! is tier 4 (`shell.hidden_command_unseen`), as for a shell reading unseen input; so is a
//! variable that makes programs load code we cannot read (`LD_PRELOAD`, `BASH_ENV`,
//! `PYTHONPATH`, `GIT_CONFIG_GLOBAL`, ...: `shell.env_code_unseen`), unless it names only
//! paths inside the working tree (`PYTHONPATH=src pytest`: `shell.env_code_local`, tier 2, as
//! a script file).

use super::{SUBST, Stdin, command, inline_code, is_assignment, operands, option_values, script};
use crate::classify::Verdict;
use crate::model::Tier;

/// Classifies `text` as a shell command line that another program runs.
pub(super) fn run(text: &str, d: usize, v: &mut Verdict) {
    v.raise(Tier::T0, "shell.hidden_command");
    script(text, d, v);
}

/// A command we cannot read is run: fail closed.
fn unseen(v: &mut Verdict) {
    v.raise(Tier::T4, "shell.hidden_command_unseen");
}

/// Environment variables whose value programs run as a command (`git` runs `GIT_SSH_COMMAND`,
/// `man` runs `MANPAGER`, `less` runs `LESSOPEN`, `rsync` runs `RSYNC_RSH`, ...).
const COMMAND_VARS: &[&str] = &[
    "GIT_SSH_COMMAND",
    "GIT_SSH",
    "GIT_PAGER",
    "GIT_EDITOR",
    "GIT_SEQUENCE_EDITOR",
    "GIT_EXTERNAL_DIFF",
    "GIT_ASKPASS",
    "GIT_PROXY_COMMAND",
    "SSH_ASKPASS",
    "SUDO_ASKPASS",
    "PAGER",
    "MANPAGER",
    "SYSTEMD_PAGER",
    "EDITOR",
    "VISUAL",
    "FCEDIT",
    "LESSOPEN",
    "LESSCLOSE",
    "RSYNC_RSH",
    "RSYNC_CONNECT_PROG",
    "BROWSER",
    "PROMPT_COMMAND",
];

/// Variable assignments (`NAME=value`, before a command, alone, or given to `export`/`env`):
/// values of variables that programs run as commands are classified, and so are git
/// configuration entries given through `GIT_CONFIG_PARAMETERS` / `GIT_CONFIG_KEY_n`.
pub(super) fn assignments<'a>(words: impl Iterator<Item = &'a str>, d: usize, v: &mut Verdict) {
    let mut keys: Vec<(&str, &str)> = Vec::new();
    let mut values: Vec<(&str, &str)> = Vec::new();
    for w in words.filter(|w| is_assignment(w)) {
        let Some((name, value)) = w.split_once('=') else {
            continue;
        };
        if let Some(n) = name.strip_prefix("GIT_CONFIG_KEY_") {
            keys.push((n, value));
        } else if let Some(n) = name.strip_prefix("GIT_CONFIG_VALUE_") {
            values.push((n, value));
        } else if name == "GIT_CONFIG_PARAMETERS" {
            // `'key'='value' 'key2'='value2'`, quoted as a shell would.
            match shell_words::split(value) {
                Ok(entries) => {
                    for e in entries {
                        if let Some((k, val)) = e.split_once('=') {
                            git_config(k, val, d, v);
                        }
                    }
                }
                Err(_) => unseen(v),
            }
        } else if COMMAND_VARS.contains(&name) && !value.trim().is_empty() {
            // LESSOPEN/LESSCLOSE start with `|` (or `||`, `-`) to pipe.
            let value = value.trim_start_matches(['|', '-']);
            run(value, d, v);
        } else if name == "TAR_OPTIONS" {
            // Options tar reads before its own: classified as if written out.
            match shell_words::split(value) {
                Ok(opts) => options("tar", &opts, &Stdin::Terminal, d, v),
                Err(_) => unseen(v),
            }
        } else if loads_unseen_code(name, value) {
            if CODE_PATH_VARS.contains(&name) && in_tree(value) {
                // The project's own files (`PYTHONPATH=src pytest`): code the agent could run
                // as a script anyway, rated as one (`shell.script`).
                v.raise(Tier::T2, "shell.env_code_local");
            } else {
                v.raise(Tier::T4, "shell.env_code_unseen");
            }
        }
    }
    for (n, val) in values {
        match keys.iter().find(|(k, _)| *k == n) {
            Some((_, key)) => git_config(key, val, d, v),
            // A value whose key we did not see: whatever it is may be a command.
            None => run(val, d, v),
        }
    }
}

/// Variables naming a library, a file or a directory that programs load code from.
const CODE_PATH_VARS: &[&str] = &[
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "DYLD_INSERT_LIBRARIES",
    "DYLD_LIBRARY_PATH",
    "BASH_ENV",
    "ENV",
    "ZDOTDIR",
    "PYTHONSTARTUP",
    "PYTHONPATH",
    "PYTHONHOME",
    "NODE_PATH",
    "PERL5LIB",
    "PERLLIB",
    "RUBYLIB",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG",
    "GIT_EXEC_PATH",
];

/// Whether a variable makes programs load code from a file or directory we cannot read: a
/// library preloaded into (or found first by) every dynamically linked program, a file a shell
/// sources first, an interpreter's module path or startup file, a git config file (which can
/// set a pager, hooks or aliases). Empty values and `/dev/null` load nothing.
fn loads_unseen_code(name: &str, value: &str) -> bool {
    let value = value.trim();
    if value.is_empty() || value == "/dev/null" {
        return false;
    }
    // Short options among the words, without their leading dash (`-MFoo` → `MFoo`).
    let short = || {
        value
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .filter_map(|w| w.strip_prefix('-'))
            .map(|w| w.split([':', '=']).next().unwrap_or(""))
            .collect::<Vec<_>>()
    };
    match name {
        n if CODE_PATH_VARS.contains(&n) => true,
        // `--require`/`--import`/`--loader` load a module first; memory limits and the like
        // load nothing.
        "NODE_OPTIONS" => value.split_whitespace().any(|w| {
            w == "-r"
                || ["--require", "--import", "--loader", "--experimental-loader"]
                    .iter()
                    .any(|o| w.starts_with(o))
        }),
        // `-M`/`-m` load a module, `-I` adds a library directory, `-d` a debugger.
        "PERL5OPT" => short().iter().any(|w| w.contains(['M', 'm', 'I', 'd'])),
        // `-r` requires a library, `-I` adds a library directory.
        "RUBYOPT" => short().iter().any(|w| w.contains(['r', 'I'])),
        _ => false,
    }
}

/// Whether every entry of a path list (`:`-separated) stays inside the working tree: relative,
/// or under `$PWD`, without `..`, `~`, other variables or substitutions.
fn in_tree(value: &str) -> bool {
    value.split(':').all(|entry| {
        let entry = entry
            .trim()
            .strip_prefix("$PWD")
            .or_else(|| entry.trim().strip_prefix("${PWD}"))
            .map_or(entry.trim(), |rest| rest.trim_start_matches('/'));
        !entry.starts_with(['/', '~', '\\'])
            && !entry.contains(['$', '`', '\\'])
            && !entry.split('/').any(|part| part == "..")
    })
}

/// Values that switch a setting on or off rather than name a program.
fn is_switch(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "" | "true" | "false" | "yes" | "no" | "on" | "off" | "0" | "1"
    )
}

/// A git configuration entry (`git -c key=value`, `git config key value`, the environment):
/// keys whose value git runs as a command have it classified; an alias to a shell command
/// (`!...`) too; a hooks directory or an included file we cannot see is tier 4.
pub(super) fn git_config(key: &str, value: &str, d: usize, v: &mut Verdict) {
    let k = key.to_ascii_lowercase();
    let last = k.rsplit('.').next().unwrap_or(&k);
    let value = value.trim();
    if k.starts_with("alias.") {
        match value.strip_prefix('!') {
            Some(sh) => run(sh, d, v),
            None if !value.is_empty() => run(&format!("git {value}"), d, v),
            None => {}
        }
        return;
    }
    if k == "core.hookspath"
        || k == "include.path"
        || (k.starts_with("includeif.") && last == "path")
    {
        if !matches!(value, "" | "/dev/null") {
            unseen(v);
        }
        return;
    }
    let runs = k.starts_with("pager.")
        || matches!(
            last,
            "sshcommand"
                | "pager"
                | "editor"
                | "fsmonitor"
                | "askpass"
                | "helper"
                | "external"
                | "textconv"
                | "command"
                | "cmd"
                | "driver"
                | "clean"
                | "smudge"
                | "process"
                | "program"
                | "packobjectshook"
                | "uploadpack"
                | "receivepack"
                | "gitproxy"
                | "sendmailcmd"
                | "tocmd"
                | "cccmd"
                | "browser"
        );
    if !runs || is_switch(value) {
        return;
    }
    if last == "helper" {
        // `credential.helper=store` names git's own `git credential-store`; `!cmd` and an
        // absolute path are run.
        match value.strip_prefix('!') {
            Some(sh) => run(sh, d, v),
            None if value.starts_with('/') => run(value, d, v),
            None => {}
        }
        return;
    }
    run(value, d, v);
}

/// The argument vector of an `ext::` URL: spaces split words, `% ` is a space inside one,
/// `%%` a percent sign.
fn ext_argv(url: &str) -> Vec<String> {
    let mut argv = vec![String::new()];
    let mut chars = url.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => match chars.next() {
                Some(' ') => argv.last_mut().unwrap().push(' '),
                Some(n) => {
                    argv.last_mut().unwrap().push('%');
                    argv.last_mut().unwrap().push(n);
                }
                None => argv.last_mut().unwrap().push('%'),
            },
            ' ' => argv.push(String::new()),
            c => argv.last_mut().unwrap().push(c),
        }
    }
    argv.retain(|w| !w.is_empty());
    argv
}

/// Options of git subcommands that take a command (`--upload-pack`, `rebase --exec`,
/// `bisect run`, `submodule foreach`, `filter-branch --tree-filter`, `ext::` URLs, ...).
pub(super) fn git_subcommand(sub: &str, args: &[String], d: usize, v: &mut Verdict) {
    for a in args {
        // The `ext::` transport runs its URL as a command (`% ` is a space inside a word).
        if let Some(cmd) = a.strip_prefix("ext::") {
            v.raise(Tier::T0, "shell.hidden_command");
            command(&ext_argv(cmd), &Stdin::Unknown, d, v);
        }
    }
    let ops = operands(args);
    match sub {
        "fetch" | "pull" | "clone" | "ls-remote" | "archive" | "push" | "send-pack"
        | "fetch-pack" => {
            let short: &[&str] = if sub == "clone" { &["-u"] } else { &[] };
            for c in option_values(args, short, &["--upload-pack", "--receive-pack", "--exec"]) {
                run(c, d, v);
            }
        }
        "rebase" => {
            for c in option_values(args, &["-x"], &["--exec"]) {
                run(c, d, v);
            }
        }
        "bisect" => {
            if let Some(p) = args.iter().position(|a| a == "run") {
                v.raise(Tier::T0, "shell.hidden_command");
                if p + 1 < args.len() {
                    command(&args[p + 1..], &Stdin::Terminal, d, v);
                }
            }
        }
        "submodule" => {
            if let Some(p) = args.iter().position(|a| a == "foreach") {
                let words: Vec<&str> = args[p + 1..]
                    .iter()
                    .map(|s| s.as_str())
                    .skip_while(|a| a.starts_with('-'))
                    .collect();
                run(&words.join(" "), d, v);
            }
        }
        "difftool" => {
            for c in option_values(args, &["-x"], &["--extcmd"]) {
                run(c, d, v);
            }
        }
        "filter-branch" => {
            for c in option_values(
                args,
                &[],
                &[
                    "--tree-filter",
                    "--index-filter",
                    "--msg-filter",
                    "--env-filter",
                    "--commit-filter",
                    "--parent-filter",
                    "--tag-name-filter",
                    "--setup",
                ],
            ) {
                run(c, d, v);
            }
        }
        "grep" => {
            for a in args {
                let pager = a
                    .strip_prefix("--open-files-in-pager=")
                    .or_else(|| a.strip_prefix("-O").filter(|p| !p.is_empty()));
                if let Some(p) = pager {
                    run(p, d, v);
                }
            }
        }
        "config" => {
            // `git config [--global] key value` (or `git config set key value`) stores what
            // a later git command runs.
            let ops: Vec<&str> = ops
                .iter()
                .copied()
                .skip_while(|o| matches!(*o, "set" | "--add"))
                .collect();
            if let [key, value, ..] = ops.as_slice() {
                git_config(key, value, d, v);
            }
        }
        _ => {}
    }
}

/// Programs that run a command given in their options; called for every command before its
/// own rule rates it.
pub(super) fn options(name: &str, rest: &[String], stdin: &Stdin<'_>, d: usize, v: &mut Verdict) {
    match name {
        "tar" | "gtar" => {
            for c in option_values(
                rest,
                &["-I", "-F"],
                &[
                    "--to-command",
                    "--use-compress-program",
                    "--info-script",
                    "--new-volume-script",
                    "--rsh-command",
                    "--rmt-command",
                ],
            ) {
                run(c, d, v);
            }
            for c in option_values(rest, &[], &["--checkpoint-action"]) {
                if let Some(cmd) = c.strip_prefix("exec=") {
                    run(cmd, d, v);
                }
            }
        }
        "rsync" => {
            for c in option_values(rest, &["-e"], &["--rsh", "--rsync-path"]) {
                run(c, d, v);
            }
            // A cluster of short flags ending in `e` takes the next word (`-avze 'ssh -p 2'`).
            for (i, a) in rest.iter().enumerate() {
                if a.len() > 2
                    && !a.starts_with("--")
                    && a.starts_with('-')
                    && a.ends_with('e')
                    && a[1..].bytes().all(|c| c.is_ascii_alphabetic())
                    && let Some(c) = rest.get(i + 1)
                {
                    run(c, d, v);
                }
            }
        }
        "zip" => {
            for c in option_values(rest, &["-TT"], &["--unzip-command"]) {
                run(c, d, v);
            }
        }
        "ssh" | "scp" | "sftp" | "autossh" => {
            for o in option_values(rest, &["-o"], &[]) {
                // `Key=value` or `Key value`; keys are case-insensitive.
                let (key, value) = o
                    .split_once(|c: char| c == '=' || c.is_whitespace())
                    .unwrap_or((o, ""));
                let key = key.to_ascii_lowercase();
                let value = value.trim();
                if matches!(
                    key.as_str(),
                    "proxycommand" | "localcommand" | "knownhostscommand" | "remotecommand"
                ) && !value.eq_ignore_ascii_case("none")
                    && !value.is_empty()
                {
                    run(value, d, v);
                }
            }
            if name == "scp" || name == "sftp" {
                for c in option_values(rest, &["-S"], &[]) {
                    run(c, d, v);
                }
            }
            // `-F file`: a config file can set ProxyCommand/LocalCommand, and we never see it.
            // Only ssh's own options count (`ssh host grep -F x` is a remote command).
            let own = if name == "scp" || name == "sftp" {
                rest
            } else {
                let after = super::skip_options(rest, super::SSH_VALUE_OPTIONS).len();
                &rest[..rest.len() - after]
            };
            if option_values(own, &["-F"], &[])
                .iter()
                .any(|f| !matches!(*f, "none" | "/dev/null"))
            {
                unseen(v);
            }
        }
        "vim" | "vi" | "nvim" | "ex" | "view" | "vimdiff" | "gvim" | "rvim" | "nvi" => {
            let mut cmds = option_values(rest, &["-c"], &["--cmd"]);
            cmds.extend(rest.iter().filter_map(|a| a.strip_prefix('+')));
            for c in cmds {
                ex_command(c, d, v);
            }
            if rest.iter().any(|a| a == "-S" || a == "-s") {
                // A script of editor commands from a file.
                v.raise(Tier::T2, "shell.script");
            }
        }
        "less" | "more" => {
            // `+cmd` runs a pager command at start; `!` in one runs a shell command.
            for a in rest.iter().filter_map(|a| a.strip_prefix('+')) {
                if let Some((_, sh)) = a.split_once('!') {
                    run(sh, d, v);
                }
            }
        }
        "man" => {
            let mut cmds = option_values(rest, &["-P"], &["--pager", "--html"]);
            cmds.extend(
                rest.iter()
                    .filter_map(|a| a.strip_prefix("-H").filter(|b| !b.is_empty())),
            );
            for c in cmds {
                run(c, d, v);
            }
        }
        "make" | "gmake" => {
            for e in option_values(rest, &["-E"], &["--eval"]) {
                makefile(e, d, v);
            }
            for f in option_values(rest, &["-f"], &["--file", "--makefile"]) {
                if f.contains(SUBST) || f.starts_with("/proc/self/fd/") {
                    unseen(v);
                } else if matches!(f, "-" | "/dev/stdin" | "/dev/fd/0") {
                    match stdin {
                        Stdin::Text(t) => makefile(t, d, v),
                        Stdin::Terminal => {}
                        _ => unseen(v),
                    }
                }
            }
            for a in operands(rest) {
                // `make SHELL=...` runs every recipe with that program.
                if let Some(sh) = a.strip_prefix("SHELL=") {
                    run(sh, d, v);
                }
            }
        }
        "gdb" | "gdb-multiarch" => {
            for c in option_values(
                rest,
                &["-ex", "-iex"],
                &["--eval-command", "--init-eval-command"],
            ) {
                gdb_command(c, d, v);
            }
            if let Some(p) = rest.iter().position(|a| a == "--args" || a == "-args") {
                v.raise(Tier::T0, "shell.hidden_command");
                if p + 1 < rest.len() {
                    command(&rest[p + 1..], &Stdin::Terminal, d, v);
                }
            }
        }
        "expect" => expect(rest, stdin, d, v),
        "socat" => {
            for a in operands(rest) {
                let lower = a.to_ascii_lowercase();
                for prefix in ["exec:", "system:"] {
                    if lower.starts_with(prefix) {
                        // Address options follow the command after a comma.
                        let cmd = a[prefix.len()..].split(',').next().unwrap_or("");
                        run(cmd, d, v);
                    }
                }
            }
        }
        "nc" | "ncat" | "netcat" | "nc.traditional" | "nc.openbsd" => {
            // The program talks to the network: a shell there is a remote shell.
            for c in option_values(rest, &["-e"], &["--exec"]) {
                v.raise(Tier::T0, "shell.hidden_command");
                let words = shell_words::split(c).unwrap_or_else(|_| vec![c.to_string()]);
                on_connection(&words, d, v);
            }
            for c in option_values(rest, &["-c"], &["--sh-exec"]) {
                run(c, d, v);
                if !c.trim().contains(char::is_whitespace) {
                    on_connection(&[c.trim().to_string()], d, v);
                }
            }
        }
        "strace" | "ltrace" => {
            // `-o '|cmd'` / `-o '!cmd'` pipes the trace into a command; `-o file` writes it.
            for o in option_values(rest, &["-o"], &["--output"]) {
                if let Some(c) = o.strip_prefix(['|', '!']) {
                    run(c, d, v);
                } else if !matches!(o, "/dev/null" | "/dev/stdout" | "/dev/stderr" | "-") {
                    v.raise(Tier::T1, "shell.local_write");
                }
            }
        }
        _ => {}
    }
}

/// A program whose standard input is a network connection (`nc -e prog`): classified as
/// reading network bytes, but a shell or interpreter running them is a remote shell
/// (`shell.network_shell`), not a download piped into a shell.
fn on_connection(words: &[String], d: usize, v: &mut Verdict) {
    let mut probe = Verdict::default();
    command(words, &Stdin::Network, d, &mut probe);
    for r in probe.rules {
        let r = if r == "shell.pipe_download_to_shell" {
            "shell.network_shell"
        } else {
            r
        };
        v.raise(probe.tier, r);
    }
}

/// Whether a program hands its standard input to a shell that `command` does not rate as one:
/// `ssh` without a remote command, `telnet`, `su` without `-c`, `sudo -s`/`-i`, and those run
/// through `sudo`/`doas`.
fn hands_input_to_shell(words: &[String]) -> bool {
    let Some(first) = words.first() else {
        return false;
    };
    let name = first.rsplit('/').next().unwrap_or(first);
    let rest = &words[1..];
    match name {
        "ssh" | "autossh" => super::skip_options(rest, super::SSH_VALUE_OPTIONS).len() <= 1,
        "telnet" | "mosh" => true,
        "su" => super::su_commands(rest).is_empty(),
        "sudo" | "doas" => {
            let inner =
                super::skip_clustered_options(rest, "ughpCDRrtUT", super::SUDO_LONG_VALUE_OPTIONS);
            let shell_flag = rest[..rest.len() - inner.len()].iter().any(|a| {
                matches!(a.as_str(), "--shell" | "--login")
                    || super::short_flag(a, 's')
                    || super::short_flag(a, 'i')
            });
            (shell_flag && inner.is_empty()) || hands_input_to_shell(inner)
        }
        _ => false,
    }
}

/// An Ex command (`vim -c`, `vim +cmd`): `!cmd`, `r !cmd`, `w !cmd`, `terminal cmd` run a shell
/// command; `system()`, `:python`, `:lua` and the like run code (read like inline code).
fn ex_command(cmd: &str, d: usize, v: &mut Verdict) {
    // Bars separate Ex commands, except that everything after `!` belongs to the shell.
    let mut rest = cmd;
    loop {
        let c = rest.trim_start_matches([':', ' ', '\t']);
        // A range (`%`, `1,$`, `'<,'>`) before the command.
        let c = c
            .trim_start_matches(|ch: char| ch.is_ascii_digit() || "%,.$'<>;".contains(ch))
            .trim_start();
        let c = ["silent!", "silent", "sil!", "sil"]
            .iter()
            .find_map(|m| c.strip_prefix(m))
            .unwrap_or(c)
            .trim_start();
        let word: String = c
            .chars()
            .take_while(|ch| ch.is_ascii_alphabetic())
            .collect();
        let after = c[word.len()..].trim_start();
        if let Some(sh) = c.strip_prefix('!') {
            run(sh, d, v);
            return;
        }
        if matches!(
            word.as_str(),
            "r" | "re" | "rea" | "read" | "w" | "wr" | "wri" | "writ" | "write"
        ) && let Some(sh) = after.strip_prefix('!')
        {
            run(sh, d, v);
            return;
        }
        if matches!(
            word.as_str(),
            "w" | "wr"
                | "wri"
                | "writ"
                | "write"
                | "wq"
                | "wqa"
                | "wqall"
                | "x"
                | "xi"
                | "xit"
                | "xa"
                | "xall"
                | "exi"
                | "exit"
                | "wa"
                | "wall"
                | "up"
                | "upd"
                | "upda"
                | "updat"
                | "update"
                | "sav"
                | "save"
                | "savea"
                | "saveas"
        ) {
            // The editor writes a file.
            v.raise(Tier::T1, "shell.local_write");
        }
        if word.len() >= 3 && "terminal".starts_with(word.as_str()) {
            run(after, d, v);
            return;
        }
        let w = word.to_ascii_lowercase();
        if matches!(w.as_str(), "so" | "sou" | "sour" | "sourc" | "source") {
            // Editor commands from a file we do not see.
            v.raise(Tier::T2, "shell.script");
        } else if matches!(w.as_str(), "exe" | "exec" | "execu" | "execut" | "execute") {
            // `:execute "!cmd"`: its strings are Ex commands.
            for lit in super::code_literals(after) {
                ex_command(&lit, d, v);
            }
        } else if w.starts_with("py")
            || w.starts_with("lua")
            || w.starts_with("perl")
            || w.starts_with("ruby")
            || w == "call"
            || c.contains("system(")
            || c.contains("jobstart(")
            || c.contains("termopen(")
        {
            // Code in another language: read for the commands it runs, as inline code is.
            inline_code(c, d, v);
        }
        match rest.split_once('|') {
            Some((_, next)) => rest = next,
            None => return,
        }
    }
}

/// A gdb command (`-ex`): `shell cmd`, `!cmd`, `pipe ... | cmd` run a shell command; `python`
/// and calls into the debuggee's `system()` run code.
fn gdb_command(cmd: &str, d: usize, v: &mut Verdict) {
    let c = cmd.trim();
    if let Some(sh) = c.strip_prefix('!') {
        return run(sh, d, v);
    }
    let (word, after) = c.split_once(char::is_whitespace).unwrap_or((c, ""));
    match word {
        "shell" | "she" => run(after, d, v),
        "pipe" | "|" => {
            if let Some((_, sh)) = after.split_once('|') {
                run(sh, d, v);
            }
        }
        _ if word.starts_with("py")
            || ["system", "exec", "popen"].iter().any(|p| c.contains(p)) =>
        {
            // `python ...`, `call system("...")`: read like inline interpreter code.
            inline_code(c, d, v);
        }
        _ => {}
    }
}

/// `expect [-c cmds] [-f] [script [args]]`: `-c` code is read; a script file is an unseen
/// script (as for a shell); without either, the script is standard input.
fn expect(rest: &[String], stdin: &Stdin<'_>, d: usize, v: &mut Verdict) {
    // All `-c` code runs as one script (a `send` in one follows a `spawn` in another).
    let mut inline: Vec<&str> = Vec::new();
    let mut file: Option<&str> = None;
    let mut i = 0;
    while i < rest.len() && file.is_none() {
        let a = rest[i].as_str();
        match a {
            "-c" => {
                if let Some(c) = rest.get(i + 1) {
                    inline.push(c);
                }
                i += 1;
            }
            // The next word is the script, whatever it looks like.
            "-f" | "-b" | "--" => file = Some(rest.get(i + 1).map_or("-", |f| f.as_str())),
            _ if a.starts_with("-c") => inline.push(&a[2..]),
            _ if a.starts_with('-') && a != "-" => {}
            _ => file = Some(a),
        }
        i += 1;
    }
    if !inline.is_empty() {
        tcl(&inline.join("\n"), d, v);
    }
    match (file, stdin) {
        (Some(f), _) => super::script_file(f, stdin, d, v),
        (None, _) if !inline.is_empty() => {}
        (None, Stdin::Text(t)) => tcl(t, d, v),
        // Typed at a terminal: an interactive interpreter.
        (None, Stdin::Terminal) => v.raise(Tier::T2, "shell.interactive_shell"),
        (None, _) => super::script_file("-", stdin, d, v),
    }
}

/// Whether Tcl code sends text to a spawned process (`send`, `exp_send`; not `send_user`,
/// which prints to the user).
fn sends(code: &str) -> bool {
    code.split(|c: char| c.is_whitespace() || "{}[];\"".contains(c))
        .any(|w| matches!(w, "send" | "exp_send"))
}

/// Tcl code given to `expect`: `spawn`, `exec` and `system` run commands. Text `send` to a
/// spawned program is its input, which we do not read: the program runs with unseen input
/// (a shell, interpreter or database client reading it is tier 4, as on a pipe).
fn tcl(code: &str, d: usize, v: &mut Verdict) {
    let mut offset = 0;
    for stmt in code.split([';', '\n']) {
        offset += stmt.len() + 1;
        let s = stmt.trim().trim_start_matches('[');
        let (word, after) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
        if matches!(word, "spawn" | "exp_spawn" | "exec" | "system") {
            // Tcl braces quote like single quotes; spawn's own flags come first.
            let args: Vec<&str> = after
                .split_whitespace()
                .skip_while(|a| a.starts_with('-'))
                .collect();
            let line = args.join(" ").replace(['{', '}'], "'");
            let line = line.trim_end_matches(']');
            if matches!(word, "spawn" | "exp_spawn") && sends(code.get(offset..).unwrap_or("")) {
                spawn_with_input(line, d, v);
            } else {
                run(line, d, v);
            }
        } else if word == "open"
            && let Some(p) = after.find('|')
        {
            run(after[p + 1..].trim_matches(['"', '}', ']', ' ']), d, v);
        }
    }
}

/// A program spawned by `expect` that is sent text we do not read.
fn spawn_with_input(line: &str, d: usize, v: &mut Verdict) {
    v.raise(Tier::T0, "shell.hidden_command");
    let Ok(words) = shell_words::split(line) else {
        return unseen(v);
    };
    command(&words, &Stdin::Unknown, d, v);
    if hands_input_to_shell(&words) {
        v.raise(Tier::T4, "shell.shell_unknown_input");
    }
}

/// Makefile text (`make --eval`, `make -f -` on a pipe): recipes and `$(shell ...)` run.
fn makefile(text: &str, d: usize, v: &mut Verdict) {
    v.raise(Tier::T0, "shell.hidden_command");
    for line in text.lines() {
        if let Some(recipe) = line.strip_prefix('\t') {
            run(recipe.trim_start_matches(['@', '-', '+', ' ']), d, v);
        } else if let Some((_, after)) = line.split_once(':')
            && !after.starts_with('=')
            && let Some((_, recipe)) = after.split_once(';')
        {
            run(recipe.trim_start_matches(['@', '-', '+', ' ']), d, v);
        }
        let mut s = line;
        while let Some(p) = s.find("$(shell ") {
            let inner = &s[p + 8..];
            let end = inner.find(')').unwrap_or(inner.len());
            run(&inner[..end], d, v);
            s = &inner[end..];
        }
    }
}
