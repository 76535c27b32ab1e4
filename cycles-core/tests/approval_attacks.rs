//! Attacks on approval grants by a hostile agent: a process that can call the library's public
//! API and read and write the agent user's files, but does not hold an approver's private key.
//! Each test tries one way to get a tier-4 call reserved without a fresh grant for exactly that
//! call and subject, and asserts it is refused with nothing held (or, for the races, that exactly
//! one reservation wins). The grant rules themselves are in `approval_grants.rs`.
//!
//! The two-process tests re-execute this binary on the ignored `child_presents_grant` test, which
//! is a worker, not a test of its own: the parent asserts on what the children print.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use cycles_core::*;
use serde_json::{Value, json};

const START: i64 = 1_700_000_000_000;
const DB_ENV: &str = "CYCLES_APPROVAL_ATTACK_DB";
const GRANT_ENV: &str = "CYCLES_APPROVAL_ATTACK_GRANT";
const GO_ENV: &str = "CYCLES_APPROVAL_ATTACK_GO";

fn alice() -> ApproverKey {
    ApproverKey::from_secret("alice", [1; 32]).unwrap()
}
/// The agent's own key: never in the gate's policy.
fn agent_key() -> ApproverKey {
    ApproverKey::from_secret("agent", [7; 32]).unwrap()
}

fn policy() -> Policy {
    let mut p = Policy::default()
        .register("db.delete_row", Tier::T3)
        .register("railway.delete_volume", Tier::T4)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 1_000))
        .budget(BudgetSpec::new("tenant:sandbox", Unit::RiskPoints, 1_000));
    p.approval.public_keys = vec![alice().public_key_hex()];
    p
}

fn open(policy: Policy, ledger: Arc<dyn Ledger>) -> Authority {
    Authority::builder()
        .policy(policy)
        .shared_ledger(ledger)
        .clock(ManualClock::new(START))
        .build()
        .unwrap()
}

fn open_file(path: &std::path::Path) -> Authority {
    open(policy(), Arc::new(SqliteLedger::open(path).unwrap()))
}

fn bot() -> Subject {
    Subject::new().tenant("acme").agent("bot")
}

fn wipe(volume: &str) -> ToolCall {
    ToolCall::new("railway.delete_volume", json!({ "volumeId": volume }))
}

fn reserve_req(subject: Subject, call: ToolCall, grant: Option<&Grant>) -> ReserveRequest {
    let mut r = ReserveRequest::new(subject, call);
    r.grant = grant.map(|g| serde_json::to_value(g).unwrap());
    r
}

/// Reserves `call` for the bot without a grant; returns the approval request it was denied with.
fn request_for(auth: &Authority, call: ToolCall) -> ApprovalRequest {
    let err = auth.reserve(&reserve_req(bot(), call, None)).unwrap_err();
    let d = err.decision().expect("a denial");
    assert_eq!(d.reason_code, Some(ReasonCode::ApprovalRequired), "{d:?}");
    auth.approval(d.approval_request_id.as_ref().unwrap())
        .unwrap()
}

fn held(auth: &Authority) -> i64 {
    auth.balances(None)
        .unwrap()
        .iter()
        .map(|b| b.reserved)
        .sum()
}

/// The APPROVAL_INVALID sub-reason of a refused reserve, asserting nothing was held by it.
fn refused(auth: &Authority, req: &ReserveRequest) -> ApprovalInvalidReason {
    let before = (held(auth), auth.reservations(None, 1_000).unwrap().len());
    let err = auth.reserve(req).unwrap_err();
    assert_eq!(err.code(), "APPROVAL_INVALID", "{err}");
    assert_eq!(
        (held(auth), auth.reservations(None, 1_000).unwrap().len()),
        before,
        "a refused grant held something"
    );
    err.decision().unwrap().approval_invalid_reason.unwrap()
}

// ---------------------------------------------------------------------------------------------
// Reuse of a consumed grant.

#[test]
fn consumed_grant_is_refused_by_a_second_connection_and_after_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cycles.db");
    let first = open_file(&path);
    let grant = alice()
        .grant(&request_for(&first, wipe("v1")), START + 60_000)
        .unwrap();
    // A second connection to the same file, open before the grant is used.
    let second = open_file(&path);
    first
        .reserve(&reserve_req(bot(), wipe("v1"), Some(&grant)))
        .unwrap();
    let again = reserve_req(bot(), wipe("v1"), Some(&grant));
    assert_eq!(refused(&second, &again), ApprovalInvalidReason::AlreadyUsed);
    drop((first, second));
    // "Restart": a fresh ledger on the file.
    let reopened = open_file(&path);
    assert_eq!(
        refused(&reopened, &again),
        ApprovalInvalidReason::AlreadyUsed
    );
    assert_eq!(held(&reopened), 50);
    // A fresh memory ledger knows no request: the grant cannot be replayed there either.
    let fresh = open(policy(), Arc::new(MemoryLedger::new()));
    assert_eq!(
        refused(&fresh, &again),
        ApprovalInvalidReason::UnknownRequest
    );
}

