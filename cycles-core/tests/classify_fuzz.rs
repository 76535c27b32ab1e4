//! Property tests: no input panics a classifier, every verdict names the rules that fired,
//! arguments never lower a registered tier, and appending a destructive statement or command
//! to anything always yields tier 4 (nothing earlier in the text can hide it).

use cycles_core::classify::{ClassifierKind, SqlDialect, http, names, shell, sql};
use cycles_core::policy::ToolRule;
use cycles_core::{Policy, Tier, ToolCall};
use proptest::prelude::*;
use serde_json::Value;

const DIALECTS: [SqlDialect; 8] = [
    SqlDialect::Generic,
    SqlDialect::Postgres,
    SqlDialect::Mysql,
    SqlDialect::Sqlite,
    SqlDialect::Mssql,
    SqlDialect::Snowflake,
    SqlDialect::Bigquery,
    SqlDialect::Duckdb,
];

/// Text made of the characters that matter to the tokenisers, so the generator reaches deep
/// into quoting, substitution and operator handling rather than only into "not a word".
fn shellish() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r##"[a-z0-9 ;|&$()'"`{}\-=./*~<>#\\\n\t]{0,80}"##).unwrap()
}

fn sqlish() -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        "SELECT",
        "DELETE",
        "FROM",
        "WHERE",
        "UPDATE",
        "SET",
        "DROP",
        "TABLE",
        "WITH",
        "AS",
        "(",
        ")",
        ";",
        "'",
        "\"",
        "--",
        "/*",
        "*/",
        "1",
        "=",
        "OR",
        "INSERT",
        "INTO",
        "VALUES",
        "EXPLAIN",
        "ANALYZE",
        "RETURNING",
        "*",
        "t",
        "x",
        ",",
        "$$",
        "COPY",
        "PROGRAM",
        "\n",
    ]);
    prop::collection::vec(words, 0..40).prop_map(|w| w.join(" "))
}

fn graphqlish() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r##"[a-zA-Z0-9 {}()\[\]:$!@.,"#\n]{0,80}"##).unwrap()
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        shellish().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "query",
                    "command",
                    "url",
                    "method",
                    "body",
                    "sql",
                    "argv",
                    "action",
                    "operationName",
                    "input",
                    "text",
                    "0",
                ])
                .prop_map(str::to_string),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn policy() -> cycles_core::CompiledPolicy {
    Policy::default()
        .tool(
            ToolRule::new("sql", Tier::T1)
                .classifier(ClassifierKind::Sql)
                .dialect(SqlDialect::Postgres),
        )
        .tool(
            ToolRule::new("sql_nested", Tier::T0)
                .classifier(ClassifierKind::Sql)
                .arg("input.text"),
        )
        .tool(ToolRule::new("shell", Tier::T2).classifier(ClassifierKind::Shell))
        .tool(
            ToolRule::new("argv", Tier::T0)
                .classifier(ClassifierKind::Shell)
                .arg("argv"),
        )
        .tool(ToolRule::new("http", Tier::T1).classifier(ClassifierKind::Http))
        .tool(ToolRule::new("graphql", Tier::T0).classifier(ClassifierKind::Graphql))
        .tool(
            ToolRule::new("names", Tier::T3)
                .classifier(ClassifierKind::Names)
                .arg("action"),
        )
        .tool(ToolRule::new("infra.*", Tier::T1).classifier(ClassifierKind::Names))
        .register("plain", Tier::T2)
        .compile()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        for d in DIALECTS {
            let v = sql::classify(&text, d);
            prop_assert!(!v.rules.is_empty());
        }
        let v = shell::classify(&text);
        prop_assert!(!v.rules.is_empty());
        let _ = http::classify(&text, &text, None);
        let _ = http::classify_graphql(&text, None);
        let _ = names::classify(&text);
    }

    #[test]
    fn sql_text_never_panics_and_names_its_rules(text in sqlish()) {
        for d in DIALECTS {
            let v = sql::classify(&text, d);
            prop_assert!(!v.rules.is_empty(), "{text:?}");
            prop_assert!(v.tier <= Tier::T4);
        }
    }

    #[test]
    fn a_trailing_drop_is_always_tier_4(text in sqlish()) {
        // Either the whole parses and the DROP statement is seen, or it does not parse:
        // both are tier 4. No prefix can hide the statement.
        let sql_text = format!("{text}\n; DROP TABLE accounts");
        let v = sql::classify(&sql_text, SqlDialect::Postgres);
        prop_assert_eq!(v.tier, Tier::T4, "{:?} -> {:?}", sql_text, v);
    }

    #[test]
    fn shell_text_never_panics(text in shellish()) {
        let v = shell::classify(&text);
        prop_assert!(!v.rules.is_empty(), "{text:?}");
        let argv: Vec<String> = text.split(' ').map(str::to_string).collect();
        let _ = shell::classify_argv(&argv);
    }

    #[test]
    fn a_following_rm_rf_root_is_always_tier_4(
        text in proptest::string::string_regex(r##"[a-z0-9 ;|&$()'"`{}\-=./*~\t]{0,60}"##).unwrap()
    ) {
        // Without here-documents, comments and line continuations (which legitimately change
        // what the next line is), a later `rm -rf /` runs or the text does not parse.
        let cmd = format!("{text}\nrm -rf /");
        let v = shell::classify(&cmd);
        prop_assert_eq!(v.tier, Tier::T4, "{:?} -> {:?}", cmd, v);
    }

    #[test]
    fn graphql_text_never_panics(text in graphqlish(), op in proptest::option::of("[a-zA-Z]{0,5}")) {
        let v = http::classify_graphql(&text, op.as_deref());
        prop_assert!(!v.rules.is_empty());
        let body = serde_json::json!({"query": text, "operationName": op});
        let _ = http::classify("POST", "/graphql", Some(&body));
    }

    #[test]
    fn arguments_never_lower_a_registered_tier(args in json_value(), tool in prop::sample::select(vec![
        "sql", "sql_nested", "shell", "argv", "http", "graphql", "names", "infra.volumes", "plain", "unregistered",
    ])) {
        let compiled = policy();
        let registered = match tool {
            "sql" | "http" | "infra.volumes" => Tier::T1,
            "shell" | "plain" => Tier::T2,
            "names" | "unregistered" => Tier::T3,
            _ => Tier::T0,
        };
        let call = ToolCall::new(tool, args);
        let c = compiled.classify(&call);
        prop_assert!(c.tier >= registered, "{tool}: {:?}", c);
        prop_assert!(!c.rules.is_empty());
        // Deterministic: the same call classifies the same way.
        prop_assert_eq!(&c, &compiled.classify(&call));
    }
}

