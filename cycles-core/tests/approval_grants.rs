//! Approvals end to end on a real SQLite ledger file (and the memory ledger): a tier-4 call is
//! APPROVAL_REQUIRED with a recorded request; only a grant signed by a policy key, for this
//! exact call and subject, unexpired, unused and not denied, lets `reserve` hold anything, and
//! it is consumed in the same transaction. Every rejection carries its sub-reason and leaves
//! balances and reservations exactly as they were.

use std::sync::Arc;

use cycles_core::approval::DEFAULT_REQUEST_TTL_MS;
use cycles_core::*;
use serde_json::json;

const START: i64 = 1_700_000_000_000;

fn alice() -> ApproverKey {
    ApproverKey::from_secret("alice", [1; 32]).unwrap()
}
fn bob() -> ApproverKey {
    ApproverKey::from_secret("bob", [2; 32]).unwrap()
}
/// Not in the policy.
fn mallory() -> ApproverKey {
    ApproverKey::from_secret("mallory", [3; 32]).unwrap()
}

fn policy() -> Policy {
    let mut p = Policy::default()
        .register("read_file", Tier::T0)
        .register("railway.delete_volume", Tier::T4)
        .register("railway.delete_backups", Tier::T4)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 100))
        .budget(BudgetSpec::new("tenant:other", Unit::RiskPoints, 100));
    p.approval.public_keys = vec![alice().public_key_hex(), bob().public_key_hex()];
    p
}

struct Env {
    auth: Authority,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

fn env_on(ledger: Arc<dyn Ledger>, dir: tempfile::TempDir) -> Env {
    env_with(policy(), ledger, dir)
}

fn env_with(policy: Policy, ledger: Arc<dyn Ledger>, dir: tempfile::TempDir) -> Env {
    let clock = ManualClock::new(START);
    let auth = Authority::builder()
        .policy(policy)
        .shared_ledger(ledger)
        .clock(clock.clone())
        .build()
        .unwrap();
    Env {
        auth,
        clock,
        _dir: dir,
    }
}

fn sqlite_env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ledger = SqliteLedger::open(dir.path().join("cycles.db")).unwrap();
    env_on(Arc::new(ledger), dir)
}

fn memory_env() -> Env {
    env_on(Arc::new(MemoryLedger::new()), tempfile::tempdir().unwrap())
}

fn bot() -> Subject {
    Subject::new().tenant("acme").agent("bot")
}

fn wipe(volume: &str) -> ToolCall {
    ToolCall::new("railway.delete_volume", json!({ "volumeId": volume }))
}

fn reserve_req(call: ToolCall, grant: Option<&Grant>) -> ReserveRequest {
    let mut r = ReserveRequest::new(bot(), call);
    r.grant = grant.map(|g| serde_json::to_value(g).unwrap());
    r
}

/// Reserves `call` without a grant and returns the approval request id it was denied with.
fn request_for(auth: &Authority, call: ToolCall) -> String {
    let err = auth.reserve(&reserve_req(call, None)).unwrap_err();
    let d = err.decision().expect("a denial").clone();
    assert_eq!(d.reason_code, Some(ReasonCode::ApprovalRequired), "{d:?}");
    assert_eq!(d.tier, Tier::T4);
    assert_eq!(
        d.rules.last().map(String::as_str),
        Some("approval.threshold")
    );
    d.approval_request_id.expect("an approval request id")
}

/// Everything that must be unchanged by a rejected grant.
#[derive(Debug, PartialEq)]
struct Snapshot {
    balances: Vec<Balance>,
    reservations: usize,
}

fn snapshot(auth: &Authority) -> Snapshot {
    Snapshot {
        balances: auth.balances(None).unwrap(),
        reservations: auth.reservations(None, 1000).unwrap().len(),
    }
}

