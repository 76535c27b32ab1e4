"""Fail closed through the glue: ``guard`` and the LangChain / OpenAI Agents integrations, with
the real framework packages and real ledgers.

Each test is one failure scenario: the ledger lost between reserve and commit (another process
holds the SQLite write lock), a tool that raises, async tools, generators, a coroutine returned
by a sync callable, positional vs keyword arguments, arguments JSON cannot carry, a gate that
raises something other than a Cycles error, and parallel tool calls sharing one budget.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
from agents import Agent, FunctionTool, RunConfig, Runner, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call
from agents.tool import invoke_function_tool
from agents.tool_context import ToolContext
from langchain_core.messages import ToolMessage
from langchain_core.tools import StructuredTool, tool
from pydantic import BaseModel, field_serializer

import cycles
from cycles.integrations.langchain import guard_tool
from cycles.integrations.openai_agents import guard_function_tool, input_guardrail

POLICY: dict[str, Any] = {
    "tools": [
        {"name": "read_file", "tier": 0},
        {"name": "write_note", "tier": 1},
        {"name": "run_sql", "tier": 0, "classifier": "sql"},
        {"name": "run_shell", "tier": 0, "classifier": "shell"},
        {"name": "send_email", "tier": 2},
    ],
    # send_email costs 5 points: one fits in 7, two do not.
    "budgets": [{"scope": "agent:bot", "unit": "RISK_POINTS", "allocated": 7}],
}
BOT = {"agent": "bot"}
NO_TRACING = RunConfig(tracing_disabled=True)

ran: list[Any] = []


@pytest.fixture(autouse=True)
def clear() -> None:
    ran.clear()


def risk(a: cycles.Authority) -> cycles.Balance:
    [b] = a.balances("agent:bot")
    return b


def kinds(a: cycles.Authority) -> list[str]:
    return [r.kind for r in a.audit()]


LOCKER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
con.execute("COMMIT")
"""


class WriteLock:
    """Another process holds the SQLite write lock: the ledger is unavailable until release().

    A process, not a connection: SQLite's POSIX locks do not exclude each other in one process.
    """

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)


@pytest.fixture
def sqlite_auth(tmp_path: Path) -> tuple[cycles.Authority, Path]:
    path = tmp_path / "cycles.db"
    return cycles.Authority.open(path, POLICY, busy_timeout_ms=50), path


# ---------------------------------------------------------------------------------------------
# guard


def assert_owed_then_made(auth: cycles.Authority, outcome: str = "COMPLETED") -> None:
    """One settlement of ``outcome`` is owed; the next decide the ledger answers makes it."""
    [owed] = auth.owed_settlements()
    assert owed["request"]["outcome"] == outcome and owed["attempts"] == 1
    # Nothing was given back or charged yet: the hold stands.
    assert risk(auth).reserved == 5 and risk(auth).spent == 0 and kinds(auth)[-1] == "reserve"
    auth.decide("read_file", {}, subject=BOT)
    assert auth.owed_settlements() == []
    assert auth.reservation(owed["reservation_id"]).status == "COMMITTED"
    assert risk(auth).reserved == 0 and risk(auth).spent == 5


def test_guard_ledger_lost_between_reserve_and_commit_returns_the_result_and_owes_it(
    sqlite_auth: tuple[cycles.Authority, Path], caplog: pytest.LogCaptureFixture
) -> None:
    auth, path = sqlite_auth
    locks: list[WriteLock] = []

    @auth.guard("send_email", subject=BOT)
    def send_email(to: str) -> str:
        ran.append(to)
        locks.append(WriteLock(path))  # the ledger goes away while the body runs
        return "sent"

    with caplog.at_level(logging.WARNING, logger="cycles"):
        assert send_email("a@b.c") == "sent"  # the body ran: its result is returned
    locks[0].release()
    assert ran == ["a@b.c"]
    assert "is owed and will be made when the ledger answers again" in caplog.text
    assert_owed_then_made(auth)


def test_guard_actual_that_raises_still_charges_what_was_held() -> None:
    auth = cycles.Authority.in_memory(POLICY)

    @auth.guard("send_email", subject=BOT, actual=lambda result: result["cost"])
    def send_email(to: str) -> dict[str, Any]:
        ran.append(to)
        return {}  # no "cost": actual raises KeyError

    with pytest.raises(KeyError):
        send_email("a@b.c")
    assert ran == ["a@b.c"]
    # The email went out: it is charged (what was held), not released.
    assert (risk(auth).spent, risk(auth).reserved) == (5, 0) and kinds(auth)[-1] == "commit"


