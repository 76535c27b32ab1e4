//! The labelled classification corpus (`fixtures/classify/*.json`): every call must get its
//! labelled tier (and fire the rules listed for it). Reports accuracy per class (file) and per
//! labelled tier, and fails below 100%.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cycles_core::{Policy, Tier, ToolCall};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    class: String,
    description: String,
    policy: Policy,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    tool: String,
    args: serde_json::Value,
    tier: Tier,
    /// Rule ids that must be among those that fired.
    #[serde(default)]
    rules: Vec<String>,
    #[serde(default)]
    note: Option<String>,
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/classify")
}

#[test]
fn corpus_is_classified_exactly() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut total = 0;
    let mut failures = Vec::new();
    let mut by_class: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut by_tier: BTreeMap<u8, (usize, usize)> = BTreeMap::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let corpus: Corpus =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!corpus.description.is_empty());
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        assert_eq!(
            corpus.class,
            stem,
            "{}: class must match the file name",
            path.display()
        );
        let compiled = corpus.policy.clone().compile().unwrap();
        for (i, case) in corpus.cases.iter().enumerate() {
            total += 1;
            let call = ToolCall::new(&case.tool, case.args.clone());
            let c = compiled.classify(&call);
            let missing: Vec<&String> =
                case.rules.iter().filter(|r| !c.rules.contains(r)).collect();
            let ok = c.tier == case.tier && missing.is_empty();
            let class = by_class.entry(corpus.class.clone()).or_default();
            let tier = by_tier.entry(case.tier.get()).or_default();
            class.1 += 1;
            tier.1 += 1;
            if ok {
                class.0 += 1;
                tier.0 += 1;
            } else {
                failures.push(format!(
                    "{}[{i}] {} {}: expected tier {} (rules {:?}), got tier {} with rules {:?}{}",
                    corpus.class,
                    case.tool,
                    case.args,
                    case.tier.get(),
                    case.rules,
                    c.tier.get(),
                    c.rules,
                    case.note
                        .as_deref()
                        .map(|n| format!(" -- {n}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    println!("classification corpus: {total} labelled calls");
    for (class, (ok, n)) in &by_class {
        println!(
            "  class {class:<22} {ok:>4}/{n:<4} {:6.1}%",
            100.0 * *ok as f64 / *n as f64
        );
    }
    for (tier, (ok, n)) in &by_tier {
        println!(
            "  tier {tier}                      {ok:>4}/{n:<4} {:6.1}%",
            100.0 * *ok as f64 / *n as f64
        );
    }
    assert!(
        total >= 150,
        "the corpus must hold at least 150 labelled calls, has {total}"
    );
    for class in ["sql", "shell", "http", "graphql", "names"] {
        assert!(by_class.contains_key(class), "no {class} cases");
    }
    for t in 0..=4u8 {
        assert!(
            by_tier.get(&t).is_some_and(|(_, n)| *n >= 5),
            "fewer than 5 tier-{t} cases"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {total} misclassified:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