/// Worker for the two-process tests (run by the parent with the environment set).
#[test]
#[ignore = "worker process of consumed_grant_is_refused_in_another_process and grant_race_between_two_processes"]
fn child_presents_grant() {
    let (Ok(db), Ok(grant)) = (std::env::var(DB_ENV), std::env::var(GRANT_ENV)) else {
        return;
    };
    let grant: Grant = serde_json::from_str(&grant).unwrap();
    let auth = open_file(std::path::Path::new(&db));
    if let Ok(go) = std::env::var(GO_ENV) {
        // Both children start from the same moment: the parent creates this file.
        while !std::path::Path::new(&go).exists() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let outcome = match auth.reserve(&reserve_req(bot(), wipe("v1"), Some(&grant))) {
        Ok(r) => format!("reserved {}", r.reservation_id),
        Err(e) => format!(
            "refused {} {}",
            e.code(),
            e.decision()
                .and_then(|d| d.approval_invalid_reason)
                .map_or("-", |r| r.as_str())
        ),
    };
    println!("OUTCOME {outcome}");
}

fn spawn_child(
    db: &std::path::Path,
    grant: &Grant,
    go: Option<&std::path::Path>,
) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_presents_grant",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(DB_ENV, db)
    .env(GRANT_ENV, serde_json::to_string(grant).unwrap())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(go) = go {
        cmd.env(GO_ENV, go);
    }
    cmd.spawn().unwrap()
}

fn outcome_of(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once("OUTCOME ").map(|(_, o)| o))
        .unwrap_or_else(|| panic!("no outcome in {stdout}"))
        .to_string()
}

#[test]
fn consumed_grant_is_refused_in_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cycles.db");
    let auth = open_file(&path);
    let grant = alice()
        .grant(&request_for(&auth, wipe("v1")), START + 60_000)
        .unwrap();
    auth.reserve(&reserve_req(bot(), wipe("v1"), Some(&grant)))
        .unwrap();
    let outcome = outcome_of(spawn_child(&path, &grant, None));
    assert_eq!(outcome, "refused APPROVAL_INVALID already_used");
    assert_eq!(held(&auth), 50);
    assert_eq!(auth.reservations(None, 10).unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Races: exactly one reservation per grant.

#[test]
fn grant_race_between_eight_threads_has_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cycles.db");
    // Recorded (GRANTED) and unrecorded (PENDING) grants take different paths to consumption.
    for recorded in [false, true] {
        let setup = open_file(&path);
        let volume = format!("v-{recorded}");
        let request = request_for(&setup, wipe(&volume));
        let grant = alice().grant(&request, START + 60_000).unwrap();
        if recorded {
            setup
                .record_approval(&request.request_id, &ApprovalResponse::Grant(grant.clone()))
                .unwrap();
        }
        let held_before = held(&setup);
        // Half the threads share one authority (one connection, group commit), half open
        // their own connection to the file.
        let shared = open_file(&path);
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let auth = if i % 2 == 0 {
                    shared.clone()
                } else {
                    open_file(&path)
                };
                let barrier = barrier.clone();
                let req = reserve_req(bot(), wipe(&volume), Some(&grant));
                std::thread::spawn(move || {
                    barrier.wait();
                    auth.reserve(&req)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "recorded={recorded}: {results:?}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(
                r.decision().unwrap().approval_invalid_reason,
                Some(ApprovalInvalidReason::AlreadyUsed),
                "{r}"
            );
        }
        assert_eq!(held(&setup), held_before + 50);
        let stored = setup.approval(&request.request_id).unwrap();
        assert_eq!(stored.status, ApprovalStatus::Consumed);
        assert_eq!(
            stored.reservation_id.as_deref(),
            Some(winners[0].reservation_id.as_str())
        );
    }
    assert!(open_file(&path).verify().unwrap().ok);
}

#[test]
fn grant_race_on_a_memory_ledger_has_one_winner() {
    let auth = open(policy(), Arc::new(MemoryLedger::new()));
    let grant = alice()
        .grant(&request_for(&auth, wipe("v1")), START + 60_000)
        .unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (auth, barrier) = (auth.clone(), barrier.clone());
            let req = reserve_req(bot(), wipe("v1"), Some(&grant));
            std::thread::spawn(move || {
                barrier.wait();
                auth.reserve(&req).is_ok()
            })
        })
        .collect();
    let wins = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(wins, 1);
    assert_eq!(held(&auth), 50);
}

