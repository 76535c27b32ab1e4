//! Approval requests live in the ledger's key-value namespace, outside the budgets and
//! reservations `verify` always compared with the chain. Whoever can write the ledger could set
//! a consumed grant back to GRANTED (a single-use grant used again), restore a revoked grant,
//! reopen an expired request, or lower a request's tier: `verify` must report each, while every
//! legitimate flow (lazy expiry included) verifies clean. Memory ledger and a real SQLite file,
//! and PostgreSQL with the `pg-tests` feature (a server at `CYCLES_PG_URL`, as
//! scripts/pg-test.sh starts).

#[cfg(feature = "pg-tests")]
mod postgres_support;

use std::sync::Arc;

#[path = "support/state_check.rs"]
mod state_check;

use cycles_core::approval::APPROVAL_NS;
use cycles_core::*;
use serde_json::json;
use state_check::{assert_clean, assert_mismatch};

const START: i64 = 1_700_000_000_000;

fn alice() -> ApproverKey {
    ApproverKey::from_secret("alice", [1; 32]).unwrap()
}

fn bot() -> Subject {
    Subject::new().tenant("acme").agent("bot")
}

/// Alice's grant for the stored request `id`, valid for a minute.
fn alice_grants(auth: &Authority, id: &str) -> Grant {
    alice()
        .grant(&auth.approval(id).unwrap(), START + 60_000)
        .unwrap()
}

fn wipe(volume: &str) -> ToolCall {
    ToolCall::new("railway.delete_volume", json!({ "volumeId": volume }))
}

struct Env {
    auth: Authority,
    ledger: Arc<dyn Ledger>,
    clock: ManualClock,
    /// The SQLite ledger, for edits in SQL; `None` for the memory ledger.
    sqlite: Option<Arc<SqliteLedger>>,
    _dir: tempfile::TempDir,
    /// A PostgreSQL schema dropped with the test.
    _schema: Option<Box<dyn std::any::Any>>,
}

fn env(ledger: Arc<dyn Ledger>, sqlite: Option<Arc<SqliteLedger>>, dir: tempfile::TempDir) -> Env {
    let mut policy = Policy::default()
        .register("railway.delete_volume", Tier::T4)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 1_000));
    policy.approval.public_keys = vec![alice().public_key_hex()];
    let clock = ManualClock::new(START);
    let auth = Authority::builder()
        .policy(policy)
        .shared_ledger(ledger.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    Env {
        auth,
        ledger,
        clock,
        sqlite,
        _dir: dir,
        _schema: None,
    }
}

/// A fresh memory ledger and a fresh SQLite file.
fn envs() -> Vec<Env> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteLedger::open(dir.path().join("cycles.db")).unwrap());
    #[allow(unused_mut)]
    let mut all = vec![
        env(
            Arc::new(MemoryLedger::new()),
            None,
            tempfile::tempdir().unwrap(),
        ),
        env(sqlite.clone(), Some(sqlite), dir),
    ];
    #[cfg(feature = "pg-tests")]
    {
        let schema = postgres_support::Schema::new("apr_state");
        let mut pg = env(
            Arc::new(schema.ledger()),
            None,
            tempfile::tempdir().unwrap(),
        );
        pg._schema = Some(Box::new(schema));
        all.push(pg);
    }
    all
}

fn reserve_req(call: ToolCall, grant: Option<&Grant>) -> ReserveRequest {
    let mut r = ReserveRequest::new(bot(), call);
    r.grant = grant.map(|g| serde_json::to_value(g).unwrap());
    r
}

/// Reserves `call` without a grant; returns the id of the approval request it was denied with.
fn request_for(auth: &Authority, call: ToolCall) -> String {
    let err = auth.reserve(&reserve_req(call, None)).unwrap_err();
    let d = err.decision().expect("a denial");
    assert_eq!(d.reason_code, Some(ReasonCode::ApprovalRequired), "{d:?}");
    d.approval_request_id.clone().expect("a request id")
}

/// Rewrites the stored request `id` through the raw ledger API (around the state machine).
fn edit_request(e: &Env, id: &str, edit: impl Fn(&mut ApprovalRequest)) {
    let mut r = e.auth.approval(id).unwrap();
    edit(&mut r);
    let v = serde_json::to_value(&r).unwrap();
    e.ledger
        .write(&mut |txn| txn.kv_put(APPROVAL_NS, id, &v))
        .unwrap();
}

