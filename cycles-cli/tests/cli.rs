//! End-to-end tests of the real `cycles` binary: every test runs it as a subprocess in a temp
//! directory with a real SQLite ledger file, and checks exit codes, output and the ledger.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

mod support;
use support::{Run, cycles, risk_balance};

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `cycles ARGS` here, with `stdin`, without any CYCLES_* variable of the caller.
    fn run(&self, args: &[&str], stdin: &str) -> Run {
        cycles(self.dir.path(), &[], args, stdin)
    }

    fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args, "");
        assert_eq!(
            r.code, 0,
            "cycles {args:?} failed: {}{}",
            r.stdout, r.stderr
        );
        r
    }

    fn init(&self) {
        self.ok(&["init"]);
    }

    fn edit_policy(&self, f: impl FnOnce(String) -> String) {
        let p = self.path("cycles.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, f(text)).unwrap();
    }

    /// Creates an approver key and lists it in the policy.
    fn approver(&self, id: &str) -> String {
        let out = self
            .ok(&[
                "--json",
                "keygen",
                "--id",
                id,
                "--out",
                &format!("{id}.key"),
            ])
            .json();
        let public = out["public_key"].as_str().unwrap().to_string();
        self.edit_policy(|t| {
            t.replace("public_keys = []", &format!("public_keys = [\"{public}\"]"))
        });
        public
    }

    fn hook(&self, extra: &[&str], event: &Value) -> Run {
        let mut args = vec!["hook", "claude-code"];
        args.extend_from_slice(extra);
        self.run(&args, &event.to_string())
    }
}

fn pre(session: &str, tool_use: &str, tool: &str, input: Value) -> Value {
    json!({
        "session_id": session,
        "transcript_path": "/tmp/transcript.jsonl",
        "cwd": "/work/app",
        "permission_mode": "default",
        "hook_event_name": "PreToolUse",
        "tool_name": tool,
        "tool_input": input,
        "tool_use_id": tool_use,
    })
}

fn post(session: &str, tool_use: &str, tool: &str, input: Value) -> Value {
    let mut v = pre(session, tool_use, tool, input);
    v["hook_event_name"] = json!("PostToolUse");
    v["tool_response"] = json!({"stdout": "", "stderr": "", "interrupted": false});
    v
}

/// The incident's command: the Railway CLI deleting the production volume.
fn railway_delete() -> Value {
    json!({
        "command": "railway volume delete --volume vol_prod_main --yes",
        "description": "Delete the staging volume to fix the credential mismatch"
    })
}

/// `permissionDecision` and reason of a PreToolUse answer (exit 0, one JSON object).
fn decision(r: &Run) -> (String, String) {
    assert_eq!(r.code, 0, "hook failed: {}{}", r.stdout, r.stderr);
    let v = r.json();
    let h = &v["hookSpecificOutput"];
    assert_eq!(h["hookEventName"], "PreToolUse");
    (
        h["permissionDecision"].as_str().unwrap().to_string(),
        h["permissionDecisionReason"].as_str().unwrap().to_string(),
    )
}

fn request_id(reason: &str) -> String {
    let i = reason.find("apr_").expect("the reason names the request");
    reason[i..i + 36].to_string()
}

/// A ledger with the starter policy and approver `alice` in it, and the request id of the
/// tier-4 call (`railway volume delete`) that session `sess-1` was just denied.
fn approval_pending() -> (Dir, String) {
    let d = Dir::new();
    d.init();
    d.approver("alice");
    let (dec, reason) = decision(&d.hook(
        &["--approval", "deny"],
        &pre("sess-1", "toolu_1", "Bash", railway_delete()),
    ));
    assert_eq!(dec, "deny");
    let id = request_id(&reason);
    (d, id)
}

fn balance(d: &Dir, scope: &str) -> Value {
    risk_balance(&d.ok(&["--json", "balances"]).json(), scope)
}