#[test]
fn grant_race_between_two_processes_has_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cycles.db");
    let go = dir.path().join("go");
    let auth = open_file(&path);
    let grant = alice()
        .grant(&request_for(&auth, wipe("v1")), START + 60_000)
        .unwrap();
    let children = [
        spawn_child(&path, &grant, Some(&go)),
        spawn_child(&path, &grant, Some(&go)),
    ];
    std::fs::write(&go, b"go").unwrap();
    let mut outcomes: Vec<String> = children.into_iter().map(outcome_of).collect();
    outcomes.sort();
    assert_eq!(
        outcomes[0], "refused APPROVAL_INVALID already_used",
        "{outcomes:?}"
    );
    assert!(outcomes[1].starts_with("reserved rsv_"), "{outcomes:?}");
    assert_eq!(held(&auth), 50);
    assert_eq!(auth.reservations(None, 10).unwrap().len(), 1);
    assert!(auth.verify().unwrap().ok);
}

// ---------------------------------------------------------------------------------------------
// A grant for one call used on another.

/// Parses tool arguments from JSON text, as an integration receiving a model's call would.
fn call_from_text(args: &str) -> ToolCall {
    ToolCall::new(
        "railway.delete_volume",
        serde_json::from_str::<Value>(args).unwrap(),
    )
}

