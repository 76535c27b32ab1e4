//! Running the real `cycles` binary from the end-to-end tests.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

/// One finished run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Standard output parsed as JSON (the test fails when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
}

/// Runs `cycles ARGS` in `dir` with `stdin`, with exactly the CYCLES_* variables in `env`
/// (none of the caller's).
pub fn cycles(dir: &Path, env: &[(&str, &str)], args: &[&str], stdin: &str) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cycles"));
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("CYCLES_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().unwrap();
    // A command that fails closed before reading its input closes the pipe early: that is a
    // legitimate outcome to assert on, not a test error.
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// The RISK_POINTS balance of `scope` in the JSON of `cycles --json balances`.
pub fn risk_balance(all: &Value, scope: &str) -> Value {
    all.as_array()
        .unwrap()
        .iter()
        .find(|b| b["scope"] == scope && b["unit"] == "RISK_POINTS")
        .cloned()
        .unwrap_or_else(|| panic!("no budget {scope}: {all}"))
}