fn audit_kinds(d: &Dir) -> Vec<String> {
    d.ok(&["audit", "export", "--format", "jsonl"])
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

const SESSION_SCOPE: &str = "app:claude-code/workflow:sess-1";

#[test]
fn incident_railway_volume_delete_is_denied_and_the_audit_verifies() {
    let d = Dir::new();
    d.init();
    let r = d.hook(
        &["--approval", "deny"],
        &pre("sess-1", "toolu_01", "Bash", railway_delete()),
    );
    let (dec, reason) = decision(&r);
    assert_eq!(dec, "deny", "{reason}");
    assert!(reason.contains("APPROVAL_REQUIRED"), "{reason}");
    assert!(reason.contains("tier 4"), "{reason}");
    assert_eq!(balance(&d, SESSION_SCOPE)["reserved"], 0);
    assert_eq!(
        d.ok(&["--json", "reservations", "list"]).json(),
        json!([]),
        "nothing was reserved"
    );
    let v = d.ok(&["--json", "audit", "verify"]).json();
    assert_eq!(v["ok"], true);
    let verify = d.ok(&["audit", "verify"]);
    assert!(verify.stdout.starts_with("ok: "), "{}", verify.stdout);
    let kinds = audit_kinds(&d);
    assert_eq!(&kinds[kinds.len() - 2..], ["approval_requested", "denial"]);

    // With the policy's tier limit, the same call is refused outright: no approval can help.
    d.edit_policy(|t| {
        t.replace(
            "# [[max_tier]]\n# scope = \"app:claude-code\"\n# max_tier = 3",
            "[[max_tier]]\nscope = \"app:claude-code\"\nmax_tier = 3",
        )
    });
    let (dec, reason) =
        decision(&d.hook(&[], &pre("sess-1", "toolu_02", "Bash", railway_delete())));
    assert_eq!(dec, "deny", "{reason}");
    assert!(reason.contains("TIER_NOT_PERMITTED"), "{reason}");
    assert_eq!(d.ok(&["--json", "audit", "verify"]).json()["ok"], true);
}

#[test]
fn an_unsandboxed_bash_call_keeps_claude_codes_confirmation_and_its_own_digest() {
    let d = Dir::new();
    d.init();
    let touch = json!({"command": "touch notes.md"});
    let unsandboxed = json!({"command": "touch notes.md", "dangerouslyDisableSandbox": true});
    let (dec, reason) = decision(&d.hook(&[], &pre("sess-1", "toolu_1", "Bash", touch.clone())));
    assert_eq!(dec, "allow", "{reason}");
    let r = d.hook(&[], &post("sess-1", "toolu_1", "Bash", touch));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let before = balance(&d, SESSION_SCOPE);
    assert!(
        before["spent"].as_i64().unwrap() > 0,
        "a tier 1 call costs points"
    );
    // The same command asking to leave the sandbox: Claude Code still asks, and nothing is
    // held meanwhile (the user may decline, and then no PostToolUse comes).
    let (dec, reason) =
        decision(&d.hook(&[], &pre("sess-1", "toolu_2", "Bash", unsandboxed.clone())));
    assert_eq!(dec, "ask", "{reason}");
    assert!(reason.contains("sandbox"), "{reason}");
    assert_eq!(
        balance(&d, SESSION_SCOPE)["reserved"],
        0,
        "the ask holds nothing"
    );
    // Confirmed and run: PostToolUse charges it, as much as the sandboxed call.
    let r = d.hook(&[], &post("sess-1", "toolu_2", "Bash", unsandboxed));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let after = balance(&d, SESSION_SCOPE);
    assert_eq!(after["reserved"], 0);
    assert_eq!(
        after["spent"].as_i64().unwrap(),
        2 * before["spent"].as_i64().unwrap()
    );
    // The flag is part of the call: the preflight names another digest than the sandboxed
    // reservation, so a grant signed for the sandboxed command does not cover it.
    let records: Vec<Value> = d
        .ok(&["audit", "export", "--format", "jsonl"])
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    let digest_of = |kind: &str| {
        records
            .iter()
            .find(|r| r["kind"] == kind)
            .map(|r| r["call_digest"].to_string())
            .unwrap()
    };
    assert_ne!(digest_of("reserve"), digest_of("decide"));
    // `false` is the default, not a different call.
    let (dec, _) = decision(&d.hook(
        &[],
        &pre(
            "sess-1",
            "toolu_3",
            "Bash",
            json!({"command": "touch notes.md", "dangerouslyDisableSandbox": false}),
        ),
    ));
    assert_eq!(dec, "allow");
}

#[test]
fn safe_calls_are_allowed_reserved_and_committed_by_post() {
    let d = Dir::new();
    d.init();
    let ls = json!({"command": "ls -la", "description": "List files"});
    let (dec, reason) = decision(&d.hook(&[], &pre("sess-1", "toolu_1", "Bash", ls.clone())));
    assert_eq!(dec, "allow", "{reason}");
    let edit = json!({"file_path": "/work/app/a.rs", "old_string": "a", "new_string": "b"});
    let (dec, _) = decision(&d.hook(&[], &pre("sess-1", "toolu_2", "Edit", edit.clone())));
    assert_eq!(dec, "allow");
    // Tier 1 holds 1 point on the session and the app until PostToolUse.
    assert_eq!(balance(&d, SESSION_SCOPE)["reserved"], 1);
    assert_eq!(balance(&d, "app:claude-code")["reserved"], 1);
    let active = d
        .ok(&["--json", "reservations", "list", "--status", "active"])
        .json();
    assert_eq!(active.as_array().unwrap().len(), 2);

    let r = d.hook(&[], &post("sess-1", "toolu_2", "Edit", edit));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "");
    let r = d.hook(&[], &post("sess-1", "toolu_1", "Bash", ls));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = balance(&d, SESSION_SCOPE);
    assert_eq!(
        (s["reserved"].clone(), s["spent"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(s["allocated"], 200, "the session got its own budget");
    let committed = d
        .ok(&["--json", "reservations", "list", "--status", "COMMITTED"])
        .json();
    assert_eq!(committed.as_array().unwrap().len(), 2);
    assert!(d.ok(&["audit", "verify"]).stdout.starts_with("ok"));
}

#[test]
fn approval_through_the_cli_lets_exactly_that_call_run_once() {
    let (d, id) = approval_pending();

    let pending = d.ok(&["--json", "approvals", "list"]).json();
    assert_eq!(pending[0]["request_id"], json!(id));
    assert_eq!(pending[0]["status"], "PENDING");
    assert_eq!(
        pending[0]["call"]["args"]["command"],
        "railway volume delete --volume vol_prod_main --yes"
    );
    let human = d.ok(&["approvals", "list"]).stdout;
    assert!(
        human.contains(&id) && human.contains("railway volume delete"),
        "{human}"
    );

    let out = d.path("grant.json");
    let approved = d
        .ok(&[
            "--json",
            "approve",
            &id,
            "--key",
            "alice.key",
            "--ttl",
            "10m",
            "--out",
            out.to_str().unwrap(),
        ])
        .json();
    assert_eq!(approved["status"], "GRANTED");
    let answer: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(answer["grant"]["request_id"], json!(id));
    assert_eq!(answer["grant"]["approver_id"], "alice");

    // Claude retries with a new description and tool_use_id: same command, same digest.
    let mut retry_input = railway_delete();
    retry_input["description"] = json!("Retry after approval");
    let (dec, reason) = decision(&d.hook(
        &["--approval", "deny"],
        &pre("sess-1", "toolu_2", "Bash", retry_input.clone()),
    ));
    assert_eq!(dec, "allow", "{reason}");
    assert!(reason.contains(&id), "{reason}");
    assert_eq!(balance(&d, SESSION_SCOPE)["reserved"], 50);
    let r = d.hook(&[], &post("sess-1", "toolu_2", "Bash", retry_input));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(balance(&d, SESSION_SCOPE)["spent"], 50);

    let all = d.ok(&["--json", "approvals", "list", "--all"]).json();
    assert_eq!(all[0]["status"], "CONSUMED");
    // The grant was single use: running it again needs a new approval.
    let (dec, reason) = decision(&d.hook(
        &["--approval", "deny"],
        &pre("sess-1", "toolu_3", "Bash", railway_delete()),
    ));
    assert_eq!(dec, "deny");
    assert_ne!(request_id(&reason), id);
    // Another command was never approved.
    let (dec, _) = decision(&d.hook(
        &["--approval", "deny"],
        &pre(
            "sess-1",
            "toolu_4",
            "Bash",
            json!({"command": "railway volume delete --volume vol_prod_replica --yes"}),
        ),
    ));
    assert_eq!(dec, "deny");

    let kinds = audit_kinds(&d);
    for k in [
        "approval_requested",
        "approval_granted",
        "approval_consumed",
        "commit",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
    assert_eq!(d.ok(&["--json", "audit", "verify"]).json()["ok"], true);
}

#[test]
fn deny_is_recorded_and_a_key_outside_the_policy_cannot_approve() {
    let d = Dir::new();
    d.init();
    d.approver("alice");
    d.ok(&["keygen", "--id", "mallory", "--out", "mallory.key"]);
    let (_, reason) = decision(&d.hook(&[], &pre("sess-1", "toolu_1", "Bash", railway_delete())));
    let id = request_id(&reason);

    let r = d.run(&["approve", &id, "--key", "mallory.key"], "");
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("APPROVAL_INVALID"), "{}", r.stderr);
    assert!(r.stderr.contains("unknown_key"), "{}", r.stderr);
    let r = d.run(&["--json", "approve", &id, "--key", "mallory.key"], "");
    assert_eq!(r.code, 3);
    assert_eq!(r.json()["error"]["code"], "APPROVAL_INVALID");

    let denied = d
        .ok(&[
            "--json",
            "deny",
            &id,
            "--key",
            "alice.key",
            "--reason",
            "never in prod",
        ])
        .json();
    assert_eq!(denied["status"], "DENIED");
    assert_eq!(denied["denial"]["reason"], "never in prod");
    let listed = d
        .ok(&["--json", "approvals", "list", "--status", "denied"])
        .json();
    assert_eq!(listed[0]["request_id"], json!(id));
    // Approving after a denial is refused.
    let r = d.run(&["approve", &id, "--key", "alice.key"], "");
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("denied_by_approver"), "{}", r.stderr);
    let r = d.run(
        &[
            "approve",
            "apr_00000000000000000000000000000000",
            "--key",
            "alice.key",
        ],
        "",
    );
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("NOT_FOUND"), "{}", r.stderr);
    assert!(audit_kinds(&d).contains(&"approval_denied".to_string()));
}

#[test]
fn ask_mode_prompts_and_post_charges_a_call_that_ran_unreserved() {
    let d = Dir::new();
    d.init();
    let (dec, reason) = decision(&d.hook(&[], &pre("sess-1", "toolu_1", "Bash", railway_delete())));
    assert_eq!(dec, "ask", "{reason}");
    assert!(reason.contains("cycles approve apr_"), "{reason}");
    assert_eq!(balance(&d, SESSION_SCOPE)["reserved"], 0);
    // The user confirmed at the prompt; the tool ran; PostToolUse charges its tier's points.
    let r = d.hook(&[], &post("sess-1", "toolu_1", "Bash", railway_delete()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = balance(&d, SESSION_SCOPE);
    assert_eq!(
        (s["spent"].clone(), s["reserved"].clone()),
        (json!(50), json!(0))
    );
    assert_eq!(audit_kinds(&d).last().unwrap(), "event");
}

#[test]
fn editing_the_gates_own_configuration_needs_an_approval() {
    // With the starter policy, an agent that edits the hook settings or the policy could remove
    // its own gate: those writes are tier 4 (approval), ordinary files stay tier 1.
    let d = Dir::new();
    d.init();
    for (i, path) in [
        "/work/app/.claude/settings.json",
        "/work/app/.claude/settings.local.json",
        "/work/app/.cycles/cycles.toml",
        "/work/app/src/../.mcp.json",
    ]
    .iter()
    .enumerate()
    {
        let edit = json!({"file_path": path, "old_string": "a", "new_string": "b"});
        let (dec, reason) = decision(&d.hook(
            &["--approval", "deny"],
            &pre("sess-1", &format!("toolu_{i}"), "Edit", edit),
        ));
        assert_eq!(dec, "deny", "{path}: {reason}");
        assert!(reason.contains("tier 4"), "{path}: {reason}");
        assert!(reason.contains("APPROVAL_REQUIRED"), "{path}: {reason}");
    }
    let hook = json!({"file_path": "/work/app/.git/hooks/pre-commit", "content": "rm -rf ~"});
    let (dec, reason) = decision(&d.hook(&[], &pre("sess-1", "toolu_h", "Write", hook)));
    assert_eq!(dec, "allow", "{reason}");
    assert!(reason.contains("tier 3"), "{reason}");
    let plain = json!({"file_path": "/work/app/src/settings.json", "content": "{}"});
    let (dec, reason) = decision(&d.hook(&[], &pre("sess-1", "toolu_p", "Write", plain)));
    assert_eq!(dec, "allow", "{reason}");
    assert!(reason.contains("tier 1"), "{reason}");
}

#[test]
fn mcp_tools_are_classified_by_name() {
    let d = Dir::new();
    d.init();
    let (dec, reason) = decision(&d.hook(
        &["--approval", "deny"],
        &pre(
            "sess-1",
            "toolu_1",
            "mcp__railway__volume_delete",
            json!({"volumeId": "v"}),
        ),
    ));
    assert_eq!(dec, "deny");
    assert!(reason.contains("tier 4"), "{reason}");
    let (dec, reason) = decision(&d.hook(
        &[],
        &pre(
            "sess-1",
            "toolu_2",
            "mcp__github__list_issues",
            json!({"repo": "a/b"}),
        ),
    ));
    assert_eq!(dec, "allow", "{reason}");
    assert!(reason.contains("tier 1"), "{reason}");
}

#[test]
fn budget_exhaustion_denies_with_the_reason_code() {
    let d = Dir::new();
    d.init();
    d.ok(&[
        "budget",
        "set",
        "--scope",
        SESSION_SCOPE,
        "--allocated",
        "1",
    ]);
    let edit = json!({"file_path": "/a", "old_string": "a", "new_string": "b"});
    let (dec, _) = decision(&d.hook(&[], &pre("sess-1", "t1", "Edit", edit.clone())));
    assert_eq!(dec, "allow");
    let (dec, reason) = decision(&d.hook(&[], &pre("sess-1", "t2", "Edit", edit)));
    assert_eq!(dec, "deny");
    assert!(reason.contains("BUDGET_EXCEEDED"), "{reason}");
    assert!(reason.contains(SESSION_SCOPE), "{reason}");
}

/// Every way the hook can fail must block (exit 2, reason on stderr, no decision on stdout).
#[test]
fn hook_fails_closed_on_any_internal_error() {
    let event = pre("sess-1", "toolu_1", "Bash", json!({"command": "ls"}));
    let assert_blocked = |r: &Run, needle: &str| {
        assert_eq!(r.code, 2, "stdout {:?} stderr {:?}", r.stdout, r.stderr);
        assert_eq!(r.stdout, "", "a blocked hook prints no decision");
        assert!(
            r.stderr.contains(needle),
            "{needle:?} not in {:?}",
            r.stderr
        );
    };

    // No policy file at all.
    let d = Dir::new();
    d.init();
    std::fs::remove_file(d.path("cycles.toml")).unwrap();
    assert_blocked(&d.hook(&[], &event), "policy");

    // A policy that does not parse.
    let d = Dir::new();
    d.init();
    std::fs::write(d.path("cycles.toml"), "tier_points = [0, 1,\n").unwrap();
    assert_blocked(&d.hook(&[], &event), "policy");

    // A policy that parses but is invalid.
    let d = Dir::new();
    d.init();
    d.edit_policy(|t| t.replace("threshold_tier = 4", "threshold_tier = 9"));
    assert_blocked(&d.hook(&[], &event), "approval.threshold_tier");

    // A policy file that cannot be read (a directory where the file should be).
    let d = Dir::new();
    d.init();
    std::fs::remove_file(d.path("cycles.toml")).unwrap();
    std::fs::create_dir(d.path("cycles.toml")).unwrap();
    assert_blocked(&d.hook(&[], &event), "policy");

    // No ledger.
    let d = Dir::new();
    d.init();
    std::fs::remove_file(d.path("cycles.db")).unwrap();
    assert_blocked(&d.hook(&[], &event), "ledger");

    // A ledger file that is not a database.
    let d = Dir::new();
    d.init();
    for f in ["cycles.db", "cycles.db-wal", "cycles.db-shm"] {
        let _ = std::fs::remove_file(d.path(f));
    }
    std::fs::write(d.path("cycles.db"), vec![0x5a; 8192]).unwrap();
    assert_blocked(&d.hook(&[], &event), "ledger");

    // Malformed events.
    let d = Dir::new();
    d.init();
    assert_blocked(&d.run(&["hook", "claude-code"], "{not json"), "JSON");
    assert_blocked(&d.run(&["hook", "claude-code"], ""), "JSON");
    let mut no_tool = event.clone();
    no_tool.as_object_mut().unwrap().remove("tool_name");
    assert_blocked(&d.hook(&[], &no_tool), "tool_name");
    let mut bad_session = event.clone();
    bad_session["session_id"] = json!("../../etc/passwd");
    assert_blocked(&d.hook(&[], &bad_session), "subject.workflow");
    let mut odd_event = event.clone();
    odd_event["hook_event_name"] = json!("PermissionRequest");
    assert_blocked(&d.hook(&[], &odd_event), "unsupported");
    // A bad option value is a usage error: clap exits 2 too.
    let r = d.hook(&["--approval", "maybe"], &event);
    assert_eq!(r.code, 2);
    assert_eq!(r.stdout, "");
    // And the same event, with everything in place, is allowed (the checks above can fail).
    let (dec, _) = decision(&d.hook(&[], &event));
    assert_eq!(dec, "allow");
}

/// Tampering with one audit record makes `audit verify` exit 1 naming that record.
#[test]
fn tampered_ledger_fails_verification_naming_the_record() {
    let d = Dir::new();
    d.init();
    decision(&d.hook(&[], &pre("sess-1", "t1", "Bash", railway_delete())));
    let (dec, _) = decision(&d.hook(
        &[],
        &pre("sess-1", "t2", "Read", json!({"file_path": "/a"})),
    ));
    assert_eq!(dec, "allow");
    let records = d.ok(&["--json", "audit", "verify"]).json()["records"]
        .as_u64()
        .unwrap();
    assert!(records >= 5);
    // Rewrite the denial (record 4: budget_set x2, approval_requested, denial) into an allow.
    let seq = 4;
    let kinds = audit_kinds(&d);
    assert_eq!(kinds[seq - 1], "denial");
    tamper(&d.path("cycles.db"), seq);

    let r = d.run(&["audit", "verify"], "");
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(&format!("broken at record {seq}")),
        "{}",
        r.stderr
    );
    let r = d.run(&["--json", "audit", "verify"], "");
    assert_eq!(r.code, 1);
    let v = r.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_broken"]["seq"], seq as u64);
    assert_eq!(v["records"], (seq - 1) as u64);
}

/// A budget edited in the file leaves every record intact; `audit verify` still fails (exit 1)
/// and names the budget, because records carry the budgets' post-states.
#[test]
fn a_budget_edited_in_the_file_fails_verification_naming_it() {
    let d = Dir::new();
    d.init();
    let (dec, _) = decision(&d.hook(
        &[],
        &pre("sess-1", "t1", "Read", json!({"file_path": "/a"})),
    ));
    assert_eq!(dec, "allow");
    assert_eq!(d.run(&["audit", "verify"], "").code, 0);
    let ledger = cycles_core::SqliteLedger::open(d.path("cycles.db")).unwrap();
    ledger
        .execute_raw("UPDATE budgets SET allocated = allocated + 1000000")
        .unwrap();
    drop(ledger);
    let r = d.run(&["audit", "verify"], "");
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("the ledger's state differs") && r.stderr.contains("budget "),
        "{}",
        r.stderr
    );
    let v = d.run(&["--json", "audit", "verify"], "").json();
    assert_eq!(v["ok"], false);
    assert!(v.get("first_broken").is_none(), "{v}");
    let mismatches = v["state_mismatches"].as_array().unwrap();
    assert!(!mismatches.is_empty(), "{v}");
    assert!(
        mismatches
            .iter()
            .all(|m| m["item"].as_str().unwrap().starts_with("budget ")),
        "{v}"
    );
}

#[test]
fn an_anchor_kept_elsewhere_shows_removed_last_records() {
    let d = Dir::new();
    d.init();
    decision(&d.hook(&[], &pre("sess-1", "t1", "Bash", railway_delete())));
    let anchor = d.ok(&["audit", "anchor"]).stdout.trim().to_string();
    let (seq, hash) = anchor.split_once(':').unwrap();
    let seq: u64 = seq.parse().unwrap();
    assert_eq!(hash.len(), 64, "{anchor}");
    assert_eq!(
        d.ok(&["--json", "audit", "anchor"]).json()["anchor"],
        json!(anchor)
    );
    // The denial that should stay on record, and everything after it, removed by someone who
    // can write the ledger: the chain alone still verifies...
    let ledger = cycles_core::SqliteLedger::open(d.path("cycles.db")).unwrap();
    ledger
        .execute_raw(&format!("DELETE FROM audit WHERE seq >= {seq}"))
        .unwrap();
    drop(ledger);
    assert_eq!(d.run(&["audit", "verify"], "").code, 0);
    // ...the anchor does not.
    let r = d.run(&["audit", "verify", "--anchor", &anchor], "");
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("records were removed"), "{}", r.stderr);
    let v = d
        .run(&["--json", "audit", "verify", "--anchor", &anchor], "")
        .json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_broken"]["seq"], seq);
    // A malformed anchor is an error (exit 3, INVALID_REQUEST), not a verdict on the chain (1).
    let r = d.run(&["audit", "verify", "--anchor", "12:nothex"], "");
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("INVALID_REQUEST"), "{}", r.stderr);
}