#[test]
fn the_digest_is_of_the_call_not_of_its_json_spelling() {
    let auth = open(policy(), Arc::new(MemoryLedger::new()));
    let approved = call_from_text(r#"{"volumeId":"vol_a","opts":{"force":true,"n":1}}"#);
    // Same call, other bytes: key order, whitespace, unicode escapes. The digest must not
    // depend on them (if serde_json's `preserve_order` ever got enabled, this fails).
    for same in [
        r#"{"opts":{"n":1,"force":true},"volumeId":"vol_a"}"#,
        "{ \"volumeId\" :\n \"vol_a\" , \"opts\" : { \"force\" : true , \"n\" : 1 } }",
        r#"{"volumeId":"\u0076ol_\u0061","opts":{"\u0066orce":true,"n":1}}"#,
        // Duplicate keys: the last one wins, as in JavaScript and Python.
        r#"{"volumeId":"vol_prod","volumeId":"vol_a","opts":{"force":true,"n":1}}"#,
    ] {
        assert_eq!(call_from_text(same).digest(), approved.digest(), "{same}");
    }
    // Different calls: a number's type, a float, another value hidden behind a duplicate key.
    let request = request_for(&auth, approved.clone());
    let grant = alice().grant(&request, START + 60_000).unwrap();
    for other in [
        r#"{"volumeId":"vol_a","opts":{"force":true,"n":1.0}}"#,
        r#"{"volumeId":"vol_a","opts":{"force":true,"n":"1"}}"#,
        r#"{"volumeId":"vol_a","opts":{"force":1,"n":1}}"#,
        r#"{"volumeId":"vol_a","volumeId":"vol_prod","opts":{"force":true,"n":1}}"#,
        r#"{"volumeId":"vol_a","opts":{"force":true,"n":1},"extra":null}"#,
        r#"{"volumeId":"VOL_A","opts":{"force":true,"n":1}}"#,
        // NFD spelling of a composed character is another string.
        "{\"volumeId\":\"vol_a\u{301}\",\"opts\":{\"force\":true,\"n\":1}}",
    ] {
        let req = reserve_req(bot(), call_from_text(other), Some(&grant));
        assert_eq!(
            refused(&auth, &req),
            ApprovalInvalidReason::DigestMismatch,
            "{other}"
        );
    }
    // And the grant still serves a respelling of its own call.
    let respelled = call_from_text(r#"{"opts":{"n":1,"force":true},"volumeId":"vol_a"}"#);
    auth.reserve(&reserve_req(bot(), respelled, Some(&grant)))
        .unwrap();
}

#[test]
fn grant_for_a_lower_tier_call_does_not_serve_a_higher_tier_one() {
    let mut p = policy();
    p.approval.threshold_tier = Tier::T3;
    let auth = open(p, Arc::new(MemoryLedger::new()));
    let row = ToolCall::new("db.delete_row", json!({"volumeId": "v1"}));
    let request = request_for(&auth, row);
    assert_eq!((request.tier, request.risk_points), (Tier::T3, 20));
    let grant = alice().grant(&request, START + 60_000).unwrap();
    // Same arguments, a tier-4 tool; and the tier-4 call's own request with the tier-3 grant.
    let req = reserve_req(bot(), wipe("v1"), Some(&grant));
    assert_eq!(refused(&auth, &req), ApprovalInvalidReason::DigestMismatch);
    let high = request_for(&auth, wipe("v1"));
    let mut moved = grant.clone();
    moved.request_id = high.request_id.clone();
    let req = reserve_req(bot(), wipe("v1"), Some(&moved));
    assert_eq!(refused(&auth, &req), ApprovalInvalidReason::BadSignature);
    assert_eq!(held(&auth), 0);
}

#[test]
fn grant_for_one_subject_does_not_serve_another_even_with_its_scopes_spelled_alike() {
    let auth = open(policy(), Arc::new(MemoryLedger::new()));
    let grant = alice()
        .grant(&request_for(&auth, wipe("v1")), START + 60_000)
        .unwrap();
    for other in [
        Subject::new().tenant("acme"),
        Subject::new().tenant("acme").agent("bot2"),
        Subject::new().tenant("sandbox").agent("bot"),
        Subject::new().tenant("acme").workflow("w").agent("bot"),
        Subject::new().tenant("acme").agent("bot").toolset("t"),
    ] {
        let req = reserve_req(other.clone(), wipe("v1"), Some(&grant));
        assert_eq!(
            refused(&auth, &req),
            ApprovalInvalidReason::SubjectMismatch,
            "{other:?}"
        );
    }
    // Dimensions are recorded, not scoped: the same subject with another dimension is served.
    let mut tagged = bot();
    tagged.dimensions.insert("run".into(), "2".into());
    auth.reserve(&reserve_req(tagged, wipe("v1"), Some(&grant)))
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Forged and malformed grants.

/// A change made to a grant after it was signed.
type Edit<'a> = Box<dyn Fn(&mut Grant) + 'a>;

#[test]
fn every_signed_field_is_bound_by_the_signature() {
    let auth = open(policy(), Arc::new(MemoryLedger::new()));
    let request = request_for(&auth, wipe("v1"));
    let other = request_for(&auth, wipe("v2"));
    let good = alice().grant(&request, START + 60_000).unwrap();
    let edits: Vec<(&str, Edit, ApprovalInvalidReason)> = vec![
        (
            "approver_id",
            Box::new(|g| g.approver_id = "root".into()),
            ApprovalInvalidReason::BadSignature,
        ),
        (
            "expires_at_ms shortened",
            Box::new(|g| g.expires_at_ms -= 1),
            ApprovalInvalidReason::BadSignature,
        ),
        (
            "expires_at_ms stretched",
            Box::new(|g| g.expires_at_ms = i64::MAX),
            ApprovalInvalidReason::BadSignature,
        ),
        (
            "request_id",
            Box::new(|g| g.request_id.clone_from(&other.request_id)),
            ApprovalInvalidReason::BadSignature,
        ),
        (
            "public_key of the agent",
            Box::new(|g| g.public_key = agent_key().public_key_hex()),
            ApprovalInvalidReason::UnknownKey,
        ),
        (
            "scope",
            Box::new(|g| g.scope = "tenant:acme/agent:other".into()),
            ApprovalInvalidReason::BadSignature,
        ),
    ];
    for (what, edit, reason) in edits {
        let mut g = good.clone();
        edit(&mut g);
        let call = if g.request_id == other.request_id {
            wipe("v2")
        } else {
            wipe("v1")
        };
        let req = reserve_req(bot(), call, Some(&g));
        assert_eq!(refused(&auth, &req), reason, "{what}");
    }
    // The call digest re-pointed at v2 (whose request is pending), signature unchanged.
    let mut g = good.clone();
    g.call_digest = wipe("v2").digest();
    g.request_id.clone_from(&other.request_id);
    let req = reserve_req(bot(), wipe("v2"), Some(&g));
    assert_eq!(refused(&auth, &req), ApprovalInvalidReason::BadSignature);
    assert_eq!(
        auth.approval(&request.request_id).unwrap().status,
        ApprovalStatus::Pending
    );
    // Untouched, it works.
    auth.reserve(&reserve_req(bot(), wipe("v1"), Some(&good)))
        .unwrap();
}

#[test]
fn malformed_signatures_and_keys_are_refused() {
    let auth = open(policy(), Arc::new(MemoryLedger::new()));
    let request = request_for(&auth, wipe("v1"));
    let good = alice().grant(&request, START + 60_000).unwrap();
    let sig = hex::decode(&good.signature).unwrap();
    let before = auth.audit(&AuditQuery::default()).unwrap().len();
    // Shapes that are not a lowercase-hex Ed25519 signature or key: typed bad input.
    let bad_shapes: Vec<Edit> = vec![
        Box::new(|g| g.signature.truncate(126)),
        Box::new(|g| g.signature.push_str("00")),
        Box::new(|g| g.signature = g.signature.to_uppercase()),
        Box::new(|g| g.signature = String::new()),
        Box::new(|g| g.public_key = g.public_key.to_uppercase()),
        Box::new(|g| g.public_key.truncate(62)),
        Box::new(|g| g.call_digest = g.call_digest.to_uppercase()),
        Box::new(|g| g.request_id = g.request_id.to_uppercase()),
        Box::new(|g| g.approver_id = "alice\ncall_digest:00".into()),
        Box::new(|g| g.scope = "tenant:acme\ncall_digest:00".into()),
        Box::new(|g| g.scope = String::new()),
    ];
    for (i, edit) in bad_shapes.iter().enumerate() {
        let mut g = good.clone();
        edit(&mut g);
        let err = auth
            .reserve(&reserve_req(bot(), wipe("v1"), Some(&g)))
            .unwrap_err();
        assert_eq!(err.code(), "INVALID_REQUEST", "shape {i}: {err}");
    }
    // Base64 instead of hex, and an unknown field, are not grants either.
    let mut v = serde_json::to_value(&good).unwrap();
    v["signature"] = json!("ZmFrZQ==");
    let mut req = reserve_req(bot(), wipe("v1"), None);
    req.grant = Some(v);
    assert_eq!(auth.reserve(&req).unwrap_err().code(), "INVALID_REQUEST");
    let mut v = serde_json::to_value(&good).unwrap();
    v["scopes"] = json!(["tenant:acme"]);
    req.grant = Some(v);
    assert_eq!(auth.reserve(&req).unwrap_err().code(), "INVALID_REQUEST");
    // Bad input changes nothing: no audit record, the request still pending.
    assert_eq!(auth.audit(&AuditQuery::default()).unwrap().len(), before);

    // Well-formed but not a valid signature: all zeros, and the malleated form S + L (the
    // same curve point check passes under plain `verify`; `verify_strict` refuses S >= L).
    let l: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut malleated = sig.clone();
    let mut carry = 0u16;
    for i in 0..32 {
        let s = u16::from(sig[32 + i]) + u16::from(l[i]) + carry;
        malleated[32 + i] = s as u8;
        carry = s >> 8;
    }
    for bytes in [vec![0u8; 64], malleated] {
        let mut g = good.clone();
        g.signature = hex::encode(bytes);
        let req = reserve_req(bot(), wipe("v1"), Some(&g));
        assert_eq!(refused(&auth, &req), ApprovalInvalidReason::BadSignature);
    }
    assert_eq!(
        auth.approval(&request.request_id).unwrap().status,
        ApprovalStatus::Pending
    );
}

/// RFC 8032's test vectors (section 7.1): secret keys printed in the RFC. An approver key
/// copied from an example or a test would let anyone who read the RFC (a model included) sign
/// grants; each is refused, whatever its case.
#[test]
fn a_key_whose_secret_is_published_is_refused_as_an_approver_key() {
    let published = [
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
    ];
    for secret in published {
        let secret: [u8; 32] = hex::decode(secret).unwrap().try_into().unwrap();
        let public = ApproverKey::from_secret("rfc", secret)
            .unwrap()
            .public_key_hex();
        for key in [public.clone(), public.to_uppercase()] {
            let mut p = policy();
            p.approval.public_keys.push(key);
            let err = Authority::builder().policy(p).build().unwrap_err();
            assert_eq!(err.code(), "POLICY_INVALID", "{err}");
            let msg = err.to_string();
            assert!(msg.contains("approval.public_keys[1]"), "{msg}");
            assert!(msg.contains("secret key is published"), "{msg}");
            assert!(msg.contains("cycles keygen"), "{msg}");
        }
    }
    // The policy's own key (not published) still compiles.
    assert!(Authority::builder().policy(policy()).build().is_ok());
}

#[test]
fn a_small_order_key_listed_by_mistake_does_not_verify_forgeries() {
    // The identity point as a "public key": under non-strict verification the signature
    // R = identity, S = 0 verifies for every message.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    // A policy listing it does not compile...
    let mut p = policy();
    p.approval.public_keys.push(hex::encode(identity));
    let err = Authority::builder().policy(p).build().unwrap_err();
    assert_eq!(err.code(), "POLICY_INVALID", "{err}");
    assert!(err.to_string().contains("approval.public_keys[1]"), "{err}");
    // ...and verification is strict even if such a key reached it.
    let auth = open(policy(), Arc::new(MemoryLedger::new()));
    let request = request_for(&auth, wipe("v1"));
    let mut sig = [0u8; 64];
    sig[0] = 1;
    let forged = Grant {
        approver_id: "nobody".into(),
        call_digest: request.call_digest.clone(),
        expires_at_ms: START + 60_000,
        public_key: hex::encode(identity),
        request_id: request.request_id.clone(),
        scope: request.scopes.last().unwrap().clone(),
        signature: hex::encode(sig),
    };
    assert_eq!(
        forged.verify(&[identity]),
        Err(ApprovalInvalidReason::BadSignature)
    );
    let req = reserve_req(bot(), wipe("v1"), Some(&forged));
    assert_eq!(refused(&auth, &req), ApprovalInvalidReason::UnknownKey);
}

#[test]
fn expired_grant_is_refused_on_the_ledger_clock_whatever_the_caller_says() {
    let clock = ManualClock::new(START);
    let auth = Authority::builder()
        .policy(policy())
        .clock(clock.clone())
        .build()
        .unwrap();
    let grant = alice()
        .grant(&request_for(&auth, wipe("v1")), START + 1_000)
        .unwrap();
    clock.advance(1_001);
    // The request's own fields are the caller's only lever on time; none is looked at.
    let mut req = reserve_req(bot(), wipe("v1"), Some(&grant));
    req.ttl_ms = Some(86_400_000);
    assert_eq!(refused(&auth, &req), ApprovalInvalidReason::Expired);
}

// ---------------------------------------------------------------------------------------------
// The agent approving itself.

#[test]
fn agent_cannot_approve_itself_through_its_own_authority_on_the_shared_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cycles.db");
    let gate = open_file(&path);
    let request = request_for(&gate, wipe("v1"));
    // The hostile agent opens the same file with a policy that trusts its own key, and records
    // a grant signed with it: its own authority accepts it...
    let mut mine = policy();
    mine.approval.public_keys = vec![agent_key().public_key_hex()];
    let agent = open(mine, Arc::new(SqliteLedger::open(&path).unwrap()));
    let self_grant = agent_key().grant(&request, START + 60_000).unwrap();
    let stored = agent
        .record_approval(
            &request.request_id,
            &ApprovalResponse::Grant(self_grant.clone()),
        )
        .unwrap();
    assert_eq!(stored.status, ApprovalStatus::Granted);
    // ...but the gate, which presents the stored grant as `cycles hook` does, refuses it.
    let from_ledger = gate.approval(&request.request_id).unwrap().grant.unwrap();
    let req = reserve_req(bot(), wipe("v1"), Some(&from_ledger));
    assert_eq!(refused(&gate, &req), ApprovalInvalidReason::UnknownKey);
    // The gate's own API refuses to record it too, and a real approver can still grant.
    let err = gate
        .record_approval(&request.request_id, &ApprovalResponse::Grant(self_grant))
        .unwrap_err();
    assert_eq!(err.code(), "APPROVAL_INVALID");
    let real = alice().grant(&request, START + 60_000).unwrap();
    gate.record_approval(&request.request_id, &ApprovalResponse::Grant(real.clone()))
        .unwrap();
    gate.reserve(&reserve_req(bot(), wipe("v1"), Some(&real)))
        .unwrap();
}

#[test]
fn agent_cannot_approve_itself_through_an_in_process_approver() {
    let auth = open(policy(), Arc::new(MemoryLedger::new()));
    let self_signing = CallbackApprover::new(|r: &ApprovalRequest| {
        Ok(ApprovalResponse::Grant(
            agent_key().grant(r, START + 60_000).unwrap(),
        ))
    });
    let err = auth
        .reserve_with_approver(&reserve_req(bot(), wipe("v1"), None), &self_signing)
        .unwrap_err();
    assert_eq!(err.code(), "APPROVAL_INVALID");
    // Nor by answering `pending` forever or handing back someone else's unsigned answer.
    let forged = CallbackApprover::new(|r: &ApprovalRequest| {
        let mut g = alice().grant(r, START + 60_000).unwrap();
        g.signature = agent_key().grant(r, START + 60_000).unwrap().signature;
        Ok(ApprovalResponse::Grant(g))
    });
    let err = auth
        .reserve_with_approver(&reserve_req(bot(), wipe("v1"), None), &forged)
        .unwrap_err();
    assert!(matches!(
        err,
        CyclesError::ApprovalInvalid {
            reason: ApprovalInvalidReason::BadSignature,
            ..
        }
    ));
    assert_eq!(held(&auth), 0);
    assert_eq!(
        auth.approvals(Some(ApprovalStatus::Pending)).unwrap().len(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// decide never consumes; a ledger that cannot be written fails closed.

#[test]
fn decide_cannot_take_or_consume_a_grant() {
    let auth = open(policy(), Arc::new(MemoryLedger::new()));
    let request = request_for(&auth, wipe("v1"));
    let grant = alice().grant(&request, START + 60_000).unwrap();
    auth.record_approval(&request.request_id, &ApprovalResponse::Grant(grant.clone()))
        .unwrap();
    // The wire form of a decide has no grant field: presenting one is bad input.
    let mut v = serde_json::to_value(DecideRequest::new(bot(), wipe("v1"))).unwrap();
    v["grant"] = serde_json::to_value(&grant).unwrap();
    assert!(serde_json::from_value::<DecideRequest>(v).is_err());
    for _ in 0..3 {
        let d = auth.decide(&DecideRequest::new(bot(), wipe("v1"))).unwrap();
        assert_eq!(d.reason_code, Some(ReasonCode::ApprovalRequired));
        assert_eq!(
            d.approval_request_id.as_deref(),
            Some(request.request_id.as_str())
        );
    }
    assert_eq!(
        auth.approval(&request.request_id).unwrap().status,
        ApprovalStatus::Granted
    );
    assert_eq!(held(&auth), 0);
    auth.reserve(&reserve_req(bot(), wipe("v1"), Some(&grant)))
        .unwrap();
}

#[test]
fn grant_presented_while_the_ledger_cannot_be_written_fails_closed_and_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cycles.db");
    let options = SqliteOptions {
        busy_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let auth = open(
        policy(),
        Arc::new(SqliteLedger::open_with(&path, options).unwrap()),
    );
    let request = request_for(&auth, wipe("v1"));
    let grant = alice().grant(&request, START + 60_000).unwrap();
    // Another process holds the file's write lock for longer than the busy timeout.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = auth
        .reserve(&reserve_req(bot(), wipe("v1"), Some(&grant)))
        .unwrap_err();
    let d = err.decision().expect("a denial, not an error");
    assert_eq!(d.decision, DecisionKind::Deny);
    assert_eq!(d.reason_code, Some(ReasonCode::LedgerUnavailable), "{d:?}");
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    // Nothing was consumed or held: the same grant works once the ledger is back.
    assert_eq!(
        auth.approval(&request.request_id).unwrap().status,
        ApprovalStatus::Pending
    );
    assert_eq!(held(&auth), 0);
    auth.reserve(&reserve_req(bot(), wipe("v1"), Some(&grant)))
        .unwrap();
}

#[test]
fn unreadable_stored_request_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cycles.db");
    let auth = open_file(&path);
    let request = request_for(&auth, wipe("v1"));
    let grant = alice().grant(&request, START + 60_000).unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    let n = raw
        .execute(
            "UPDATE kv SET value = '{\"status\":\"GRANTED\"' WHERE ns = 'approval' AND key = ?1",
            [&request.request_id],
        )
        .unwrap();
    assert_eq!(n, 1);
    let err = auth
        .reserve(&reserve_req(bot(), wipe("v1"), Some(&grant)))
        .unwrap_err();
    assert_eq!(
        err.decision().unwrap().reason_code,
        Some(ReasonCode::LedgerUnavailable)
    );
    assert_eq!(held(&auth), 0);
}

// ---------------------------------------------------------------------------------------------
// An approval service fed a doctored request by the agent.

/// A one-request HTTP approval service on loopback: signs with `key` whatever request it gets,
/// unless its call names a `prod` volume (it decides on what it is shown).
fn approval_service(key: ApproverKey) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/approve", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let body = loop {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed early");
            buf.extend_from_slice(&chunk[..n]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            if buf.len() >= end + 4 + len {
                break buf[end + 4..end + 4 + len].to_vec();
            }
        };
        let request: ApprovalRequest = serde_json::from_slice(&body).unwrap();
        let prod = request.call.args.to_string().contains("prod");
        let answer = if prod {
            ApprovalResponse::Deny(key.deny(&request, "not prod").unwrap())
        } else {
            ApprovalResponse::Grant(key.grant(&request, START + 60_000).unwrap())
        };
        let text = serde_json::to_string(&answer).unwrap();
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        )
        .unwrap();
    });
    (url, handle)
}

