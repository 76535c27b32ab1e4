"""The binding's surface: constructors, policy loading, the lifecycle, frozen results, the
context manager, errors and their attributes, audit and verify."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import cycles

from conftest import BOT, POLICY, snapshot


def bal(a: cycles.Authority, scope: str, unit: str = "RISK_POINTS") -> cycles.Balance:
    [b] = [b for b in a.balances(scope) if b.scope == scope and b.unit == unit]
    return b


# --- constructors and policy ---------------------------------------------------------------


def test_policy_from_a_toml_file_as_str_or_path(tmp_path: Path) -> None:
    f = tmp_path / "policy.toml"
    f.write_text(
        '[[tools]]\nname = "read_file"\ntier = 0\n\n[[tools]]\nname = "deploy"\ntier = 3\n\n'
        '[[budgets]]\nscope = "agent:bot"\nunit = "RISK_POINTS"\nallocated = 30\n'
    )
    for policy in (str(f), f):
        a = cycles.Authority.in_memory(policy)
        assert a.decide("deploy", subject={"agent": "bot"}).risk_points == 20
        assert a.policy()["budgets"][0]["allocated"] == 30


def test_a_bad_policy_file_is_a_policy_error_naming_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text('[[tools]]\nname = "x"\ntier = 9\n')
    with pytest.raises(cycles.PolicyError) as e:
        cycles.Authority.in_memory(f)
    assert e.value.code == "POLICY_INVALID"
    assert "bad.toml" in str(e.value) and "line 3" in str(e.value)
    with pytest.raises(cycles.PolicyError):
        cycles.Authority.in_memory(tmp_path / "missing.toml")


def test_a_bad_policy_dict_is_a_policy_error_and_no_ledger_file_is_created(tmp_path: Path) -> None:
    for bad in (
        {"tools": [{"name": "x", "tier": 5}]},
        {"tool": []},  # unknown key: a typo must not silently run on defaults
        {"tier_points": [0, 1, 5, 20, 10]},  # decreasing
        {"tools": [{"name": "x", "tier": 1.5}]},
        {"budgets": [{"scope": "tenant:a", "unit": "RISK_POINTS", "allocated": float("nan")}]},
    ):
        with pytest.raises(cycles.PolicyError) as e:
            cycles.Authority.open(tmp_path / "never.db", bad)
        assert e.value.code == "POLICY_INVALID"
    assert not (tmp_path / "never.db").exists()
    with pytest.raises(cycles.PolicyError):
        cycles.Authority.in_memory(["not", "a", "policy"])  # type: ignore[arg-type]


def test_no_policy_means_nothing_is_budgeted_and_the_gate_fails_closed() -> None:
    a = cycles.Authority.in_memory()
    d = a.decide("anything", subject={"agent": "bot"})
    assert (d.decision, d.reason_code, d.tier) == ("DENY", "BUDGET_NOT_FOUND", 3)
    assert not d


def test_explain_rates_a_call_by_the_policy_alone_and_records_nothing() -> None:
    policy = {
        "tools": [{"name": "run_sql", "tier": 0, "classifier": "sql", "arg": "query"}],
        "unknown_tool": {"action": "deny"},
        "max_tier": [{"scope": "tenant:acme/agent:intern", "max_tier": 1}],
    }
    a = cycles.Authority.in_memory(policy)
    e = a.explain("run_sql", {"query": "DROP DATABASE prod"})
    assert (e["tier"], e["unknown"], e["approval_required"], e["deny"]) == (4, False, True, None)
    assert "sql.drop" in e["rules"] and e["risk_points"] == 50
    assert a.explain("run_sql", {"query": "SELECT 1"})["tier"] == 0
    capped = a.explain("run_sql", {"query": "DELETE FROM t"}, scope="tenant:acme/agent:intern")
    assert capped["deny"]["reason_code"] == "TIER_NOT_PERMITTED"
    assert not capped["approval_required"]
    assert a.explain("nope")["deny"]["reason_code"] == "TOOL_UNKNOWN"
    with pytest.raises(cycles.InvalidInput):
        a.explain("run_sql", scope="planet:earth")
    with pytest.raises(cycles.InvalidInput):
        a.explain("bad name!")
    assert a.audit() == [] and a.verify().records == 0


def test_sqlite_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    a = cycles.Authority.open(path, POLICY)
    with a.reserve("deploy", {"env": "prod"}, subject=BOT) as r:
        r.commit()
    b = cycles.Authority.open(str(path), POLICY, synchronous="NORMAL")
    assert bal(b, "tenant:acme/agent:bot").spent == 20
    assert b.verify().records == a.verify().records == 5
    with pytest.raises(cycles.InvalidInput):
        cycles.Authority.open(path, POLICY, synchronous="SOMETIMES")  # type: ignore[arg-type]


# --- decide ----------------------------------------------------------------------------------


def test_decide_is_frozen_and_holds_nothing(auth: cycles.Authority) -> None:
    d = auth.decide("send_email", {"to": "a@b.c"}, subject=BOT)
    assert (d.decision, d.reason_code, d.tier, d.risk_points) == ("ALLOW", None, 2, 5)
    assert d.allowed and bool(d)
    assert d.rules == ("tool:send_email",)
    assert d.caps is None and d.scope is None
    assert {(b.scope, b.unit) for b in d.balances} == {
        ("tenant:acme", "RISK_POINTS"),
        ("tenant:acme/agent:bot", "RISK_POINTS"),
    }
    with pytest.raises(AttributeError):
        d.decision = "DENY"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        d.balances[0].spent = 0  # type: ignore[misc]
    assert bal(auth, "tenant:acme").reserved == 0
    assert [r.kind for r in auth.audit()][-1] == "decide"
    assert d.to_dict()["decision"] == "ALLOW" and d == auth.decide("send_email", {"to": "a@b.c"}, subject=BOT)


def test_decide_deny_is_a_value_not_an_exception(auth: cycles.Authority) -> None:
    d = auth.decide("railway.delete_volume", {"id": "v"}, subject=BOT)
    assert (d.decision, d.reason_code, d.scope) == ("DENY", "BUDGET_EXCEEDED", "tenant:acme/agent:bot")
    assert not d.allowed and d.message


# --- reserve / commit / release / extend -----------------------------------------------------


def test_reserve_commit_with_estimate_and_actual(auth: cycles.Authority) -> None:
    r = auth.reserve("send_email", {"to": "a@b.c"}, subject=BOT, estimate={"USD_MICROCENTS": 300_000})
    assert r.status == "ACTIVE" and r.tier == 2
    assert r.reserved == {"RISK_POINTS": 5, "USD_MICROCENTS": 300_000}
    assert r.scopes == {
        "RISK_POINTS": ("tenant:acme", "tenant:acme/agent:bot"),
        "USD_MICROCENTS": ("tenant:acme",),
    }
    assert r.subject == BOT and r.tool == "send_email" and len(r.call_digest) == 64
    assert bal(auth, "tenant:acme", "USD_MICROCENTS").reserved == 300_000
    res = r.commit({"USD_MICROCENTS": 120_000})
    assert res.charged == {"RISK_POINTS": 5, "USD_MICROCENTS": 120_000}
    assert res.released == {"RISK_POINTS": 0, "USD_MICROCENTS": 180_000}
    assert r.status == "COMMITTED" and r.charged == res.charged
    usd = bal(auth, "tenant:acme", "USD_MICROCENTS")
    assert (usd.spent, usd.reserved, usd.remaining) == (120_000, 0, 880_000)
    with pytest.raises(cycles.Conflict) as e:
        r.commit()
    assert e.value.code == "RESERVATION_FINALIZED"
    # The list form of amounts (the core's JSON form) is accepted too.
    r2 = auth.reserve("read_file", subject=BOT, estimate=[{"unit": "USD_MICROCENTS", "amount": 10}])
    assert auth.commit(r2.reservation_id, [{"unit": "USD_MICROCENTS", "amount": 7}]).charged["USD_MICROCENTS"] == 7


def test_release_and_extend(auth: cycles.Authority) -> None:
    r = auth.reserve("deploy", subject=BOT, ttl_ms=10_000)
    expires = r.expires_at_ms
    assert r.extend(5_000) is r
    assert (r.expires_at_ms, r.extensions) == (expires + 5_000, 1)
    assert auth.reservation(r.reservation_id).expires_at_ms == expires + 5_000
    out = r.release("changed my mind")
    assert out.released == {"RISK_POINTS": 20} and r.status == "RELEASED"
    assert bal(auth, "tenant:acme/agent:bot").reserved == 0
    rec = auth.audit(kinds=["release"])[-1]
    assert rec.detail == {"reason": "changed my mind"} and rec.reservation_id == r.reservation_id
    with pytest.raises(cycles.Conflict):
        r.extend(1_000)


def test_result_reprs_show_amounts_as_the_dicts_python_sees(auth: cycles.Authority) -> None:
    r = auth.reserve("send_email", {"to": "a@b.c"}, subject=BOT, estimate={"USD_MICROCENTS": 300})
    res = r.commit({"USD_MICROCENTS": 120})
    assert repr(res) == f"CommitResult({r.reservation_id}, charged={res.charged!r})"
    assert repr(res.charged) == "{'RISK_POINTS': 5, 'USD_MICROCENTS': 120}"
    out = auth.reserve("deploy", subject=BOT).release()
    assert repr(out).endswith(", released={'RISK_POINTS': 20})") and "Amount" not in repr(out)
    ev = auth.event("llm.call", {"model": "m"}, subject=BOT, actual={"USD_MICROCENTS": 7})
    assert "charged={" in repr(ev) and "Amount" not in repr(ev), repr(ev)


def test_idempotent_reserve_replays_the_same_reservation(auth: cycles.Authority) -> None:
    r1 = auth.reserve("deploy", subject=BOT, idempotency_key="k-1")
    r2 = auth.reserve("deploy", subject=BOT, idempotency_key="k-1")
    assert r1.reservation_id == r2.reservation_id
    assert bal(auth, "tenant:acme/agent:bot").reserved == 20
    with pytest.raises(cycles.Conflict) as e:
        auth.reserve("deploy", {"other": 1}, subject=BOT, idempotency_key="k-1")
    assert e.value.code == "IDEMPOTENCY_MISMATCH"


def test_expiry_with_a_manual_clock() -> None:
    clock = cycles.ManualClock(1_000_000)
    a = cycles.Authority.in_memory(POLICY, clock=clock)
    r = a.reserve("deploy", subject=BOT, ttl_ms=1_000, grace_period_ms=0)
    clock.advance(1_001)
    assert a.sweep_expired() == 1
    assert a.reservation(r.reservation_id).status == "EXPIRED"
    with pytest.raises(cycles.Conflict) as e:
        r.commit()
    assert e.value.code == "RESERVATION_EXPIRED"
    assert a.now_ms() == clock.now_ms == 1_001_001


def test_event_and_set_budget(auth: cycles.Authority) -> None:
    ev = auth.event("llm.call", {"model": "m"}, subject=BOT, actual={"USD_MICROCENTS": 5_000})
    assert ev.event_id.startswith("evt_") and ev.charged == {"USD_MICROCENTS": 5_000}
    b = auth.set_budget("tenant:acme/agent:bot", "RISK_POINTS", 10, status="FROZEN")
    assert (b.allocated, b.status) == (10, "FROZEN")
    d = auth.decide("read_file", subject=BOT)
    assert d.reason_code == "BUDGET_FROZEN"


# --- the context manager ---------------------------------------------------------------------


def test_context_manager_commit_inside_the_block(auth: cycles.Authority) -> None:
    with auth.reserve("write_file", {"path": "a"}, subject=BOT) as r:
        r.commit()
    assert r.status == "COMMITTED"
    assert bal(auth, "tenant:acme/agent:bot").spent == 1
    assert [x.kind for x in auth.audit()][-2:] == ["reserve", "commit"]


def test_context_manager_releases_on_exception(auth: cycles.Authority) -> None:
    with pytest.raises(KeyError):
        with auth.reserve("deploy", subject=BOT) as r:
            assert bal(auth, "tenant:acme/agent:bot").reserved == 20
            raise KeyError("boom")
    assert r.status == "RELEASED"
    b = bal(auth, "tenant:acme/agent:bot")
    assert (b.spent, b.reserved, b.remaining) == (0, 0, 40)
    assert auth.audit()[-1].detail == {"reason": "exception: KeyError"}


def test_context_manager_charges_what_was_held_when_left_unsettled(auth: cycles.Authority) -> None:
    # A block left normally ran its call (COMPLETED): charged what was held, never free.
    with auth.reserve("deploy", subject=BOT) as r:
        pass
    assert r.status == "COMMITTED"
    b = bal(auth, "tenant:acme/agent:bot")
    assert (b.spent, b.reserved) == (20, 0)
    assert auth.audit()[-1].kind == "commit"


def test_context_manager_leaves_a_reservation_finalized_elsewhere_alone(auth: cycles.Authority) -> None:
    with auth.reserve("deploy", subject=BOT) as r:
        auth.commit(r.reservation_id)  # committed through the authority, not the handle
    assert bal(auth, "tenant:acme/agent:bot").spent == 20
    assert [x.kind for x in auth.audit()][-2:] == ["reserve", "commit"]


# --- errors ----------------------------------------------------------------------------------


def test_exception_hierarchy() -> None:
    assert issubclass(cycles.Denied, cycles.CyclesError)
    assert issubclass(cycles.ApprovalRequired, cycles.Denied)
    for cls in (cycles.PolicyError, cycles.LedgerError, cycles.InvalidInput, cycles.NotFound, cycles.Conflict):
        assert issubclass(cls, cycles.CyclesError) and not issubclass(cls, cycles.Denied)
    assert issubclass(cycles.CyclesError, Exception)


def test_denied_carries_code_reason_and_the_frozen_decision(auth: cycles.Authority) -> None:
    before = snapshot(auth)
    with pytest.raises(cycles.Denied) as e:
        auth.reserve("railway.delete_volume", {"volumeId": "prod"}, subject=BOT)
    err = e.value
    assert type(err) is cycles.Denied
    assert err.code == err.reason_code == "BUDGET_EXCEEDED"
    assert isinstance(err.decision, cycles.Decision)
    assert (err.decision.tier, err.decision.risk_points, err.decision.scope) == (4, 50, "tenant:acme/agent:bot")
    assert err.request_id is None
    assert "BUDGET_EXCEEDED" in str(err)
    balances, n = snapshot(auth)
    assert balances == before[0] and n == before[1] + 1  # only the denial record
    assert auth.audit()[-1].kind == "denial"


def test_tier_not_permitted_and_unknown_tool_denials() -> None:
    a = cycles.Authority.in_memory(
        dict(POLICY, unknown_tool={"action": "deny"}, max_tier=[{"scope": "tenant:acme", "max_tier": 2}])
    )
    with pytest.raises(cycles.Denied) as e:
        a.reserve("deploy", subject=BOT)
    assert e.value.reason_code == "TIER_NOT_PERMITTED"
    with pytest.raises(cycles.Denied) as e:
        a.reserve("mystery_tool", subject=BOT)
    assert e.value.reason_code == "TOOL_UNKNOWN"


def test_not_found_and_conflict_codes(auth: cycles.Authority) -> None:
    with pytest.raises(cycles.NotFound) as e:
        auth.commit("rsv_does_not_exist")
    assert e.value.code == "NOT_FOUND"
    with pytest.raises(cycles.NotFound):
        auth.reservation("rsv_nope")
    r = auth.reserve("read_file", subject=BOT)
    with pytest.raises(cycles.Conflict) as e:
        r.commit({"TOKENS": 5})
    assert e.value.code == "UNIT_MISMATCH"


def test_a_broken_ledger_denies_with_ledger_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    a = cycles.Authority.open(path, POLICY)
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("DROP TABLE reservations")
    con.commit()
    con.close()
    d = a.decide("read_file", subject=BOT)
    with pytest.raises(cycles.Denied) as e:
        a.reserve("read_file", subject=BOT)
    # Fail closed: never ALLOW when the ledger cannot record the reservation.
    assert e.value.reason_code == "LEDGER_UNAVAILABLE"
    assert d.decision in ("ALLOW", "DENY")  # decide does not touch reservations
    with pytest.raises(cycles.LedgerError) as le:
        a.commit("rsv_x")
    assert le.value.code in ("LEDGER_UNAVAILABLE", "LEDGER_CORRUPT")


# --- audit -----------------------------------------------------------------------------------


def test_audit_filters_verify_and_export(auth: cycles.Authority, tmp_path: Path) -> None:
    with auth.reserve("write_file", {"path": "a"}, subject=BOT) as r:
        r.commit()
    with pytest.raises(cycles.Denied):
        auth.reserve("railway.delete_volume", subject=BOT)
    other = {"tenant": "acme", "agent": "other"}
    auth.decide("read_file", subject=other)

    records = auth.audit()
    assert [x.kind for x in records] == ["budget_set"] * 3 + ["reserve", "commit", "denial", "decide"]
    assert [x.seq for x in records] == list(range(1, 8))
    assert all(records[i].prev_hash == records[i - 1].hash for i in range(1, len(records)))
    assert [x.kind for x in auth.audit(scope="tenant:acme/agent:bot")] == ["budget_set", "reserve", "commit", "denial"]
    assert [x.seq for x in auth.audit(after_seq=5, limit=1)] == [6]
    denial = auth.audit(kinds=["denial"])[0]
    assert (denial.decision, denial.reason_code, denial.tier, denial.tool) == ("DENY", "BUDGET_EXCEEDED", 4, "railway.delete_volume")
    assert denial.subject == BOT and denial.amounts == {"RISK_POINTS": 50}

    report = auth.verify()
    assert report.ok and bool(report) and report.records == 7 and report.head_hash == records[-1].hash
    assert report.first_broken_seq is None

    out = tmp_path / "audit.jsonl"
    assert auth.export_jsonl(out) == 7
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines == [x.to_dict() for x in records]


def test_verify_names_the_first_broken_record(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "c.db"
    a = cycles.Authority.open(path, POLICY)
    for _ in range(3):
        with a.reserve("read_file", subject=BOT) as r:
            r.commit()
    con = sqlite3.connect(path)
    # Tamper with record 5 in the file (the ledger stores each record's JSON as `body`): any
    # edit of a stored record must break the chain exactly there.
    body = json.loads(con.execute("SELECT body FROM audit WHERE seq = 5").fetchone()[0])
    body["time_ms"] += 1
    con.execute("UPDATE audit SET body = ? WHERE seq = 5", (json.dumps(body),))
    con.commit()
    con.close()
    report = a.verify()
    assert not report.ok and not report
    assert report.first_broken_seq == 5 and report.first_broken_reason
