//! The real `cycles` binary on a PostgreSQL ledger (`--ledger postgres://...` and
//! `CYCLES_LEDGER`). Needs a server: `scripts/pg-test.sh` starts one and runs these with
//! `--include-ignored`; a plain `cargo test` reports them as ignored, never as passed.
//!
//! Every command runs in its own process, so each one that sees what an earlier one wrote
//! shows that the state lives in the database (which the test also reads directly).

use serde_json::{Value, json};

mod support;
use support::{Run, cycles, risk_balance};

fn server_url() -> String {
    std::env::var("CYCLES_PG_URL").expect(
        "CYCLES_PG_URL is not set: run scripts/pg-test.sh, which starts a PostgreSQL server",
    )
}

/// The server URL with a password in it (when it has none; a trust server ignores it), so
/// that the test can check it is never printed.
fn url_with_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("CYCLES_PG_URL is a URL");
    let (userinfo, host) = rest.split_once('@').expect("CYCLES_PG_URL names a user");
    match userinfo.split_once(':') {
        Some((_, password)) => (url.to_string(), password.to_string()),
        None => {
            let password = "pw-never-printed".to_string();
            (format!("{scheme}://{userinfo}:{password}@{host}"), password)
        }
    }
}

/// A fresh schema, dropped at the end.
struct Schema {
    name: String,
}

