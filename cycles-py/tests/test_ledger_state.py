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
