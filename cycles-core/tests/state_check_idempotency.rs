//! A stored idempotent result is replayed verbatim to whoever repeats the request with its
//! key. Whoever can write the ledger could plant a "Reserved" outcome under a key a client will
//! use (the Claude Code hook's keys are predictable): `reserve` then hands out a reservation
//! nobody held and no record names, and the gate allows. A planted commit or event outcome
//! likewise answers "charged" for a charge never made. `verify` must report each, and every
//! legitimate use of keys (replays included) must verify clean. Memory ledger and SQLite file,
//! and PostgreSQL with the `pg-tests` feature (a server at `CYCLES_PG_URL`, as
//! scripts/pg-test.sh starts).

#[cfg(feature = "pg-tests")]
mod postgres_support;

use std::sync::Arc;

#[path = "support/ledgers.rs"]
mod ledgers;
#[path = "support/state_check.rs"]
mod state_check;

use cycles_core::ledger::IdempotencyEntry;
use cycles_core::*;
use ledgers::ledgers;
use serde_json::json;
use state_check::{assert_clean, assert_mismatch};

fn policy() -> Policy {
    Policy::default()
        .register("read_file", Tier::T0)
        .register("deploy", Tier::T3)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 1_000))
}

fn authority(ledger: Arc<dyn Ledger>) -> Authority {
    Authority::builder()
        .policy(policy())
        .shared_ledger(ledger)
        .clock(ManualClock::new(1_000))
        .build()
        .unwrap()
}

fn bot() -> Subject {
    Subject::new().tenant("acme").agent("bot")
}

fn keyed(tool: &str, key: &str) -> ReserveRequest {
    let mut r = ReserveRequest::new(bot(), ToolCall::new(tool, json!({"k": key})));
    r.idempotency_key = Some(key.into());
    r
}

fn event_req(key: &str) -> EventRequest {
    EventRequest {
        subject: bot(),
        call: ToolCall::new("read_file", json!({})),
        actual: vec![Amount::new(Unit::RiskPoints, 7)],
        overage_policy: None,
        idempotency_key: Some(key.into()),
    }
}

fn entry(ledger: &Arc<dyn Ledger>, op: &str, key: &str) -> IdempotencyEntry {
    let mut out = None;
    ledger
        .read(&mut |txn| {
            out = txn.idempotency(op, key)?;
            Ok(())
        })
        .unwrap();
    out.expect("an entry")
}

/// What a client's request with `key` stores under `op`, made on a throwaway ledger: the
/// digest depends only on the request, so a planted entry with it is replayed to the client.
fn entry_made_elsewhere(
    op: &str,
    key: &str,
    run: impl Fn(&Authority) -> Option<String>,
) -> (IdempotencyEntry, Option<String>) {
    let scratch: Arc<dyn Ledger> = Arc::new(MemoryLedger::new());
    let id = run(&authority(scratch.clone()));
    (entry(&scratch, op, key), id)
}

fn plant(ledger: &Arc<dyn Ledger>, op: &str, key: &str, e: &IdempotencyEntry) {
    ledger
        .write(&mut |txn| txn.put_idempotency(op, key, e))
        .unwrap();
}

#[test]
fn keyed_operations_and_their_replays_verify_clean() {
    let dir = tempfile::tempdir().unwrap();
    for under in ledgers(&dir, "idem_clean") {
        let ledger = under.ledger.clone();
        let auth = authority(ledger.clone());
        for round in 0..2 {
            // The second round replays every result.
            let a = auth.reserve(&keyed("deploy", "r1")).unwrap();
            let c = auth
                .commit(
                    &a.reservation_id,
                    &CommitRequest {
                        idempotency_key: Some("c1".into()),
                        ..CommitRequest::default()
                    },
                )
                .unwrap();
            assert_eq!(c.reservation_id, a.reservation_id);
            let b = auth.reserve(&keyed("deploy", "r2")).unwrap();
            let ext = ExtendRequest {
                extend_by_ms: 5_000,
                idempotency_key: Some("e1".into()),
            };
            auth.extend(&b.reservation_id, &ext).unwrap();
            auth.release(
                &b.reservation_id,
                &ReleaseRequest {
                    reason: None,
                    idempotency_key: Some("l1".into()),
                },
            )
            .unwrap();
            auth.event(&event_req("v1")).unwrap();
            assert_clean(&auth, &format!("round {round}"));
        }
        // A keyed reservation that expired: its stored outcome still names what the reserve
        // record made.
        let mut short = keyed("deploy", "r3");
        short.ttl_ms = Some(1_000);
        short.grace_period_ms = Some(0);
        auth.reserve(&short).unwrap();
        let clock = ManualClock::new(1_000_000);
        let later = Authority::builder()
            .policy(policy())
            .shared_ledger(ledger.clone())
            .clock(clock)
            .build()
            .unwrap();
        assert_eq!(later.sweep_expired().unwrap(), 1);
        // A keyed denial is replayed as a denial: nothing to check, nothing reported.
        let mut poor = BudgetSpec::new("tenant:acme", Unit::RiskPoints, 0);
        poor.overdraft_limit = 0;
        later.set_budget(&poor).unwrap();
        assert!(later.reserve(&keyed("deploy", "r4")).is_err());
        assert_clean(&later, "expired and denied");
    }
}

