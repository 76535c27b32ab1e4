//! Anchors: a record's `SEQ:HASH` kept outside the ledger shows what a hash chain alone cannot,
//! the removal of its last records and a chain rebuilt from scratch.

use std::sync::Arc;

use cycles_core::*;
use serde_json::json;

fn authority(ledger: Arc<dyn Ledger>) -> Authority {
    Authority::builder()
        .policy(Policy::default().register("read_file", Tier::T0))
        .shared_ledger(ledger)
        .build()
        .unwrap()
}

fn decide(auth: &Authority, agent: &str) {
    auth.decide(&DecideRequest::new(
        Subject::new().agent(agent),
        ToolCall::new("read_file", json!({"path": "a"})),
    ))
    .unwrap();
}

#[test]
fn an_intact_chain_verifies_against_earlier_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let ledgers: [Arc<dyn Ledger>; 2] = [
        Arc::new(MemoryLedger::new()),
        Arc::new(SqliteLedger::open(dir.path().join("a.db")).unwrap()),
    ];
    for ledger in ledgers {
        let auth = authority(ledger);
        assert_eq!(auth.audit_anchor().unwrap(), None);
        decide(&auth, "bot");
        let first = auth.audit_anchor().unwrap().unwrap();
        assert_eq!(first.seq, 1);
        decide(&auth, "bot");
        decide(&auth, "bot");
        let head = auth.audit_anchor().unwrap().unwrap();
        assert_eq!(head.seq, 3);
        let report = auth.verify_with_anchors(&[first, head.clone()]).unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.head_hash, head.hash);
        // An anchor beyond the head is records that are missing.
        let ahead = AuditAnchor {
            seq: 9,
            hash: head.hash.clone(),
        };
        let report = auth.verify_with_anchors(&[ahead]).unwrap();
        assert!(!report.ok);
        let broken = report.first_broken.unwrap();
        assert_eq!(broken.seq, 4);
        assert!(broken.reason.contains("records were removed"), "{broken:?}");
    }
}

#[test]
fn removed_last_records_and_a_rebuilt_chain_are_caught_only_by_an_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cycles.db");
    let auth = authority(Arc::new(SqliteLedger::open(&path).unwrap()));
    for _ in 0..5 {
        decide(&auth, "bot");
    }
    let anchor = auth.audit_anchor().unwrap().unwrap();
    assert_eq!(anchor.seq, 5);

    // Someone who can write the ledger removes the last two records.
    let raw = SqliteLedger::open(&path).unwrap();
    raw.execute_raw("DELETE FROM audit WHERE seq > 3").unwrap();
    assert!(auth.verify().unwrap().ok, "a chain alone cannot tell");
    let report = auth
        .verify_with_anchors(std::slice::from_ref(&anchor))
        .unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_broken.as_ref().unwrap().seq, 4);
    assert_eq!(report.records, 3);

    // Or replaces the whole file with a fresh, valid chain of other records.
    let rebuilt = dir.path().join("rebuilt.db");
    let other = authority(Arc::new(SqliteLedger::open(&rebuilt).unwrap()));
    for _ in 0..6 {
        decide(&other, "someone-else");
    }
    assert!(other.verify().unwrap().ok);
    let report = other.verify_with_anchors(&[anchor]).unwrap();
    assert!(!report.ok);
    let broken = report.first_broken.unwrap();
    assert_eq!(broken.seq, 5);
    assert!(broken.reason.contains("rewritten"), "{broken:?}");
}

#[test]
fn malformed_anchors_are_invalid_requests() {
    for bad in [
        "",
        "5",
        "x:y",
        "0:".to_string().as_str(),
        "-1:ab",
        "5:ABAB",
        "5:abc",
    ] {
        let err = bad.parse::<AuditAnchor>().unwrap_err();
        assert_eq!(err.code(), "INVALID_REQUEST", "{bad:?}");
    }
    let ok: AuditAnchor = format!("5:{}", "0f".repeat(32)).parse().unwrap();
    assert_eq!(ok.to_string(), format!("5:{}", "0f".repeat(32)));
    assert!(
        format!("0:{}", "0f".repeat(32))
            .parse::<AuditAnchor>()
            .is_err()
    );
}