#[test]
fn every_legitimate_approval_flow_verifies_clean() {
    for e in envs() {
        let auth = &e.auth;
        // Requested, granted by an approver, consumed, committed.
        let id = request_for(auth, wipe("a"));
        let grant = alice_grants(auth, &id);
        auth.record_approval(&id, &ApprovalResponse::Grant(grant.clone()))
            .unwrap();
        let r = auth.reserve(&reserve_req(wipe("a"), Some(&grant))).unwrap();
        auth.commit(&r.reservation_id, &CommitRequest::default())
            .unwrap();
        // Requested, then a grant presented straight to reserve (recorded and consumed there).
        let id = request_for(auth, wipe("b"));
        let grant = alice_grants(auth, &id);
        auth.reserve(&reserve_req(wipe("b"), Some(&grant))).unwrap();
        // Requested, then the grant recorded and used by a retry without it.
        let id = request_for(auth, wipe("c"));
        let grant = alice_grants(auth, &id);
        auth.record_approval(&id, &ApprovalResponse::Grant(grant))
            .unwrap();
        auth.reserve(&reserve_req(wipe("c"), None)).unwrap();
        // Requested and denied; requested, granted and the grant revoked by a denial.
        let id = request_for(auth, wipe("d"));
        let denial = alice().deny(&auth.approval(&id).unwrap(), "no").unwrap();
        auth.record_approval(&id, &ApprovalResponse::Deny(denial))
            .unwrap();
        let id = request_for(auth, wipe("e"));
        let request = auth.approval(&id).unwrap();
        let grant = alice().grant(&request, START + 60_000).unwrap();
        auth.record_approval(&id, &ApprovalResponse::Grant(grant))
            .unwrap();
        let denial = alice().deny(&request, "changed my mind").unwrap();
        auth.record_approval(&id, &ApprovalResponse::Deny(denial))
            .unwrap();
        // A pending request and a granted one whose grant runs out, both left past their
        // deadlines: still PENDING and GRANTED in the ledger (expiry is noticed lazily).
        let pending = request_for(auth, wipe("f"));
        let granted = request_for(auth, wipe("g"));
        let grant = alice()
            .grant(&auth.approval(&granted).unwrap(), START + 1_000)
            .unwrap();
        auth.record_approval(&granted, &ApprovalResponse::Grant(grant))
            .unwrap();
        assert_clean(auth, "before the deadlines");
        e.clock.advance(approval::DEFAULT_REQUEST_TTL_MS + 1);
        assert_eq!(
            auth.approval(&pending).unwrap().status,
            ApprovalStatus::Pending
        );
        assert_clean(auth, "past the deadlines, not yet noticed");
        // Touched again: both expire (with their records), and the calls open new requests.
        let again = request_for(auth, wipe("f"));
        assert_ne!(again, pending);
        assert_eq!(
            auth.approval(&pending).unwrap().status,
            ApprovalStatus::Expired
        );
        request_for(auth, wipe("g"));
        assert_eq!(
            auth.approval(&granted).unwrap().status,
            ApprovalStatus::Expired
        );
        assert_eq!(auth.approvals(None).unwrap().len(), 9);
        assert_clean(auth, "after every flow");
    }
}

#[test]
fn a_consumed_grant_set_back_to_granted_is_reported_even_once_used_again() {
    for e in envs() {
        let auth = &e.auth;
        let id = request_for(auth, wipe("prod"));
        let grant = alice_grants(auth, &id);
        auth.record_approval(&id, &ApprovalResponse::Grant(grant))
            .unwrap();
        let r = auth.reserve(&reserve_req(wipe("prod"), None)).unwrap();
        auth.commit(&r.reservation_id, &CommitRequest::default())
            .unwrap();
        assert_clean(auth, "consumed");
        edit_request(&e, &id, |r| {
            r.status = ApprovalStatus::Granted;
            r.reservation_id = None;
        });
        assert_mismatch(
            auth,
            &format!("approval {id}"),
            "holds it GRANTED but record",
            "consumed set back to granted",
        );
        // Whatever the gate does with it now, the reuse must not launder the edit: a second
        // consumption leaves ledger and last record agreeing, but never follows a first one.
        let reused = auth.reserve(&reserve_req(wipe("prod"), None));
        if let Ok(again) = &reused {
            auth.commit(&again.reservation_id, &CommitRequest::default())
                .unwrap();
            assert_eq!(auth.approval(&id).unwrap().status, ApprovalStatus::Consumed);
        }
        let reason = match reused {
            Ok(_) => "(approval_consumed) follows record",
            Err(_) => "holds it GRANTED but record",
        };
        assert_mismatch(
            auth,
            &format!("approval {id}"),
            reason,
            "after the grant was used again",
        );
    }
}