fn tamper(db: &Path, seq: usize) {
    let ledger = cycles_core::SqliteLedger::open(db).unwrap();
    ledger
        .execute_raw(&format!(
            "UPDATE audit SET body = replace(body, '\"DENY\"', '\"ALLOW\"') WHERE seq = {seq}"
        ))
        .unwrap();
}

#[test]
fn init_writes_a_valid_commented_policy_and_never_overwrites_a_ledger() {
    let d = Dir::new();
    let r = d.ok(&["--json", "init"]);
    let v = r.json();
    assert_eq!(v["policy_written"], true);
    assert_eq!(v["balances"][0]["scope"], "app:claude-code");
    let text = std::fs::read_to_string(d.path("cycles.toml")).unwrap();
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() > 10,
        "commented"
    );
    let check = d.ok(&["--json", "policy", "check", "cycles.toml"]).json();
    assert_eq!(check["ok"], true);
    assert_eq!(check["approval_threshold_tier"], 4);

    let r = d.run(&["init"], "");
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("LEDGER_EXISTS"), "{}", r.stderr);

    // An existing policy is kept; an invalid one stops init before a ledger is created.
    let d = Dir::new();
    std::fs::write(
        d.path("cycles.toml"),
        "[[budgets]]\nscope = \"tenant:x\"\nunit = \"RISK_POINTS\"\nallocated = 5\n",
    )
    .unwrap();
    let v = d.ok(&["--json", "init"]).json();
    assert_eq!(v["policy_written"], false);
    assert_eq!(v["balances"][0]["scope"], "tenant:x");
    let d = Dir::new();
    std::fs::write(d.path("cycles.toml"), "tier_points = 3\n").unwrap();
    let r = d.run(&["init"], "");
    assert_eq!(r.code, 3);
    assert!(!d.path("cycles.db").exists());
}