/// Presents `grant` for `call` and asserts APPROVAL_INVALID with `reason`, nothing held.
fn assert_rejected(env: &Env, call: ToolCall, grant: &Grant, reason: ApprovalInvalidReason) {
    let before = snapshot(&env.auth);
    let err = env
        .auth
        .reserve(&reserve_req(call, Some(grant)))
        .unwrap_err();
    assert_eq!(err.code(), "APPROVAL_INVALID", "{err}");
    let d = err.decision().unwrap();
    assert_eq!(d.decision, DecisionKind::Deny);
    assert_eq!(d.reason_code, Some(ReasonCode::ApprovalInvalid));
    assert_eq!(d.approval_invalid_reason, Some(reason), "{d:?}");
    assert_eq!(
        d.approval_request_id.as_deref(),
        Some(grant.request_id.as_str())
    );
    assert_eq!(
        snapshot(&env.auth),
        before,
        "a rejected grant changed state"
    );
    let last = env
        .auth
        .audit(&AuditQuery::default())
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(last.kind, AuditKind::Denial);
    assert_eq!(last.reason_code, Some(ReasonCode::ApprovalInvalid));
    assert_eq!(
        last.detail.as_ref().unwrap()["approval_invalid_reason"],
        json!(reason.as_str())
    );
}

fn acme_reserved(auth: &Authority) -> i64 {
    auth.balances(Some("tenant:acme")).unwrap()[0].reserved
}

fn kinds(auth: &Authority) -> Vec<&'static str> {
    auth.audit(&AuditQuery::default())
        .unwrap()
        .iter()
        .map(|r| r.kind.as_str())
        .collect()
}