#[test]
fn a_planted_reserved_outcome_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    for under in ledgers(&dir, "idem_planted") {
        let ledger = under.ledger.clone();
        let auth = authority(ledger.clone());
        auth.reserve(&keyed("deploy", "earlier")).unwrap();
        assert_clean(&auth, "before");
        // The entry the client's next reserve with key "hook-42" would store, made elsewhere
        // and planted: it names a reservation this ledger never held.
        let (made, id) = entry_made_elsewhere("reserve", "hook-42", |a| {
            Some(
                a.reserve(&keyed("deploy", "hook-42"))
                    .unwrap()
                    .reservation_id,
            )
        });
        let id = id.unwrap();
        plant(&ledger, "reserve", "hook-42", &made);
        assert_mismatch(
            &auth,
            "idempotency reserve hook-42",
            &format!("names reservation {id}, which no reserve record made"),
            "planted",
        );
    }
}

#[test]
fn a_reserved_outcome_naming_a_real_reservation_of_another_call_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    for under in ledgers(&dir, "idem_other") {
        let ledger = under.ledger.clone();
        let auth = authority(ledger.clone());
        // A cheap reservation really held, and the outcome of a costly call pointed at it.
        let cheap = auth.reserve(&keyed("read_file", "cheap")).unwrap();
        let (mut made, _) = entry_made_elsewhere("reserve", "costly", |a| {
            a.reserve(&keyed("deploy", "costly")).unwrap();
            None
        });
        made.result["reservation"]["reservation_id"] = json!(cheap.reservation_id);
        plant(&ledger, "reserve", "costly", &made);
        assert_mismatch(
            &auth,
            "idempotency reserve costly",
            "with another call, tier, hold than its reserve record",
            "pointed at another reservation",
        );
    }
}

#[test]
fn planted_commit_release_extend_and_event_outcomes_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    for under in ledgers(&dir, "idem_finish") {
        let ledger = under.ledger.clone();
        let auth = authority(ledger.clone());
        let r = auth.reserve(&keyed("deploy", "r")).unwrap();
        let id = r.reservation_id.clone();
        assert_clean(&auth, "held");
        let charged_nothing = IdempotencyEntry {
            request_digest: "d".into(),
            result: json!({
                "reservation_id": id,
                "status": "COMMITTED",
                "charged": [{"unit": "RISK_POINTS", "amount": 0}],
                "released": [{"unit": "RISK_POINTS", "amount": 0}],
                "balances": [],
            }),
        };
        plant(&ledger, &format!("commit:{id}"), "c", &charged_nothing);
        let mut released = charged_nothing.clone();
        released.result = json!({
            "reservation_id": id,
            "status": "RELEASED",
            "released": [{"unit": "RISK_POINTS", "amount": 0}],
            "balances": [],
        });
        plant(&ledger, &format!("release:{id}"), "l", &released);
        let mut extended = serde_json::to_value(&r).unwrap();
        extended["extensions"] = json!(1);
        extended["expires_at_ms"] = json!(r.expires_at_ms + 60_000);
        let extended = IdempotencyEntry {
            request_digest: "d".into(),
            result: extended,
        };
        plant(&ledger, &format!("extend:{id}"), "x", &extended);
        let (made, _) = entry_made_elsewhere("event", "v", |a| {
            a.event(&event_req("v")).unwrap();
            None
        });
        plant(&ledger, "event", "v", &made);
        let v = auth.verify().unwrap();
        assert_eq!(v.state_mismatches.len(), 4, "{v:?}");
        assert_mismatch(
            &auth,
            &format!("idempotency commit:{id} c"),
            "no commit record finished",
            "commit",
        );
        assert_mismatch(
            &auth,
            &format!("idempotency release:{id} l"),
            "no release record finished",
            "release",
        );
        assert_mismatch(
            &auth,
            &format!("idempotency extend:{id} x"),
            "no extend record took",
            "extend",
        );
        assert_mismatch(
            &auth,
            "idempotency event v",
            "which no event record made",
            "event",
        );
        // A real commit whose stored result was then lowered to charge nothing.
        auth.commit(
            &id,
            &CommitRequest {
                idempotency_key: Some("real".into()),
                ..CommitRequest::default()
            },
        )
        .unwrap();
        let mut lowered = entry(&ledger, &format!("commit:{id}"), "real");
        lowered.result["charged"] = json!([{"unit": "RISK_POINTS", "amount": 0}]);
        plant(&ledger, &format!("commit:{id}"), "real", &lowered);
        assert_mismatch(
            &auth,
            &format!("idempotency commit:{id} real"),
            "charges otherwise than the commit record",
            "lowered commit",
        );
    }
}