#[test]
fn an_unreachable_postgres_url_or_a_foreign_scheme_fails_closed() {
    let d = Dir::new();
    d.init();
    // Port 1 on loopback: nothing listens there (the CLI is built with PostgreSQL support).
    for (ledger, code) in [
        (
            "postgres://cycles:pw@127.0.0.1:1/cycles",
            "LEDGER_UNAVAILABLE",
        ),
        ("mysql://127.0.0.1/cycles", "INVALID_REQUEST"),
        ("postgres:127.0.0.1/cycles", "INVALID_REQUEST"),
    ] {
        let r = d.run(&["--ledger", ledger, "--json", "balances"], "");
        assert_eq!(r.code, 3, "{ledger}: {}{}", r.stdout, r.stderr);
        assert_eq!(r.json()["error"]["code"], code, "{ledger}");
        assert!(
            !r.stdout.contains(":pw@"),
            "the password was printed: {}",
            r.stdout
        );
        let event = pre("s1", "tu_1", "Read", json!({"file_path": "/etc/hosts"}));
        let hook = d.hook(&["--ledger", ledger], &event);
        assert_eq!(hook.code, 2, "{ledger}: {}{}", hook.stdout, hook.stderr);
        assert!(hook.stdout.is_empty(), "{}", hook.stdout);
        assert!(hook.stderr.contains(code), "{ledger}: {}", hook.stderr);
    }
    // Nothing was opened as a SQLite file instead.
    let mut names: Vec<String> = std::fs::read_dir(d.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with("cycles.db"))
        .collect();
    names.sort();
    assert_eq!(names, vec!["cycles.toml".to_string()]);
}

#[test]
fn policy_check_names_the_line_and_field() {
    let d = Dir::new();
    std::fs::write(
        d.path("bad.toml"),
        "[[tools]]\nname = \"read\"\ntier = 0\n\n[[tools]]\nname = \"drop\"\ntier = 7\n",
    )
    .unwrap();
    let r = d.run(&["policy", "check", "bad.toml"], "");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("line 7"), "{}", r.stderr);
    assert!(r.stderr.contains("tools[1].tier"), "{}", r.stderr);
    let r = d.run(&["--json", "policy", "check", "bad.toml"], "");
    assert_eq!(r.code, 1);
    assert_eq!(r.json()["ok"], false);
    assert_eq!(r.json()["error"]["code"], "POLICY_INVALID");
    let r = d.run(&["policy", "check", "missing.toml"], "");
    assert_eq!(r.code, 1);
}

