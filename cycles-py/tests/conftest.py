from __future__ import annotations

from typing import Any

import pytest

import cycles

POLICY: dict[str, Any] = {
    "tools": [
        {"name": "read_file", "tier": 0, "kind": "fs.read"},
        {"name": "write_file", "tier": 1, "kind": "fs.write"},
        {"name": "send_email", "tier": 2, "kind": "email.send"},
        {"name": "deploy", "tier": 3, "kind": "ci.deploy"},
        {"name": "railway.delete_volume", "tier": 4, "kind": "db.admin"},
    ],
    "budgets": [
        {"scope": "tenant:acme", "unit": "RISK_POINTS", "allocated": 100},
        {"scope": "tenant:acme/agent:bot", "unit": "RISK_POINTS", "allocated": 40},
        {"scope": "tenant:acme", "unit": "USD_MICROCENTS", "allocated": 1_000_000},
    ],
}
BOT = {"tenant": "acme", "agent": "bot"}


@pytest.fixture(params=["memory", "sqlite"])
def auth(request: pytest.FixtureRequest, tmp_path: Any) -> cycles.Authority:
    if request.param == "memory":
        return cycles.Authority.in_memory(POLICY)
    return cycles.Authority.open(tmp_path / "cycles.db", POLICY)


def snapshot(a: cycles.Authority) -> tuple[list[dict[str, Any]], int]:
    """Everything a bad call must leave unchanged: balances and the audit length."""
    return [b.to_dict() for b in a.balances()], len(a.audit())