#[test]
fn doctored_request_shown_to_an_approver_yields_no_grant_for_the_real_call() {
    let auth = open(policy(), Arc::new(MemoryLedger::new()));
    let real = request_for(&auth, wipe("vol_prod"));
    // The agent's process builds what the approver sees: the real request id and digest, but
    // a harmless-looking call.
    let mut shown = real.clone();
    shown.call = wipe("vol_scratch");
    let (url, service) = approval_service(alice());
    let answer = WebhookApprover::new(&url)
        .timeout(Duration::from_secs(20))
        .request(&shown)
        .unwrap();
    service.join().unwrap();
    let ApprovalResponse::Grant(grant) = answer else {
        panic!("the service should have granted what it was shown: {answer:?}");
    };
    // The service signed the call it was shown, so the grant serves neither the real call...
    assert_eq!(grant.call_digest, wipe("vol_scratch").digest());
    let req = reserve_req(bot(), wipe("vol_prod"), Some(&grant));
    assert_eq!(refused(&auth, &req), ApprovalInvalidReason::DigestMismatch);
    // ...nor can it be recorded for the real request.
    let err = auth
        .record_approval(&real.request_id, &ApprovalResponse::Grant(grant))
        .unwrap_err();
    assert!(matches!(
        err,
        CyclesError::ApprovalInvalid {
            reason: ApprovalInvalidReason::DigestMismatch,
            ..
        }
    ));
    assert_eq!(
        auth.approval(&real.request_id).unwrap().status,
        ApprovalStatus::Pending
    );
    assert_eq!(held(&auth), 0);
}