#[test]
fn the_gate_refuses_to_replay_a_reservation_the_ledger_does_not_hold_for_the_call() {
    let dir = tempfile::tempdir().unwrap();
    for under in ledgers(&dir, "idem_gate") {
        let ledger = under.ledger.clone();
        let auth = authority(ledger.clone());
        let cheap = auth.reserve(&keyed("read_file", "cheap")).unwrap();
        // Planted: an outcome naming a reservation never held, and one naming the cheap
        // reservation for a costly call.
        let (nowhere, _) = entry_made_elsewhere("reserve", "hook-1", |a| {
            a.reserve(&keyed("deploy", "hook-1")).unwrap();
            None
        });
        plant(&ledger, "reserve", "hook-1", &nowhere);
        let (mut pointed, _) = entry_made_elsewhere("reserve", "hook-2", |a| {
            a.reserve(&keyed("deploy", "hook-2")).unwrap();
            None
        });
        pointed.result["reservation"]["reservation_id"] = json!(cheap.reservation_id);
        plant(&ledger, "reserve", "hook-2", &pointed);
        let before = auth.balances(None).unwrap();
        let records = auth.audit(&AuditQuery::default()).unwrap().len();
        for key in ["hook-1", "hook-2"] {
            // Fail closed: a DENY whose message says why, nothing held.
            let err = auth.reserve(&keyed("deploy", key)).unwrap_err();
            let d = err.decision().expect("a denial");
            assert_eq!(d.decision, DecisionKind::Deny, "{key}");
            assert_eq!(d.reason_code, Some(ReasonCode::LedgerUnavailable), "{key}");
            let message = d.message.as_deref().unwrap_or_default();
            assert!(message.contains("does not hold for this call"), "{message}");
        }
        assert_eq!(auth.balances(None).unwrap(), before);
        assert_eq!(auth.audit(&AuditQuery::default()).unwrap().len(), records);
        // A real replay still answers with the reservation it made, finished or not.
        let again = auth.reserve(&keyed("read_file", "cheap")).unwrap();
        assert_eq!(again.reservation_id, cheap.reservation_id);
        auth.commit(&cheap.reservation_id, &CommitRequest::default())
            .unwrap();
        let again = auth.reserve(&keyed("read_file", "cheap")).unwrap();
        assert_eq!(again.reservation_id, cheap.reservation_id);
    }
}

