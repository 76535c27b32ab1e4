"""commit(ran=...): the call that actually ran, when it may not be the call reserved. A
different call is charged at least its own risk points (the core's rule) and named in the
commit record; a malformed one is InvalidInput and changes nothing. And reservation_by_key,
which finds a reservation by the idempotency key it was reserved under."""

from __future__ import annotations

import pytest

import cycles

POLICY = {
    "tools": [{"name": "write_file", "tier": 1}, {"name": "deploy", "tier": 3}],
    "budgets": [{"scope": "agent:bot", "unit": "RISK_POINTS", "allocated": 1000}],
}
BOT = {"agent": "bot"}


def test_a_costlier_call_that_ran_is_charged_its_points_and_recorded() -> None:
    auth = cycles.Authority.in_memory(POLICY)
    deploy_points = auth.decide("deploy", {"to": "prod"}, subject=BOT).risk_points
    write_points = auth.decide("write_file", {"path": "a"}, subject=BOT).risk_points
    assert deploy_points > write_points
    r = auth.reserve("write_file", {"path": "a"}, subject=BOT)
    c = auth.commit(r.reservation_id, ran={"tool": "deploy", "args": {"to": "prod"}})
    assert c.charged["RISK_POINTS"] == deploy_points
    (record,) = auth.audit(kinds=["commit"])
    assert record.detail["ran"]["tool"] == "deploy"
    assert record.detail["ran"]["tier"] == 3
    # The same call through the reservation handle: charged as held, nothing named.
    with auth.reserve("write_file", {"path": "b"}, subject=BOT) as r2:
        c2 = r2.commit(ran={"tool": "write_file", "args": {"path": "b"}})
    assert c2.charged["RISK_POINTS"] == write_points
    assert "ran" not in auth.audit(kinds=["commit"])[-1].detail


@pytest.mark.parametrize(
    "ran",
    ["deploy", {"args": {}}, {"tool": "deploy", "argz": {}}, {"tool": ""}, {1: "deploy"}],
)
def test_a_malformed_call_that_ran_is_invalid_and_changes_nothing(ran: object) -> None:
    auth = cycles.Authority.in_memory(POLICY)
    r = auth.reserve("write_file", {"path": "a"}, subject=BOT)
    records = len(auth.audit())
    with pytest.raises(cycles.InvalidInput):
        auth.commit(r.reservation_id, ran=ran)  # type: ignore[arg-type]
    assert len(auth.audit()) == records
    assert auth.reservation(r.reservation_id).status == "ACTIVE"


def test_a_reservation_is_found_by_its_idempotency_key() -> None:
    auth = cycles.Authority.in_memory(POLICY)
    assert auth.reservation_by_key("nothing") is None
    r = auth.reserve("write_file", {"path": "a"}, subject=BOT, idempotency_key="tool-use-1")
    found = auth.reservation_by_key("tool-use-1")
    assert found is not None and found.reservation_id == r.reservation_id
    assert found.status == "ACTIVE"
    found.commit()
    again = auth.reservation_by_key("tool-use-1")
    assert again is not None and again.status == "COMMITTED"
    with pytest.raises(cycles.InvalidInput):
        auth.reservation_by_key(42)  # type: ignore[arg-type]
