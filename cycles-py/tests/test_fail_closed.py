"""Fail closed through the Python binding: ledger trouble is DENY or a typed LedgerError with the
core's code, inputs that used to abort the interpreter (a busy timeout SQLite cannot take) or
that could overflow a stack (arguments nested 10,000 deep) are InvalidInput, an unknown tool is
DENY TOOL_UNKNOWN, and every error's ``.code`` is the core's ``CyclesError::code()``."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import cycles

from conftest import BOT, POLICY


def nested(levels: int) -> Any:
    v: Any = "leaf"
    for _ in range(levels):
        v = [v]
    return v


@pytest.mark.parametrize("ms", [2**31, 2**53 + 1, 2**63, 2**64 - 1])
def test_a_busy_timeout_sqlite_cannot_take_is_invalid_input_not_a_panic(tmp_path: Path, ms: int) -> None:
    path = tmp_path / "cycles.db"
    with pytest.raises(cycles.InvalidInput) as e:
        cycles.Authority.open(path, POLICY, busy_timeout_ms=ms)
    assert e.value.code == "INVALID_REQUEST"
    assert not path.exists()
    # The largest value SQLite takes still opens.
    cycles.Authority.open(path, POLICY, busy_timeout_ms=2**31 - 1)


def test_arguments_nested_ten_thousand_deep_are_invalid_input() -> None:
    auth = cycles.Authority.in_memory(POLICY)
    before = len(auth.audit())
    for call in (auth.decide, auth.reserve):
        with pytest.raises(cycles.InvalidInput) as e:
            call("write_file", {"x": nested(10_000)}, subject=BOT)
        assert e.value.code == "INVALID_REQUEST"
    assert len(auth.audit()) == before


def foreign(path: Path) -> None:
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    c.commit()
    c.close()


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.write_bytes(b"\xab" * 10_000),
        foreign,
    ],
    ids=["garbage", "another application's database"],
)
def test_a_file_that_is_not_a_ledger_is_ledger_corrupt_and_left_alone(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "cycles.db"
    make(path)
    before = path.read_bytes()
    with pytest.raises(cycles.LedgerError) as e:
        cycles.Authority.open(path, POLICY)
    assert e.value.code == "LEDGER_CORRUPT"
    assert not isinstance(e.value, cycles.Denied)
    assert path.read_bytes() == before


def test_a_ledger_damaged_under_a_running_authority_denies(tmp_path: Path) -> None:
    path = tmp_path / "cycles.db"
    auth = cycles.Authority.open(path, POLICY, busy_timeout_ms=200)
    auth.reserve("read_file", {}, subject=BOT)
    c = sqlite3.connect(path)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    path.write_bytes(b"\x5a" * 65536)
    d = auth.decide("write_file", {}, subject=BOT)
    assert d.decision == "DENY" and d.reason_code == "LEDGER_UNAVAILABLE"
    assert not d
    with pytest.raises(cycles.Denied) as e:
        auth.reserve("write_file", {}, subject=BOT)
    assert e.value.code == "LEDGER_UNAVAILABLE"
    assert e.value.reason_code == "LEDGER_UNAVAILABLE"
    with pytest.raises(cycles.LedgerError) as le:
        auth.balances()
    assert le.value.code == "LEDGER_CORRUPT"


def test_an_unknown_tool_is_denied_tool_unknown(tmp_path: Path) -> None:
    auth = cycles.Authority.open(tmp_path / "cycles.db", {**POLICY, "unknown_tool": {"action": "deny"}})
    d = auth.decide("railway.not_listed", {}, subject=BOT)
    assert d.decision == "DENY" and d.reason_code == "TOOL_UNKNOWN"
    with pytest.raises(cycles.Denied) as e:
        auth.reserve("railway.not_listed", {}, subject=BOT)
    assert e.value.code == "TOOL_UNKNOWN"
    assert auth.balances()[0].reserved == 0


@pytest.mark.parametrize(
    "policy",
    [
        {"tools": [{"name": "x", "tier": 5}]},
        {"tools": [{"name": "x", "tier": 0}, {"name": "x", "tier": 4}]},
        {"budgets": [{"scope": "tenant:a", "unit": "RISK_POINTS", "allocated": -1}]},
        {"budgets": [{"scope": "tenant:a", "unit": "DOLLARS", "allocated": 1}]},
        {"toolz": []},
    ],
)
def test_a_bad_policy_is_policy_error(tmp_path: Path, policy: dict[str, Any]) -> None:
    with pytest.raises(cycles.PolicyError) as e:
        cycles.Authority.open(tmp_path / "cycles.db", policy)
    assert e.value.code == "POLICY_INVALID"


def test_an_unreadable_policy_file_is_policy_error(tmp_path: Path) -> None:
    for p in (tmp_path / "missing.toml", tmp_path):
        with pytest.raises(cycles.PolicyError) as e:
            cycles.Authority.in_memory(str(p))
        assert e.value.code == "POLICY_INVALID"
