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
    // The same validation runs when a policy built in code (or from JSON) reaches the builder.
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
