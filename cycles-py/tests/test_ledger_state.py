"""verify() compares the ledger's budgets and active reservations with the post-states the
audit records carry: a row edited outside the gate is reported though every record is intact."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import cycles

POLICY = {
    "tools": [{"name": "write_file", "tier": 1}],
    "budgets": [{"scope": "agent:bot", "unit": "RISK_POINTS", "allocated": 10}],
}
BOT = {"agent": "bot"}


def test_records_carry_post_states_and_an_edited_budget_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "cycles.db"
    auth = cycles.Authority.open(path, POLICY)
    r = auth.reserve("write_file", {"path": "a"}, subject=BOT)
    r.commit()
    held = auth.reserve("write_file", {"path": "b"}, subject=BOT)
    commit = [rec for rec in auth.audit(kinds=["commit"])][0]
    (after,) = commit.budgets
    assert (after.scope, after.unit, after.spent, after.reserved, after.remaining) == (
        "agent:bot",
        "RISK_POINTS",
        1,
        0,
        9,
    )
    report = auth.verify()
    assert report.ok and report.state_mismatches == []

    # Someone who can write the file resets what the agent spent and drops its open hold.
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE budgets SET spent = 0")
        raw.execute("DELETE FROM reservations WHERE id = ?", (held.reservation_id,))
    raw.close()
    report = auth.verify()
    assert not report and report.first_broken_seq is None
    items = dict(report.state_mismatches)
    assert "spent 0" in items["budget agent:bot RISK_POINTS"], items
    assert "not ACTIVE in the ledger" in items[f"reservation {held.reservation_id}"], items
    assert "state differs" in repr(report)
    assert len(report.to_dict()["state_mismatches"]) == 2


CAPS_POLICY = {
    "tools": [{"name": "write_file", "tier": 1}],
    "budgets": [{"scope": "agent:bot", "unit": "RISK_POINTS", "allocated": 100}],
    "caps": [
        {
            "id": "low",
            "scope": "agent:bot",
            "remaining_below": 1000,
            "max_steps_remaining": 5,
        }
    ],
}


def test_reserve_records_carry_caps_counters_and_a_reset_counter_is_reported(
    tmp_path: Path,
) -> None:
    path = tmp_path / "caps.db"
    auth = cycles.Authority.open(path, CAPS_POLICY)
    for name in ("a", "b"):
        auth.reserve("write_file", {"path": name}, subject=BOT).commit()
    first, second = auth.audit(kinds=["reserve"])
    assert [c["steps"] for c in (first.caps[0], second.caps[0])] == [1, 2]
    assert second.caps[0]["key"] == "low@agent:bot"
    assert second.caps[0]["allocated"] == 100
    assert [rec.caps for rec in auth.audit(kinds=["commit"])] == [(), ()]
    assert auth.verify().ok

    # The agent's steps given back by hand: the counter no longer says what the chain says.
    with sqlite3.connect(path) as raw:
        raw.execute(
            "UPDATE kv SET value = json_set(value, '$.steps', 0) WHERE ns = 'caps'"
        )
    raw.close()
    report = auth.verify()
    assert not report and report.first_broken_seq is None
    items = dict(report.state_mismatches)
    assert "steps 0" in items["caps low@agent:bot"], items