#[test]
fn pathological_nesting_fails_closed_without_overflowing_the_stack() {
    let deep_sql = format!("SELECT {}1{}", "(".repeat(50_000), ")".repeat(50_000));
    assert_eq!(
        sql::classify(&deep_sql, SqlDialect::Postgres).tier,
        Tier::T4
    );
    let subst = format!("echo {}ls{}", "$(".repeat(5_000), ")".repeat(5_000));
    let v = shell::classify(&subst);
    assert_eq!(v.tier, Tier::T4, "{v:?}");
    assert!(v.rules.contains(&"shell.nesting_too_deep"));
    assert_eq!(shell::classify(&"$(".repeat(50_000)).tier, Tier::T4);
    let evals = format!("{}ls", "eval ".repeat(5_000));
    assert_eq!(shell::classify(&evals).rules, ["shell.nesting_too_deep"]);
    assert_eq!(
        http::classify_graphql(&"{".repeat(100_000), None).tier,
        Tier::T4
    );
    let fragments = format!("mutation {{ {} }}", "... on M { ".repeat(1_000));
    assert_eq!(http::classify_graphql(&fragments, None).tier, Tier::T4);
    let sudo = format!("{}ls", "sudo ".repeat(10_000));
    assert_eq!(
        shell::classify(&sudo).rules.last(),
        Some(&"shell.nesting_too_deep")
    );
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let big = "SELECT 1;".repeat(200_000);
    assert_eq!(
        sql::classify(&big, SqlDialect::Generic).rules,
        ["sql.too_long"]
    );
    assert_eq!(
        shell::classify(&"ls;".repeat(400_000)).rules,
        ["shell.too_long"]
    );
    let doc = format!("{{ {} }}", "a ".repeat(600_000));
    assert_eq!(
        http::classify_graphql(&doc, None).rules,
        ["graphql.too_long"]
    );
}

/// Operator chains are built by the parser in a loop, so its recursion limit does not bound
/// how deep the tree gets; walking (or dropping) a 300,000-term chain overflowed the stack and
/// aborted the process. Classified on a 2 MiB thread, as tokio and most thread pools give.
#[test]
fn long_operator_chains_fail_closed_without_overflowing_a_small_stack() {
    let verdicts = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let plus = format!("SELECT 1{}", "+1".repeat(300_000));
            let ors = format!("DELETE FROM t WHERE a = 1{}", " OR a = 1".repeat(60_000));
            let just_under = format!("SELECT 1{}", "||'a'".repeat(sql::MAX_SQL_OPERATORS));
            (
                sql::classify(&plus, SqlDialect::Postgres),
                sql::classify(&ors, SqlDialect::Generic),
                sql::classify(&just_under, SqlDialect::Postgres),
            )
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(verdicts.0.rules, ["sql.too_complex"]);
    assert_eq!(verdicts.1.rules, ["sql.too_complex"]);
    // At the bound the text is still read (and is a plain SELECT).
    assert_eq!(verdicts.2.rules, ["sql.select"]);
    // Chains the operator count does not see (keywords, subscripts, operators it does not
    // list) make trees as deep; a long text is read on a thread with a stack for them. Each of
    // these aborted the process on a 2 MiB thread before.
    let deep = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            [
                format!("SELECT x{}", " IN (1)".repeat(140_000)),
                format!("SELECT a{}", " #- b".repeat(160_000)),
                format!("SELECT x{}", "[1]".repeat(80_000)),
                format!("SELECT x{}", " COLLATE c".repeat(80_000)),
            ]
            .iter()
            .map(|q| sql::classify(q, SqlDialect::Postgres).tier)
            .collect::<Vec<_>>()
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(deep.len(), 4);
    // A large string literal is one token, whatever operators its text holds.
    let insert = format!("INSERT INTO f VALUES ('{}')", "ab+/=".repeat(50_000));
    assert_eq!(
        sql::classify(&insert, SqlDialect::Postgres).rules,
        ["sql.insert"]
    );
}
