"""The OpenAI Agents SDK integration against the real openai-agents package.

Tools are invoked through the SDK's own machinery: ``agents.tool.invoke_function_tool`` with a
real ``ToolContext``, and a whole ``Runner.run`` agent loop driven by the SDK's own scripted
test model (``agents.testing.ScriptedModel``), so no LLM is called and nothing leaves the
machine (tracing disabled)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from agents import Agent, FunctionTool, RunConfig, Runner, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call
from agents.tool import invoke_function_tool
from agents.tool_context import ToolContext
from pydantic import BaseModel, field_validator

import cycles
from cycles.integrations.openai_agents import guard_function_tool, input_guardrail

POLICY: dict[str, Any] = {
    "tools": [
        {"name": "read_file", "tier": 0},
        {"name": "flaky", "tier": 2},
        {"name": "delete_volume", "tier": 4},
    ],
    "budgets": [{"scope": "tenant:acme/agent:ops", "unit": "RISK_POINTS", "allocated": 30}],
}
SUBJECT = {"tenant": "acme", "agent": "ops"}
NO_TRACING = RunConfig(tracing_disabled=True)

ran: list[Any] = []


@function_tool
def read_file(path: str) -> str:
    """Read a file."""
    ran.append(("read_file", path))
    return f"contents of {path}"


@function_tool
def delete_volume(volume_id: str) -> str:
    """Delete a volume and everything on it."""
    ran.append(("delete_volume", volume_id))
    return "deleted"


@function_tool(failure_error_function=None)
def flaky(n: int) -> str:
    """Fails."""
    ran.append(("flaky", n))
    raise RuntimeError("backend exploded")


@pytest.fixture(autouse=True)
def clear() -> None:
    ran.clear()


@pytest.fixture
def auth() -> cycles.Authority:
    return cycles.Authority.in_memory(POLICY)


def risk(a: cycles.Authority) -> cycles.Balance:
    [b] = a.balances("tenant:acme/agent:ops")
    return b


def invoke(tool: FunctionTool, args: dict[str, Any]) -> Any:
    raw = json.dumps(args)
    ctx = ToolContext(context=None, tool_name=tool.name, tool_call_id="call_1", tool_arguments=raw)
    return asyncio.run(invoke_function_tool(function_tool=tool, context=ctx, arguments=raw))


def test_the_guarded_tool_is_the_same_tool_to_the_model(auth: cycles.Authority) -> None:
    guarded = guard_function_tool(read_file, auth, subject=SUBJECT)
    assert isinstance(guarded, FunctionTool) and guarded is not read_file
    assert (guarded.name, guarded.description, guarded.params_json_schema) == (
        read_file.name, read_file.description, read_file.params_json_schema,
    )
    assert read_file.on_invoke_tool is not guarded.on_invoke_tool  # the original is untouched


def test_allowed_call_runs_and_commits(auth: cycles.Authority) -> None:
    out = invoke(guard_function_tool(read_file, auth, subject=SUBJECT), {"path": "a.txt"})
    assert out == "contents of a.txt" and ran == [("read_file", "a.txt")]
    assert [r.kind for r in auth.audit()][-2:] == ["reserve", "commit"]
    probe = auth.reserve("read_file", {"path": "a.txt"}, subject=SUBJECT)
    assert probe.call_digest == auth.audit(kinds=["reserve"])[0].call_digest
    probe.release()


def test_denied_call_returns_a_message_and_never_runs(auth: cycles.Authority) -> None:
    out = invoke(guard_function_tool(delete_volume, auth, subject=SUBJECT), {"volume_id": "vol_prod"})
    assert "BUDGET_EXCEEDED" in out and "delete_volume" in out and ran == []
    assert auth.audit()[-1].kind == "denial" and risk(auth).reserved == 0


def test_on_deny_raise(auth: cycles.Authority) -> None:
    guarded = guard_function_tool(delete_volume, auth, subject=SUBJECT, on_deny="raise")
    with pytest.raises(cycles.Denied) as e:
        invoke(guarded, {"volume_id": "v"})
    assert e.value.reason_code == "BUDGET_EXCEEDED" and ran == []


def test_a_raising_tool_releases(auth: cycles.Authority) -> None:
    with pytest.raises(RuntimeError, match="backend exploded"):
        invoke(guard_function_tool(flaky, auth, subject=SUBJECT), {"n": 1})
    assert ran == [("flaky", 1)]
    assert (risk(auth).spent, risk(auth).reserved) == (0, 0)
    assert auth.audit()[-1].kind == "release"


def test_agent_loop_the_model_reads_the_denial(auth: cycles.Authority) -> None:
    tools = [guard_function_tool(t, auth, subject=SUBJECT) for t in (read_file, delete_volume)]
    model = ScriptedModel([
        [function_call("read_file", {"path": "plan.md"}, call_id="c1")],
        [function_call("delete_volume", {"volume_id": "vol_prod_main"}, call_id="c2")],
        [assistant_message("I could not delete the volume.")],
    ])
    agent = Agent(name="ops", instructions="You operate infrastructure.", model=model, tools=tools)
    result = asyncio.run(Runner.run(agent, "clean up prod", run_config=NO_TRACING))

    assert result.final_output == "I could not delete the volume."
    assert ran == [("read_file", "plan.md")]  # the deletion never reached the tool
    outputs = {
        item["call_id"]: item["output"]
        for item in model.calls[2].input
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    }
    assert outputs["c1"] == "contents of plan.md"
    assert "BUDGET_EXCEEDED" in outputs["c2"] and "delete_volume" in outputs["c2"]
    assert [r.kind for r in auth.audit()] == ["budget_set", "reserve", "commit", "denial"]
    assert auth.verify().ok


def test_input_guardrail_rejects_on_deny(auth: cycles.Authority) -> None:
    guardrail = input_guardrail(auth, subject=SUBJECT)

    @function_tool(tool_input_guardrails=[guardrail])
    def delete_volume(volume_id: str) -> str:  # noqa: F811 - the same tool, with a guardrail
        """Delete a volume."""
        ran.append(("delete_volume", volume_id))
        return "deleted"

    @function_tool(tool_input_guardrails=[guardrail])
    def read_file(path: str) -> str:  # noqa: F811
        """Read a file."""
        ran.append(("read_file", path))
        return "text"

    model = ScriptedModel([
        [function_call("delete_volume", {"volume_id": "v"}, call_id="c1"),
         function_call("read_file", {"path": "p"}, call_id="c2")],
        [assistant_message("done")],
    ])
    agent = Agent(name="ops", model=model, tools=[delete_volume, read_file])
    result = asyncio.run(Runner.run(agent, "go", run_config=NO_TRACING))
    assert result.final_output == "done"
    assert ran == [("read_file", "p")]
    outputs = {
        item["call_id"]: item["output"]
        for item in model.calls[1].input
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    }
    assert "BUDGET_EXCEEDED" in outputs["c1"] and outputs["c2"] == "text"
    # decide holds nothing: both decisions are recorded, no reservation was made.
    assert [r.kind for r in auth.audit()] == ["budget_set", "decide", "decide"]
    assert risk(auth).reserved == 0


def test_a_raising_tool_is_charged_under_on_failure_charge() -> None:
    # The integration says FAILED; the policy's `[defaults] on_failure` decides the cost.
    a = cycles.Authority.in_memory({**POLICY, "defaults": {"on_failure": "CHARGE"}})
    with pytest.raises(RuntimeError, match="backend exploded"):
        invoke(guard_function_tool(flaky, a, subject=SUBJECT), {"n": 1})
    assert ran == [("flaky", 1)]
    assert (risk(a).spent, risk(a).reserved) == (5, 0)
    assert [r.kind for r in a.audit()][-2:] == ["reserve", "commit"]


@function_tool
def quota(n: int) -> str:
    """Fails; @function_tool's default failure function turns the error into output."""
    ran.append(("quota", n))
    raise RuntimeError("quota exceeded")