#[test]
fn granted_call_reserves_once_and_everything_is_audited() {
    for env in [sqlite_env(), memory_env()] {
        let auth = &env.auth;
        let id = request_for(auth, wipe("vol_prod_main"));
        let stored = auth.approval(&id).unwrap();
        assert_eq!(stored.status, ApprovalStatus::Pending);
        assert_eq!(stored.call_digest, wipe("vol_prod_main").digest());
        assert_eq!(stored.call.args, json!({"volumeId": "vol_prod_main"}));
        assert_eq!(stored.scopes, ["tenant:acme", "tenant:acme/agent:bot"]);
        assert_eq!(stored.risk_points, 50);
        assert_eq!(stored.remaining[0].remaining, 100);
        assert_eq!(stored.expires_at_ms, START + DEFAULT_REQUEST_TTL_MS);
        assert_eq!(acme_reserved(auth), 0);

        let grant = alice().grant(&stored, START + 60_000).unwrap();
        let recorded = auth
            .record_approval(&id, &ApprovalResponse::Grant(grant.clone()))
            .unwrap();
        assert_eq!(recorded.status, ApprovalStatus::Granted);

        let r = auth
            .reserve(&reserve_req(wipe("vol_prod_main"), Some(&grant)))
            .unwrap();
        assert_eq!(r.decision.decision, DecisionKind::Allow);
        assert_eq!(r.decision.approval_request_id.as_deref(), Some(id.as_str()));
        assert!(r.decision.rules.contains(&"approval.grant".to_string()));
        assert_eq!(acme_reserved(auth), 50);
        let consumed = auth.approval(&id).unwrap();
        assert_eq!(consumed.status, ApprovalStatus::Consumed);
        assert_eq!(
            consumed.reservation_id.as_deref(),
            Some(r.reservation_id.as_str())
        );

        auth.commit(&r.reservation_id, &CommitRequest::default())
            .unwrap();
        assert_eq!(
            kinds(auth),
            [
                "budget_set",
                "budget_set",
                "approval_requested",
                "denial",
                "approval_granted",
                "approval_consumed",
                "reserve",
                "commit"
            ]
        );
        let consumed_rec = auth
            .audit(&AuditQuery {
                kinds: vec![AuditKind::ApprovalConsumed],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            consumed_rec[0].reservation_id.as_deref(),
            Some(r.reservation_id.as_str())
        );
        assert_eq!(
            consumed_rec[0].detail.as_ref().unwrap()["approver_id"],
            "alice"
        );
        assert!(auth.verify().unwrap().ok);
    }
}

#[test]
fn forged_signature_is_bad_signature() {
    let env = sqlite_env();
    let id = request_for(&env.auth, wipe("v1"));
    let req = env.auth.approval(&id).unwrap();
    // A later expiry than alice signed.
    let mut stretched = alice().grant(&req, START + 1_000).unwrap();
    stretched.expires_at_ms = START + 86_400_000;
    assert_rejected(
        &env,
        wipe("v1"),
        &stretched,
        ApprovalInvalidReason::BadSignature,
    );
    // A signature byte flipped.
    let mut flipped = alice().grant(&req, START + 60_000).unwrap();
    let mut sig = hex::decode(&flipped.signature).unwrap();
    sig[10] ^= 1;
    flipped.signature = hex::encode(sig);
    assert_rejected(
        &env,
        wipe("v1"),
        &flipped,
        ApprovalInvalidReason::BadSignature,
    );
    // Bob's key named, alice's signature.
    let mut swapped = alice().grant(&req, START + 60_000).unwrap();
    swapped.public_key = bob().public_key_hex();
    assert_rejected(
        &env,
        wipe("v1"),
        &swapped,
        ApprovalInvalidReason::BadSignature,
    );
    assert_eq!(
        env.auth.approval(&id).unwrap().status,
        ApprovalStatus::Pending
    );
}

#[test]
fn key_not_in_policy_is_unknown_key() {
    let env = sqlite_env();
    let id = request_for(&env.auth, wipe("v1"));
    let req = env.auth.approval(&id).unwrap();
    let grant = mallory().grant(&req, START + 60_000).unwrap();
    assert_rejected(&env, wipe("v1"), &grant, ApprovalInvalidReason::UnknownKey);
    // Recording it is refused too, and leaves the request pending.
    let err = env
        .auth
        .record_approval(&id, &ApprovalResponse::Grant(grant))
        .unwrap_err();
    assert_eq!(err.code(), "APPROVAL_INVALID");
    assert!(matches!(
        err,
        CyclesError::ApprovalInvalid {
            reason: ApprovalInvalidReason::UnknownKey,
            ..
        }
    ));
    assert_eq!(
        env.auth.approval(&id).unwrap().status,
        ApprovalStatus::Pending
    );
}

#[test]
fn grant_for_another_call_is_digest_mismatch() {
    let env = sqlite_env();
    let id = request_for(&env.auth, wipe("vol_a"));
    let req = env.auth.approval(&id).unwrap();
    let grant = alice().grant(&req, START + 60_000).unwrap();
    env.auth
        .record_approval(&id, &ApprovalResponse::Grant(grant.clone()))
        .unwrap();
    let mut with_kind = wipe("vol_a");
    with_kind.action.kind = Some("db.admin".into());
    let mut with_tag = wipe("vol_a");
    with_tag.action.tags = vec!["prod".into()];
    let others = [
        wipe("vol_b"),
        wipe("vol_a "),
        ToolCall::new(
            "railway.delete_volume",
            json!({"volumeId": "vol_a", "force": true}),
        ),
        ToolCall::new("railway.delete_volume", json!({"volumeId": ["vol_a"]})),
        ToolCall::new("railway.delete_volume", json!({})),
        ToolCall::new("railway.delete_backups", json!({"volumeId": "vol_a"})),
        with_kind,
        with_tag,
    ];
    for other in others {
        assert_rejected(&env, other, &grant, ApprovalInvalidReason::DigestMismatch);
    }
    // The grant is still good for its own call.
    env.auth
        .reserve(&reserve_req(wipe("vol_a"), Some(&grant)))
        .unwrap();
}

#[test]
fn replayed_grant_is_already_used() {
    let env = sqlite_env();
    let id = request_for(&env.auth, wipe("v1"));
    let grant = alice()
        .grant(&env.auth.approval(&id).unwrap(), START + 60_000)
        .unwrap();
    let r = env
        .auth
        .reserve(&reserve_req(wipe("v1"), Some(&grant)))
        .unwrap();
    env.auth
        .commit(&r.reservation_id, &CommitRequest::default())
        .unwrap();
    assert_rejected(&env, wipe("v1"), &grant, ApprovalInvalidReason::AlreadyUsed);
    // A second approver's grant for the same request is spent too: one request, one call.
    let second = bob()
        .grant(&env.auth.approval(&id).unwrap(), START + 60_000)
        .unwrap();
    assert_rejected(
        &env,
        wipe("v1"),
        &second,
        ApprovalInvalidReason::AlreadyUsed,
    );
    let b = &env.auth.balances(Some("tenant:acme")).unwrap()[0];
    assert_eq!((b.spent, b.reserved), (50, 0));
}

#[test]
fn idempotent_retry_of_a_granted_reserve_replays_instead_of_failing() {
    let env = memory_env();
    let id = request_for(&env.auth, wipe("v1"));
    let grant = alice()
        .grant(&env.auth.approval(&id).unwrap(), START + 60_000)
        .unwrap();
    let mut req = reserve_req(wipe("v1"), Some(&grant));
    req.idempotency_key = Some("k1".into());
    let first = env.auth.reserve(&req).unwrap();
    let again = env.auth.reserve(&req).unwrap();
    assert_eq!(first.reservation_id, again.reservation_id);
    assert_eq!(acme_reserved(&env.auth), 50);
}

#[test]
fn expired_grant_and_expired_request_are_expired() {
    let env = sqlite_env();
    let id = request_for(&env.auth, wipe("v1"));
    let grant = alice()
        .grant(&env.auth.approval(&id).unwrap(), START + 1_000)
        .unwrap();
    env.auth
        .record_approval(&id, &ApprovalResponse::Grant(grant.clone()))
        .unwrap();
    // One millisecond past the last valid one (the last one itself is tested below).
    env.clock.advance(1_001);
    assert_rejected(&env, wipe("v1"), &grant, ApprovalInvalidReason::Expired);
    // The recorded grant ran out unused: the request is EXPIRED, and the call needs a new one.
    assert_eq!(
        env.auth.approval(&id).unwrap().status,
        ApprovalStatus::Expired
    );
    assert_ne!(request_for(&env.auth, wipe("v1")), id);

    // A request nobody decided in time expires, even for a long-lived grant signed offline.
    let id2 = request_for(&env.auth, wipe("v2"));
    let late = alice()
        .grant(
            &env.auth.approval(&id2).unwrap(),
            START + 10 * DEFAULT_REQUEST_TTL_MS,
        )
        .unwrap();
    env.clock.advance(DEFAULT_REQUEST_TTL_MS + 1);
    assert_rejected(&env, wipe("v2"), &late, ApprovalInvalidReason::Expired);
    assert_eq!(
        env.auth.approval(&id2).unwrap().status,
        ApprovalStatus::Expired
    );
    assert!(kinds(&env.auth).contains(&"approval_expired"));
    // Recording an answer for it now is refused.
    let err = env
        .auth
        .record_approval(&id2, &ApprovalResponse::Grant(late))
        .unwrap_err();
    assert!(matches!(
        err,
        CyclesError::ApprovalInvalid {
            reason: ApprovalInvalidReason::Expired,
            ..
        }
    ));
    // The next attempt opens a new request.
    assert_ne!(request_for(&env.auth, wipe("v2")), id2);
    assert!(env.auth.verify().unwrap().ok);
}

#[test]
fn grant_on_its_last_valid_millisecond_works() {
    let env = memory_env();
    let id = request_for(&env.auth, wipe("v1"));
    let grant = alice()
        .grant(&env.auth.approval(&id).unwrap(), START + 1_000)
        .unwrap();
    env.clock.advance(1_000);
    env.auth
        .reserve(&reserve_req(wipe("v1"), Some(&grant)))
        .unwrap();
}

#[test]
fn grant_for_a_denied_request_is_denied_by_approver() {
    let env = sqlite_env();
    let id = request_for(&env.auth, wipe("v1"));
    let req = env.auth.approval(&id).unwrap();
    let denial = bob().deny(&req, "not on a Friday").unwrap();
    let denied = env
        .auth
        .record_approval(&id, &ApprovalResponse::Deny(denial))
        .unwrap();
    assert_eq!(denied.status, ApprovalStatus::Denied);
    assert_eq!(denied.denial.as_ref().unwrap().reason, "not on a Friday");
    let grant = alice().grant(&req, START + 60_000).unwrap();
    assert_rejected(
        &env,
        wipe("v1"),
        &grant,
        ApprovalInvalidReason::DeniedByApprover,
    );
    // A grant cannot be recorded over a denial either.
    let err = env
        .auth
        .record_approval(&id, &ApprovalResponse::Grant(grant))
        .unwrap_err();
    assert!(matches!(
        err,
        CyclesError::ApprovalInvalid {
            reason: ApprovalInvalidReason::DeniedByApprover,
            ..
        }
    ));
    let denials = env
        .auth
        .audit(&AuditQuery {
            kinds: vec![AuditKind::ApprovalDenied],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(denials.len(), 1);
    assert_eq!(
        denials[0].detail.as_ref().unwrap()["reason"],
        "not on a Friday"
    );
}

#[test]
fn denial_revokes_a_recorded_unused_grant() {
    let env = memory_env();
    let id = request_for(&env.auth, wipe("v1"));
    let req = env.auth.approval(&id).unwrap();
    let grant = alice().grant(&req, START + 60_000).unwrap();
    env.auth
        .record_approval(&id, &ApprovalResponse::Grant(grant.clone()))
        .unwrap();
    env.auth
        .record_approval(
            &id,
            &ApprovalResponse::Deny(alice().deny(&req, "changed my mind").unwrap()),
        )
        .unwrap();
    assert_rejected(
        &env,
        wipe("v1"),
        &grant,
        ApprovalInvalidReason::DeniedByApprover,
    );
}

#[test]
fn forged_denial_cannot_block_a_request() {
    let env = memory_env();
    let id = request_for(&env.auth, wipe("v1"));
    let req = env.auth.approval(&id).unwrap();
    let mut denial = alice().deny(&req, "no").unwrap();
    denial.reason = "something else".into();
    let err = env
        .auth
        .record_approval(&id, &ApprovalResponse::Deny(denial))
        .unwrap_err();
    assert!(matches!(
        err,
        CyclesError::ApprovalInvalid {
            reason: ApprovalInvalidReason::BadSignature,
            ..
        }
    ));
    let foreign = mallory().deny(&req, "no").unwrap();
    assert!(
        env.auth
            .record_approval(&id, &ApprovalResponse::Deny(foreign))
            .is_err()
    );
    assert_eq!(
        env.auth.approval(&id).unwrap().status,
        ApprovalStatus::Pending
    );
}

#[test]
fn grant_used_by_another_subject_is_subject_mismatch() {
    let env = memory_env();
    let id = request_for(&env.auth, wipe("v1"));
    let grant = alice()
        .grant(&env.auth.approval(&id).unwrap(), START + 60_000)
        .unwrap();
    let before = snapshot(&env.auth);
    let mut req = ReserveRequest::new(Subject::new().tenant("other").agent("bot"), wipe("v1"));
    req.grant = Some(serde_json::to_value(&grant).unwrap());
    let err = env.auth.reserve(&req).unwrap_err();
    assert_eq!(
        err.decision().unwrap().approval_invalid_reason,
        Some(ApprovalInvalidReason::SubjectMismatch)
    );
    assert_eq!(snapshot(&env.auth), before);
}

#[test]
fn approval_never_bypasses_budgets_and_a_grant_survives_a_budget_denial() {
    let env = sqlite_env();
    let id = request_for(&env.auth, wipe("v1"));
    let grant = alice()
        .grant(&env.auth.approval(&id).unwrap(), START + 60_000)
        .unwrap();
    env.auth
        .set_budget(&BudgetSpec::new("tenant:acme", Unit::RiskPoints, 30))
        .unwrap();
    let err = env
        .auth
        .reserve(&reserve_req(wipe("v1"), Some(&grant)))
        .unwrap_err();
    assert_eq!(err.code(), "BUDGET_EXCEEDED");
    assert_eq!(
        env.auth.approval(&id).unwrap().status,
        ApprovalStatus::Pending
    );
    assert_eq!(acme_reserved(&env.auth), 0);
    env.auth
        .set_budget(&BudgetSpec::new("tenant:acme", Unit::RiskPoints, 100))
        .unwrap();
    env.auth
        .reserve(&reserve_req(wipe("v1"), Some(&grant)))
        .unwrap();
    assert_eq!(
        env.auth.approval(&id).unwrap().status,
        ApprovalStatus::Consumed
    );
    // Unrecorded grant presented directly: recorded as granted and consumed in one go.
    let k = kinds(&env.auth);
    let tail = &k[k.len() - 3..];
    assert_eq!(tail, ["approval_granted", "approval_consumed", "reserve"]);
}

#[test]
fn decide_records_the_request_and_identical_calls_reuse_it() {
    let env = memory_env();
    let d = env
        .auth
        .decide(&DecideRequest::new(bot(), wipe("v1")))
        .unwrap();
    assert_eq!(d.reason_code, Some(ReasonCode::ApprovalRequired));
    let id = d.approval_request_id.unwrap();
    assert_eq!(request_for(&env.auth, wipe("v1")), id);
    assert_eq!(request_for(&env.auth, wipe("v1")), id);
    assert_ne!(request_for(&env.auth, wipe("v2")), id);
    // Same call, another subject: its own request.
    let err = env
        .auth
        .reserve(&ReserveRequest::new(
            Subject::new().tenant("other"),
            wipe("v1"),
        ))
        .unwrap_err();
    assert_ne!(
        err.decision().unwrap().approval_request_id.as_ref(),
        Some(&id)
    );
    assert_eq!(env.auth.approvals(None).unwrap().len(), 3);
    assert_eq!(
        env.auth
            .approvals(Some(ApprovalStatus::Pending))
            .unwrap()
            .iter()
            .filter(|r| r.request_id == id)
            .count(),
        1
    );
    // A granted request is reused too: decide names it (and never consumes its grant)...
    let grant = alice()
        .grant(&env.auth.approval(&id).unwrap(), START + 60_000)
        .unwrap();
    env.auth
        .record_approval(&id, &ApprovalResponse::Grant(grant))
        .unwrap();
    for _ in 0..2 {
        let d = env
            .auth
            .decide(&DecideRequest::new(bot(), wipe("v1")))
            .unwrap();
        assert_eq!(d.reason_code, Some(ReasonCode::ApprovalRequired));
        assert_eq!(d.approval_request_id.as_ref(), Some(&id));
    }
    assert_eq!(
        env.auth.approval(&id).unwrap().status,
        ApprovalStatus::Granted
    );
    let requested = env
        .auth
        .audit(&AuditQuery {
            kinds: vec![AuditKind::ApprovalRequested],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(requested.len(), 3);
}

#[test]
fn a_recorded_grant_serves_the_retry_without_being_presented_once() {
    for env in [memory_env(), sqlite_env()] {
        let id = request_for(&env.auth, wipe("v1"));
        let grant = alice()
            .grant(&env.auth.approval(&id).unwrap(), START + 60_000)
            .unwrap();
        env.auth
            .record_approval(&id, &ApprovalResponse::Grant(grant))
            .unwrap();
        // Another call and another subject are not served by it.
        assert_ne!(request_for(&env.auth, wipe("v2")), id);
        let other = env
            .auth
            .reserve(&ReserveRequest::new(
                Subject::new().tenant("acme").agent("bot2"),
                wipe("v1"),
            ))
            .unwrap_err();
        assert_eq!(
            other.decision().unwrap().reason_code,
            Some(ReasonCode::ApprovalRequired)
        );
        assert_ne!(
            other.decision().unwrap().approval_request_id.as_ref(),
            Some(&id)
        );
        // The exact call by the same subject: reserved with the recorded grant, consumed.
        let r = env.auth.reserve(&reserve_req(wipe("v1"), None)).unwrap();
        assert!(
            r.decision.rules.iter().any(|x| x == "approval.grant"),
            "{r:?}"
        );
        assert_eq!(r.decision.approval_request_id.as_ref(), Some(&id));
        let stored = env.auth.approval(&id).unwrap();
        assert_eq!(stored.status, ApprovalStatus::Consumed);
        assert_eq!(stored.reservation_id.as_ref(), Some(&r.reservation_id));
        // Once: the next identical call needs a new approval.
        assert_ne!(request_for(&env.auth, wipe("v1")), id);
        assert!(env.auth.verify().unwrap().ok);
    }
}

#[test]
fn a_recorded_grant_is_checked_like_a_presented_one() {
    // Recorded, then the policy no longer lists alice's key: the retry is refused, not served.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cycles.db");
    let open = |p: Policy| {
        Authority::builder()
            .policy(p)
            .shared_ledger(Arc::new(SqliteLedger::open(&path).unwrap()))
            .clock(ManualClock::new(START))
            .build()
            .unwrap()
    };
    let auth = open(policy());
    let id = request_for(&auth, wipe("v1"));
    let grant = alice()
        .grant(&auth.approval(&id).unwrap(), START + 60_000)
        .unwrap();
    auth.record_approval(&id, &ApprovalResponse::Grant(grant))
        .unwrap();
    let mut without_alice = policy();
    without_alice
        .approval
        .public_keys
        .retain(|k| *k != alice().public_key_hex());
    let auth = open(without_alice);
    let err = auth.reserve(&reserve_req(wipe("v1"), None)).unwrap_err();
    let d = err.decision().unwrap();
    assert_eq!(d.reason_code, Some(ReasonCode::ApprovalInvalid), "{d:?}");
    assert_eq!(
        d.approval_invalid_reason,
        Some(ApprovalInvalidReason::UnknownKey)
    );
    assert_eq!(auth.approval(&id).unwrap().status, ApprovalStatus::Granted);
    assert!(auth.reservations(None, 10).unwrap().is_empty());
}

#[test]
fn malformed_grant_is_invalid_request_and_changes_nothing() {
    let env = memory_env();
    let before_audit = kinds(&env.auth).len();
    for bad in [
        json!("a string"),
        json!({"request_id": "apr_x"}),
        json!({"approver_id": "alice", "call_digest": "00", "expires_at_ms": 1, "public_key": "00", "request_id": "apr_00000000000000000000000000000001", "signature": "00"}),
    ] {
        let mut req = reserve_req(wipe("v1"), None);
        req.grant = Some(bad);
        let err = env.auth.reserve(&req).unwrap_err();
        assert_eq!(err.code(), "INVALID_REQUEST", "{err}");
    }
    assert_eq!(kinds(&env.auth).len(), before_audit);
    assert!(env.auth.approvals(None).unwrap().is_empty());
}

#[test]
fn reserve_with_approver_asks_records_and_retries() {
    let env = sqlite_env();
    let granting = CallbackApprover::new(|r: &ApprovalRequest| {
        Ok(ApprovalResponse::Grant(
            alice().grant(r, START + 60_000).unwrap(),
        ))
    });
    let r = env
        .auth
        .reserve_with_approver(&reserve_req(wipe("v1"), None), &granting)
        .unwrap();
    assert_eq!(acme_reserved(&env.auth), 50);
    let id = r.decision.approval_request_id.unwrap();
    assert_eq!(
        env.auth.approval(&id).unwrap().status,
        ApprovalStatus::Consumed
    );

    let denying = CallbackApprover::new(|r: &ApprovalRequest| {
        Ok(ApprovalResponse::Deny(bob().deny(r, "no")?))
    });
    let err = env
        .auth
        .reserve_with_approver(&reserve_req(wipe("v2"), None), &denying)
        .unwrap_err();
    assert_eq!(err.code(), "APPROVAL_REQUIRED");
    let id2 = err.decision().unwrap().approval_request_id.clone().unwrap();
    assert_eq!(
        env.auth.approval(&id2).unwrap().status,
        ApprovalStatus::Denied
    );

    let pending = CallbackApprover::new(|_: &ApprovalRequest| Ok(ApprovalResponse::Pending));
    let err = env
        .auth
        .reserve_with_approver(&reserve_req(wipe("v3"), None), &pending)
        .unwrap_err();
    assert_eq!(err.code(), "APPROVAL_REQUIRED");

    let impostor = CallbackApprover::new(|r: &ApprovalRequest| {
        Ok(ApprovalResponse::Grant(
            mallory().grant(r, START + 60_000).unwrap(),
        ))
    });
    let err = env
        .auth
        .reserve_with_approver(&reserve_req(wipe("v4"), None), &impostor)
        .unwrap_err();
    assert!(matches!(
        err,
        CyclesError::ApprovalInvalid {
            reason: ApprovalInvalidReason::UnknownKey,
            ..
        }
    ));
    assert_eq!(acme_reserved(&env.auth), 50, "only the granted call holds");
    assert!(env.auth.verify().unwrap().ok);
}

#[test]
fn grant_file_approver_reads_answers_written_by_an_operator() {
    let env = memory_env();
    let dir = tempfile::tempdir().unwrap();
    let approver = GrantFileApprover::new(dir.path());
    let id = request_for(&env.auth, wipe("v1"));
    let req = env.auth.approval(&id).unwrap();
    assert_eq!(approver.request(&req).unwrap(), ApprovalResponse::Pending);
    let answer = ApprovalResponse::Grant(alice().grant(&req, START + 60_000).unwrap());
    std::fs::write(
        dir.path().join(format!("{id}.json")),
        serde_json::to_string(&answer).unwrap(),
    )
    .unwrap();
    assert_eq!(approver.request(&req).unwrap(), answer);
    std::fs::write(dir.path().join(format!("{id}.json")), "{not json").unwrap();
    assert_eq!(
        approver.request(&req).unwrap_err().code(),
        "APPROVER_UNAVAILABLE"
    );
}

#[test]
fn key_files_round_trip_and_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.key");
    let key = ApproverKey::generate("alice").unwrap();
    key.save(&path).unwrap();
    let loaded = ApproverKey::load(&path).unwrap();
    assert_eq!(loaded.public_key_hex(), key.public_key_hex());
    assert_eq!(loaded.approver_id(), "alice");
    assert!(key.save(&path).is_err(), "never overwrites a key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(!format!("{key:?}").contains(&hex::encode([1u8; 4])));
    // A file whose public key does not belong to its secret is refused.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["public_key"] = json!(bob().public_key_hex());
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, v.to_string()).unwrap();
    assert!(ApproverKey::load(&bad).is_err());
    assert_ne!(
        ApproverKey::generate("x").unwrap().public_key_hex(),
        ApproverKey::generate("x").unwrap().public_key_hex()
    );
}

#[test]
fn signed_message_is_the_documented_bytes() {
    let m = Grant::signed_message(
        "apr_0123456789abcdef0123456789abcdef",
        "tenant:acme/agent:bot",
        &"ab".repeat(32),
        "alice",
        1_700_000_000_000,
    );
    let expected = format!(
        "cycles.approval.grant.v2\nrequest_id:apr_0123456789abcdef0123456789abcdef\nscope:tenant:acme/agent:bot\ncall_digest:{}\napprover_id:alice\nexpires_at_ms:1700000000000\n",
        "ab".repeat(32)
    );
    assert_eq!(String::from_utf8(m).unwrap(), expected);
    let d = Denial::signed_message("apr_x", "d", "bob", "no");
    assert!(
        String::from_utf8(d)
            .unwrap()
            .starts_with("cycles.approval.denial.v1\nrequest_id:apr_x\n")
    );
}

#[test]
fn default_request_lifetime_is_one_hour() {
    assert_eq!(DEFAULT_REQUEST_TTL_MS, 3_600_000);
    assert_eq!(policy().approval.request_ttl_ms, 3_600_000);
    let env = memory_env();
    let id = request_for(&env.auth, wipe("v1"));
    assert_eq!(
        env.auth.approval(&id).unwrap().expires_at_ms,
        START + 3_600_000
    );
    // Still open on its last millisecond: the same call reuses it...
    env.clock.advance(3_600_000);
    assert_eq!(request_for(&env.auth, wipe("v1")), id);
    // ...and one millisecond later it has expired and the call opens a new one.
    env.clock.advance(1);
    assert_ne!(request_for(&env.auth, wipe("v1")), id);
    assert_eq!(
        env.auth.approval(&id).unwrap().status,
        ApprovalStatus::Expired
    );
}

#[test]
fn policy_request_lifetime_sets_when_a_request_expires() {
    const TTL: i64 = 5_000;
    let short = || {
        let mut p = policy();
        p.approval.request_ttl_ms = TTL;
        p
    };
    let dir = tempfile::tempdir().unwrap();
    let file = SqliteLedger::open(dir.path().join("cycles.db")).unwrap();
    let envs = [
        env_with(short(), Arc::new(file), dir),
        env_with(
            short(),
            Arc::new(MemoryLedger::new()),
            tempfile::tempdir().unwrap(),
        ),
    ];
    for env in envs {
        let auth = &env.auth;
        let id = request_for(auth, wipe("v1"));
        let stored = auth.approval(&id).unwrap();
        assert_eq!(stored.expires_at_ms, START + TTL);
        let requested = auth
            .audit(&AuditQuery::default())
            .unwrap()
            .into_iter()
            .find(|r| r.kind == AuditKind::ApprovalRequested)
            .unwrap();
        assert_eq!(
            requested.detail.as_ref().unwrap()["expires_at_ms"],
            json!(START + TTL),
            "{requested:?}"
        );

        // Not before: on the last millisecond the request is still open and a grant works.
        env.clock.advance(TTL);
        assert_eq!(request_for(auth, wipe("v1")), id);
        let grant = alice().grant(&stored, START + 10 * TTL).unwrap();
        auth.reserve(&reserve_req(wipe("v1"), Some(&grant)))
            .unwrap();
        assert_eq!(auth.approval(&id).unwrap().status, ApprovalStatus::Consumed);

        // After: a request nobody decided within TTL expires, and a grant for it is refused.
        let id2 = request_for(auth, wipe("v2"));
        let stored2 = auth.approval(&id2).unwrap();
        assert_eq!(stored2.expires_at_ms, START + 2 * TTL);
        let late = alice().grant(&stored2, START + 10 * TTL).unwrap();
        env.clock.advance(TTL + 1);
        assert_rejected(&env, wipe("v2"), &late, ApprovalInvalidReason::Expired);
        assert_eq!(auth.approval(&id2).unwrap().status, ApprovalStatus::Expired);
        assert!(kinds(auth).contains(&"approval_expired"));
        assert!(auth.verify().unwrap().ok);
    }
}