#[test]
fn doctored_subject_shown_to_an_approver_yields_no_grant_for_the_real_subject() {
    // A service that would approve this call for a sandbox agent only: the agent's process
    // posts the real request id and call with a sandbox subject and its scopes.
    let auth = open(policy(), Arc::new(MemoryLedger::new()));
    let real = request_for(&auth, wipe("vol_main"));
    let sandbox = Subject::new().tenant("sandbox").agent("bot");
    let mut shown = real.clone();
    shown.subject = sandbox.clone();
    shown.scopes = sandbox.scopes().unwrap();
    let (url, service) = approval_service(alice());
    let answer = WebhookApprover::new(&url)
        .timeout(Duration::from_secs(20))
        .request(&shown)
        .unwrap();
    service.join().unwrap();
    let ApprovalResponse::Grant(grant) = answer else {
        panic!("the service should have granted what it was shown: {answer:?}");
    };
    // The grant names the subject the service was shown, so it serves not the real one...
    assert_eq!(grant.scope, "tenant:sandbox/agent:bot");
    assert_eq!(grant.call_digest, real.call_digest);
    let req = reserve_req(bot(), wipe("vol_main"), Some(&grant));
    assert_eq!(refused(&auth, &req), ApprovalInvalidReason::SubjectMismatch);
    // ...and cannot be recorded for the real request; relabelling it breaks the signature.
    let err = auth
        .record_approval(&real.request_id, &ApprovalResponse::Grant(grant.clone()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            CyclesError::ApprovalInvalid {
                reason: ApprovalInvalidReason::SubjectMismatch,
                ..
            }
        ),
        "{err:?}"
    );
    let mut relabelled = grant;
    relabelled.scope = "tenant:acme/agent:bot".into();
    let req = reserve_req(bot(), wipe("vol_main"), Some(&relabelled));
    assert_eq!(refused(&auth, &req), ApprovalInvalidReason::BadSignature);
    assert_eq!(
        auth.approval(&real.request_id).unwrap().status,
        ApprovalStatus::Pending
    );
    assert_eq!(held(&auth), 0);
}