def test_guard_actual_amounts_the_core_refuses_still_charge_what_was_held() -> None:
    auth = cycles.Authority.in_memory(POLICY)

    @auth.guard("send_email", subject=BOT, actual=lambda result: {"RISK_POINTS": -1})
    def send_email(to: str) -> str:
        return "sent"

    with pytest.raises(cycles.InvalidInput):
        send_email("a@b.c")
    assert (risk(auth).spent, risk(auth).reserved) == (5, 0)


def test_guard_actual_in_a_unit_the_reservation_does_not_hold_still_charges_what_was_held() -> None:
    # UNIT_MISMATCH is a Conflict, not an InvalidInput: the fallback applies to it too.
    auth = cycles.Authority.in_memory(POLICY)

    @auth.guard("send_email", subject=BOT, actual=lambda result: {"TOKENS": 10})
    def send_email(to: str) -> str:
        return "sent"

    with pytest.raises(cycles.Conflict) as e:
        send_email("a@b.c")
    assert e.value.code == "UNIT_MISMATCH" and e.value.result == "sent"  # type: ignore[attr-defined]
    assert (risk(auth).spent, risk(auth).reserved) == (5, 0) and kinds(auth)[-1] == "commit"


def test_guard_actual_over_budget_under_overage_reject_still_charges_what_was_held() -> None:
    auth = cycles.Authority.in_memory({**POLICY, "defaults": {"overage_policy": "REJECT"}})

    # 20 points where 5 are held and 2 more are left: REJECT refuses the overage.
    @auth.guard("send_email", subject=BOT, actual=lambda result: {"RISK_POINTS": 20})
    def send_email(to: str) -> str:
        return "sent"

    with pytest.raises(cycles.CyclesError) as e:
        send_email("a@b.c")
    assert e.value.code == "BUDGET_EXCEEDED" and e.value.result == "sent"  # type: ignore[attr-defined]
    assert (risk(auth).spent, risk(auth).reserved) == (5, 0) and kinds(auth)[-1] == "commit"


def test_guard_generator_holds_until_exhausted_and_releases_when_it_raises() -> None:
    auth = cycles.Authority.in_memory(POLICY)
    box = [auth]

    @auth.guard("send_email", subject=BOT)
    def send_all(to: list[str]) -> Iterator[str]:
        for t in to:
            assert risk(box[0]).reserved == 5  # the body runs under the reservation
            ran.append(t)
            if t == "boom":
                raise RuntimeError("smtp down")
            yield t

    gen = send_all(["a", "b"])
    assert kinds(auth)[-1] == "budget_set"  # nothing reserved before the body starts
    assert list(gen) == ["a", "b"]
    assert (risk(auth).spent, risk(auth).reserved) == (5, 0) and kinds(auth)[-2:] == ["reserve", "commit"]

    auth2 = box[0] = cycles.Authority.in_memory(POLICY)
    failing = auth2.guard("send_email", subject=BOT)(send_all.__wrapped__)  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="smtp down"):
        list(failing(["boom"]))
    assert (risk(auth2).spent, risk(auth2).reserved) == (0, 0) and kinds(auth2)[-1] == "release"


def test_guard_generator_closed_early_is_charged() -> None:
    auth = cycles.Authority.in_memory(POLICY)

    @auth.guard("send_email", subject=BOT)
    def send_all(to: list[str]) -> Iterator[str]:
        for t in to:
            ran.append(t)
            yield t

    gen = send_all(["a", "b", "c"])
    assert next(gen) == "a"
    gen.close()  # one email went out
    assert ran == ["a"] and (risk(auth).spent, risk(auth).reserved) == (5, 0)