@function_tool(failure_error_function=lambda ctx, e: f"tool failed: {e}")
def quota_custom(n: int) -> str:
    """Fails; its own failure function turns the error into output."""
    ran.append(("quota_custom", n))
    raise RuntimeError("quota exceeded")


@pytest.mark.parametrize("tool", [quota, quota_custom], ids=["default", "custom"])
def test_an_error_the_failure_function_turned_into_output_is_failed(
    auth: cycles.Authority, tool: FunctionTool
) -> None:
    unguarded = invoke(tool, {"n": 1})
    assert unguarded in ("An error occurred while running the tool. Please try again.",
                         "tool failed: quota exceeded")
    ran.clear()
    out = invoke(guard_function_tool(tool, auth, subject=SUBJECT, name="flaky"), {"n": 1})
    assert out == unguarded  # the model reads what the SDK gives without the guard
    assert ran == [(tool.name, 1)]
    # FAILED under the default policy (on_failure = RELEASE): released, nothing charged.
    assert (risk(auth).spent, risk(auth).reserved) == (0, 0)
    assert [r.kind for r in auth.audit()][-2:] == ["reserve", "release"]


def test_an_error_the_failure_function_turned_into_output_is_charged_under_on_failure_charge() -> None:
    a = cycles.Authority.in_memory({**POLICY, "defaults": {"on_failure": "CHARGE"}})
    seen: list[Any] = []
    guarded = guard_function_tool(quota, a, subject=SUBJECT, name="flaky", actual=seen.append)
    out = invoke(guarded, {"n": 1})
    assert out == "An error occurred while running the tool. Please try again."
    assert seen == []  # FAILED: charged what was held, `actual` (for a result) is not asked
    assert (risk(a).spent, risk(a).reserved) == (5, 0)
    assert [r.kind for r in a.audit()][-2:] == ["reserve", "commit"]