#[test]
fn doctored_request_in_the_ledger_file_yields_no_grant_for_the_real_call() {
    // The agent user owns the ledger file: it rewrites the stored request's call so that
    // `cycles approvals list` shows a harmless one, keeping the real call's digest.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cycles.db");
    let auth = open_file(&path);
    let real = request_for(&auth, wipe("vol_prod"));
    let mut shown = real.clone();
    shown.call = wipe("vol_scratch");
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "UPDATE kv SET value = ?2 WHERE ns = 'approval' AND key = ?1",
        [&real.request_id, &serde_json::to_string(&shown).unwrap()],
    )
    .unwrap();
    // The operator approves what the ledger shows, as `cycles approve` does.
    let listed = auth.approval(&real.request_id).unwrap();
    assert_eq!(listed.call, wipe("vol_scratch"));
    let grant = alice().grant(&listed, START + 60_000).unwrap();
    assert!(
        auth.record_approval(&real.request_id, &ApprovalResponse::Grant(grant.clone()))
            .is_err()
    );
    let req = reserve_req(bot(), wipe("vol_prod"), Some(&grant));
    assert_eq!(refused(&auth, &req), ApprovalInvalidReason::DigestMismatch);
    // A denial is bound the same way (it names the call it refused).
    let denial = alice().deny(&listed, "no").unwrap();
    assert_eq!(denial.call_digest, wipe("vol_scratch").digest());
}