#[test]
fn a_status_no_record_left_is_reported() {
    for e in envs() {
        let auth = &e.auth;
        // A revoked grant restored: granted, denied, then set back to GRANTED with its grant.
        let revoked = request_for(auth, wipe("revoked"));
        let request = auth.approval(&revoked).unwrap();
        let grant = alice().grant(&request, START + 60_000).unwrap();
        auth.record_approval(&revoked, &ApprovalResponse::Grant(grant.clone()))
            .unwrap();
        let denial = alice().deny(&request, "no").unwrap();
        auth.record_approval(&revoked, &ApprovalResponse::Deny(denial))
            .unwrap();
        // A pending request marked granted, an expired one reopened.
        let pending = request_for(auth, wipe("pending"));
        let expired = request_for(auth, wipe("expired"));
        e.clock.advance(approval::DEFAULT_REQUEST_TTL_MS + 1);
        request_for(auth, wipe("expired"));
        assert_eq!(
            auth.approval(&expired).unwrap().status,
            ApprovalStatus::Expired
        );
        assert_clean(auth, "before the edits");
        edit_request(&e, &revoked, |r| {
            r.status = ApprovalStatus::Granted;
            r.denial = None;
            r.grant = Some(grant.clone());
        });
        edit_request(&e, &pending, |r| r.status = ApprovalStatus::Granted);
        edit_request(&e, &expired, |r| r.status = ApprovalStatus::Pending);
        for (id, left) in [
            (&revoked, "left it DENIED"),
            (&pending, "left it PENDING"),
            (&expired, "left it EXPIRED"),
        ] {
            assert_mismatch(auth, &format!("approval {id}"), left, left);
        }
    }
}

#[test]
fn edited_request_fields_are_reported() {
    type Edit = fn(&mut ApprovalRequest);
    let edits: [(&str, Edit); 6] = [
        ("tier", |r| r.tier = Tier::T1),
        ("call digest", |r| r.call_digest = wipe("other").digest()),
        ("scopes", |r| r.scopes.truncate(1)),
        ("subject", |r| r.subject = Subject::new().tenant("acme")),
        ("deadline", |r| r.expires_at_ms += 86_400_000),
        ("call", |r| r.call.args = json!({"volumeId": "harmless"})),
    ];
    for (what, edit) in edits {
        for e in envs() {
            let id = request_for(&e.auth, wipe("prod"));
            assert_clean(&e.auth, what);
            edit_request(&e, &id, edit);
            let reason = if what == "call" {
                "the stored call is not the one its call digest names".to_string()
            } else {
                format!("another {what} than its record")
            };
            assert_mismatch(&e.auth, &format!("approval {id}"), &reason, what);
        }
    }
}

#[test]
fn a_request_no_record_made_or_one_removed_is_reported() {
    for e in envs() {
        let auth = &e.auth;
        let id = request_for(auth, wipe("prod"));
        let grant = alice_grants(auth, &id);
        auth.record_approval(&id, &ApprovalResponse::Grant(grant))
            .unwrap();
        assert_clean(auth, "granted");
        // A copy under another id: no record created it.
        let planted = "apr_0123456789abcdef0123456789abcdef";
        let mut copy = auth.approval(&id).unwrap();
        copy.request_id = planted.into();
        let v = serde_json::to_value(&copy).unwrap();
        e.ledger
            .write(&mut |txn| txn.kv_put(APPROVAL_NS, planted, &v))
            .unwrap();
        assert_mismatch(
            auth,
            &format!("approval {planted}"),
            "no record created it",
            "planted",
        );
        // Removed in SQL: the records say it is GRANTED, the ledger no longer holds it.
        if let Some(sqlite) = &e.sqlite {
            sqlite
                .execute_raw(&format!(
                    "DELETE FROM kv WHERE ns = '{APPROVAL_NS}' AND key = '{id}'"
                ))
                .unwrap();
            assert_mismatch(
                auth,
                &format!("approval {id}"),
                "left it GRANTED but the ledger no longer holds it",
                "removed",
            );
        }
    }
}

#[test]
fn a_consumed_request_naming_another_reservation_is_reported() {
    for e in envs() {
        let auth = &e.auth;
        let id = request_for(auth, wipe("prod"));
        let grant = alice_grants(auth, &id);
        auth.reserve(&reserve_req(wipe("prod"), Some(&grant)))
            .unwrap();
        assert_clean(auth, "consumed");
        edit_request(&e, &id, |r| r.reservation_id = Some("rsv_other".into()));
        assert_mismatch(
            auth,
            &format!("approval {id}"),
            "consumed by rsv_other in the ledger",
            "reservation swapped",
        );
    }
}

#[test]
fn an_edit_in_sql_is_reported() {
    let e = envs().swap_remove(1);
    let sqlite = e.sqlite.clone().unwrap();
    let id = request_for(&e.auth, wipe("prod"));
    let grant = alice()
        .grant(&e.auth.approval(&id).unwrap(), START + 60_000)
        .unwrap();
    e.auth
        .reserve(&reserve_req(wipe("prod"), Some(&grant)))
        .unwrap();
    assert_clean(&e.auth, "consumed");
    sqlite
        .execute_raw(&format!(
            "UPDATE kv SET value = replace(value, '\"CONSUMED\"', '\"GRANTED\"') \
             WHERE ns = '{APPROVAL_NS}' AND key = '{id}'"
        ))
        .unwrap();
    assert_eq!(
        e.auth.approval(&id).unwrap().status,
        ApprovalStatus::Granted
    );
    assert_mismatch(
        &e.auth,
        &format!("approval {id}"),
        "holds it GRANTED",
        "sql",
    );
}