#[test]
fn policy_explain_rates_a_call_without_a_ledger() {
    let d = Dir::new();
    std::fs::write(
        d.path("cycles.toml"),
        r#"
tier_points = [0, 1, 5, 20, 50]
unknown_tool = { action = "deny" }

[approval]
threshold_tier = 3

[[tools]]
name = "run_sql"
tier = 0
classifier = "sql"
arg = "query"

[[max_tier]]
scope = "tenant:acme/agent:intern"
max_tier = 1
"#,
    )
    .unwrap();
    let explain = |args: &[&str]| {
        let mut all = vec!["--json", "policy", "explain"];
        all.extend_from_slice(args);
        d.ok(&all).json()
    };
    let read = explain(&["run_sql", r#"{"query": "SELECT * FROM users"}"#]);
    assert_eq!(read["tier"], 0);
    assert_eq!(read["risk_points"], 0);
    assert_eq!(read["approval_required"], false);
    assert_eq!(read["deny"], Value::Null);
    assert!(
        read["rules"]
            .as_array()
            .unwrap()
            .contains(&json!("sql.select"))
    );
    let drop = explain(&["run_sql", r#"{"query": "DELETE FROM users"}"#]);
    assert_eq!(drop["tier"], 3);
    assert_eq!(drop["risk_points"], 20);
    assert_eq!(drop["approval_required"], true, "threshold 3: {drop}");
    // A scope under a [[max_tier]] rule: the policy denies before any budget or approval.
    let intern = explain(&[
        "run_sql",
        r#"{"query": "DELETE FROM users"}"#,
        "--scope",
        "tenant:acme/agent:intern/toolset:db",
    ]);
    assert_eq!(intern["deny"]["reason_code"], "TIER_NOT_PERMITTED");
    assert_eq!(intern["approval_required"], false);
    let other = explain(&[
        "run_sql",
        r#"{"query": "DELETE FROM users"}"#,
        "--scope",
        "tenant:acme/agent:senior",
    ]);
    assert_eq!(other["deny"], Value::Null);
    let unknown = explain(&["drop_everything"]);
    assert_eq!(unknown["unknown"], true);
    assert_eq!(unknown["deny"]["reason_code"], "TOOL_UNKNOWN");
    // The text form says the same to a person.
    let text = d.ok(&[
        "policy",
        "explain",
        "run_sql",
        r#"{"query": "DELETE FROM users"}"#,
    ]);
    assert!(text.stdout.contains("tier 3"), "{}", text.stdout);
    assert!(text.stdout.contains("needs approval"), "{}", text.stdout);
    // Bad input: a typed error, exit 3.
    for bad in [
        vec!["policy", "explain", "run_sql", "not json"],
        vec!["policy", "explain", "bad name!"],
        vec!["policy", "explain", "run_sql", "--scope", "planet:earth"],
    ] {
        let r = d.run(&bad, "");
        assert_eq!(r.code, 3, "{bad:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("INVALID_REQUEST"),
            "{bad:?}: {}",
            r.stderr
        );
    }
    // An unreadable policy is an error, never a rating.
    std::fs::write(d.path("cycles.toml"), "tier_points = [").unwrap();
    let r = d.run(&["policy", "explain", "run_sql"], "");
    assert_eq!(r.code, 3, "{}", r.stderr);
    // Explaining reads no ledger and creates none.
    assert!(!d.path("cycles.db").exists());
}

#[test]
fn budgets_balances_and_errors() {
    let d = Dir::new();
    d.init();
    let b = d
        .ok(&[
            "--json",
            "budget",
            "set",
            "--scope",
            "tenant:acme",
            "--allocated",
            "500",
            "--overdraft-limit",
            "10",
        ])
        .json();
    assert_eq!(b["allocated"], 500);
    assert_eq!(b["overdraft_limit"], 10);
    d.ok(&[
        "budget",
        "set",
        "--scope",
        "tenant:acme/agent:bot",
        "--unit",
        "TOKENS",
        "--allocated",
        "9",
    ]);
    let shown = d.ok(&["--json", "budget", "show", "tenant:acme"]).json();
    assert_eq!(shown.as_array().unwrap().len(), 1, "exactly that scope");
    let under = d
        .ok(&["--json", "balances", "--scope", "tenant:acme"])
        .json();
    assert_eq!(under.as_array().unwrap().len(), 2, "the scope and below");
    assert_eq!(
        d.ok(&["--json", "balances"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let human = d.ok(&["balances"]).stdout;
    assert!(
        human.contains("tenant:acme/agent:bot") && human.contains("TOKENS"),
        "{human}"
    );

    let r = d.run(
        &[
            "budget",
            "set",
            "--scope",
            "tenant:acme",
            "--unit",
            "EUR",
            "--allocated",
            "1",
        ],
        "",
    );
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("INVALID_REQUEST"), "{}", r.stderr);
    let r = d.run(
        &["budget", "set", "--scope", "nonsense", "--allocated", "1"],
        "",
    );
    assert_eq!(r.code, 3);
    let r = d.run(&["--json", "budget", "show", "tenant:nobody"], "");
    assert_eq!(r.code, 3);
    assert_eq!(r.json()["error"]["code"], "NOT_FOUND");
    // Without a ledger every command fails with LEDGER_UNAVAILABLE instead of creating one.
    let e = Dir::new();
    let r = e.run(&["balances"], "");
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("LEDGER_UNAVAILABLE"), "{}", r.stderr);
    assert!(!e.path("cycles.db").exists());
    // Usage errors are clap's exit 2.
    assert_eq!(d.run(&["budget", "set"], "").code, 2);
}

#[test]
fn audit_export_and_tail() {
    let d = Dir::new();
    d.init();
    for i in 0..3 {
        decision(&d.hook(
            &[],
            &pre(
                "sess-1",
                &format!("t{i}"),
                "Read",
                json!({"file_path": "/a"}),
            ),
        ));
    }
    let verify = d.ok(&["--json", "audit", "verify"]).json();
    let n = verify["records"].as_u64().unwrap() as usize;
    let lines: Vec<Value> = d
        .ok(&["audit", "export", "--format", "jsonl"])
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), n);
    assert_eq!(lines.last().unwrap()["hash"], verify["head_hash"]);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["seq"], (i + 1) as u64);
    }
    let file = d.path("out.jsonl");
    let r = d.ok(&[
        "audit",
        "export",
        "--kind",
        "reserve",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(r.stdout.contains("exported 3 records"), "{}", r.stdout);
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 3);
    let r = d.ok(&["audit", "export", "--scope", SESSION_SCOPE]);
    assert_eq!(
        r.stdout.lines().count(),
        4,
        "session budget_set + 3 reserves"
    );
    let tail = d.ok(&["audit", "tail", "-n", "2"]).stdout;
    assert_eq!(tail.lines().count(), 2);
    assert!(
        tail.lines().last().unwrap().starts_with(&format!("#{n}")),
        "{tail}"
    );
    let tail = d.ok(&["--json", "audit", "tail", "-n", "1"]).stdout;
    assert_eq!(
        serde_json::from_str::<Value>(tail.trim()).unwrap()["seq"],
        n as u64
    );
    let r = d.run(&["audit", "export", "--kind", "nope"], "");
    assert_eq!(r.code, 3);
}

#[test]
fn post_tool_use_failure_still_commits_the_reservation() {
    let d = Dir::new();
    d.init();
    let write = json!({"file_path": "/work/app/b.rs", "content": "x"});
    let (dec, _) = decision(&d.hook(&[], &pre("sess-1", "toolu_9", "Write", write.clone())));
    assert_eq!(dec, "allow");
    let mut failed = post("sess-1", "toolu_9", "Write", write);
    failed["hook_event_name"] = json!("PostToolUseFailure");
    failed["error"] = json!("disk full");
    let r = d.hook(&[], &failed);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = balance(&d, SESSION_SCOPE);
    assert_eq!(
        (s["spent"].clone(), s["reserved"].clone()),
        (json!(1), json!(0))
    );
    // A second delivery of the same event finds nothing active and charges nothing more.
    let kinds_before = audit_kinds(&d).len();
    let r = d.hook(&[], &failed);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(balance(&d, SESSION_SCOPE)["spent"], 1);
    assert_eq!(audit_kinds(&d).len(), kinds_before);
}

/// With `on_failure = "RELEASE"` a failed call gives its hold back (reserved and unreserved
/// alike), while a completed one is still charged: the hook follows the same policy key as
/// every other integration (`Authority::settle`).
#[test]
fn post_tool_use_failure_releases_when_the_policy_says_release() {
    let d = Dir::new();
    d.init();
    d.edit_policy(|t| {
        assert!(
            t.contains("on_failure = \"CHARGE\""),
            "the starter policy charges failures"
        );
        t.replace("on_failure = \"CHARGE\"", "on_failure = \"RELEASE\"")
    });
    let write = json!({"file_path": "/work/app/b.rs", "content": "x"});
    let (dec, _) = decision(&d.hook(&[], &pre("sess-1", "toolu_1", "Write", write.clone())));
    assert_eq!(dec, "allow");
    assert_eq!(balance(&d, SESSION_SCOPE)["reserved"], 1);
    let mut failed = post("sess-1", "toolu_1", "Write", write.clone());
    failed["hook_event_name"] = json!("PostToolUseFailure");
    let r = d.hook(&[], &failed);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = balance(&d, SESSION_SCOPE);
    assert_eq!(
        (s["spent"].clone(), s["reserved"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(audit_kinds(&d).last().map(String::as_str), Some("release"));
    // Re-delivered: nothing more.
    let n = audit_kinds(&d).len();
    assert_eq!(d.hook(&[], &failed).code, 0);
    assert_eq!(audit_kinds(&d).len(), n);
    // A failed call that ran without a reservation is not charged either.
    let mut unreserved = post("sess-1", "toolu_2", "Write", write.clone());
    unreserved["hook_event_name"] = json!("PostToolUseFailure");
    assert_eq!(d.hook(&[], &unreserved).code, 0);
    assert_eq!(balance(&d, SESSION_SCOPE)["spent"], 0);
    assert_eq!(audit_kinds(&d).len(), n);
    // A completed one is.
    let (dec, _) = decision(&d.hook(&[], &pre("sess-1", "toolu_3", "Write", write.clone())));
    assert_eq!(dec, "allow");
    assert_eq!(
        d.hook(&[], &post("sess-1", "toolu_3", "Write", write)).code,
        0
    );
    assert_eq!(balance(&d, SESSION_SCOPE)["spent"], 1);
}

// --- Adversarial review of the hook: inputs, event fields, PostToolUse, failing closed. ------

/// Every file tool's write target is read by the path rules, whatever other keys the input
/// carries: an extra `path` key must not stand in for the `notebook_path` Claude Code writes.
#[test]
fn the_path_rules_read_the_argument_each_file_tool_writes() {
    let d = Dir::new();
    d.init();
    let settings = "/work/app/.claude/settings.json";
    for (i, (tool, input)) in [
        (
            "NotebookEdit",
            json!({"path": "/work/app/a.ipynb", "notebook_path": settings, "new_source": "x"}),
        ),
        (
            "NotebookEdit",
            json!({"notebook_path": "/work/app/.cycles/cycles.db", "new_source": "x"}),
        ),
        (
            "MultiEdit",
            json!({"file_path": settings, "edits": [{"old_string": "a", "new_string": "b"}]}),
        ),
        (
            "Write",
            json!({"filename": "/work/app/a.txt", "path": "/work/app/b.txt", "file_path": settings, "content": "{}"}),
        ),
        // No file_path at all: not an ordinary write.
        ("Write", json!({"path": "/work/app/a.txt", "content": "{}"})),
        ("Edit", json!({"file_path": 7, "old_string": "a", "new_string": "b"})),
    ]
    .into_iter()
    .enumerate()
    {
        let (dec, reason) = decision(&d.hook(
            &["--approval", "deny"],
            &pre("sess-1", &format!("toolu_{i}"), tool, input.clone()),
        ));
        assert_eq!(dec, "deny", "{tool} {input}: {reason}");
        assert!(reason.contains("tier 4"), "{tool} {input}: {reason}");
    }
    // An ordinary notebook is still tier 1 (the checks above can fail).
    let (dec, reason) = decision(&d.hook(
        &[],
        &pre(
            "sess-1",
            "toolu_ok",
            "NotebookEdit",
            json!({"notebook_path": "/work/app/a.ipynb", "new_source": "x"}),
        ),
    ));
    assert_eq!(dec, "allow", "{reason}");
    assert!(reason.contains("tier 1"), "{reason}");
}

/// Bash: `run_in_background` and extra keys change nothing; a command that is not a string is
/// not read as harmless.
#[test]
fn bash_inputs_the_classifier_cannot_read_are_tier_4() {
    let d = Dir::new();
    d.init();
    for (i, input) in [
        json!({"command": ["railway", "volume", "delete", "--volume", "v", "--yes"]}),
        json!({"command": {"argv": "rm -rf /"}}),
        json!({"command": 1}),
        json!({"cmd": "rm -rf /"}),
        json!({"command": "railway volume delete --volume v --yes", "run_in_background": true}),
    ]
    .into_iter()
    .enumerate()
    {
        let (dec, reason) = decision(&d.hook(
            &["--approval", "deny"],
            &pre("sess-1", &format!("toolu_{i}"), "Bash", input.clone()),
        ));
        assert_eq!(dec, "deny", "{input}: {reason}");
        assert!(reason.contains("tier 4"), "{input}: {reason}");
    }
    // Extra keys Claude Code ignores do not lower a command's tier, nor raise `ls`.
    let (dec, reason) = decision(&d.hook(
        &[],
        &pre(
            "sess-1",
            "toolu_ls",
            "Bash",
            json!({"command": "ls", "cmd": "rm -rf /", "run_in_background": true}),
        ),
    ));
    assert_eq!(dec, "allow", "{reason}");
    assert!(reason.contains("tier 0"), "{reason}");
}

/// Reusing a tool_use_id for another call must not replay its `allow`; re-delivering the event
/// of a call that already ran must not allow it a second time.
#[test]
fn a_tool_use_id_cannot_replay_an_allow() {
    let d = Dir::new();
    d.init();
    let ls = json!({"command": "ls"});
    let (dec, _) = decision(&d.hook(&[], &pre("sess-1", "toolu_1", "Bash", ls.clone())));
    assert_eq!(dec, "allow");
    // Same session and tool_use_id, another command: blocked, never the replayed allow.
    let r = d.hook(
        &[],
        &pre(
            "sess-1",
            "toolu_1",
            "Bash",
            json!({"command": "git push --force"}),
        ),
    );
    assert_eq!(r.code, 2, "{} {}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "");
    assert!(r.stderr.contains("IDEMPOTENCY_MISMATCH"), "{}", r.stderr);
    // Re-delivered before the tool ran: the same answer (one reservation, one hold).
    let (dec, _) = decision(&d.hook(&[], &pre("sess-1", "toolu_1", "Bash", ls.clone())));
    assert_eq!(dec, "allow");
    let r = d.hook(&[], &post("sess-1", "toolu_1", "Bash", ls.clone()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // After it ran: the same event is refused instead of replayed.
    let edit = json!({"file_path": "/work/app/a.rs", "old_string": "a", "new_string": "b"});
    let (dec, _) = decision(&d.hook(&[], &pre("sess-1", "toolu_2", "Edit", edit.clone())));
    assert_eq!(dec, "allow");
    let r = d.hook(&[], &post("sess-1", "toolu_2", "Edit", edit.clone()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (dec, reason) = decision(&d.hook(&[], &pre("sess-1", "toolu_2", "Edit", edit)));
    assert_eq!(dec, "deny", "{reason}");
    assert!(reason.contains("already used"), "{reason}");
    assert_eq!(balance(&d, SESSION_SCOPE)["spent"], 1);
    // Another session's id space is its own: the same tool_use_id there is a new call.
    let (dec, _) = decision(&d.hook(&[], &pre("sess-2", "toolu_2", "Bash", ls)));
    assert_eq!(dec, "allow");
    // Ids the subject rules refuse block; they are never mapped onto another session.
    for bad in ["sess-1/agent:x", "sess-1:toolu_2", "", &"s".repeat(200)] {
        let r = d.hook(&[], &pre(bad, "toolu_9", "Bash", json!({"command": "ls"})));
        assert_eq!(r.code, 2, "{bad:?}: {} {}", r.stdout, r.stderr);
        assert_eq!(r.stdout, "");
    }
    let r = d.hook(
        &[],
        &pre("sess-1", &"t".repeat(300), "Bash", json!({"command": "ls"})),
    );
    assert_eq!(r.code, 2, "{} {}", r.stdout, r.stderr);
}

/// A crafted PostToolUse commits only its own subject's reservation, never refunds, and
/// charges what actually ran when it differs from what was reserved.
#[test]
fn post_tool_use_cannot_commit_another_subject_or_lower_a_charge() {
    let d = Dir::new();
    d.init();
    let edit = json!({"file_path": "/work/app/a.rs", "old_string": "a", "new_string": "b"});
    let (dec, _) = decision(&d.hook(&[], &pre("sess-1", "toolu_1", "Edit", edit.clone())));
    assert_eq!(dec, "allow");
    // Another session's PostToolUse with this tool_use_id: charged to that session as an
    // unreserved call, the reservation of sess-1 untouched.
    let r = d.hook(&[], &post("sess-2", "toolu_1", "Edit", edit.clone()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(balance(&d, SESSION_SCOPE)["reserved"], 1);
    assert_eq!(balance(&d, SESSION_SCOPE)["spent"], 0);
    // Another app on the same ledger, same session id and tool_use_id: not sess-1's either.
    let r = d.hook(
        &["--app", "other-app"],
        &post("sess-1", "toolu_1", "Edit", edit.clone()),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(balance(&d, SESSION_SCOPE)["reserved"], 1);
    assert_eq!(
        balance(&d, "app:other-app/workflow:sess-1")["spent"],
        1,
        "the other app's call is charged to the other app"
    );

    // What ran is not what was reserved (a tier 1 edit rewritten into an edit of the hook
    // settings): charged as what ran, 50, not the 1 held.
    let settings = json!({"file_path": "/work/app/.claude/settings.json", "old_string": "a", "new_string": "b"});
    let r = d.hook(&[], &post("sess-1", "toolu_1", "Edit", settings));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("not the call reserved"), "{}", r.stderr);
    let s = balance(&d, SESSION_SCOPE);
    assert_eq!(
        (s["spent"].clone(), s["reserved"].clone()),
        (json!(50), json!(0))
    );
    // Re-delivered: nothing more.
    let r = d.hook(&[], &post("sess-1", "toolu_1", "Edit", edit.clone()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(balance(&d, SESSION_SCOPE)["spent"], 50);

    // A cheaper call than the one reserved is still charged the hold (no refund).
    let hooks = json!({"file_path": "/work/app/.git/hooks/pre-commit", "content": "x"});
    let (dec, _) = decision(&d.hook(&[], &pre("sess-1", "toolu_2", "Write", hooks)));
    assert_eq!(dec, "allow");
    let cheap = json!({"file_path": "/work/app/b.txt", "content": "x"});
    let r = d.hook(&[], &post("sess-1", "toolu_2", "Write", cheap));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(balance(&d, SESSION_SCOPE)["spent"], 70);
    assert_eq!(d.ok(&["--json", "audit", "verify"]).json()["ok"], true);
}

/// A grant signed for one session's call does not serve the same call in another session.
#[test]
fn a_grant_for_one_session_does_not_serve_another() {
    let (d, id) = approval_pending();
    d.ok(&["approve", &id, "--key", "alice.key", "--ttl", "10m"]);
    for mode in ["deny", "ask"] {
        let (dec, reason) = decision(&d.hook(
            &["--approval", mode],
            &pre("sess-2", &format!("toolu_{mode}"), "Bash", railway_delete()),
        ));
        assert_eq!(dec, mode, "{reason}");
        assert_ne!(request_id(&reason), id);
    }
    let all = d.ok(&["--json", "approvals", "list", "--all"]).json();
    let mine = all
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["request_id"] == json!(id))
        .unwrap();
    assert_eq!(mine["status"], "GRANTED", "still unused by its own session");
    // Its own session gets it (the assertions above can fail).
    let (dec, reason) = decision(&d.hook(
        &["--approval", "deny"],
        &pre("sess-1", "toolu_2", "Bash", railway_delete()),
    ));
    assert_eq!(dec, "allow", "{reason}");
}

/// More ways to fail: a ledger another process holds locked, oversized and too deeply nested
/// events. Each blocks (exit 2, nothing on stdout).
#[test]
fn hook_blocks_on_a_locked_ledger_and_oversized_events() {
    let d = Dir::new();
    d.init();
    let event = pre("sess-1", "toolu_1", "Bash", json!({"command": "ls"}));
    {
        let holder = cycles_core::SqliteLedger::open(d.path("cycles.db")).unwrap();
        holder.execute_raw("BEGIN EXCLUSIVE").unwrap();
        let r = d.hook(&[], &event);
        assert_eq!(r.code, 2, "{} {}", r.stdout, r.stderr);
        assert_eq!(r.stdout, "");
        holder.execute_raw("ROLLBACK").unwrap();
    }
    let big = "x".repeat((32 << 20) + 1);
    let r = d.run(&["hook", "claude-code"], &big);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("larger than"), "{}", r.stderr);
    assert_eq!(r.stdout, "");
    let mut deep = json!("x");
    for _ in 0..100 {
        deep = json!({ "a": deep });
    }
    let r = d.hook(
        &[],
        &pre("sess-1", "toolu_2", "mcp__x__y", json!({ "data": deep })),
    );
    assert_eq!(r.code, 2, "{} {}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "");
    // A large but legitimate Write is still answered.
    let content = "y".repeat(4 << 20);
    let (dec, reason) = decision(&d.hook(
        &[],
        &pre(
            "sess-1",
            "toolu_3",
            "Write",
            json!({"file_path": "/work/app/big.txt", "content": content}),
        ),
    ));
    assert_eq!(dec, "allow", "{reason}");
    let (dec, _) = decision(&d.hook(&[], &event));
    assert_eq!(dec, "allow");
}

/// MCP names with odd characters are still rated: by their name, or as unknown tools.
#[test]
fn odd_tool_names_are_never_free() {
    let d = Dir::new();
    d.init();
    for (i, name) in [
        "mcp__railway__volume-delete",
        "mcp__rail way__VOLUME_DELETE",
        "MCP__railway__volume_delete",
        "mcp__railway__volume_delete\u{0}",
        "Bash\u{200b}",
        "bash",
    ]
    .iter()
    .enumerate()
    {
        let r = d.hook(
            &["--approval", "deny"],
            &pre(
                "sess-1",
                &format!("toolu_{i}"),
                name,
                json!({"command": "railway volume delete --volume v --yes"}),
            ),
        );
        if r.code == 2 {
            assert_eq!(r.stdout, "", "{name:?}");
            continue;
        }
        let (dec, reason) = decision(&r);
        assert_eq!(dec, "deny", "{name:?}: {reason}");
        assert!(
            reason.contains("tier 4") || reason.contains("TOOL_UNKNOWN"),
            "{name:?}: {reason}"
        );
    }
}

#[test]
fn the_starter_policy_registers_claude_codes_session_tools() {
    let d = Dir::new();
    d.init();
    for (tool, tier) in [
        ("BashOutput", 0),
        ("ExitPlanMode", 0),
        ("AskUserQuestion", 0),
        ("Skill", 0),
        ("SlashCommand", 0),
        ("TodoWrite", 0),
        ("KillShell", 1),
    ] {
        let e = d.ok(&["--json", "policy", "explain", tool, "{}"]).json();
        assert_eq!(e["tier"], tier, "{tool}: {e}");
        assert_eq!(e["unknown"], false, "{tool}: {e}");
        assert_eq!(e["approval_required"], false, "{tool}: {e}");
    }
}

#[test]
fn keygen_creates_a_missing_directory_private_and_never_overwrites() {
    let d = Dir::new();
    let out = d.path("home/.config/cycles/alice.key");
    let r = d.ok(&["keygen", "--id", "alice", "--out", out.to_str().unwrap()]);
    assert!(out.is_file(), "{}", r.stdout);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for dir in ["home", "home/.config", "home/.config/cycles"] {
            let mode = std::fs::metadata(d.path(dir)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{dir}: {mode:o}");
        }
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let before = std::fs::read_to_string(&out).unwrap();
    let r = d.run(
        &["keygen", "--id", "alice", "--out", out.to_str().unwrap()],
        "",
    );
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("INVALID_REQUEST"), "{}", r.stderr);
    assert!(
        r.stderr.contains("already exists")
            && r.stderr.contains("never overwritten: choose another --out"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), before);
    let r = d.run(
        &[
            "--json",
            "keygen",
            "--id",
            "bob",
            "--out",
            out.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(r.code, 3);
    assert_eq!(r.json()["error"]["code"], "INVALID_REQUEST");
    // An existing directory keeps its mode; --help says what keygen does with a missing one.
    let help = d.ok(&["keygen", "--help"]).stdout;
    assert!(help.contains("0700"), "{help}");
}

#[test]
fn keygens_hint_is_only_the_public_keys_line_for_the_existing_approval_table() {
    let d = Dir::new();
    d.init();
    let r = d.ok(&["keygen", "--id", "alice", "--out", "alice.key"]);
    assert!(!r.stdout.contains("\n[approval]\n"), "{}", r.stdout);
    assert!(r.stdout.contains("[approval] table"), "{}", r.stdout);
    assert!(r.stdout.contains("cycles.toml"), "{}", r.stdout);
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("public_keys = "))
        .unwrap_or_else(|| panic!("{}", r.stdout))
        .to_string();
    // Put where it says (the starter policy's `public_keys = []`), the policy is valid and
    // the key approves.
    d.edit_policy(|t| t.replace("public_keys = []", &line));
    d.ok(&["policy", "check", "cycles.toml"]);
    let (dec, reason) = decision(&d.hook(
        &["--approval", "deny"],
        &pre("sess-1", "toolu_1", "Bash", railway_delete()),
    ));
    assert_eq!(dec, "deny");
    d.ok(&["approve", &request_id(&reason), "--key", "alice.key"]);
}

#[test]
fn an_unlisted_approver_key_is_named_with_the_policy_it_is_missing_from() {
    let (d, id) = approval_pending();
    let public = d
        .ok(&[
            "--json",
            "keygen",
            "--id",
            "mallory",
            "--out",
            "mallory.key",
        ])
        .json()["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    for args in [
        vec!["approve", id.as_str(), "--key", "mallory.key"],
        vec![
            "deny",
            id.as_str(),
            "--key",
            "mallory.key",
            "--reason",
            "no",
        ],
    ] {
        let r = d.run(&args, "");
        assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("[APPROVAL_INVALID]"), "{}", r.stderr);
        assert!(r.stderr.contains("unknown_key"), "{}", r.stderr);
        assert!(r.stderr.contains("cycles.toml"), "{}", r.stderr);
        assert!(r.stderr.contains(&public), "{}", r.stderr);
        assert!(r.stderr.contains("mallory"), "{}", r.stderr);
        assert!(
            r.stderr.contains("`public_keys`") && r.stderr.contains("[approval]"),
            "{}",
            r.stderr
        );
    }
    let r = d.run(&["--json", "approve", &id, "--key", "mallory.key"], "");
    assert_eq!(r.json()["error"]["code"], "APPROVAL_INVALID");
    // Another policy file is named as the one read.
    std::fs::copy(d.path("cycles.toml"), d.path("other.toml")).unwrap();
    let r = d.run(
        &[
            "--policy",
            "other.toml",
            "approve",
            &id,
            "--key",
            "mallory.key",
        ],
        "",
    );
    assert!(r.stderr.contains("other.toml"), "{}", r.stderr);
}

#[test]
fn approvals_list_prints_deadlines_as_utc_timestamps() {
    let (d, id) = approval_pending();
    d.ok(&["approve", &id, "--key", "alice.key", "--ttl", "10m"]);
    let listed = d.ok(&["--json", "approvals", "list"]).json();
    let open_until = listed[0]["expires_at_ms"].as_i64().unwrap();
    let granted_until = listed[0]["grant"]["expires_at_ms"].as_i64().unwrap();
    let human = d.ok(&["approvals", "list"]).stdout;
    assert!(!human.contains(&open_until.to_string()), "{human}");
    assert!(!human.contains(&granted_until.to_string()), "{human}");
    let stamps: Vec<&str> = human
        .split_whitespace()
        .filter(|w| w.len() == 24 && w.ends_with('Z') && w.as_bytes()[10] == b'T')
        .collect();
    assert_eq!(stamps.len(), 2, "{human}");
    assert!(
        human.contains(&format!("open until {}", stamps[0])),
        "{human}"
    );
    assert!(human.contains(&format!("until {}", stamps[1])), "{human}");
    // The same instants: check with a known conversion (date -u) when it is available.
    if let Ok(out) = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", open_until / 1000),
            "+%Y-%m-%dT%H:%M:%S",
        ])
        .output()
        && out.status.success()
    {
        let want = format!(
            "{}.{:03}Z",
            String::from_utf8(out.stdout).unwrap().trim(),
            open_until % 1000
        );
        assert_eq!(stamps[0], want);
    }
}