def test_guard_async_generator() -> None:
    auth = cycles.Authority.in_memory(POLICY)
    box = [auth]

    @auth.guard("send_email", subject=BOT)
    async def send_all(to: list[str]) -> AsyncIterator[str]:
        for t in to:
            assert risk(box[0]).reserved == 5
            await asyncio.sleep(0)
            ran.append(t)
            if t == "boom":
                raise RuntimeError("smtp down")
            yield t

    async def main() -> None:
        assert [x async for x in send_all(["a", "b"])] == ["a", "b"]
        assert (risk(auth).spent, risk(auth).reserved) == (5, 0)
        with pytest.raises(cycles.Denied):  # 2 points left: the next send_email is denied
            [x async for x in send_all(["c"])]

    asyncio.run(main())
    assert ran == ["a", "b"]

    auth2 = box[0] = cycles.Authority.in_memory(POLICY)
    failing = auth2.guard("send_email", subject=BOT)(send_all.__wrapped__)  # type: ignore[attr-defined]

    async def fail() -> None:
        with pytest.raises(RuntimeError, match="smtp down"):
            [x async for x in failing(["boom"])]

    asyncio.run(fail())
    assert (risk(auth2).spent, risk(auth2).reserved) == (0, 0) and kinds(auth2)[-1] == "release"


def test_guard_sync_callable_returning_a_coroutine() -> None:
    auth = cycles.Authority.in_memory(POLICY)
    box = [auth]

    async def really_send(to: str) -> str:
        assert risk(box[0]).reserved == 5  # still held while the coroutine runs
        ran.append(to)
        if to == "boom":
            raise RuntimeError("smtp down")
        return "sent"

    @auth.guard("send_email", subject=BOT)
    def send_email(to: str) -> Any:
        return really_send(to)  # a sync def that hands back a coroutine

    async def main() -> None:
        assert await send_email("a") == "sent"
        assert (risk(auth).spent, risk(auth).reserved) == (5, 0)

    asyncio.run(main())

    auth2 = box[0] = cycles.Authority.in_memory(POLICY)
    failing = auth2.guard("send_email", subject=BOT)(send_email.__wrapped__)  # type: ignore[attr-defined]

    async def fail() -> None:
        with pytest.raises(RuntimeError):
            await failing("boom")

    asyncio.run(fail())
    # The coroutine raised: released, not committed before it ran.
    assert (risk(auth2).spent, risk(auth2).reserved) == (0, 0) and kinds(auth2)[-1] == "release"


def test_guard_positional_and_keyword_calls_classify_the_same_arguments() -> None:
    auth = cycles.Authority.in_memory(POLICY)

    @auth.guard("run_sql", subject=BOT)
    def run_sql(query: str, limit: int = 10) -> None:
        ran.append((query, limit))

    run_sql("SELECT 1", 5)
    run_sql(query="SELECT 1", limit=5)
    run_sql("SELECT 1", limit=5)
    digests = {r.call_digest for r in auth.audit(kinds=["reserve"])}
    assert len(digests) == 1 and ran == [("SELECT 1", 5)] * 3
    probe = auth.decide("run_sql", {"query": "SELECT 1", "limit": 5}, subject=BOT)
    assert probe.tier == 0
    # A positional DROP is classified as SQL (the argument name is bound), not missed.
    with pytest.raises(cycles.Denied) as e:
        run_sql("DROP TABLE users")
    assert e.value.decision is not None and e.value.decision.tier == 4


@pytest.mark.parametrize(
    "value", [datetime.datetime(2026, 1, 1), b"rm -rf /", object(), {1: "x"}, {"a", "b"}],
    ids=["datetime", "bytes", "object", "int-keys", "set"],
)
def test_guard_arguments_json_cannot_carry_never_run(value: Any) -> None:
    auth = cycles.Authority.in_memory(POLICY)

    @auth.guard("write_note", subject=BOT)
    def write_note(body: Any) -> None:
        ran.append(body)

    async_note = auth.guard("write_note", subject=BOT)(_async_note)
    with pytest.raises(cycles.InvalidInput) as e:
        write_note(value)
    assert e.value.code == "INVALID_REQUEST" and "args.body" in str(e.value)
    with pytest.raises(cycles.InvalidInput):
        asyncio.run(async_note(value))
    assert ran == [] and risk(auth).reserved == 0


async def _async_note(body: Any) -> None:
    ran.append(body)


# ---------------------------------------------------------------------------------------------
# LangChain


@tool
def send_email(to: str) -> str:
    """Send an email."""
    ran.append(("send_email", to))
    return f"sent to {to}"


