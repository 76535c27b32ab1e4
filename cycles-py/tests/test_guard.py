"""The guard decorator on sync and async functions: arguments are classified, a DENY raises
before the body runs, success commits, an exception releases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import cycles

POLICY: dict[str, Any] = {
    "tools": [
        {"name": "run_sql", "tier": 1},
        {"name": "drop_everything", "tier": 4},
        {"name": "fetch", "tier": 0},
    ],
    "budgets": [
        {"scope": "agent:bot", "unit": "RISK_POINTS", "allocated": 10},
        {"scope": "agent:bot", "unit": "TOKENS", "allocated": 1000},
    ],
}
BOT = {"agent": "bot"}


def risk(a: cycles.Authority) -> cycles.Balance:
    return {b.unit: b for b in a.balances("agent:bot")}["RISK_POINTS"]


def test_sync_guard_commits_and_classifies_the_call_arguments() -> None:
    a = cycles.Authority.in_memory(POLICY)
    calls: list[str] = []

    @a.guard("run_sql", subject=BOT)
    def run_sql(query: str, limit: int = 10) -> str:
        calls.append(query)
        return "rows"

    assert run_sql("SELECT 1") == "rows"
    assert run_sql.__name__ == "run_sql"  # functools.wraps
    assert calls == ["SELECT 1"] and risk(a).spent == 1
    reserve = a.audit(kinds=["reserve"])[-1]
    # The digest binds the exact arguments: the same call through the core gives the same one.
    expected = a.reserve("run_sql", {"query": "SELECT 1", "limit": 10}, subject=BOT)
    assert reserve.call_digest == expected.call_digest
    expected.release()


def test_sync_guard_denies_before_the_body_runs() -> None:
    a = cycles.Authority.in_memory(POLICY)
    ran: list[bool] = []

    @a.guard(subject=BOT)  # the tool name defaults to the function's name
    def drop_everything() -> None:
        ran.append(True)

    with pytest.raises(cycles.Denied) as e:
        drop_everything()
    assert e.value.reason_code == "BUDGET_EXCEEDED" and e.value.decision.tier == 4  # type: ignore[union-attr]
    assert ran == [] and risk(a).reserved == 0


def test_sync_guard_releases_when_the_body_raises() -> None:
    a = cycles.Authority.in_memory(POLICY)

    @a.guard("run_sql", subject=BOT)
    def run_sql(query: str) -> None:
        assert risk(a).reserved == 1  # held while the body runs
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError, match="db down"):
        run_sql("UPDATE t SET x = 1 WHERE id = 2")
    b = risk(a)
    assert (b.spent, b.reserved) == (0, 0)
    assert a.audit()[-1].kind == "release" and a.audit()[-1].detail == {"reason": "exception: RuntimeError"}


def test_guard_actual_and_map_args() -> None:
    a = cycles.Authority.in_memory(POLICY)

    class Client:
        @a.guard("fetch", subject=BOT, estimate={"TOKENS": 100},
                 map_args=lambda args: {"url": args["url"]}, actual=lambda result: {"TOKENS": len(result)})
        def fetch(self, url: str) -> str:
            return "x" * 42

    assert Client().fetch("https://example.com") == "x" * 42
    tokens = {b.unit: b for b in a.balances("agent:bot")}["TOKENS"]
    assert (tokens.spent, tokens.reserved) == (42, 0)


def test_guard_refuses_arguments_it_cannot_classify() -> None:
    a = cycles.Authority.in_memory(POLICY)
    ran: list[bool] = []

    @a.guard("fetch", subject=BOT)
    def fetch(client: object) -> None:
        ran.append(True)

    with pytest.raises(cycles.InvalidInput):
        fetch(object())
    assert ran == []


def test_async_guard() -> None:
    a = cycles.Authority.in_memory(POLICY)
    ran: list[str] = []

    @a.guard("run_sql", subject=BOT)
    async def run_sql(query: str) -> str:
        await asyncio.sleep(0)
        ran.append(query)
        return "ok"

    @a.guard("drop_everything", subject=BOT)
    async def drop(db: str) -> None:
        ran.append("DROP")

    @a.guard("run_sql", subject=BOT)
    async def failing(query: str) -> None:
        raise ValueError("nope")

    async def main() -> None:
        assert asyncio.iscoroutinefunction(run_sql)
        assert await run_sql("SELECT 1") == "ok"
        with pytest.raises(cycles.Denied):
            await drop("prod")
        with pytest.raises(ValueError):
            await failing("SELECT 2")

    asyncio.run(main())
    assert ran == ["SELECT 1"]
    b = risk(a)
    assert (b.spent, b.reserved) == (1, 0)
    assert [r.kind for r in a.audit()][-5:] == ["reserve", "commit", "denial", "reserve", "release"]


def test_module_level_guard_is_the_same_decorator() -> None:
    a = cycles.Authority.in_memory(POLICY)

    @cycles.guard(a, "run_sql", subject=BOT)
    def q() -> int:
        return 1

    assert q() == 1 and risk(a).spent == 1


def test_a_body_that_outlives_its_reservation_is_still_charged() -> None:
    clock = cycles.ManualClock(1_000)
    a = cycles.Authority.in_memory(POLICY, clock=clock)

    @a.guard("run_sql", subject=BOT)
    def slow_query(query: str) -> str:
        clock.advance(3_600_000)  # ran past its TTL and grace
        return "rows"

    assert slow_query("SELECT 1") == "rows"
    assert risk(a).spent == 1 and risk(a).reserved == 0
    assert [r.kind for r in a.audit()][-3:] == ["reserve", "expire", "event"]
    # The core direct: the result names the charge and says the reservation had expired.
    r = a.reserve("run_sql", {"query": "SELECT 2"}, subject=BOT)
    clock.advance(3_600_000)
    with pytest.raises(cycles.CyclesError) as e:
        r.commit()
    assert e.value.code == "RESERVATION_EXPIRED" and risk(a).spent == 1
    c = r.commit(charge_if_expired=True)
    assert c.status == "EXPIRED" and c.event_id is not None and c.charged == {"RISK_POINTS": 1}
    assert r.status == "EXPIRED" and risk(a).spent == 2


def test_a_cancelled_body_is_charged_what_was_held_an_error_releases() -> None:
    a = cycles.Authority.in_memory(POLICY)
    started = asyncio.Event()

    @a.guard("run_sql", subject=BOT)
    async def run_sql(query: str) -> str:
        started.set()  # it acted, then was stopped
        await asyncio.sleep(3600)
        return "rows"

    async def cancel_it() -> None:
        task = asyncio.ensure_future(run_sql("DELETE FROM t WHERE id = 1"))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    assert risk(a).spent == 1 and risk(a).reserved == 0
    assert a.audit()[-1].kind == "commit"

    async def timed_out() -> None:
        with pytest.raises((asyncio.TimeoutError, TimeoutError)):
            await asyncio.wait_for(run_sql("UPDATE t SET x = 1 WHERE id = 2"), 0.05)

    asyncio.run(timed_out())
    assert risk(a).spent == 2 and risk(a).reserved == 0

    @a.guard("run_sql", subject=BOT)
    def failing(query: str) -> None:
        raise ValueError("syntax error")

    with pytest.raises(ValueError):
        failing("SELEC 1")
    assert risk(a).spent == 2 and a.audit()[-1].kind == "release"


def test_a_caller_cancelled_while_reserving_leaves_no_hold(tmp_path: Any) -> None:
    import subprocess
    import sys

    path = tmp_path / "cycles.db"
    a = cycles.Authority.open(path, POLICY, busy_timeout_ms=10_000)
    ran: list[str] = []

    @a.guard("run_sql", subject=BOT)
    async def run_sql(query: str) -> str:
        ran.append(query)
        return "rows"

    # Another process holds the file's write lock (POSIX locks are per process, so it must be
    # another process): the reserve waits for it in its worker thread.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); sys.stdin.read(); "
            "c.execute('COMMIT')",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "locked"

    async def cancel_while_reserving() -> None:
        task = asyncio.ensure_future(run_sql("DELETE FROM t WHERE id = 1"))
        await asyncio.sleep(0.2)  # the reserve is blocked on the lock
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The lock goes away; the reserve lands after its caller has gone.
        holder.stdin.close()  # type: ignore[union-attr]
        for _ in range(400):
            await asyncio.sleep(0.05)
            if a.audit(kinds=["release"]):
                break

    asyncio.run(cancel_while_reserving())
    holder.wait(timeout=30)
    assert ran == []
    assert [r.kind for r in a.audit()][-2:] == ["reserve", "release"]
    assert a.audit(kinds=["release"])[-1].detail == {"reason": "cancelled before the call ran"}
    assert risk(a).reserved == 0 and risk(a).spent == 0


def test_a_second_cancellation_during_the_charge_does_not_drop_it() -> None:
    a = cycles.Authority.in_memory(POLICY)
    started = asyncio.Event()

    @a.guard("run_sql", subject=BOT)
    async def run_sql(query: str) -> str:
        started.set()
        await asyncio.sleep(3600)
        return "rows"

    async def cancel_twice() -> None:
        for _ in range(5):
            started.clear()
            task = asyncio.ensure_future(run_sql("DELETE FROM t WHERE id = 1"))
            await started.wait()
            task.cancel()
            await asyncio.sleep(0)  # the body has raised; the wrapper hands its charge over
            task.cancel()  # ... and is cancelled again (anyio cancel scopes do this)
            with pytest.raises(asyncio.CancelledError):
                await task
        for _ in range(200):
            if risk(a).reserved == 0:
                break
            await asyncio.sleep(0.01)

    asyncio.run(cancel_twice())
    # Every cancelled call acted (it started) and is charged; nothing is left held.
    assert risk(a).reserved == 0 and risk(a).spent == 5


def test_the_context_manager_charges_an_interrupted_block_and_releases_on_an_error() -> None:
    a = cycles.Authority.in_memory(POLICY)
    with pytest.raises(KeyboardInterrupt):
        with a.reserve("run_sql", {"query": "DELETE FROM t WHERE id = 1"}, subject=BOT) as r:
            raise KeyboardInterrupt  # stopped after it may have acted
    assert r.status == "COMMITTED" and risk(a).spent == 1 and risk(a).reserved == 0
    with pytest.raises(ValueError):
        with a.reserve("run_sql", {"query": "SELEC 1"}, subject=BOT) as r:
            raise ValueError("syntax error")
    assert r.status == "RELEASED" and risk(a).spent == 1 and risk(a).reserved == 0


SQL_POLICY: dict[str, Any] = {
    "tools": [{"name": "run_sql", "tier": 1, "classifier": "sql", "arg": "q.sql"}],
    "budgets": [{"scope": "agent:bot", "unit": "RISK_POINTS", "allocated": 100}],
}


def test_the_body_runs_on_the_arguments_that_were_classified_not_the_callers_objects() -> None:
    # Review 14 finding 2 (TOCTOU): another task changes the caller's dict after the reserve
    # classified it; the body must run the classified SELECT, never the DROP.
    a = cycles.Authority.in_memory(SQL_POLICY)

    @a.guard("run_sql", subject=BOT)
    async def run_sql(q: dict[str, str]) -> str:
        return f"ran {q['sql']}"

    async def main() -> str:
        with pytest.raises(cycles.ApprovalRequired):
            await run_sql({"sql": "DROP TABLE users"})
        q = {"sql": "SELECT 1"}
        n = len(a.audit())
        task = asyncio.create_task(run_sql(q))
        while len(a.audit()) == n:  # the reserve is recorded: SELECT 1 was classified
            await asyncio.sleep(0)
        q["sql"] = "DROP TABLE users"
        return await task

    assert asyncio.run(main()) == "ran SELECT 1"
    assert [r.kind for r in a.audit()][-2:] == ["reserve", "commit"]


def test_container_subclasses_and_other_mappings_reach_the_function_as_the_plain_copy_that_was_classified() -> None:
    # Review 15 finding 6: a dict subclass read through its own __getitem__ was classified as
    # SELECT 1 and ran DROP; an OrderedDict changed during the async reserve ran the change.
    import collections
    import types

    a = cycles.Authority.in_memory(SQL_POLICY)
    seen: list[Any] = []

    @a.guard("run_sql", subject=BOT)
    def run_sql(q: Any) -> str:
        seen.append(q)
        return f"ran {q['sql']}"

    class Lying(dict):  # type: ignore[type-arg]
        def __getitem__(self, k: Any) -> Any:
            return "DROP TABLE users" if k == "sql" else super().__getitem__(k)

    class View(collections.abc.Mapping):  # type: ignore[type-arg]
        def __init__(self) -> None:
            self.reads = 0

        def __getitem__(self, k: Any) -> Any:
            return {"sql": "SELECT 1"}[k]

        def __iter__(self) -> Any:
            self.reads += 1
            return iter(["sql"])

        def __len__(self) -> int:
            return 1

    view = View()
    assert run_sql(Lying(sql="SELECT 1")) == "ran SELECT 1"
    assert run_sql(view) == "ran SELECT 1" and view.reads == 1  # read once, not by the core again
    assert run_sql(types.MappingProxyType({"sql": "SELECT 1"})) == "ran SELECT 1"
    assert [type(q) for q in seen] == [dict, dict, dict]

    class Broken(View):
        def __iter__(self) -> Any:
            raise RuntimeError("no items")

    with pytest.raises(cycles.InvalidInput) as e:
        run_sql(Broken())
    assert e.value.code == "INVALID_REQUEST"
    assert len(seen) == 3

    @a.guard("run_sql", subject=BOT)
    async def arun_sql(q: Any) -> str:
        return f"ran {q['sql']}"

    async def main() -> str:
        q = collections.OrderedDict(sql="SELECT 1")
        n = len(a.audit())
        task = asyncio.create_task(arun_sql(q))
        while len(a.audit()) == n:  # the reserve is recorded: SELECT 1 was classified
            await asyncio.sleep(0)
        q["sql"] = "DROP TABLE users"
        return await task

    assert asyncio.run(main()) == "ran SELECT 1"
    assert [r.kind for r in a.audit()].count("commit") == 4 and "approval_requested" not in [r.kind for r in a.audit()]


def test_list_and_tuple_subclasses_become_plain_only_named_tuples_that_read_as_tuples_keep_their_type() -> None:
    import collections

    a = cycles.Authority.in_memory(SQL_POLICY)
    seen: list[Any] = []

    def first_item(q: Any) -> Any:  # the first item as the core reads it, not through q's class
        return next(list.__iter__(q) if isinstance(q, list) else tuple.__iter__(q))

    @a.guard("run_sql", subject=BOT, map_args=lambda args: {"q": {"sql": first_item(args["q"])}})
    def run_sql(q: Any) -> str:
        seen.append(q)
        return f"ran {q[0]}"

    class LyingList(list):  # type: ignore[type-arg]
        def __getitem__(self, i: Any) -> Any:
            return "DROP TABLE users"

    Row = collections.namedtuple("Row", "sql")

    class LyingRow(Row):
        def __getitem__(self, i: Any) -> Any:
            return "DROP TABLE users"

    class LyingField(Row):
        @property
        def sql(self) -> str:  # type: ignore[override]
            return "DROP TABLE users"

    assert run_sql(LyingList(["SELECT 1"])) == "ran SELECT 1"
    assert run_sql(LyingRow("SELECT 1")) == "ran SELECT 1"
    assert run_sql(LyingField("SELECT 1")) == "ran SELECT 1"
    assert run_sql(Row("SELECT 1")) == "ran SELECT 1"
    assert [type(q) for q in seen] == [list, tuple, tuple, Row]
    assert "approval_requested" not in [r.kind for r in a.audit()]


def test_json_like_arguments_are_copied_once_with_their_types_other_objects_pass_by_reference() -> None:
    import collections

    a = cycles.Authority.in_memory(POLICY)
    Point = collections.namedtuple("Point", "x y")
    seen: list[Any] = []

    class Client:
        pass

    @a.guard("fetch", subject=BOT, map_args=lambda args: {k: v for k, v in args.items() if k != "client"})
    def fetch(client: Client, q: dict[str, Any], rows: list[Any], at: Any, *rest: Any, **opts: Any) -> None:
        seen.extend([client, q, rows, at, rest, opts])
        q["nested"]["sql"] = "changed by the body"
        rows.append("added by the body")

    client = Client()
    q = {"nested": {"sql": "SELECT 1"}, "pair": (1, [2])}
    rows = [[1, 2], (3,)]
    at = Point(1, [2])
    fetch(client, q, rows, at, [5], flag={"on": True})
    c, q2, rows2, at2, rest2, opts2 = seen
    assert c is client  # not JSON-like: by reference (map_args keeps it out of the classified args)
    assert q2 is not q and q2["nested"] is not q["nested"] and q2["pair"][1] is not q["pair"][1]
    assert type(q2["pair"]) is tuple and rows2[1] == (3,) and type(rows2[1]) is tuple
    assert type(at2) is Point and at2 == Point(1, [2]) and at2.y is not at.y
    assert rest2 == ([5],) and opts2 == {"flag": {"on": True}}
    assert q == {"nested": {"sql": "SELECT 1"}, "pair": (1, [2])} and rows == [[1, 2], (3,)]
    # Without map_args the object is classified as it is, and the core refuses it: nothing ran.
    seen.clear()

    @a.guard("fetch", subject=BOT)
    def fetch_all(client: Client) -> None:
        seen.append(client)

    with pytest.raises(cycles.InvalidInput):
        fetch_all(client)
    assert seen == []