def test_the_failure_function_in_an_agent_loop(auth: cycles.Authority) -> None:
    # Through Runner.run: the model gets the SDK's error text, the call is released.
    model = ScriptedModel([
        [function_call("quota", {"n": 2}, call_id="c1")],
        [assistant_message("it failed")],
    ])
    guarded = guard_function_tool(quota, auth, subject=SUBJECT, name="flaky")
    agent = Agent(name="ops", model=model, tools=[guarded])
    result = asyncio.run(Runner.run(agent, "go", run_config=NO_TRACING))
    assert result.final_output == "it failed" and ran == [("quota", 2)]
    outputs = {
        item["call_id"]: item["output"]
        for item in model.calls[1].input
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    }
    assert outputs["c1"] == "An error occurred while running the tool. Please try again."
    assert [r.kind for r in auth.audit()] == ["budget_set", "reserve", "release"]
    assert (risk(auth).spent, risk(auth).reserved) == (0, 0)


def invoke_raw(tool: FunctionTool, raw: str) -> Any:
    ctx = ToolContext(context=None, tool_name=tool.name, tool_call_id="call_1", tool_arguments=raw)
    try:
        return asyncio.run(invoke_function_tool(function_tool=tool, context=ctx, arguments=raw))
    except Exception as e:
        return ("raised", type(e).__name__, str(e))