@tool
def run_sql(query: str) -> str:
    """Run SQL."""
    ran.append(("run_sql", query))
    return "rows"


def tool_call(name: str, args: dict[str, Any], id: str = "call_1") -> dict[str, Any]:
    return {"name": name, "args": args, "id": id, "type": "tool_call"}


def test_langchain_ledger_lost_between_reserve_and_commit_keeps_the_result(
    sqlite_auth: tuple[cycles.Authority, Path], caplog: pytest.LogCaptureFixture
) -> None:
    auth, path = sqlite_auth
    locks: list[WriteLock] = []

    @tool
    def send_email(to: str) -> str:  # noqa: F811
        """Send an email."""
        ran.append(to)
        locks.append(WriteLock(path))
        return f"sent to {to}"

    guarded = guard_tool(send_email, auth, subject=BOT)
    with caplog.at_level(logging.WARNING, logger="cycles"):
        msg = guarded.invoke(tool_call("send_email", {"to": "a@b.c"}))
    locks[0].release()
    # The email went out once; the model is told so (not an error it would retry).
    assert isinstance(msg, ToolMessage) and msg.status == "success" and msg.content == "sent to a@b.c"
    assert ran == ["a@b.c"]
    assert "LEDGER_UNAVAILABLE" in caplog.text and "is owed" in caplog.text
    assert_owed_then_made(auth)


def test_langchain_positional_string_is_classified_as_the_argument_it_runs_as() -> None:
    auth = cycles.Authority.in_memory(POLICY)
    guarded = guard_tool(run_sql, auth, subject=BOT)
    # LangChain runs a string input as the tool's first argument (query).
    assert guarded.invoke("SELECT 1") == "rows"
    assert ran == [("run_sql", "SELECT 1")]
    [reserve] = auth.audit(kinds=["reserve"])
    assert reserve.tier == 0
    probe = auth.decide("run_sql", {"query": "SELECT 1"}, subject=BOT)
    assert reserve.call_digest == auth.audit(kinds=["decide"])[-1].call_digest and probe.tier == 0


def test_langchain_json_schema_tool_classifies_every_argument_it_runs_with() -> None:
    auth = cycles.Authority.in_memory(POLICY)

    def shell(**kwargs: Any) -> str:
        ran.append(kwargs)
        return "ok"

    # A JSON-schema tool (as MCP adapters build them) passes every key through to the function.
    raw = StructuredTool.from_function(
        func=shell, name="run_shell", description="Run a shell command.",
        args_schema={"type": "object", "properties": {"cwd": {"type": "string"}}},
    )
    guarded = guard_tool(raw, auth, subject=BOT, on_deny="raise")
    with pytest.raises(cycles.Denied) as e:
        guarded.invoke({"cwd": "/", "command": "rm -rf /var/lib/postgresql"})
    assert e.value.decision is not None and e.value.decision.tier == 4
    assert ran == []
    assert guarded.invoke({"cwd": "/", "command": "ls"}) == "ok"
    assert ran == [{"cwd": "/", "command": "ls"}]
    probe = auth.decide("run_shell", {"cwd": "/", "command": "ls"}, subject=BOT)
    assert auth.audit(kinds=["reserve"])[-1].call_digest == auth.audit(kinds=["decide"])[-1].call_digest
    assert probe.allowed


class When(BaseModel):
    at: datetime.datetime

    @field_serializer("at", when_used="json")
    def _no_json(self, v: datetime.datetime) -> str:
        raise TypeError("this field cannot be serialized")


def test_langchain_arguments_json_cannot_carry_are_refused_not_run() -> None:
    auth = cycles.Authority.in_memory(POLICY)

    @tool
    def write_note(body: str, at: datetime.datetime) -> str:
        """Write a note."""
        ran.append(body)
        return "ok"

    @tool
    def schedule(body: str, when: When) -> str:
        """Schedule a note (its model's serializer raises TypeError)."""
        ran.append(body)
        return "ok"

    at = "2026-01-01T00:00:00"
    msg = guard_tool(write_note, auth, subject=BOT).invoke(tool_call("write_note", {"body": "x", "at": at}))
    assert isinstance(msg, ToolMessage) and msg.status == "error"
    assert "INVALID_REQUEST" in str(msg.content) and "was not run" in str(msg.content)
    # A non-Cycles exception while the gate prepares the call refuses the same way.
    msg = guard_tool(schedule, auth, subject=BOT).invoke(
        tool_call("schedule", {"body": "x", "when": {"at": at}})
    )
    assert isinstance(msg, ToolMessage) and msg.status == "error"
    assert "GATE_ERROR" in str(msg.content) and "TypeError" in str(msg.content)
    with pytest.raises(Exception, match="cannot be serialized"):
        guard_tool(schedule, auth, subject=BOT, on_deny="raise").invoke({"body": "x", "when": {"at": at}})
    async_out = asyncio.run(guard_tool(write_note, auth, subject=BOT).ainvoke({"body": "x", "at": at}))
    assert "INVALID_REQUEST" in async_out
    assert ran == [] and risk(auth).reserved == 0


