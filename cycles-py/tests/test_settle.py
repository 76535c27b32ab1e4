"""``settle``: a reservation finished by how its call ended (COMPLETED, FAILED, INTERRUPTED,
NOT_STARTED); the core decides what each costs, the policy's ``[defaults] on_failure`` decides
failed calls. The guard decorator, the context manager and the integrations only say which
ending happened."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import cycles
from cycles._guard import _release_cancelled

TOOLS: list[dict[str, Any]] = [{"name": "run_sql", "tier": 2}, {"name": "deploy", "tier": 3}]
BUDGETS: list[dict[str, Any]] = [
    {"scope": "agent:bot", "unit": "RISK_POINTS", "allocated": 100},
    {"scope": "agent:bot", "unit": "TOKENS", "allocated": 1000},
]
RELEASE_POLICY: dict[str, Any] = {"tools": TOOLS, "budgets": BUDGETS}  # on_failure: the default
CHARGE_POLICY: dict[str, Any] = {"tools": TOOLS, "budgets": BUDGETS, "defaults": {"on_failure": "CHARGE"}}
BOT = {"agent": "bot"}


def charge_policy_file(tmp_path: Path) -> Path:
    """The CHARGE policy as an operator writes it: a TOML file with `[defaults] on_failure`."""
    path = tmp_path / "policy.toml"
    lines = ['[defaults]', 'on_failure = "CHARGE"', ""]
    for t in TOOLS:
        lines += ["[[tools]]", f'name = "{t["name"]}"', f"tier = {t['tier']}", ""]
    for b in BUDGETS:
        lines += ["[[budgets]]", f'scope = "{b["scope"]}"', f'unit = "{b["unit"]}"', f"allocated = {b['allocated']}", ""]
    path.write_text("\n".join(lines))
    return path


def balances(a: cycles.Authority) -> dict[str, tuple[int, int]]:
    """(spent, reserved) per unit of the bot's budget."""
    return {b.unit: (b.spent, b.reserved) for b in a.balances("agent:bot")}


def kinds(a: cycles.Authority) -> list[str]:
    return [r.kind for r in a.audit() if r.kind != "budget_set"]