@pytest.mark.parametrize("tool", [quota, quota_custom, flaky], ids=["default", "custom", "none"])
@pytest.mark.parametrize("raw", ['{"n": "not a number"}', '{"n": 1'], ids=["invalid", "not-json"])
def test_arguments_the_schema_refuses_reserve_nothing_under_on_failure_charge(
    tool: FunctionTool, raw: str
) -> None:
    # Review 14 finding 4: the function never runs, so nothing is reserved or charged, even
    # under CHARGE; the model reads what the SDK gives without the guard (or the SDK's
    # ModelBehaviorError is raised with failure_error_function=None).
    a = cycles.Authority.in_memory({**POLICY, "defaults": {"on_failure": "CHARGE"}})
    unguarded = invoke_raw(tool, raw)
    out = invoke_raw(guard_function_tool(tool, a, subject=SUBJECT, name="flaky"), raw)
    assert out == unguarded
    if tool is flaky:
        assert out[:2] == ("raised", "ModelBehaviorError")
    assert ran == []
    assert [r.kind for r in a.audit()] == ["budget_set"]
    assert (risk(a).spent, risk(a).reserved) == (0, 0)
    # Accepted arguments are still gated and charged as before.
    invoke_raw(guard_function_tool(tool, a, subject=SUBJECT, name="flaky"), '{"n": 3}')  # it raises inside
    assert ran == [(tool.name, 3)] and (risk(a).spent, risk(a).reserved) == (5, 0)


def test_refused_arguments_in_an_agent_loop_reserve_nothing() -> None:
    a = cycles.Authority.in_memory({**POLICY, "defaults": {"on_failure": "CHARGE"}})
    model = ScriptedModel([
        [function_call("quota_custom", {"n": "many"}, call_id="c1")],
        [assistant_message("bad arguments")],
    ])
    guarded = guard_function_tool(quota_custom, a, subject=SUBJECT, name="flaky")
    agent = Agent(name="ops", model=model, tools=[guarded])
    result = asyncio.run(Runner.run(agent, "go", run_config=NO_TRACING))
    assert result.final_output == "bad arguments" and ran == []
    outputs = {
        item["call_id"]: item["output"]
        for item in model.calls[1].input
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    }
    assert outputs["c1"].startswith("tool failed: Invalid JSON input for tool quota_custom")
    assert [r.kind for r in a.audit()] == ["budget_set"]
    assert (risk(a).spent, risk(a).reserved) == (0, 0)



# The answers the validator of `Target` gives, one per validation (then: valid).
answers: list[bool] = []
validated: list[str] = []


class Target(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def resolve(cls, v: str) -> str:  # user code, e.g. a lookup in an inventory
        validated.append(v)
        if answers and not answers.pop(0):
            raise ValueError("stale inventory")
        return v


@function_tool(name_override="flaky")
def deploy(t: Target) -> str:
    """Deploy."""
    ran.append(("deploy", t.name))
    return "deployed"


def test_arguments_refused_inside_the_reserved_call_are_not_started_under_on_failure_charge() -> None:
    # Review 15 finding 7: the tool's validator (user code) answers differently the second
    # time, so the pre-check passes and the SDK refuses the arguments after the reserve. The
    # function never ran: NOT_STARTED (released), not FAILED (charged under CHARGE).
    a = cycles.Authority.in_memory({**POLICY, "defaults": {"on_failure": "CHARGE"}})
    validated.clear()
    answers[:] = [True, False]
    out = invoke(guard_function_tool(deploy, a, subject=SUBJECT), {"t": {"name": "web"}})
    assert "error occurred" in str(out)  # the SDK's failure-function text for the refusal
    assert validated == ["web", "web"] and ran == []
    assert risk(a).spent == 0 and risk(a).reserved == 0
    assert [r.kind for r in a.audit()][-2:] == ["reserve", "release"]
    # Valid under the reservation: the SDK's invoker runs the function with the arguments
    # prepared there and does not validate them a third time.
    validated.clear()
    answers[:] = [True, True, False]
    assert invoke(guard_function_tool(deploy, a, subject=SUBJECT), {"t": {"name": "web"}}) == "deployed"
    assert validated == ["web", "web"] and ran == [("deploy", "web")]
    assert risk(a).spent == 5 and [r.kind for r in a.audit()][-2:] == ["reserve", "commit"]
