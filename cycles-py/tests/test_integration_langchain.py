"""The LangChain integration against the real langchain-core package: tools are invoked through
LangChain's own tool interface (``invoke`` / ``ainvoke``, with plain input or a tool call as an
agent loop sends it). No model is called."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Optional

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, InjectedToolArg, InjectedToolCallId, ToolException, tool
from pydantic import BaseModel

import cycles
from cycles.integrations.langchain import CyclesGuardedTool, guard_tool

POLICY: dict[str, Any] = {
    "tools": [
        {"name": "read_file", "tier": 0},
        {"name": "run_sql", "tier": 2},
        {"name": "railway_delete_volume", "tier": 4},
    ],
    "budgets": [{"scope": "tenant:acme/agent:coder", "unit": "RISK_POINTS", "allocated": 30}],
}
SUBJECT = {"tenant": "acme", "agent": "coder"}


@pytest.fixture
def auth() -> cycles.Authority:
    return cycles.Authority.in_memory(POLICY)


def risk(a: cycles.Authority) -> cycles.Balance:
    [b] = a.balances("tenant:acme/agent:coder")
    return b


ran: list[Any] = []


@tool
def read_file(path: str) -> str:
    """Read a file from the workspace."""
    ran.append(("read_file", path))
    return f"contents of {path}"


@tool
def railway_delete_volume(volume_id: str, force: bool = False) -> str:
    """Delete a Railway volume."""
    ran.append(("railway_delete_volume", volume_id))
    return "deleted"


@tool
def run_sql(query: str) -> str:
    """Run SQL."""
    ran.append(("run_sql", query))
    raise RuntimeError("connection reset")


@tool
async def async_read_file(path: str) -> str:
    """Read a file, asynchronously."""
    await asyncio.sleep(0)
    ran.append(("async_read_file", path))
    return f"async contents of {path}"


class Lookup(BaseTool):
    """A hand-written BaseTool subclass (not @tool)."""

    name: str = "read_file"
    description: str = "Look something up."

    def _run(self, path: str, run_manager: Optional[Any] = None) -> str:
        ran.append(("lookup", path))
        return path.upper()


@pytest.fixture(autouse=True)
def clear() -> None:
    ran.clear()


def test_allowed_call_runs_and_commits(auth: cycles.Authority) -> None:
    guarded = guard_tool(read_file, auth, subject=SUBJECT)
    assert isinstance(guarded, CyclesGuardedTool) and isinstance(guarded, BaseTool)
    # The model sees the same tool.
    assert guarded.name == read_file.name and guarded.description == read_file.description
    assert guarded.tool_call_schema.model_json_schema() == read_file.tool_call_schema.model_json_schema()

    assert guarded.invoke({"path": "README.md"}) == "contents of README.md"
    assert ran == [("read_file", "README.md")]
    assert [r.kind for r in auth.audit()][-2:] == ["reserve", "commit"]
    # The classified args are the model's arguments, exactly.
    digest = auth.audit(kinds=["reserve"])[-1].call_digest
    probe = auth.reserve("read_file", {"path": "README.md"}, subject=SUBJECT)
    assert probe.call_digest == digest
    probe.release()


def test_denied_call_returns_a_message_and_never_runs(auth: cycles.Authority) -> None:
    guarded = guard_tool(railway_delete_volume, auth, subject=SUBJECT)
    out = guarded.invoke({"volume_id": "vol_prod_main"})
    assert isinstance(out, str) and "BUDGET_EXCEEDED" in out and "railway_delete_volume" in out
    assert "Do not retry the same call" in out  # no approval pending: retrying cannot help
    assert ran == []
    assert risk(auth).reserved == 0 and risk(auth).spent == 0
    assert auth.audit()[-1].kind == "denial"


def test_denied_tool_call_becomes_an_error_tool_message(auth: cycles.Authority) -> None:
    guarded = guard_tool(railway_delete_volume, auth, subject=SUBJECT)
    msg = guarded.invoke(
        {"name": "railway_delete_volume", "args": {"volume_id": "v1"}, "id": "call_7", "type": "tool_call"}
    )
    assert isinstance(msg, ToolMessage)
    assert msg.status == "error" and msg.tool_call_id == "call_7"
    assert "BUDGET_EXCEEDED" in str(msg.content) and "Tier 4" in str(msg.content)
    assert ran == []


def test_allowed_tool_call_becomes_a_success_tool_message(auth: cycles.Authority) -> None:
    guarded = guard_tool(read_file, auth, subject=SUBJECT)
    msg = guarded.invoke({"name": "read_file", "args": {"path": "a"}, "id": "call_1", "type": "tool_call"})
    assert isinstance(msg, ToolMessage) and msg.status == "success" and msg.content == "contents of a"


def test_on_deny_raise(auth: cycles.Authority) -> None:
    guarded = guard_tool(railway_delete_volume, auth, subject=SUBJECT, on_deny="raise")
    with pytest.raises(cycles.Denied) as e:
        guarded.invoke({"volume_id": "v1"})
    assert e.value.reason_code == "BUDGET_EXCEEDED" and ran == []


def test_custom_deny_message(auth: cycles.Authority) -> None:
    guarded = guard_tool(
        railway_delete_volume, auth, subject=SUBJECT,
        deny_message=lambda e, name: f"NO:{name}:{e.reason_code}",
    )
    assert guarded.invoke({"volume_id": "v1"}) == "NO:railway_delete_volume:BUDGET_EXCEEDED"


def test_a_failing_tool_releases_and_raises(auth: cycles.Authority) -> None:
    guarded = guard_tool(run_sql, auth, subject=SUBJECT)
    with pytest.raises(RuntimeError, match="connection reset"):
        guarded.invoke({"query": "DELETE FROM t WHERE id = 1"})
    assert ran == [("run_sql", "DELETE FROM t WHERE id = 1")]
    b = risk(auth)
    assert (b.spent, b.reserved) == (0, 0)
    assert auth.audit()[-1].kind == "release"


def test_async_tool_through_ainvoke(auth: cycles.Authority) -> None:
    guarded = guard_tool(async_read_file, auth, subject=SUBJECT, name="read_file")
    denied = guard_tool(railway_delete_volume, auth, subject=SUBJECT)

    async def main() -> tuple[Any, Any]:
        return await guarded.ainvoke({"path": "x"}), await denied.ainvoke({"volume_id": "v"})

    ok, no = asyncio.run(main())
    assert ok == "async contents of x" and "BUDGET_EXCEEDED" in no
    assert ran == [("async_read_file", "x")]
    assert [r.kind for r in auth.audit()][-3:] == ["reserve", "commit", "denial"]


def test_a_basetool_subclass(auth: cycles.Authority) -> None:
    guarded = guard_tool(Lookup(), auth, subject=SUBJECT)
    assert guarded.invoke({"path": "abc"}) == "ABC"
    assert ran == [("lookup", "abc")]


def test_budget_runs_out_across_calls(auth: cycles.Authority) -> None:
    # run_sql costs 5 points (tier 2) of 30: the seventh call is denied and does not run.
    @tool
    def run_sql_ok(query: str) -> str:
        """Run SQL."""
        ran.append(query)
        return "ok"

    guarded = guard_tool(run_sql_ok, auth, subject=SUBJECT, name="run_sql")
    outs = [guarded.invoke({"query": f"SELECT {i}"}) for i in range(7)]
    assert outs[:6] == ["ok"] * 6 and "BUDGET_EXCEEDED" in outs[6]
    assert len(ran) == 6 and risk(auth).spent == 30


def test_a_timed_out_tool_is_charged_it_may_have_acted(auth: cycles.Authority) -> None:
    @tool
    async def slow_migration(query: str) -> str:
        """Run a long migration."""
        ran.append(("slow_migration", query))
        await asyncio.sleep(3600)
        return "done"

    policy_tool = {"tools": [{"name": "slow_migration", "tier": 2}], "budgets": POLICY["budgets"]}
    a = cycles.Authority.in_memory(policy_tool)
    guarded = guard_tool(slow_migration, a, subject=SUBJECT)

    async def go() -> None:
        with pytest.raises((asyncio.TimeoutError, TimeoutError)):
            await asyncio.wait_for(guarded.ainvoke({"query": "ALTER TABLE t ADD c int"}), 0.05)

    asyncio.run(go())
    assert ("slow_migration", "ALTER TABLE t ADD c int") in ran
    b = risk(a)
    assert b.reserved == 0 and b.spent > 0  # charged, not released
    assert a.audit()[-1].kind == "commit"


def test_a_failing_tool_is_charged_under_on_failure_charge() -> None:
    # The integration says FAILED; the policy's `[defaults] on_failure` decides the cost.
    a = cycles.Authority.in_memory({**POLICY, "defaults": {"on_failure": "CHARGE"}})
    guarded = guard_tool(run_sql, a, subject=SUBJECT)
    with pytest.raises(RuntimeError, match="connection reset"):
        guarded.invoke({"query": "DELETE FROM t WHERE id = 1"})

    async def failing_async() -> None:
        with pytest.raises(RuntimeError, match="connection reset"):
            await guarded.ainvoke({"query": "DELETE FROM t WHERE id = 2"})

    asyncio.run(failing_async())
    assert len(ran) == 2
    b = risk(a)
    assert (b.spent, b.reserved) == (10, 0)  # tier 2: 5 points each, charged as held
    assert [r.kind for r in a.audit()][-4:] == ["reserve", "commit", "reserve", "commit"]


class _Connection:
    """A runtime object an application injects (no tool call can carry one)."""


@tool
def run_sql_on(query: str, database: Annotated[str, InjectedToolArg], conn: Annotated[Any, InjectedToolArg]) -> str:
    """Run SQL on a database the application chooses."""
    ran.append(("run_sql_on", query, database, type(conn).__name__))
    return "ok"


INJECTED_POLICY: dict[str, Any] = {
    # The classifier reads the injected argument: what the tool receives decides the tier.
    "tools": [{"name": "run_sql_on", "tier": 0, "classifier": "sql", "arg": "database"}],
    "budgets": [{"scope": "tenant:acme/agent:coder", "unit": "RISK_POINTS", "allocated": 30}],
}


def test_a_model_supplied_injected_argument_is_classified() -> None:
    a = cycles.Authority.in_memory(INJECTED_POLICY)
    guarded = guard_tool(run_sql_on, a, subject=SUBJECT)
    # Hidden from the model's schema ...
    assert set(guarded.tool_call_schema.model_json_schema()["properties"]) == {"query"}
    # ... but a tool call that carries it anyway reaches the tool with it: so it is classified.
    conn = _Connection()
    args = {"query": "SELECT 1", "database": "DROP DATABASE prod", "conn": conn}
    msg = guarded.invoke({"name": "run_sql_on", "args": args, "id": "call_1", "type": "tool_call"})
    assert isinstance(msg, ToolMessage) and msg.status == "error" and "Tier 4" in str(msg.content)
    assert ran == []
    denial = a.audit(kinds=["denial"])[-1]
    assert denial.tier == 4
    # A harmless value runs, and the classified args are exactly what the tool received, with
    # the runtime object named by its type.
    assert guarded.invoke({"query": "SELECT 1", "database": "SELECT 2", "conn": conn}) == "ok"
    assert ran == [("run_sql_on", "SELECT 1", "SELECT 2", "_Connection")]
    digest = a.audit(kinds=["reserve"])[-1].call_digest
    probe = a.reserve(
        "run_sql_on",
        {"query": "SELECT 1", "database": "SELECT 2", "conn": "<injected _Connection>"},
        subject=SUBJECT,
    )
    assert probe.call_digest == digest
    probe.release()


# Tools that take the tool call id (LangGraph's pattern for returning a ToolMessage or a Command
# bound to the call). LangChain fills the id only when the tool is invoked with a tool call.
ID_POLICY: dict[str, Any] = {
    "tools": [
        {"name": "reply", "tier": 1},
        {"name": "areply", "tier": 1},
        {"name": "echo_id", "tier": 0},
        {"name": "railway_delete_volume", "tier": 4},
    ],
    "budgets": [{"scope": "tenant:acme/agent:coder", "unit": "RISK_POINTS", "allocated": 30}],
}


@tool
def reply(text: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> ToolMessage:
    """Answer with a message bound to the call."""
    ran.append(("reply", text, tool_call_id))
    return ToolMessage(f"said {text}", tool_call_id=tool_call_id, artifact={"n": len(text)})


@tool
async def areply(text: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
    """Answer asynchronously with a plain string."""
    await asyncio.sleep(0)
    ran.append(("areply", text, tool_call_id))
    return f"async said {text}"


@tool
def delete_with_id(volume_id: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
    """Delete a volume."""
    ran.append(("delete_with_id", volume_id, tool_call_id))
    return "deleted"


@tool
def fail_with_id(text: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
    """Fail."""
    ran.append(("fail_with_id", tool_call_id))
    raise RuntimeError("boom")


class _EchoArgs(BaseModel):
    text: str


@tool(args_schema=_EchoArgs)
def echo_id(text: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
    """A schema that does not declare the id: LangChain injects it from the signature, and
    passes a value a tool call supplies for it to the tool."""
    ran.append(("echo_id", tool_call_id))
    return f"{text}:{tool_call_id}"


def kinds(a: cycles.Authority) -> list[str]:
    return [r.kind for r in a.audit() if r.kind != "budget_set"]


def call(name: str, args: dict[str, Any], id: str = "call_1") -> dict[str, Any]:
    return {"name": name, "args": args, "id": id, "type": "tool_call"}


def test_a_tool_taking_the_tool_call_id_receives_it() -> None:
    a = cycles.Authority.in_memory(ID_POLICY)
    guarded = guard_tool(reply, a, subject=SUBJECT)
    # The model's schema is unchanged: the id is not an argument it sees.
    assert guarded.tool_call_schema.model_json_schema() == reply.tool_call_schema.model_json_schema()
    msg = guarded.invoke(call("reply", {"text": "hi"}, "call_1"))
    # Exactly what the tool gives without the guard: its own ToolMessage, bound to the call.
    assert msg == reply.invoke(call("reply", {"text": "hi"}, "call_1"))
    assert isinstance(msg, ToolMessage) and msg.tool_call_id == "call_1" and msg.content == "said hi"
    assert msg.artifact == {"n": 2}
    assert ran == [("reply", "hi", "call_1"), ("reply", "hi", "call_1")]
    assert kinds(a) == ["reserve", "commit"]
    assert risk(a).spent == 1 and risk(a).reserved == 0  # tier 1: 1 point, committed
    # The id is not classified: the digest is that of the model's arguments, the same for
    # every call (an approval for a call matches its retry under a new id).
    guarded.invoke(call("reply", {"text": "hi"}, "call_2"))
    d1, d2 = [r.call_digest for r in a.audit(kinds=["reserve"])]
    probe = a.reserve("reply", {"text": "hi"}, subject=SUBJECT)
    assert d1 == d2 == probe.call_digest
    probe.release()


def test_a_tool_taking_the_tool_call_id_through_ainvoke() -> None:
    a = cycles.Authority.in_memory(ID_POLICY)
    guarded = guard_tool(areply, a, subject=SUBJECT)
    denied = guard_tool(delete_with_id, a, subject=SUBJECT, name="railway_delete_volume")

    async def main() -> tuple[Any, Any]:
        return (
            await guarded.ainvoke(call("areply", {"text": "yo"}, "call_9")),
            await denied.ainvoke(call("delete_with_id", {"volume_id": "v"}, "call_10")),
        )

    ok, no = asyncio.run(main())
    assert isinstance(ok, ToolMessage) and ok.tool_call_id == "call_9" and ok.content == "async said yo"
    assert ok.status == "success"
    assert isinstance(no, ToolMessage) and no.status == "error" and no.tool_call_id == "call_10"
    assert "BUDGET_EXCEEDED" in str(no.content)
    assert ran == [("areply", "yo", "call_9")]
    assert kinds(a) == ["reserve", "commit", "denial"]


def test_a_denied_tool_taking_the_id_does_not_run() -> None:
    a = cycles.Authority.in_memory(ID_POLICY)
    guarded = guard_tool(delete_with_id, a, subject=SUBJECT, name="railway_delete_volume")
    msg = guarded.invoke(call("delete_with_id", {"volume_id": "vol_prod"}, "call_3"))
    assert isinstance(msg, ToolMessage) and msg.status == "error" and msg.tool_call_id == "call_3"
    assert ran == [] and kinds(a) == ["denial"]


def test_a_failing_tool_taking_the_id_is_settled_failed() -> None:
    a = cycles.Authority.in_memory(ID_POLICY)
    guarded = guard_tool(fail_with_id, a, subject=SUBJECT, name="reply")
    with pytest.raises(RuntimeError, match="boom"):
        guarded.invoke(call("fail_with_id", {"text": "x"}, "call_4"))
    assert ran == [("fail_with_id", "call_4")]
    assert (risk(a).spent, risk(a).reserved) == (0, 0)
    assert kinds(a) == ["reserve", "release"]


def test_a_tool_taking_the_id_invoked_without_a_tool_call_fails_as_without_the_guard() -> None:
    a = cycles.Authority.in_memory(ID_POLICY)
    guarded = guard_tool(reply, a, subject=SUBJECT)
    with pytest.raises(ValueError, match="InjectedToolCallId"):
        reply.invoke({"text": "hi"})
    with pytest.raises(ValueError, match="InjectedToolCallId"):
        guarded.invoke({"text": "hi"})
    # Refused by LangChain before the gate: nothing reserved, nothing ran.
    assert ran == [] and kinds(a) == []


def test_a_tool_call_supplying_the_id_argument_is_classified() -> None:
    a = cycles.Authority.in_memory(ID_POLICY)
    guarded = guard_tool(echo_id, a, subject=SUBJECT)
    # Without the guard, the value a tool call supplies reaches the tool instead of the id.
    assert echo_id.invoke(call("echo_id", {"text": "t", "tool_call_id": "X"}, "call_5")).content == "t:X"
    ran.clear()
    assert guarded.invoke(call("echo_id", {"text": "t", "tool_call_id": "X"}, "call_5")).content == "t:X"
    # The real id is injected and not classified; the tool receives it.
    msg = guarded.invoke(call("echo_id", {"text": "t"}, "call_6"))
    assert isinstance(msg, ToolMessage) and msg.content == "t:call_6" and msg.tool_call_id == "call_6"
    assert ran == [("echo_id", "X"), ("echo_id", "call_6")]
    supplied, injected = [r.call_digest for r in a.audit(kinds=["reserve"])]
    # The supplied value is in the classified args, exactly as the tool received it ...
    probe = a.reserve("echo_id", {"text": "t", "tool_call_id": "X"}, subject=SUBJECT)
    assert probe.call_digest == supplied
    probe.release()
    # ... the injected id is not.
    probe = a.reserve("echo_id", {"text": "t"}, subject=SUBJECT)
    assert probe.call_digest == injected != supplied
    probe.release()


# Tools that take no tool call id: with a tool call, the agent must get exactly the ToolMessage
# the tool gives without the guard (content, artifact, status, name, id).

FORMAT_POLICY: dict[str, Any] = {
    "tools": [
        {"name": "search", "tier": 1},
        {"name": "flaky", "tier": 2},
        {"name": "aflaky", "tier": 2},
        {"name": "parse_order", "tier": 2},
        {"name": "strict", "tier": 2},
        {"name": "priced_search", "tier": 2},
    ],
    "budgets": [{"scope": "tenant:acme/agent:coder", "unit": "RISK_POINTS", "allocated": 30}],
}


@tool(response_format="content_and_artifact")
def search(q: str) -> tuple[str, dict[str, Any]]:
    """Search; the raw hits are the artifact."""
    ran.append(("search", q))
    return f"found {q}", {"hits": [q, q.upper()]}


def test_a_content_and_artifact_tool_gives_the_agent_its_artifact() -> None:
    a = cycles.Authority.in_memory(FORMAT_POLICY)
    guarded = guard_tool(search, a, subject=SUBJECT)
    want = search.invoke(call("search", {"q": "x"}))
    assert isinstance(want, ToolMessage) and want.artifact == {"hits": ["x", "X"]}
    msg = guarded.invoke(call("search", {"q": "x"}))
    assert msg == want
    assert (msg.content, msg.artifact, msg.tool_call_id, msg.name, msg.status) == (
        "found x", {"hits": ["x", "X"]}, "call_1", "search", "success"
    )
    # Without a tool call, the content alone, as without the guard.
    assert guarded.invoke({"q": "y"}) == search.invoke({"q": "y"}) == "found y"

    async def main() -> Any:
        return await guarded.ainvoke(call("search", {"q": "z"}, "call_2"))

    amsg = asyncio.run(main())
    assert amsg == search.invoke(call("search", {"q": "z"}, "call_2"))
    assert amsg.artifact == {"hits": ["z", "Z"]}
    assert kinds(a) == ["reserve", "commit"] * 3
    assert (risk(a).spent, risk(a).reserved) == (3, 0)  # tier 1: 1 point each, committed


@tool(response_format="content_and_artifact")
def priced_search(q: str) -> tuple[str, dict[str, Any]]:
    """Search; the artifact says what the search cost."""
    ran.append(("priced_search", q))
    return f"found {q}", {"points": 2}


def test_actual_reads_the_artifact_of_the_tool_message() -> None:
    # With a tool call, `actual` sees the ToolMessage the agent gets, artifact included.
    a = cycles.Authority.in_memory(FORMAT_POLICY)
    guarded = guard_tool(
        priced_search, a, subject=SUBJECT, actual=lambda m: {"RISK_POINTS": m.artifact["points"]}
    )
    msg = guarded.invoke(call("priced_search", {"q": "x"}))
    assert msg == priced_search.invoke(call("priced_search", {"q": "x"}))
    assert kinds(a) == ["reserve", "commit"]
    assert (risk(a).spent, risk(a).reserved) == (2, 0)  # tier 2 held 5; the artifact says 2


@tool
def flaky(q: str) -> str:
    """Fails with an error the tool turns into a message."""
    ran.append(("flaky", q))
    raise ToolException(f"rate limited on {q}")


flaky.handle_tool_error = True


@tool
async def aflaky(q: str) -> str:
    """Fails asynchronously; a handler writes the message."""
    await asyncio.sleep(0)
    ran.append(("aflaky", q))
    raise ToolException(f"rate limited on {q}")


aflaky.handle_tool_error = lambda e: f"handled: {e}"


class _Order(BaseModel):
    qty: int


@tool
def parse_order(raw: str) -> str:
    """Parses inside the tool: a bad order raises a pydantic ValidationError inside it."""
    ran.append(("parse_order", raw))
    return f"qty {_Order.model_validate_json(raw).qty}"


parse_order.handle_validation_error = "bad order"


def test_an_error_the_tool_handles_is_an_error_message_and_settled_failed() -> None:
    a = cycles.Authority.in_memory(FORMAT_POLICY)
    guarded = guard_tool(flaky, a, subject=SUBJECT)
    want = flaky.invoke(call("flaky", {"q": "x"}))
    assert isinstance(want, ToolMessage) and want.status == "error"
    ran.clear()
    msg = guarded.invoke(call("flaky", {"q": "x"}))
    assert msg == want
    assert (msg.content, msg.status, msg.tool_call_id, msg.name) == ("rate limited on x", "error", "call_1", "flaky")
    # Without a tool call: the same text as without the guard, and the call is still FAILED.
    assert guarded.invoke({"q": "y"}) == "rate limited on y"
    assert ran == [("flaky", "x"), ("flaky", "y")]
    # The tool raised inside: FAILED, released under the default on_failure.
    assert kinds(a) == ["reserve", "release"] * 2
    assert (risk(a).spent, risk(a).reserved) == (0, 0)


def test_an_error_a_handler_turns_into_a_message_through_ainvoke() -> None:
    a = cycles.Authority.in_memory(FORMAT_POLICY)
    guarded = guard_tool(aflaky, a, subject=SUBJECT)

    async def main() -> tuple[Any, Any, Any]:
        return (
            await aflaky.ainvoke(call("aflaky", {"q": "x"})),
            await guarded.ainvoke(call("aflaky", {"q": "x"})),
            await guarded.ainvoke({"q": "y"}),
        )

    want, msg, plain = asyncio.run(main())
    assert msg == want and msg.status == "error" and msg.content == "handled: rate limited on x"
    assert plain == "handled: rate limited on y"
    assert kinds(a) == ["reserve", "release"] * 2
    assert (risk(a).spent, risk(a).reserved) == (0, 0)


def test_a_handled_error_is_charged_under_on_failure_charge() -> None:
    a = cycles.Authority.in_memory({**FORMAT_POLICY, "defaults": {"on_failure": "CHARGE"}})
    guarded = guard_tool(flaky, a, subject=SUBJECT)
    msg = guarded.invoke(call("flaky", {"q": "x"}))
    assert isinstance(msg, ToolMessage) and msg.status == "error"
    # FAILED and the policy charges failures: what was held (tier 2: 5 points) is spent.
    assert kinds(a) == ["reserve", "commit"]
    assert (risk(a).spent, risk(a).reserved) == (5, 0)


def test_a_validation_error_the_tool_handles_after_it_started_is_settled_failed() -> None:
    a = cycles.Authority.in_memory(FORMAT_POLICY)
    guarded = guard_tool(parse_order, a, subject=SUBJECT)
    good = guarded.invoke(call("parse_order", {"raw": '{"qty": 2}'}))
    assert good == parse_order.invoke(call("parse_order", {"raw": '{"qty": 2}'}))
    assert good.status == "success"
    want = parse_order.invoke(call("parse_order", {"raw": '{"qty": "many"}'}, "call_2"))
    msg = guarded.invoke(call("parse_order", {"raw": '{"qty": "many"}'}, "call_2"))
    assert msg == want and msg.status == "error" and msg.content == "bad order"
    assert kinds(a) == ["reserve", "commit", "reserve", "release"]
    assert (risk(a).spent, risk(a).reserved) == (5, 0)


@tool
def strict(n: int) -> str:
    """Takes an integer."""
    ran.append(("strict", n))
    return str(n)


strict.handle_validation_error = True


def test_input_the_tool_refuses_is_its_error_message_and_reserves_nothing() -> None:
    a = cycles.Authority.in_memory(FORMAT_POLICY)
    guarded = guard_tool(strict, a, subject=SUBJECT)
    want = strict.invoke(call("strict", {"n": "not a number"}))
    assert isinstance(want, ToolMessage) and want.status == "error"
    msg = guarded.invoke(call("strict", {"n": "not a number"}))
    assert msg == want
    assert guarded.invoke({"n": "nope"}) == strict.invoke({"n": "nope"}) == "Tool input validation error"
    # Refused by the tool's own parsing before the gate: nothing reserved, nothing ran.
    assert ran == [] and kinds(a) == []


@tool
def deploy_report(x: int, tool_call_id: Annotated[str, InjectedToolCallId]) -> ToolMessage:
    """Deploys; reports a failure as its own error ToolMessage."""
    ran.append(("deploy_report", x))
    if x < 0:
        return ToolMessage(f"deploy {x} failed: quota", tool_call_id=tool_call_id, status="error")
    return ToolMessage(f"deployed {x}", tool_call_id=tool_call_id)


@tool
def report_plain(x: int) -> ToolMessage:
    """Reports a failure as an error ToolMessage, whatever it is invoked with."""
    ran.append(("report_plain", x))
    return ToolMessage(f"failed {x}", tool_call_id="own", status="error")


REPORT_POLICY: dict[str, Any] = {
    "tools": [{"name": "deploy_report", "tier": 2}, {"name": "report_plain", "tier": 2}],
    "budgets": POLICY["budgets"],
}


def test_a_tool_returning_its_own_error_tool_message_is_settled_failed() -> None:
    a = cycles.Authority.in_memory(REPORT_POLICY)
    guarded = guard_tool(deploy_report, a, subject=SUBJECT)
    want = deploy_report.invoke(call("deploy_report", {"x": -1}))
    ran.clear()
    msg = guarded.invoke(call("deploy_report", {"x": -1}))
    assert msg == want and msg.status == "error" and ran == [("deploy_report", -1)]
    # The tool reported an error: FAILED, released under the default on_failure.
    assert kinds(a) == ["reserve", "release"] and (risk(a).spent, risk(a).reserved) == (0, 0)
    ok = guarded.invoke(call("deploy_report", {"x": 1}, id="call_2"))
    assert ok.status == "success" and kinds(a)[-1] == "commit" and risk(a).spent == 5
    # Invoked with plain input, a returned error ToolMessage is FAILED too; also via ainvoke.
    assert guard_tool(report_plain, a, subject=SUBJECT).invoke({"x": 2}).status == "error"
    assert asyncio.run(guarded.ainvoke(call("deploy_report", {"x": -3}, id="call_3"))).status == "error"
    assert kinds(a)[-4:] == ["reserve", "release", "reserve", "release"] and risk(a).spent == 5


def test_a_returned_error_tool_message_is_charged_under_on_failure_charge() -> None:
    a = cycles.Authority.in_memory({**REPORT_POLICY, "defaults": {"on_failure": "CHARGE"}})
    seen: list[Any] = []
    guarded = guard_tool(deploy_report, a, subject=SUBJECT, actual=seen.append)
    assert guarded.invoke(call("deploy_report", {"x": -1})).status == "error"
    assert seen == []  # FAILED: what was held is charged, `actual` is not asked
    assert kinds(a) == ["reserve", "commit"] and (risk(a).spent, risk(a).reserved) == (5, 0)


def test_changes_to_the_wrapped_tool_after_a_call_are_seen() -> None:
    @tool
    def run_sql(query: str) -> str:  # noqa: F811 - a fresh tool this test changes
        """Run SQL."""
        ran.append(("run_sql", query))
        if query == "bad":
            raise ToolException(f"syntax error in {query}")
        return "rows"

    a = cycles.Authority.in_memory(POLICY)
    guarded = guard_tool(run_sql, a, subject=SUBJECT)
    assert guarded.invoke(call("run_sql", {"query": "ok"})).content == "rows"
    with pytest.raises(ToolException):  # no handler yet: the error propagates
        guarded.invoke(call("run_sql", {"query": "bad"}, id="call_2"))
    run_sql.handle_tool_error = lambda e: f"handled: {e}"
    msg = guarded.invoke(call("run_sql", {"query": "bad"}, id="call_3"))
    assert (msg.content, msg.status) == ("handled: syntax error in bad", "error")
    assert asyncio.run(guarded.ainvoke({"query": "bad"})) == "handled: syntax error in bad"
    # The handler enabled after the first call turns the error into output: still FAILED.
    assert kinds(a) == ["reserve", "commit"] + ["reserve", "release"] * 3
    assert (risk(a).spent, risk(a).reserved) == (5, 0)


SQL_POLICY: dict[str, Any] = {
    "tools": [{"name": "run_sql", "tier": 1, "classifier": "sql", "arg": "q.sql"}],
    "budgets": [{"scope": "agent:bot", "unit": "RISK_POINTS", "allocated": 100}],
}


def test_the_tool_runs_on_the_nested_input_that_was_classified_not_the_callers_objects() -> None:
    # Review 15 finding 2 (TOCTOU): another task changes a nested dict of the caller's input
    # while the async reserve is in flight; the tool must run the classified SELECT, never DROP.
    a = cycles.Authority.in_memory(SQL_POLICY)

    @tool
    async def run_sql_nested(q: dict) -> str:  # type: ignore[type-arg]
        """Run SQL."""
        return f"ran {q['sql']}"

    g = guard_tool(run_sql_nested, a, subject={"agent": "bot"}, name="run_sql")

    q = {"sql": "SELECT 1"}

    async def main() -> list[Any]:
        denied = await g.ainvoke({"q": {"sql": "DROP TABLE users"}})
        out = []
        for tool_input in ({"q": q}, {"name": "run_sql_nested", "args": {"q": q}, "id": "c1", "type": "tool_call"}):
            q["sql"] = "SELECT 1"
            n = len(a.audit())
            task = asyncio.create_task(g.ainvoke(tool_input))
            while len(a.audit()) == n:  # the reserve is recorded: SELECT 1 was classified
                await asyncio.sleep(0)
            q["sql"] = "DROP TABLE users"
            out.append(await task)
        return [denied, *out]

    denied, plain, message = asyncio.run(main())
    assert "APPROVAL_REQUIRED" in denied
    # The grant is bound to this exact call: the model is told to retry it once approved (as the
    # MCP gate and the Claude Code hook say), not to give it up.
    request_id = next(r for r in a.audit() if r.kind == "approval_requested").detail["approval_request_id"]
    assert f"Approval request {request_id} awaits an approver; retry this exact call once it is approved" in denied
    assert "Do not retry" not in denied
    assert plain == "ran SELECT 1"
    assert isinstance(message, ToolMessage) and message.content == "ran SELECT 1"
    assert [r.kind for r in a.audit()] == ["budget_set", "approval_requested", "denial", "reserve", "commit", "reserve", "commit"]
    assert q == {"sql": "DROP TABLE users"}  # the caller's own object, as the caller left it