def test_langchain_actual_that_raises_still_charges_what_was_held() -> None:
    auth = cycles.Authority.in_memory(POLICY)
    guarded = guard_tool(send_email, auth, subject=BOT, actual=lambda out: {"RISK_POINTS": out["n"]})
    with pytest.raises(TypeError):
        guarded.invoke({"to": "a"})
    assert ran == [("send_email", "a")] and (risk(auth).spent, risk(auth).reserved) == (5, 0)


def test_langchain_actual_in_a_unit_not_held_keeps_the_result_and_charges_what_was_held(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The tool ran: its result stands (the model must not run it again), and UNIT_MISMATCH
    # gets the same fallback as InvalidInput: COMPLETED without amounts, logged.
    auth = cycles.Authority.in_memory(POLICY)
    guarded = guard_tool(send_email, auth, subject=BOT, actual=lambda out: {"TOKENS": 10})
    with caplog.at_level(logging.ERROR, logger="cycles"):
        out = guarded.invoke({"to": "a"})
    assert ran == [("send_email", "a")] and "UNIT_MISMATCH" not in str(out)
    assert (risk(auth).spent, risk(auth).reserved) == (5, 0) and kinds(auth)[-1] == "commit"
    assert "UNIT_MISMATCH" in caplog.text and "settled COMPLETED without amounts" in caplog.text


@pytest.mark.parametrize("mode", ["batch", "abatch"])
def test_langchain_parallel_tool_calls_share_the_budget(mode: str) -> None:
    auth = cycles.Authority.in_memory(POLICY)
    guarded = guard_tool(send_email, auth, subject=BOT)
    calls = [tool_call("send_email", {"to": f"u{i}"}, id=f"c{i}") for i in range(4)]
    outs = guarded.batch(calls) if mode == "batch" else asyncio.run(guarded.abatch(calls))
    ok = [m for m in outs if m.status == "success"]
    refused = [m for m in outs if m.status == "error"]
    assert len(ok) == 1 and len(refused) == 3 and len(ran) == 1
    assert all("BUDGET_EXCEEDED" in str(m.content) for m in refused)
    assert (risk(auth).spent, risk(auth).reserved) == (5, 0)


# ---------------------------------------------------------------------------------------------
# OpenAI Agents SDK


@function_tool(name_override="send_email")
def oa_send_email(to: str) -> str:
    """Send an email."""
    ran.append(("send_email", to))
    return f"sent to {to}"


@function_tool(name_override="write_note")
def oa_write_note(n: int) -> str:
    """Write a numbered note."""
    ran.append(("write_note", n))
    return "ok"


def invoke(t: FunctionTool, raw: str) -> Any:
    ctx = ToolContext(context=None, tool_name=t.name, tool_call_id="call_1", tool_arguments=raw)
    return asyncio.run(invoke_function_tool(function_tool=t, context=ctx, arguments=raw))


def test_openai_ledger_lost_between_reserve_and_commit_keeps_the_result(
    sqlite_auth: tuple[cycles.Authority, Path], caplog: pytest.LogCaptureFixture
) -> None:
    auth, path = sqlite_auth
    locks: list[WriteLock] = []

    @function_tool
    def send_email(to: str) -> str:  # noqa: F811
        """Send an email."""
        ran.append(to)
        locks.append(WriteLock(path))
        return f"sent to {to}"

    model = ScriptedModel([
        [function_call("send_email", {"to": "a@b.c"}, call_id="c1")],
        [assistant_message("done")],
    ])
    agent = Agent(name="ops", model=model, tools=[guard_function_tool(send_email, auth, subject=BOT)])
    with caplog.at_level(logging.WARNING, logger="cycles"):
        result = asyncio.run(Runner.run(agent, "mail", run_config=NO_TRACING))
    locks[0].release()
    assert result.final_output == "done" and ran == ["a@b.c"]
    outputs = [i["output"] for i in model.calls[1].input if isinstance(i, dict) and i.get("type") == "function_call_output"]
    assert outputs == ["sent to a@b.c"]  # the model learns the email went out
    assert "LEDGER_UNAVAILABLE" in caplog.text and "is owed" in caplog.text
    assert_owed_then_made(auth)


def test_openai_arguments_the_core_refuses_are_a_refusal_not_a_crash() -> None:
    auth = cycles.Authority.in_memory(POLICY)
    guarded = guard_function_tool(oa_write_note, auth, subject=BOT)
    # Valid JSON, but an integer beyond 64 bits: the core cannot classify it.
    out = invoke(guarded, '{"n": 123456789012345678901234567890}')
    assert isinstance(out, str) and "INVALID_REQUEST" in out and "was not run" in out
    assert ran == [] and risk(auth).reserved == 0
    with pytest.raises(cycles.InvalidInput):
        invoke(guard_function_tool(oa_write_note, auth, subject=BOT, on_deny="raise"), '{"n": 123456789012345678901234567890}')
    # A float the int schema refuses never reaches the gate: the SDK's own message, nothing held.
    out = invoke(guard_function_tool(oa_write_note, auth, subject=BOT, on_deny="raise"), '{"n": 1e999}')
    assert out == "An error occurred while running the tool. Please try again."
    assert ran == [] and [r.kind for r in auth.audit()] == ["budget_set"]


def test_openai_a_raising_tool_releases_through_the_runner() -> None:
    auth = cycles.Authority.in_memory(POLICY)

    @function_tool(failure_error_function=None)
    def send_email(to: str) -> str:  # noqa: F811
        """Send an email."""
        ran.append(to)
        raise RuntimeError("smtp down")

    guarded = guard_function_tool(send_email, auth, subject=BOT)
    with pytest.raises(RuntimeError, match="smtp down"):
        invoke(guarded, json.dumps({"to": "a"}))
    assert ran == ["a"] and (risk(auth).spent, risk(auth).reserved) == (0, 0) and kinds(auth)[-1] == "release"


def test_openai_parallel_tool_calls_in_one_step_share_the_budget() -> None:
    auth = cycles.Authority.in_memory(POLICY)
    model = ScriptedModel([
        [function_call("send_email", {"to": f"u{i}"}, call_id=f"c{i}") for i in range(3)],
        [assistant_message("done")],
    ])
    agent = Agent(name="ops", model=model, tools=[guard_function_tool(oa_send_email, auth, subject=BOT)])
    result = asyncio.run(Runner.run(agent, "mail everyone", run_config=NO_TRACING))
    assert result.final_output == "done"
    outputs = [i["output"] for i in model.calls[1].input if isinstance(i, dict) and i.get("type") == "function_call_output"]
    assert len(outputs) == 3 and sum(o.startswith("sent to") for o in outputs) == 1
    assert sum("BUDGET_EXCEEDED" in o for o in outputs) == 2 and len(ran) == 1
    assert (risk(auth).spent, risk(auth).reserved) == (5, 0)


def test_openai_input_guardrail_rejects_when_the_gate_fails() -> None:
    auth = cycles.Authority.in_memory(POLICY)
    guardrail = input_guardrail(auth, subject=BOT)

    @function_tool(tool_input_guardrails=[guardrail])
    def write_note(n: int) -> str:
        """Write a numbered note."""
        ran.append(n)
        return "ok"

    model = ScriptedModel([
        [function_call("write_note", {"n": 123456789012345678901234567890}, call_id="c1")],
        [assistant_message("done")],
    ])
    agent = Agent(name="ops", model=model, tools=[write_note])
    result = asyncio.run(Runner.run(agent, "note", run_config=NO_TRACING))
    assert result.final_output == "done" and ran == []
    [out] = [i["output"] for i in model.calls[1].input if isinstance(i, dict) and i.get("type") == "function_call_output"]
    assert "INVALID_REQUEST" in out
