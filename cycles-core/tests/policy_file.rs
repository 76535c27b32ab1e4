//! Loading the policy file: every kind of invalid policy is a POLICY_INVALID error naming the
//! file, the line and the field, and the authority refuses to start with it.

use cycles_core::*;

const GOOD: &str = r#"
tier_points = [0, 1, 5, 20, 50]
unknown_tool = { action = "tier", tier = 3 }

[[tools]]
name = "read_file"
tier = 0

[[tools]]
name = "railway.*"
tier = 2
kind = "infra.call"

[[budgets]]
scope = "tenant:acme"
unit = "RISK_POINTS"
allocated = 100

[[max_tier]]
scope = "tenant:acme/agent:intern"
max_tier = 1
"#;

/// Loads `text`, expects an error, and checks the message names origin, line and field.
fn expect_error(text: &str, line: usize, field: &str) -> String {
    let err = Policy::from_toml_str(text, "bad.toml").unwrap_err();
    assert_eq!(err.code(), "POLICY_INVALID", "{err}");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("bad.toml"), "no file in {msg:?}");
    assert!(
        msg.contains(&format!("line {line},")),
        "no line {line} in {msg:?}"
    );
    assert!(msg.contains(field), "no field {field:?} in {msg:?}");
    msg
}

#[test]
fn good_policy_loads() {
    let p = Policy::from_toml_str(GOOD, "good.toml").unwrap();
    assert_eq!(p.tools.len(), 2);
    assert_eq!(p.tools[1].kind.as_deref(), Some("infra.call"));
    assert_eq!(p.budgets[0].allocated, 100);
    assert_eq!(p.max_tier[0].max_tier, Tier::T1);
    assert_eq!(p.unknown_tool, UnknownTool::Tier { tier: Tier::T3 });
}

#[test]
fn from_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, GOOD.replace("tier = 0", "tier = 9")).unwrap();
    let err = Policy::from_file(&path).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("tools[0].tier"), "{msg}");
    assert!(msg.contains("line 7, column 8"), "{msg}");

    let missing = dir.path().join("absent.toml");
    let err = Policy::from_file(&missing).unwrap_err();
    assert_eq!(err.code(), "POLICY_INVALID");
    assert!(err.to_string().contains("absent.toml"), "{err}");
}

#[test]
fn syntax_error_has_line_and_column() {
    let text = GOOD.replace("tier = 2\n", "tier = = 2\n");
    let msg = expect_error(&text, 11, "tier");
    assert!(
        msg.contains("column 8") || msg.contains("column 6"),
        "{msg}"
    );
    assert!(msg.contains("invalid TOML"), "{msg}");
}

#[test]
fn unknown_field() {
    let text = GOOD.replace("kind = \"infra.call\"", "knd = \"infra.call\"");
    let msg = expect_error(&text, 12, "tools[1].knd");
    assert!(msg.contains("unknown field"), "{msg}");
    let text = format!("colour = 3\n{GOOD}");
    expect_error(&text, 1, "colour");
}

#[test]
fn tier_five() {
    let msg = expect_error(&GOOD.replace("tier = 2", "tier = 5"), 11, "tools[1].tier");
    assert!(msg.contains("0 to 4"), "{msg}");
    expect_error(
        &GOOD.replace("max_tier = 1", "max_tier = 7"),
        21,
        "max_tier[0].max_tier",
    );
}

#[test]
fn negative_points() {
    let msg = expect_error(
        &GOOD.replace("[0, 1, 5, 20, 50]", "[0, 1, -5, 20, 50]"),
        2,
        "tier_points[2]",
    );
    assert!(msg.contains("non-negative"), "{msg}");
    expect_error(
        &GOOD.replace("allocated = 100", "allocated = -100"),
        17,
        "budgets[0].allocated",
    );
}

#[test]
fn bad_glob() {
    let msg = expect_error(
        &GOOD.replace("railway.*", "railway.[*"),
        10,
        "tools[1].name",
    );
    assert!(msg.contains("railway.[*"), "{msg}");
}

#[test]
fn bad_scope() {
    expect_error(
        &GOOD.replace(
            "scope = \"tenant:acme\"",
            "scope = \"tenant:acme/tenant:x\"",
        ),
        15,
        "budgets[0].scope",
    );
    expect_error(
        &GOOD.replace("tenant:acme/agent:intern", "agent:intern/tenant:acme"),
        20,
        "max_tier[0].scope",
    );
    expect_error(
        &GOOD.replace("tenant:acme/agent:intern", "planet:mars"),
        20,
        "max_tier[0].scope",
    );
}

