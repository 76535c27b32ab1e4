"""Python values that do not fit a request raise InvalidInput (code INVALID_REQUEST) and change
nothing: balances and the audit trail are identical before and after."""

from __future__ import annotations

import datetime
from typing import Any, Callable

import pytest

import cycles

from conftest import BOT, snapshot


def self_referencing() -> list[Any]:
    x: list[Any] = []
    x.append(x)
    return x


def deeply_nested(levels: int) -> Any:
    v: Any = "leaf"
    for _ in range(levels):
        v = {"k": v}
    return v


A = cycles.Authority
CASES: dict[str, Callable[[A], Any]] = {
    # amounts
    "negative estimate": lambda a: a.reserve("read_file", subject=BOT, estimate={"USD_MICROCENTS": -1}),
    "float amount": lambda a: a.reserve("read_file", subject=BOT, estimate={"USD_MICROCENTS": 1.5}),
    "integral float amount": lambda a: a.reserve("read_file", subject=BOT, estimate={"USD_MICROCENTS": 2.0}),
    "bool as amount": lambda a: a.reserve("read_file", subject=BOT, estimate={"USD_MICROCENTS": True}),
    "amount over 2**63-1": lambda a: a.reserve("read_file", subject=BOT, estimate={"USD_MICROCENTS": 2**63}),
    "amount as str": lambda a: a.reserve("read_file", subject=BOT, estimate={"USD_MICROCENTS": "5"}),
    "unknown unit": lambda a: a.reserve("read_file", subject=BOT, estimate={"DOLLARS": 5}),
    "unit twice": lambda a: a.reserve(
        "read_file", subject=BOT,
        estimate=[{"unit": "TOKENS", "amount": 1}, {"unit": "TOKENS", "amount": 2}],
    ),
    "amount with extra key": lambda a: a.reserve(
        "read_file", subject=BOT, estimate=[{"unit": "TOKENS", "amount": 1, "x": 0}]
    ),
    "event negative actual": lambda a: a.event("llm", subject=BOT, actual={"USD_MICROCENTS": -3}),
    # arguments
    "int over 2**63-1 in args": lambda a: a.reserve("read_file", {"n": 2**63}, subject=BOT),
    "int under -2**63 in args": lambda a: a.decide("read_file", {"n": -(2**63) - 1}, subject=BOT),
    "NaN in args": lambda a: a.reserve("read_file", {"x": float("nan")}, subject=BOT),
    "infinity in args": lambda a: a.decide("read_file", [float("-inf")], subject=BOT),
    "non-str dict key": lambda a: a.reserve("read_file", {1: "a"}, subject=BOT),
    "tuple dict key": lambda a: a.decide("read_file", {"ok": {("a", "b"): 1}}, subject=BOT),
    "bytes": lambda a: a.reserve("read_file", {"b": b"\x00"}, subject=BOT),
    "set": lambda a: a.reserve("read_file", {"s": {1, 2}}, subject=BOT),
    "datetime": lambda a: a.reserve("read_file", {"t": datetime.datetime(2024, 1, 1)}, subject=BOT),
    "arbitrary object": lambda a: a.reserve("read_file", {"o": object()}, subject=BOT),
    "lone surrogate": lambda a: a.reserve("read_file", {"s": "\ud800"}, subject=BOT),
    "self-referencing list": lambda a: a.reserve("read_file", {"l": self_referencing()}, subject=BOT),
    "nested 100 deep": lambda a: a.reserve("read_file", deeply_nested(100), subject=BOT),
    # subject
    "subject as str": lambda a: a.reserve("read_file", subject="acme"),  # type: ignore[arg-type]
    "empty subject": lambda a: a.reserve("read_file", subject={}),
    "subject level as int": lambda a: a.reserve("read_file", subject={"tenant": 5}),
    "subject typo": lambda a: a.reserve("read_file", subject={"tennant": "acme"}),
    "subject bad id": lambda a: a.decide("read_file", subject={"tenant": "ac me"}),
    "subject id too long": lambda a: a.decide("read_file", subject={"tenant": "a" * 129}),
    # tool, kind, tags
    "tool as int": lambda a: a.reserve(5, subject=BOT),  # type: ignore[arg-type]
    "empty tool": lambda a: a.reserve("", subject=BOT),
    "tool with spaces": lambda a: a.reserve("rm -rf", subject=BOT),
    "kind without dot": lambda a: a.reserve("read_file", subject=BOT, kind="read"),
    "empty tag": lambda a: a.reserve("read_file", subject=BOT, tags=[""]),
    # reservation options
    "ttl as float": lambda a: a.reserve("read_file", subject=BOT, ttl_ms=1500.0),  # type: ignore[arg-type]
    "ttl as bool": lambda a: a.reserve("read_file", subject=BOT, ttl_ms=True),
    "ttl too short": lambda a: a.reserve("read_file", subject=BOT, ttl_ms=999),
    "ttl too long": lambda a: a.reserve("read_file", subject=BOT, ttl_ms=86_400_001),
    "grace negative": lambda a: a.reserve("read_file", subject=BOT, grace_period_ms=-1),
    "unknown overage policy": lambda a: a.reserve("read_file", subject=BOT, overage_policy="SOMETIMES"),  # type: ignore[arg-type]
    "idempotency key as int": lambda a: a.reserve("read_file", subject=BOT, idempotency_key=5),  # type: ignore[arg-type]
    "empty idempotency key": lambda a: a.reserve("read_file", subject=BOT, idempotency_key=""),
    # budgets and queries
    "negative allocation": lambda a: a.set_budget("tenant:acme", "RISK_POINTS", -1),
    "float allocation": lambda a: a.set_budget("tenant:acme", "RISK_POINTS", 10.0),  # type: ignore[arg-type]
    "bad scope": lambda a: a.set_budget("agent:bot/tenant:acme", "RISK_POINTS", 10),
    "negative audit limit": lambda a: a.audit(limit=-1),
    "unknown audit kind": lambda a: a.audit(kinds=["nope"]),
    "reservation id as int": lambda a: a.commit(5),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_raises_invalid_input_and_changes_nothing(auth: cycles.Authority, case: str) -> None:
    before = snapshot(auth)
    with pytest.raises(cycles.InvalidInput) as e:
        CASES[case](auth)
    assert e.value.code == "INVALID_REQUEST"
    assert isinstance(e.value, cycles.CyclesError) and not isinstance(e.value, cycles.Denied)
    assert snapshot(auth) == before


def test_the_error_names_the_field() -> None:
    a = cycles.Authority.in_memory()
    with pytest.raises(cycles.InvalidInput, match=r"args\.outer\.inner\[1\]"):
        a.decide("t", {"outer": {"inner": [1, 2**64]}}, subject=BOT)
    with pytest.raises(cycles.InvalidInput, match="estimate"):
        a.decide("t", subject=BOT, estimate={"TOKENS": -1})


def test_bad_commit_extend_release_leave_the_reservation_active(auth: cycles.Authority) -> None:
    r = auth.reserve("deploy", subject=BOT, estimate={"USD_MICROCENTS": 100})
    before = snapshot(auth)
    for bad in (
        lambda: r.commit({"USD_MICROCENTS": -5}),
        lambda: r.commit({"USD_MICROCENTS": 1.0}),
        lambda: r.commit({"USD_MICROCENTS": False}),
        lambda: r.commit([{"unit": "USD_MICROCENTS"}]),
        lambda: r.extend(0),
        lambda: r.extend(1.5),  # type: ignore[arg-type]
        lambda: r.extend(True),
        lambda: r.release(5),  # type: ignore[arg-type]
        lambda: r.release("x" * 257),
        lambda: r.commit(idempotency_key="\n"),
    ):
        with pytest.raises(cycles.InvalidInput):
            bad()
    assert snapshot(auth) == before
    assert r.status == "ACTIVE"
    assert auth.reservation(r.reservation_id).status == "ACTIVE"
    assert r.commit().charged == {"RISK_POINTS": 20, "USD_MICROCENTS": 100}


def test_values_at_the_edges_are_accepted() -> None:
    a = cycles.Authority.in_memory(
        {"tools": [{"name": "t", "tier": 0}],
         "budgets": [{"scope": "agent:bot", "unit": "RISK_POINTS", "allocated": 1}]}
    )
    s = {"agent": "bot"}
    args = {
        "max": 2**63 - 1, "min": -(2**63), "float": 0.5, "bool": True, "none": None,
        "tuple": (1, "a"), "unicode": "é☃", "nested": deeply_nested(60),
    }
    assert a.decide("t", args, subject=s).allowed
    # An amount of exactly i64::MAX is a valid value: the core answers (here: over budget).
    d = a.decide("t", subject=s, estimate={"RISK_POINTS": 2**63 - 1})
    assert d.reason_code == "BUDGET_EXCEEDED"