#[test]
fn a_planted_reservation_committed_and_cleaned_up_stays_reported() {
    let dir = tempfile::tempdir().unwrap();
    for under in ledgers(&dir, "idem_laundered") {
        let ledger = under.ledger.clone();
        let sqlite = under.sqlite.clone();
        let auth = authority(ledger.clone());
        // A reservation row, its outcome and its hold on the budget planted; the client
        // reserves with the key, is handed the planted reservation, and commits it. Budgets
        // then agree with their records again (the commit returned the planted hold).
        let (made, id) = entry_made_elsewhere("reserve", "hook-7", |a| {
            Some(
                a.reserve(&keyed("deploy", "hook-7"))
                    .unwrap()
                    .reservation_id,
            )
        });
        let id = id.unwrap();
        let rsv: Reservation = serde_json::from_value(made.result["reservation"].clone()).unwrap();
        ledger
            .write(&mut |txn| {
                txn.put_reservation(&rsv)?;
                for h in &rsv.holds {
                    for scope in &h.scopes {
                        let mut b = txn.budget(scope, h.unit)?.unwrap();
                        b.reserved += h.amount;
                        txn.put_budget(&b)?;
                    }
                }
                txn.put_idempotency("reserve", "hook-7", &made)
            })
            .unwrap();
        // The planted row matches the outcome (same id and call), so the gate replays it.
        let got = auth.reserve(&keyed("deploy", "hook-7")).unwrap();
        assert_eq!(got.reservation_id, id);
        auth.commit(&id, &CommitRequest::default()).unwrap();
        // The planted outcome removed afterwards (in SQL): the commit record of a reservation
        // no reserve record opened is still there.
        if let Some(sqlite) = sqlite {
            sqlite
                .execute_raw("DELETE FROM idempotency WHERE op = 'reserve' AND key = 'hook-7'")
                .unwrap();
        }
        let v = auth.verify().unwrap();
        assert!(
            v.state_mismatches
                .iter()
                .all(|m| !m.item.starts_with("budget")),
            "the budgets agree again: {v:?}"
        );
        assert_mismatch(
            &auth,
            &format!("reservation {id}"),
            "(commit) names it but no reserve record left it active",
            "committed",
        );
    }
}

#[test]
fn listing_idempotency_entries_is_ordered_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    for under in ledgers(&dir, "idem_list") {
        let ledger = under.ledger.clone();
        let e = |d: &str| IdempotencyEntry {
            request_digest: d.into(),
            result: json!({"d": d}),
        };
        ledger
            .write(&mut |txn| {
                txn.put_idempotency("reserve", "b", &e("1"))?;
                txn.put_idempotency("event", "z", &e("2"))?;
                txn.put_idempotency("reserve", "a", &e("3"))?;
                // Read back inside the writing transaction too.
                assert_eq!(txn.idempotency_entries()?.len(), 3);
                Ok(())
            })
            .unwrap();
        ledger
            .write(&mut |txn| txn.put_idempotency("reserve", "b", &e("4")))
            .unwrap();
        let mut listed = Vec::new();
        ledger
            .read(&mut |txn| {
                listed = txn.idempotency_entries()?;
                Ok(())
            })
            .unwrap();
        let keys: Vec<_> = listed
            .iter()
            .map(|(op, key, e)| (op.as_str(), key.as_str(), e.request_digest.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("event", "z", "2"),
                ("reserve", "a", "3"),
                ("reserve", "b", "4")
            ]
        );
    }
}

/// `Authority::reservation_by_key` (how the Claude Code hook finds the reservation of a tool use
/// without listing the ledger): the reservation as it stands now, nothing for an unused key or
/// a denial, and `LEDGER_CORRUPT` for an outcome planted under the key.
#[test]
fn a_reservation_is_found_by_its_key_as_it_stands_and_a_planted_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for under in ledgers(&dir, "idem_bykey") {
        let ledger = under.ledger.clone();
        let auth = authority(ledger.clone());
        assert!(auth.reservation_by_key("nothing").unwrap().is_none());
        let r = auth.reserve(&keyed("deploy", "k1")).unwrap();
        let found = auth.reservation_by_key("k1").unwrap().unwrap();
        assert_eq!(found.reservation_id, r.reservation_id);
        assert_eq!(found.status, ReservationStatus::Active);
        auth.commit(&r.reservation_id, &CommitRequest::default())
            .unwrap();
        let found = auth.reservation_by_key("k1").unwrap().unwrap();
        assert_eq!(found.status, ReservationStatus::Committed);
        // A denial under a key is no reservation.
        let mut denied = keyed("deploy", "k2");
        denied.estimate = vec![Amount::new(Unit::Credits, 5)]; // no CREDITS budget
        let err = auth.reserve(&denied).unwrap_err();
        assert_eq!(err.code(), "BUDGET_NOT_FOUND", "{err}");
        assert!(auth.reservation_by_key("k2").unwrap().is_none());
        // An outcome planted under a key names a reservation this ledger never held.
        let (made, _) = entry_made_elsewhere("reserve", "k3", |a| {
            a.reserve(&keyed("deploy", "k3")).unwrap();
            None
        });
        plant(&ledger, "reserve", "k3", &made);
        let err = auth.reservation_by_key("k3").unwrap_err();
        assert_eq!(err.code(), "LEDGER_CORRUPT", "{err}");
    }
}