#[test]
fn authority_refuses_to_start_with_an_invalid_policy() {
    // Policies that deserialize but do not validate (built in code, from JSON, or with a TOML
    // library) are refused by the builder with the same field names.
    let cases = [
        (
            GOOD.replace("[0, 1, 5, 20, 50]", "[0, 1, -5, 20, 50]"),
            "tier_points[2]",
        ),
        (GOOD.replace("railway.*", "railway.[*"), "tools[1].name"),
        (
            GOOD.replace("tenant:acme/agent:intern", "planet:mars"),
            "max_tier[0].scope",
        ),
        (
            GOOD.replace("allocated = 100", "allocated = -1"),
            "budgets[0].allocated",
        ),
        (
            format!("{GOOD}\n[[caps]]\nid = \"c\"\nremaining_below = -1\ncooldown_ms = 5\n"),
            "caps[0].remaining_below",
        ),
        (
            format!("{GOOD}\n[approval]\npublic_keys = [\"00\"]\n"),
            "approval.public_keys[0]",
        ),
        (
            format!("{GOOD}\n[approval]\nrequest_ttl_ms = 999\n"),
            "approval.request_ttl_ms",
        ),
        (
            CLASSIFIED.replace("classifier = \"sql\"\n", ""),
            "tools[0].arg",
        ),
    ];
    for (text, field) in cases {
        let policy: Policy = toml::from_str(&text).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open(dir.path().join("l.db")).unwrap();
        let err = Authority::builder()
            .policy(policy)
            .ledger(ledger)
            .build()
            .unwrap_err();
        assert_eq!(err.code(), "POLICY_INVALID", "{err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    let policy: Policy = serde_json::from_value(serde_json::json!({
        "tier_points": [0, 1, -5, 20, 50]
    }))
    .unwrap();
    let err = Authority::builder().policy(policy).build().unwrap_err();
    assert_eq!(err.code(), "POLICY_INVALID");
    assert!(err.to_string().contains("tier_points[2]"), "{err}");
}

const CLASSIFIED: &str = r#"
[[tools]]
name = "run_sql"
tier = 0
classifier = "sql"
arg = "query"
dialect = "postgres"
"#;

#[test]
fn classifier_registration_loads_and_classifies() {
    let p = Policy::from_toml_str(CLASSIFIED, "c.toml").unwrap();
    let compiled = p.compile().unwrap();
    let c = compiled.classify(&ToolCall::new(
        "run_sql",
        serde_json::json!({"query": "TRUNCATE users"}),
    ));
    assert_eq!(c.tier, Tier::T4);
    assert_eq!(c.rules, ["tool:run_sql", "sql.truncate"]);
}

#[test]
fn unknown_classifier() {
    let msg = expect_error(
        &CLASSIFIED.replace("\"sql\"", "\"xml\""),
        5,
        "tools[0].classifier",
    );
    assert!(msg.contains("xml") && msg.contains("shell"), "{msg}");
}

#[test]
fn bad_dialect() {
    let msg = expect_error(
        &CLASSIFIED.replace("postgres", "oracle9"),
        7,
        "tools[0].dialect",
    );
    assert!(msg.contains("oracle9") && msg.contains("mysql"), "{msg}");
}

#[test]
fn dialect_without_sql_classifier() {
    let text = CLASSIFIED.replace("classifier = \"sql\"", "classifier = \"shell\"");
    let msg = expect_error(&text, 7, "tools[0].dialect");
    assert!(msg.contains("sql"), "{msg}");
    let text = CLASSIFIED.replace("classifier = \"sql\"\n", "");
    expect_error(&text, 5, "tools[0].arg");
}

#[test]
fn bad_arg_path_and_kind() {
    expect_error(
        &CLASSIFIED.replace("arg = \"query\"", "arg = \"input..sql\""),
        6,
        "tools[0].arg",
    );
    expect_error(
        &CLASSIFIED.replace("arg = \"query\"", "kind = \"nodot\""),
        6,
        "tools[0].kind",
    );
}