def state(a: cycles.Authority) -> tuple[list[dict[str, Any]], int]:
    return [b.to_dict() for b in a.balances()], len(a.audit())


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Makes authorities over the chosen ledger (a fresh SQLite file per call)."""
    n = [0]

    def make(policy: Any, **kw: Any) -> cycles.Authority:
        if request.param == "memory":
            return cycles.Authority.in_memory(policy, **kw)
        n[0] += 1
        return cycles.Authority.open(tmp_path / f"cycles{n[0]}.db", policy, **kw)

    return make


# ---- the binding's settle ---------------------------------------------------------------


def test_completed_commits_the_actual_amounts_and_returns_a_commit_result(store: Any) -> None:
    a = store(RELEASE_POLICY)
    r = a.reserve("run_sql", {"query": "SELECT 1"}, subject=BOT, estimate={"TOKENS": 100})
    res = r.settle("COMPLETED", {"TOKENS": 30})
    assert isinstance(res, cycles.CommitResult)
    assert res.status == "COMMITTED" and res.charged == {"RISK_POINTS": 5, "TOKENS": 30}
    assert r.status == "COMMITTED" and r.charged == {"RISK_POINTS": 5, "TOKENS": 30}
    assert balances(a) == {"RISK_POINTS": (5, 0), "TOKENS": (30, 0)}
    assert kinds(a) == ["reserve", "commit"]


@pytest.mark.parametrize(
    ("policy", "charged"), [(RELEASE_POLICY, False), (CHARGE_POLICY, True)], ids=["RELEASE", "CHARGE"]
)
def test_failed_follows_on_failure(store: Any, policy: dict[str, Any], charged: bool) -> None:
    a = store(policy)
    r = a.reserve("run_sql", {"query": "DELETE FROM t WHERE id = 1"}, subject=BOT, estimate={"TOKENS": 100})
    res = r.settle("FAILED", reason="tool raised")
    if charged:
        assert isinstance(res, cycles.CommitResult) and res.charged == {"RISK_POINTS": 5, "TOKENS": 100}
        assert r.status == "COMMITTED"
        assert balances(a) == {"RISK_POINTS": (5, 0), "TOKENS": (100, 0)}
        assert kinds(a) == ["reserve", "commit"]
    else:
        assert isinstance(res, cycles.ReleaseResult) and res.status == "RELEASED"
        assert res.released == {"RISK_POINTS": 5, "TOKENS": 100}
        assert r.status == "RELEASED" and r.charged == {}
        assert balances(a) == {"RISK_POINTS": (0, 0), "TOKENS": (0, 0)}
        assert kinds(a) == ["reserve", "release"]
        assert a.audit()[-1].detail == {"reason": "tool raised"}


def test_on_failure_charge_from_a_toml_policy_file(tmp_path: Path) -> None:
    a = cycles.Authority.open(tmp_path / "c.db", charge_policy_file(tmp_path))
    assert a.policy()["defaults"]["on_failure"] == "CHARGE"
    res = a.settle(a.reserve("deploy", subject=BOT).reservation_id, "FAILED")
    assert isinstance(res, cycles.CommitResult) and res.charged == {"RISK_POINTS": 20}
    assert balances(a)["RISK_POINTS"] == (20, 0)


@pytest.mark.parametrize("policy", [RELEASE_POLICY, CHARGE_POLICY], ids=["RELEASE", "CHARGE"])
def test_interrupted_is_charged_and_not_started_released_under_either_policy(
    store: Any, policy: dict[str, Any]
) -> None:
    a = store(policy)
    r = a.reserve("deploy", subject=BOT, estimate={"TOKENS": 10})
    res = a.settle(r.reservation_id, "INTERRUPTED")  # by id, through the Authority
    assert isinstance(res, cycles.CommitResult) and res.charged == {"RISK_POINTS": 20, "TOKENS": 10}
    assert a.reservation(r.reservation_id).status == "COMMITTED"
    r2 = a.reserve("deploy", subject=BOT, estimate={"TOKENS": 10})
    res2 = r2.settle("NOT_STARTED", reason="user declined")
    assert isinstance(res2, cycles.ReleaseResult) and r2.status == "RELEASED"
    assert balances(a) == {"RISK_POINTS": (20, 0), "TOKENS": (10, 0)}
    assert kinds(a) == ["reserve", "commit", "reserve", "release"]
    assert a.audit()[-1].detail == {"reason": "user declined"}


def test_an_unknown_outcome_is_invalid_input_and_changes_nothing(store: Any) -> None:
    a = store(CHARGE_POLICY)
    r = a.reserve("deploy", subject=BOT)
    before = state(a)
    for bad in ["DONE", "completed", "", 1, None]:
        with pytest.raises(cycles.InvalidInput) as e:
            r.settle(bad)  # type: ignore[arg-type]
        assert e.value.code == "INVALID_REQUEST" and "outcome" in str(e.value)
        with pytest.raises(cycles.InvalidInput):
            a.settle(r.reservation_id, bad)  # type: ignore[arg-type]
    assert state(a) == before and r.status == "ACTIVE"
    assert a.reservation(r.reservation_id).status == "ACTIVE"


@pytest.mark.parametrize("outcome", ["FAILED", "INTERRUPTED", "NOT_STARTED"])
def test_actual_amounts_with_anything_but_completed_are_invalid_input(store: Any, outcome: str) -> None:
    a = store(CHARGE_POLICY)
    r = a.reserve("deploy", subject=BOT, estimate={"TOKENS": 10})
    before = state(a)
    with pytest.raises(cycles.InvalidInput) as e:
        r.settle(outcome, {"TOKENS": 1})  # type: ignore[arg-type]
    assert e.value.code == "INVALID_REQUEST" and "actual" in str(e.value)
    assert state(a) == before and r.status == "ACTIVE"


def test_a_second_settle_is_finalized_unless_it_replays_the_same_key(store: Any) -> None:
    a = store(RELEASE_POLICY)
    r = a.reserve("deploy", subject=BOT)
    first = r.settle("INTERRUPTED", idempotency_key="k1")
    assert r.settle("INTERRUPTED", idempotency_key="k1") == first
    before = state(a)
    with pytest.raises(cycles.CyclesError) as e:
        r.settle("NOT_STARTED")
    assert e.value.code == "RESERVATION_FINALIZED" and state(a) == before
    assert balances(a)["RISK_POINTS"] == (20, 0)


def test_a_charged_outcome_after_the_hold_lapsed_is_still_charged_a_released_one_is_expired(store: Any) -> None:
    clock = cycles.ManualClock(1_000)
    a = store(RELEASE_POLICY, clock=clock)
    r = a.reserve("deploy", subject=BOT)
    clock.advance(3_600_000)  # past TTL and grace while it ran
    res = r.settle("INTERRUPTED")
    assert isinstance(res, cycles.CommitResult)
    assert res.status == "EXPIRED" and res.event_id is not None and res.charged == {"RISK_POINTS": 20}
    assert r.status == "EXPIRED" and balances(a)["RISK_POINTS"] == (20, 0)
    assert kinds(a)[-2:] == ["expire", "event"]
    r2 = a.reserve("deploy", subject=BOT)
    clock.advance(3_600_000)
    with pytest.raises(cycles.CyclesError) as e:
        r2.settle("FAILED")  # released under this policy: nothing left to give back
    assert e.value.code == "RESERVATION_EXPIRED" and balances(a)["RISK_POINTS"] == (20, 0)


# ---- what the guard decorator and the context manager say --------------------------------


@pytest.mark.parametrize(
    ("policy", "spent", "kind"),
    [(RELEASE_POLICY, 0, "release"), (CHARGE_POLICY, 5, "commit")],
    ids=["RELEASE", "CHARGE"],
)
def test_a_guarded_sync_function_raising_is_failed(store: Any, policy: Any, spent: int, kind: str) -> None:
    a = store(policy)

    @a.guard("run_sql", subject=BOT)
    def run_sql(query: str) -> None:
        assert balances(a)["RISK_POINTS"] == (0, 5)  # held while it runs
        raise ValueError("syntax error")

    with pytest.raises(ValueError, match="syntax error"):
        run_sql("SELEC 1")
    assert balances(a) == {"RISK_POINTS": (spent, 0), "TOKENS": (0, 0)}
    assert kinds(a) == ["reserve", kind]


@pytest.mark.parametrize(
    ("policy", "spent", "kind"),
    [(RELEASE_POLICY, 0, "release"), (CHARGE_POLICY, 5, "commit")],
    ids=["RELEASE", "CHARGE"],
)
def test_a_guarded_async_function_raising_is_failed(store: Any, policy: Any, spent: int, kind: str) -> None:
    a = store(policy)

    @a.guard("run_sql", subject=BOT)
    async def run_sql(query: str) -> None:
        await asyncio.sleep(0)
        raise ValueError("syntax error")

    with pytest.raises(ValueError, match="syntax error"):
        asyncio.run(run_sql("SELEC 1"))
    assert balances(a) == {"RISK_POINTS": (spent, 0), "TOKENS": (0, 0)}
    assert kinds(a) == ["reserve", kind]


@pytest.mark.parametrize(
    ("policy", "spent", "status"),
    [(RELEASE_POLICY, 0, "RELEASED"), (CHARGE_POLICY, 5, "COMMITTED")],
    ids=["RELEASE", "CHARGE"],
)
def test_the_context_manager_raising_is_failed(store: Any, policy: Any, spent: int, status: str) -> None:
    a = store(policy)
    with pytest.raises(ValueError):
        with a.reserve("run_sql", {"query": "SELEC 1"}, subject=BOT) as r:
            raise ValueError("syntax error")
    assert r.status == status and balances(a)["RISK_POINTS"] == (spent, 0)
    assert kinds(a) == ["reserve", "commit" if spent else "release"]
    if not spent:
        assert a.audit()[-1].detail == {"reason": "exception: ValueError"}


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit, asyncio.CancelledError])
def test_the_context_manager_interrupted_is_charged_even_under_release(
    store: Any, interruption: type[BaseException]
) -> None:
    a = store(RELEASE_POLICY)
    with pytest.raises(interruption):
        with a.reserve("run_sql", {"query": "DELETE FROM t WHERE id = 1"}, subject=BOT) as r:
            raise interruption()
    assert r.status == "COMMITTED" and balances(a)["RISK_POINTS"] == (5, 0)
    assert kinds(a) == ["reserve", "commit"]


def test_the_context_manager_left_clean_is_completed_and_a_settled_block_is_left_alone(store: Any) -> None:
    a = store(CHARGE_POLICY)
    with a.reserve("run_sql", {"query": "SELECT 1"}, subject=BOT) as r:
        pass
    # The block ran its call: charged what was held, as if committed without amounts.
    assert r.status == "COMMITTED" and balances(a)["RISK_POINTS"] == (5, 0)
    with a.reserve("run_sql", {"query": "SELECT 1"}, subject=BOT, estimate={"TOKENS": 10}) as r2:
        r2.settle("COMPLETED", {"TOKENS": 3})
    assert r2.status == "COMMITTED" and balances(a) == {"RISK_POINTS": (10, 0), "TOKENS": (3, 0)}
    with a.reserve("run_sql", {"query": "SELECT 1"}, subject=BOT) as r3:
        r3.release("the call was not made")
    assert r3.status == "RELEASED" and balances(a)["RISK_POINTS"] == (10, 0)
    assert kinds(a) == ["reserve", "commit", "reserve", "commit", "reserve", "release"]


def test_a_generator_closed_early_is_interrupted(store: Any) -> None:
    a = store(RELEASE_POLICY)

    @a.guard("run_sql", subject=BOT)
    def rows(query: str) -> Any:
        yield 1
        yield 2

    it = rows("SELECT 1")
    assert next(it) == 1
    it.close()
    assert balances(a)["RISK_POINTS"] == (5, 0) and kinds(a) == ["reserve", "commit"]


def test_a_reserve_landing_after_its_caller_left_is_not_started_even_under_charge(store: Any) -> None:
    # What the guard does with a reservation whose caller was cancelled while reserving (the
    # race itself is exercised in test_guard.py): NOT_STARTED, released, whatever on_failure says.
    a = store(CHARGE_POLICY)
    r = a.reserve("deploy", subject=BOT)
    _release_cancelled(r)
    assert r.status == "RELEASED" and balances(a)["RISK_POINTS"] == (0, 0)
    assert kinds(a) == ["reserve", "release"]
    assert a.audit()[-1].detail == {"reason": "cancelled before the call ran"}


def test_actual_that_raises_settles_completed_without_amounts_and_reraises(store: Any) -> None:
    a = store(RELEASE_POLICY)

    def broken(_: Any) -> Any:
        raise KeyError("tokens")

    @a.guard("run_sql", subject=BOT, estimate={"TOKENS": 50}, actual=broken)
    def run_sql(query: str) -> str:
        return "rows"

    with pytest.raises(KeyError):
        run_sql("SELECT 1")
    assert balances(a) == {"RISK_POINTS": (5, 0), "TOKENS": (50, 0)}

    @a.guard("run_sql", subject=BOT, estimate={"TOKENS": 50}, actual=lambda _: {"TOKENS": -1})
    def run_sql2(query: str) -> str:
        return "rows"

    with pytest.raises(cycles.InvalidInput):
        run_sql2("SELECT 1")
    assert balances(a) == {"RISK_POINTS": (10, 0), "TOKENS": (100, 0)}
    assert kinds(a) == ["reserve", "commit", "reserve", "commit"]


def test_settle_results_serialize_with_their_status(store: Any) -> None:
    a = store(RELEASE_POLICY)
    c = a.reserve("deploy", subject=BOT).settle("COMPLETED")
    rel = a.reserve("deploy", subject=BOT).settle("FAILED")
    assert json.loads(json.dumps(c.to_dict()))["status"] == "COMMITTED"
    assert json.loads(json.dumps(rel.to_dict()))["status"] == "RELEASED"


def test_a_block_whose_commit_was_refused_is_still_charged_what_was_held(store: Any) -> None:
    # The call ran and the block tried to commit it with amounts the core refuses: the
    # InvalidInput leaves the block, and the exit settles the call COMPLETED (what was held),
    # not FAILED (which the default policy releases: the call would go free).
    a = store(RELEASE_POLICY)
    with pytest.raises(cycles.InvalidInput):
        with a.reserve("run_sql", {"query": "SELECT 1"}, subject=BOT) as r:
            r.commit({"NO_SUCH_UNIT": 1})
    assert r.status == "COMMITTED"
    assert balances(a)["RISK_POINTS"] == (5, 0)
    assert kinds(a) == ["reserve", "commit"]
    # The same through settle("COMPLETED", ...) with a negative amount.
    with pytest.raises(cycles.InvalidInput):
        with a.reserve("run_sql", {"query": "SELECT 1"}, subject=BOT) as r2:
            r2.settle("COMPLETED", {"RISK_POINTS": -1})
    assert r2.status == "COMMITTED" and balances(a)["RISK_POINTS"] == (10, 0)


def test_a_generator_or_coroutine_a_sync_function_returned_abandoned_unstarted_is_interrupted(store: Any) -> None:
    # The function that returned it ran (it may have acted before returning): charged what was
    # held, as Node settles a returned generator dropped unfinished; never left to expire free.
    import gc

    a = store(CHARGE_POLICY)
    body: list[str] = []

    def rows_gen(query: str) -> Any:
        body.append(query)
        yield 1
        return "done"

    async def rows_coro(query: str) -> str:
        body.append(query)
        return "rows"

    @a.guard("run_sql", subject=BOT)
    def gen(query: str) -> Any:
        return rows_gen(query)

    @a.guard("run_sql", subject=BOT)
    def coro(query: str) -> Any:
        return rows_coro(query)

    g = gen("closed")
    assert balances(a)["RISK_POINTS"] == (0, 5)  # held until it ends
    g.close()
    assert kinds(a) == ["reserve", "commit"] and balances(a)["RISK_POINTS"] == (5, 0)
    g = gen("dropped")
    del g
    gc.collect()
    c = coro("dropped")
    c.close()
    with pytest.warns(RuntimeWarning, match="never awaited"):
        c = coro("collected")
        del c
        gc.collect()
    assert kinds(a) == ["reserve", "commit"] * 4 and body == []
    assert balances(a)["RISK_POINTS"] == (20, 0)
    # Started, they settle as before; generator semantics (send, return value) are kept.
    g = gen("run")
    assert next(g) == 1
    with pytest.raises(StopIteration) as stop:
        g.send(None)
    assert stop.value.value == "done"
    assert asyncio.run(coro("run")) == "rows"
    assert kinds(a)[-4:] == ["reserve", "commit", "reserve", "commit"]
    assert balances(a)["RISK_POINTS"] == (30, 0)


def test_an_async_generator_or_awaitable_a_sync_function_returned_abandoned_unstarted_is_interrupted(
    store: Any,
) -> None:
    # Review 14 finding 1: the same rule as for a generator or coroutine (the function that
    # returned it ran): closed or collected before its first step, charged INTERRUPTED once.
    import gc

    a = store(CHARGE_POLICY)
    body: list[str] = []

    async def lines(query: str) -> Any:
        body.append(query)
        yield "line 1"

    class Later:  # an awaitable that is neither a coroutine nor a Future
        def __init__(self, query: str) -> None:
            self.query = query

        def __await__(self) -> Any:
            body.append(self.query)
            yield from asyncio.sleep(0).__await__()
            return "later"

    @a.guard("run_sql", subject=BOT)
    def stream(query: str) -> Any:
        return lines(query)

    @a.guard("run_sql", subject=BOT)
    def later(query: str) -> Any:
        return Later(query)

    async def abandon() -> None:
        s = stream("closed")
        assert balances(a)["RISK_POINTS"] == (0, 5)  # held until it ends
        await s.aclose()
        with pytest.raises(StopAsyncIteration):
            await s.__anext__()  # closed: later steps end at once, the body never runs
        s = stream("dropped")
        del s
        gc.collect()
        s = stream("step created, never awaited")
        step = s.__anext__()
        del s
        step.close()
        del step
        gc.collect()
        w = later("dropped")
        del w
        gc.collect()

    asyncio.run(abandon())
    assert kinds(a) == ["reserve", "commit"] * 4 and body == []
    assert balances(a)["RISK_POINTS"] == (20, 0)

    async def started() -> list[Any]:
        out = [item async for item in stream("run")]
        out.append(await later("run"))
        return out

    # Started, they settle as before (COMPLETED: charged what was held, once).
    assert asyncio.run(started()) == ["line 1", "later"]
    assert body == ["run", "run"]
    assert kinds(a)[-4:] == ["reserve", "commit", "reserve", "commit"]
    assert balances(a)["RISK_POINTS"] == (30, 0)


def test_a_running_task_a_sync_function_returned_is_settled_when_it_finishes(store: Any) -> None:
    # Review 14 finding 1: fire and forget (the work already started; nobody awaits it) is
    # settled when the task ends, by how it ended, exactly once, whether or not it is awaited.
    import gc

    a = store(CHARGE_POLICY)
    b = store(RELEASE_POLICY)
    done: list[str] = []

    async def work(what: str) -> str:
        await asyncio.sleep(0)
        if what == "fail":
            raise RuntimeError("boom")
        if what == "hang":
            await asyncio.Event().wait()
        done.append(what)
        return what

    def in_background(auth: cycles.Authority) -> Any:
        @auth.guard("deploy", subject=BOT)
        def deploy(what: str) -> Any:
            return asyncio.ensure_future(work(what))

        return deploy

    async def main() -> None:
        deploy = in_background(a)
        t = deploy("dropped")  # fire and forget
        running = [t]  # the loop keeps only a weak reference to a task
        del t
        gc.collect()
        await asyncio.wait(running)
        await asyncio.sleep(0)  # its done callbacks run on the next loop turn
        assert done == ["dropped"] and kinds(a)[-2:] == ["reserve", "commit"]
        assert balances(a)["RISK_POINTS"] == (20, 0)
        assert await deploy("awaited") == "awaited"  # awaited: settled once, not twice
        assert balances(a)["RISK_POINTS"] == (40, 0)
        t = deploy("hang")
        await asyncio.sleep(0)
        t.cancel()
        await asyncio.wait([t])
        await asyncio.sleep(0)
        assert balances(a)["RISK_POINTS"] == (60, 0)  # cancelled: INTERRUPTED, charged
        failing = in_background(b)("fail")
        await asyncio.wait([failing])
        await asyncio.sleep(0)
        assert kinds(b) == ["reserve", "release"]  # raised: FAILED, released by default
        with pytest.raises(RuntimeError):
            failing.result()

    asyncio.run(main())
    assert kinds(a) == ["reserve", "commit"] * 3
    assert balances(a)["RISK_POINTS"] == (60, 0) and balances(b)["RISK_POINTS"] == (0, 0)
