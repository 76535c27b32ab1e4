"""The shared golden scenarios (fixtures/scenarios/*.json, format in fixtures/README.md) run
through the Python binding, on an in-memory and on a SQLite ledger.

Each step is executed once and what it produced is recorded as an "observation"; the
expectations are then matched against it. Keeping the two apart lets the last test mutate
every expected leaf and check the runner notices, so no expectation key is silently ignored.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

import cycles

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios"
SCENARIOS = sorted(FIXTURES.glob("*.json"))
LEDGERS = ["memory", "sqlite"]

EXPECT_KEYS = {
    "error", "decision", "reason_code", "tier", "risk_points", "decision_scope", "rules",
    "result", "same_as", "balances", "budget_count", "reservations",
}
DECISION_KEYS = {
    "decision": "decision", "reason_code": "reason_code", "tier": "tier",
    "risk_points": "risk_points", "decision_scope": "scope", "rules": "rules",
}
STEP_KEYS = {
    "op", "note", "expect", "request", "as", "reservation", "reservation_id", "by_ms", "to_ms",
    "scope",
}
ABSENT = object()


def test_the_scenarios_are_there() -> None:
    # A glob that finds nothing must not make the suite pass vacuously.
    assert len(SCENARIOS) >= 30, f"only {len(SCENARIOS)} scenarios in {FIXTURES}"


# ---------------------------------------------------------------------------------------------
# Requests: the fixture's request JSON -> the binding's keyword arguments. Every key is mapped
# explicitly and leftovers fail, so a field the binding does not pass cannot go unnoticed.


def _take(req: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    return {k: req.pop(k) for k in keys if k in req}


def _done(req: dict[str, Any], what: str) -> None:
    assert not req, f"{what}: request keys the runner does not map: {sorted(req)}"


def call_kwargs(request: dict[str, Any], extra: list[str]) -> tuple[str, Any, dict[str, Any]]:
    req = copy.deepcopy(request)
    call = req.pop("call")
    tool = call.pop("name")
    args = call.pop("args", None)
    kw = {"subject": req.pop("subject")}
    kw.update(_take(call, ["kind", "tags"]))
    _done(call, "call")
    kw.update(_take(req, extra))
    _done(req, "request")
    return tool, args, kw


RESERVE_EXTRA = ["estimate", "ttl_ms", "grace_period_ms", "overage_policy", "idempotency_key", "grant"]


# ---------------------------------------------------------------------------------------------
# Running a scenario


class Run:
    def __init__(self, scenario: dict[str, Any], ledger: str, tmp_path: Path) -> None:
        self.clock = cycles.ManualClock(scenario["start_ms"])
        if ledger == "memory":
            self.auth = cycles.Authority.in_memory(scenario["policy"], clock=self.clock)
        else:
            self.auth = cycles.Authority.open(
                tmp_path / "golden.db", scenario["policy"], clock=self.clock
            )
        self.names: dict[str, cycles.Reservation] = {}
        self.event_names: dict[str, str] = {}

    def _id(self, step: dict[str, Any]) -> str:
        if "reservation" in step:
            name = step["reservation"]
            assert name in self.names, f"unbound reservation name {name!r}"
            return self.names[name].reservation_id
        return step["reservation_id"]

    def _handle(self, step: dict[str, Any]) -> Optional[cycles.Reservation]:
        return self.names[step["reservation"]] if "reservation" in step else None

    def execute(self, step: dict[str, Any]) -> dict[str, Any]:
        """Runs one step; returns what it produced (the observation)."""
        op = step["op"]
        obs: dict[str, Any] = {"error": ABSENT, "decision": None, "result": None, "id": None}
        a = self.auth
        try:
            if op == "decide":
                tool, args, kw = call_kwargs(step["request"], ["estimate"])
                d = a.decide(tool, args, **kw)
                obs["decision"] = d.to_dict()
                obs["result"] = d.to_dict()
            elif op == "reserve":
                tool, args, kw = call_kwargs(step["request"], RESERVE_EXTRA)
                r = a.reserve(tool, args, **kw)
                obs["decision"] = r.decision.to_dict()
                obs["result"] = r.to_dict()
                obs["id"] = r.reservation_id
                self._bind(step, r)
            elif op in ("commit", "release", "extend", "settle"):
                req = copy.deepcopy(step.get("request", {}))
                handle = self._handle(step)
                if op == "commit":
                    kw = _take(req, ["actual", "idempotency_key"])
                    _done(req, op)
                    res = handle.commit(**kw) if handle else a.commit(self._id(step), **kw)
                elif op == "release":
                    kw = _take(req, ["reason", "idempotency_key"])
                    _done(req, op)
                    res = handle.release(**kw) if handle else a.release(self._id(step), **kw)
                elif op == "settle":
                    outcome = req.pop("outcome")
                    kw = _take(req, ["actual", "reason", "idempotency_key"])
                    _done(req, op)
                    res = (
                        handle.settle(outcome, **kw) if handle else a.settle(self._id(step), outcome, **kw)
                    )
                else:
                    by_ms = req.pop("extend_by_ms")
                    kw = _take(req, ["idempotency_key"])
                    _done(req, op)
                    res = (
                        handle.extend(by_ms, **kw) if handle else a.extend(self._id(step), by_ms, **kw)
                    )
                obs["result"] = res.to_dict()
            elif op == "event":
                tool, args, kw = call_kwargs(
                    step["request"], ["actual", "overage_policy", "idempotency_key"]
                )
                ev = a.event(tool, args, **kw)
                obs["result"] = ev.to_dict()
                obs["id"] = ev.event_id
                if "as" in step:
                    assert step["as"] not in self.event_names, "name bound twice"
                    self.event_names[step["as"]] = ev.event_id
            elif op == "sweep_expired":
                obs["result"] = {"swept": a.sweep_expired()}
            elif op == "set_budget":
                req = copy.deepcopy(step["request"])
                pos = [req.pop("scope"), req.pop("unit"), req.pop("allocated")]
                kw = _take(req, ["overdraft_limit", "status"])
                _done(req, op)
                obs["result"] = a.set_budget(*pos, **kw).to_dict()
            elif op == "advance_clock":
                assert ("by_ms" in step) != ("to_ms" in step), "exactly one of by_ms / to_ms"
                if "by_ms" in step:
                    self.clock.advance(step["by_ms"])
                else:
                    self.clock.set(step["to_ms"])
                obs["result"] = {"now_ms": self.clock.now_ms}
            elif op == "balances":
                pass
            elif op == "verify":
                v = a.verify()
                obs["result"] = {
                    "ok": v.ok,
                    "records": v.records,
                    "kinds": [rec.kind for rec in a.audit()],
                }
            else:
                raise AssertionError(f"unknown op {op!r}")
        except cycles.CyclesError as e:
            obs["error"] = e.code
            if isinstance(e, cycles.Denied):
                assert e.decision is not None
                obs["decision"] = e.decision.to_dict()
                obs["result"] = e.decision.to_dict()
                assert e.reason_code == e.decision.reason_code == e.code
        scope = step.get("scope") if op == "balances" else None
        obs["balances"] = [b.to_dict() for b in a.balances(scope)]
        obs["all_balances"] = [b.to_dict() for b in a.balances()]
        obs["reservations"] = {}
        for name in (step.get("expect") or {}).get("reservations", {}):
            assert name in self.names, f"unbound reservation name {name!r}"
            obs["reservations"][name] = a.reservation(self.names[name].reservation_id).to_dict()
        if "same_as" in (step.get("expect") or {}):
            name = step["expect"]["same_as"]
            bound = self.names.get(name)
            obs["same_as_id"] = bound.reservation_id if bound else self.event_names.get(name)
        return obs

    def _bind(self, step: dict[str, Any], r: cycles.Reservation) -> None:
        if "as" in step:
            name = step["as"]
            # A replay step binds a new name to the same id: allowed; rebinding a name is not.
            assert name not in self.names, f"name {name!r} bound twice"
            self.names[name] = r


# ---------------------------------------------------------------------------------------------
# Matching (fixtures/README.md "Partial match")


def partial(expected: Any, actual: Any, path: str, out: list[str]) -> None:
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            out.append(f"{path}: expected an object, got {actual!r}")
            return
        for k, v in expected.items():
            if k in actual:
                partial(v, actual[k], f"{path}.{k}", out)
            elif v is not None and v != []:
                out.append(f"{path}.{k}: expected {v!r}, absent")
    elif isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            out.append(f"{path}: expected {expected!r}, got {actual!r}")
            return
        for i, (e, a) in enumerate(zip(expected, actual)):
            partial(e, a, f"{path}[{i}]", out)
    elif type(expected) is not type(actual) or expected != actual:
        # bool is an int in Python: compare types too so `true` never equals `1`.
        out.append(f"{path}: expected {expected!r}, got {actual!r}")


def mismatches(step: dict[str, Any], obs: dict[str, Any]) -> list[str]:
    expect = step.get("expect") or {}
    unknown = set(expect) - EXPECT_KEYS
    assert not unknown, f"unknown expect keys {unknown}"
    out: list[str] = []
    if "error" in expect:
        if obs["error"] is ABSENT:
            out.append(f"error: expected {expect['error']}, the step succeeded")
        elif obs["error"] != expect["error"]:
            out.append(f"error: expected {expect['error']}, got {obs['error']}")
    elif obs["error"] is not ABSENT:
        out.append(f"error: the step must succeed, got {obs['error']}")
    for key, field in DECISION_KEYS.items():
        if key in expect:
            d = obs["decision"]
            if d is None:
                out.append(f"{key}: the step produced no decision")
            else:
                partial({field: expect[key]}, d, "decision", out)
    if "result" in expect:
        partial(expect["result"], obs["result"], "result", out)
    if "same_as" in expect:
        if obs["id"] is None or obs["id"] != obs.get("same_as_id"):
            out.append(f"same_as: id {obs['id']} is not the id bound to {expect['same_as']!r}")
    if "balances" in expect:
        by_key = {(b["scope"], b["unit"]): b for b in obs["balances"]}
        for i, want in enumerate(expect["balances"]):
            got = by_key.get((want["scope"], want["unit"]))
            if got is None:
                out.append(f"balances[{i}]: no budget {want['scope']} {want['unit']}")
            else:
                partial(want, got, f"balances[{i}]", out)
    if "budget_count" in expect and expect["budget_count"] != len(obs["balances"]):
        out.append(f"budget_count: expected {expect['budget_count']}, got {len(obs['balances'])}")
    if "reservations" in expect:
        for name, want in expect["reservations"].items():
            partial(want, obs["reservations"][name], f"reservations.{name}", out)
    return out


def invariant_violations(obs: dict[str, Any]) -> list[str]:
    out = []
    for b in obs["all_balances"]:
        if b["remaining"] != b["allocated"] - b["spent"] - b["reserved"] - b["debt"]:
            out.append(f"invariant broken on {b['scope']} {b['unit']}: {b}")
        if min(b["spent"], b["reserved"], b["debt"]) < 0:
            out.append(f"negative amount on {b['scope']} {b['unit']}: {b}")
    return out


def run_scenario(path: Path, ledger: str, tmp_path: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    scenario = json.loads(path.read_text())
    unknown = set(scenario) - {"name", "description", "policy", "start_ms", "steps"}
    assert not unknown, f"unknown scenario keys {unknown}"
    run = Run(scenario, ledger, tmp_path)
    observed = []
    for i, step in enumerate(scenario["steps"]):
        assert not set(step) - STEP_KEYS, f"step {i}: unknown keys {set(step) - STEP_KEYS}"
        obs = run.execute(step)
        problems = mismatches(step, obs) + invariant_violations(obs)
        assert not problems, (
            f"{path.name} [{ledger}] step {i} ({step['op']}): {step.get('note', '')}\n  "
            + "\n  ".join(problems)
        )
        observed.append((step, obs))
    final = run.auth.verify()
    assert final.ok, f"{path.name} [{ledger}]: the audit chain does not verify: {final}"
    return observed


@pytest.mark.parametrize("ledger", LEDGERS)
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path, ledger: str, tmp_path: Path) -> None:
    run_scenario(path, ledger, tmp_path)


# ---------------------------------------------------------------------------------------------
# The runner itself must notice a wrong expectation anywhere.


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        # An empty object asserts nothing by itself; there is no leaf to change.
        for k, v in value.items():
            yield from leaves(v, path + (k,))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from leaves(v, path + (i,))
    else:
        yield path


def mutate(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "_MUTATED"
    if value is None:
        return "MUTATED"
    if value == []:
        return ["MUTATED"]
    raise AssertionError(f"cannot mutate {value!r}")


def set_path(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


def get_path(obj: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def test_every_expected_value_is_checked(tmp_path: Path) -> None:
    undetected = []
    checked = 0
    for path in SCENARIOS:
        for step, obs in run_scenario(path, "memory", tmp_path / path.stem):
            expect = step.get("expect") or {}
            for leaf in leaves(expect):
                mutated = copy.deepcopy(step)
                set_path(mutated["expect"], leaf, mutate(get_path(expect, leaf)))
                checked += 1
                if not mismatches(mutated, obs) and leaf[0] != "same_as":
                    undetected.append(f"{path.name}: expect{list(leaf)}")
                if leaf[0] == "same_as":
                    mutated_obs = dict(obs, same_as_id="MUTATED")
                    if not mismatches(step, mutated_obs):
                        undetected.append(f"{path.name}: same_as")
    assert checked > 500
    assert not undetected, "expectations the runner ignores:\n" + "\n".join(undetected)