fn repo_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_example_policy_loads_and_is_the_documented_one() {
    let example = repo_file("examples/policy.toml");
    let policy = Policy::from_toml_str(&example, "examples/policy.toml").unwrap();
    assert!(policy.tools.len() >= 10);
    assert_eq!(policy.caps.len(), 2);
    // No approver key ships in the example: one copied from it would be everyone's.
    assert!(policy.approval.public_keys.is_empty());
    let auth = Authority::builder().policy(policy).build().unwrap();
    let coder = Subject::new().tenant("acme").agent("coder");
    let drop = ToolCall::new(
        "bash",
        serde_json::json!({"command": "bash -c \"psql -c 'DROP DATABASE prod'\""}),
    );
    let d = auth.decide(&DecideRequest::new(coder, drop)).unwrap();
    assert_eq!(d.tier, Tier::T4);
    assert!(d.rules.contains(&"sql.drop".to_string()), "{:?}", d.rules);
    // docs/policy.md shows the same file, byte for byte.
    let docs = repo_file("docs/policy.md");
    let start = docs.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + docs[start..].find("```\n").unwrap();
    assert_eq!(
        &docs[start..end],
        example,
        "docs/policy.md and examples/policy.toml differ"
    );
}

#[test]
fn every_rule_id_is_documented() {
    let docs = repo_file("docs/policy.md");
    let mut missing: Vec<String> = Vec::new();
    let mut seen = 0;
    // Every source file under classify/, submodules included (`shell/hidden.rs`).
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/classify")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 5, "{files:?}");
    for file in files {
        let src = std::fs::read_to_string(&file).unwrap();
        for (i, _) in src.match_indices('"') {
            let rest = &src[i + 1..];
            let Some(end) = rest.find('"') else { continue };
            let id = &rest[..end];
            let is_rule = ["sql.", "shell.", "http.", "graphql.", "name."]
                .iter()
                .any(|p| id.starts_with(p))
                && id.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
                // `python -m http.server` is a module name, not a rule.
                && id != "http.server";
            if is_rule {
                seen += 1;
                if !docs.contains(&format!("`{id}`")) && !missing.iter().any(|m| m == id) {
                    missing.push(id.to_string());
                }
            }
        }
    }
    assert!(seen > 100, "found only {seen} rule ids");
    assert!(
        missing.is_empty(),
        "rule ids missing from docs/policy.md: {missing:?}"
    );
}

#[test]
fn approval_request_lifetime_is_validated() {
    // GOOD ends on line 21: `[approval]` is line 22 and the field line 24.
    for bad in ["0", "999", "-1000", "604800001", "9223372036854775807"] {
        let text = format!("{GOOD}[approval]\nthreshold_tier = 3\nrequest_ttl_ms = {bad}\n");
        let msg = expect_error(&text, 24, "approval.request_ttl_ms");
        assert!(msg.contains("604800000"), "{msg}");
    }
    for (ok, ms) in [
        ("1000", 1_000),
        ("604800000", 604_800_000),
        ("5_000", 5_000),
    ] {
        let text = format!("{GOOD}[approval]\nrequest_ttl_ms = {ok}\n");
        let p = Policy::from_toml_str(&text, "ok.toml").unwrap();
        assert_eq!(p.approval.request_ttl_ms, ms);
    }
    // Not written: one hour.
    let p = Policy::from_toml_str(&format!("{GOOD}[approval]\nthreshold_tier = 3\n"), "d.toml")
        .unwrap();
    assert_eq!(p.approval.request_ttl_ms, 3_600_000);
    assert_eq!(Policy::default().approval.request_ttl_ms, 3_600_000);
    // Not a number: a type error on the field.
    let text = format!("{GOOD}[approval]\nrequest_ttl_ms = \"1h\"\n");
    expect_error(&text, 23, "request_ttl_ms");
}

#[test]
fn approval_request_lifetime_in_the_json_policy_the_bindings_pass() {
    // The Node and Python bindings deserialize a policy object with serde_json and build an
    // authority from it: the field comes through, and a bad value is refused the same way.
    let policy: Policy = serde_json::from_value(serde_json::json!({
        "approval": { "threshold_tier": 3, "request_ttl_ms": 5000 }
    }))
    .unwrap();
    assert_eq!(policy.approval.request_ttl_ms, 5_000);
    let back = serde_json::to_value(&policy).unwrap();
    assert_eq!(back["approval"]["request_ttl_ms"], 5_000);
    Authority::builder().policy(policy).build().unwrap();

    let policy: Policy = serde_json::from_value(serde_json::json!({
        "approval": { "request_ttl_ms": 604_800_001_i64 }
    }))
    .unwrap();
    let err = Authority::builder().policy(policy).build().unwrap_err();
    assert_eq!(err.code(), "POLICY_INVALID");
    assert!(err.to_string().contains("approval.request_ttl_ms"), "{err}");
    // The default is not written out, so existing policy JSON stays as it was.
    let json = serde_json::to_value(Policy::default()).unwrap();
    assert!(json.get("approval").is_none(), "{json}");
}