// ---------------------------------------------------------------------------------------------
// The approver's key file.

#[cfg(unix)]
#[test]
fn key_file_that_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.key");
    let key = ApproverKey::generate("alice").unwrap();
    key.save(&path).unwrap();
    assert_eq!(
        ApproverKey::load(&path).unwrap().public_key_hex(),
        key.public_key_hex()
    );
    for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = ApproverKey::load(&path).unwrap_err();
        assert_eq!(err.code(), "INVALID_REQUEST", "{mode:o}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
    // Owner-only modes load.
    for mode in [0o600, 0o400] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        ApproverKey::load(&path).unwrap();
    }
}

#[test]
fn grant_given_at_a_lower_tier_does_not_serve_the_call_once_it_is_classified_higher() {
    // The same call, the same ledger file: the request was opened (and shown to the approver)
    // under a policy that rates the tool tier 3; the gate's policy rates it tier 4.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cycles.db");
    let with_tier = |tier| {
        let mut p = policy().register("railway.snapshot_delete", tier);
        p.approval.threshold_tier = Tier::T3;
        open(p, Arc::new(SqliteLedger::open(&path).unwrap()))
    };
    let lax = with_tier(Tier::T3);
    let call = ToolCall::new("railway.snapshot_delete", json!({"id": "s1"}));
    let request = request_for(&lax, call.clone());
    assert_eq!(request.tier, Tier::T3);
    let grant = alice().grant(&request, START + 60_000).unwrap();
    lax.record_approval(&request.request_id, &ApprovalResponse::Grant(grant.clone()))
        .unwrap();
    let strict = with_tier(Tier::T4);
    let req = reserve_req(bot(), call.clone(), Some(&grant));
    assert_eq!(refused(&strict, &req), ApprovalInvalidReason::TierRaised);
    assert_eq!(
        strict.approval(&request.request_id).unwrap().status,
        ApprovalStatus::Granted
    );
    // Where the call is still tier 3 the grant serves it.
    lax.reserve(&req).unwrap();
    assert_eq!(held(&lax), 20);
}