impl Schema {
    fn new(tag: &str) -> Schema {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Schema {
            name: format!("t_cli_{tag}_{}_{nanos}", std::process::id()),
        }
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&server_url(), postgres::NoTls).expect("admin connects")
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&server_url(), postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

fn event(name: &str, tool_use: &str, tool: &str, input: Value) -> String {
    json!({
        "session_id": "pg-session-1",
        "hook_event_name": name,
        "tool_name": tool,
        "tool_input": input,
        "tool_use_id": tool_use,
    })
    .to_string()
}

/// `permissionDecision` and reason of a PreToolUse answer.
fn decision(r: &Run) -> (String, String) {
    assert_eq!(r.code, 0, "hook failed: {}{}", r.stdout, r.stderr);
    let h = &r.json()["hookSpecificOutput"];
    (
        h["permissionDecision"].as_str().unwrap().to_string(),
        h["permissionDecisionReason"].as_str().unwrap().to_string(),
    )
}

#[test]
#[ignore = "needs a PostgreSQL server: run scripts/pg-test.sh"]
fn init_budget_hook_and_audit_on_a_postgres_url() {
    let schema = Schema::new("flow");
    let (base, password) = url_with_password(&server_url());
    let url = format!("{base}?schema={}", schema.name);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = |args: &[&str]| {
        let r = cycles(d, &[], args, "");
        assert_eq!(r.code, 0, "cycles {args:?}: {}{}", r.stdout, r.stderr);
        assert!(
            !r.stdout.contains(&password) && !r.stderr.contains(&password),
            "the password was printed by {args:?}"
        );
        r
    };

    // init on a URL: the starter policy file, and its budget in the database.
    let init = ok(&["--ledger", &url, "--json", "init"]).json();
    assert_eq!(init["policy_written"], true);
    assert!(
        init["ledger"]
            .as_str()
            .unwrap()
            .ends_with(&format!("?schema={}", schema.name)),
        "{init}"
    );
    let again = cycles(d, &[], &["--ledger", &url, "--json", "init"], "");
    assert_eq!(again.code, 3, "{}{}", again.stdout, again.stderr);
    assert_eq!(again.json()["error"]["code"], "LEDGER_EXISTS");

    // budget set in one process, the hook in others.
    let set = ok(&[
        "--ledger",
        &url,
        "--json",
        "budget",
        "set",
        "--scope",
        "app:claude-code",
        "--allocated",
        "2",
    ])
    .json();
    assert_eq!(set["allocated"], 2);

    // The hook reads the ledger from CYCLES_LEDGER, as in a settings.json `env` block.
    let env = [("CYCLES_LEDGER", url.as_str())];
    let hook = |stdin: &str| {
        cycles(
            d,
            &env,
            &["hook", "claude-code", "--session-budget", "0"],
            stdin,
        )
    };
    let write = json!({"file_path": "/tmp/a.txt", "content": "x"});
    let (answer, reason) = decision(&hook(&event("PreToolUse", "tu_1", "Write", write.clone())));
    assert_eq!(answer, "allow", "{reason}");
    let balance =
        |scope: &str| risk_balance(&ok(&["--ledger", &url, "--json", "balances"]).json(), scope);
    let b = balance("app:claude-code");
    assert_eq!(
        (b["reserved"].as_i64(), b["spent"].as_i64()),
        (Some(1), Some(0))
    );

    let post = hook(&event("PostToolUse", "tu_1", "Write", write.clone()));
    assert_eq!(post.code, 0, "{}{}", post.stdout, post.stderr);
    let b = balance("app:claude-code");
    assert_eq!(
        (b["reserved"].as_i64(), b["spent"].as_i64()),
        (Some(0), Some(1))
    );

    // A second and a third call: one point left, then none.
    let (answer, _) = decision(&hook(&event("PreToolUse", "tu_2", "Write", write.clone())));
    assert_eq!(answer, "allow");
    let (answer, reason) = decision(&hook(&event("PreToolUse", "tu_3", "Write", write)));
    assert_eq!(answer, "deny");
    assert!(reason.contains("BUDGET_EXCEEDED"), "{reason}");

    // The chain verifies, and it is the one in the database's tables.
    let verify = ok(&["--ledger", &url, "--json", "audit", "verify"]).json();
    assert_eq!(verify["ok"], true, "{verify}");
    let records = verify["records"].as_i64().unwrap();
    let mut c = schema.client();
    let in_db: i64 = c
        .query_one(
            &format!("SELECT count(*) FROM {}.cycles_audit", schema.name),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(records, in_db);
    // init's budget_set, budget set, reserve, commit, reserve, the denial.
    assert!(records >= 6, "{records} records");
    let spent: i64 = c
        .query_one(
            &format!(
                "SELECT spent FROM {}.cycles_budgets WHERE scope = 'app:claude-code' AND unit = 'RISK_POINTS'",
                schema.name
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(spent, 1);
    // Nothing was written next to the policy: no SQLite file named after the URL.
    let files: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, vec!["cycles.toml".to_string()]);

    // A tampered row is found by the next process.
    let seq: i64 = c
        .query_one(
            &format!(
                "SELECT min(seq) FROM {}.cycles_audit WHERE body LIKE '%\"tu_1\"%'",
                schema.name
            ),
            &[],
        )
        .unwrap()
        .get(0);
    c.batch_execute(&format!(
        "UPDATE {}.cycles_audit SET body = replace(body, '\"tu_1\"', '\"tu_9\"') WHERE seq = {seq}",
        schema.name
    ))
    .unwrap();
    let broken = cycles(d, &[], &["--ledger", &url, "--json", "audit", "verify"], "");
    assert_eq!(broken.code, 1, "{}{}", broken.stdout, broken.stderr);
    assert_eq!(broken.json()["first_broken"]["seq"], seq);
}

#[test]
#[ignore = "needs a PostgreSQL server: run scripts/pg-test.sh"]
fn a_mistyped_database_fails_closed() {
    // Same server, a database that does not exist: nothing is created anywhere, every
    // command fails with LEDGER_UNAVAILABLE and the hook blocks.
    let url = server_url();
    let (base, _) = url
        .rsplit_once('/')
        .expect("CYCLES_PG_URL names a database");
    let missing = format!("{base}/cycles_no_such_database");
    let dir = tempfile::tempdir().unwrap();
    let r = cycles(
        dir.path(),
        &[],
        &["--ledger", &missing, "--json", "balances"],
        "",
    );
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["error"]["code"], "LEDGER_UNAVAILABLE");
    std::fs::write(
        dir.path().join("cycles.toml"),
        "[[tools]]\nname = \"Read\"\ntier = 0\n",
    )
    .unwrap();
    let hook = cycles(
        dir.path(),
        &[("CYCLES_LEDGER", missing.as_str())],
        &["hook", "claude-code"],
        &event(
            "PreToolUse",
            "tu_1",
            "Read",
            json!({"file_path": "/etc/hosts"}),
        ),
    );
    assert_eq!(hook.code, 2, "{}{}", hook.stdout, hook.stderr);
    assert!(hook.stdout.is_empty(), "{}", hook.stdout);
    assert!(
        hook.stderr.contains("blocked") && hook.stderr.contains("LEDGER_UNAVAILABLE"),
        "{}",
        hook.stderr
    );
}
