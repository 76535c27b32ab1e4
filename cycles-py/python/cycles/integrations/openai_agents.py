"""OpenAI Agents SDK integration: gate a ``FunctionTool`` (what ``@function_tool`` returns).

    from agents import function_tool
    from cycles.integrations.openai_agents import guard_function_tool

    @function_tool
    def delete_volume(volume_id: str) -> str: ...

    safe = guard_function_tool(delete_volume, auth, subject={"agent": "ops"})
    agent = Agent(name="ops", tools=[safe])

The returned tool has the same name, description and JSON schema. Arguments the tool's schema
refuses (invalid JSON, a pydantic validation error: the function would never run) reserve
nothing: the model reads the SDK's message for them, as without the guard (or the SDK's error is
raised with ``failure_error_function=None``). Any other invocation reserves the
call (its JSON arguments are the classified ``args``), prepares the arguments once more with the
SDK's preparation (a refusal now, from a validator that answers differently, is ``NOT_STARTED``:
released, the function never ran; accepted arguments are handed to the SDK's invoker, which does
not validate them again) and runs the original tool, then
settles it by how the tool ended (the core decides what each ending costs): returned is
``COMPLETED`` (committed), raised an error is ``FAILED`` (released, or charged under the
policy's ``[defaults] on_failure = "CHARGE"``), including an error the SDK turned into the
tool's output through its ``failure_error_function`` (the default for ``@function_tool``: the
model reads the same text as without the guard), cancelled or timed out is ``INTERRUPTED``
(charged: it may have acted). A DENY does not run the tool: by default the model
receives a message saying why (the SDK sends a tool's string result back to the model), and
``on_deny="raise"`` raises ``cycles.Denied`` to stop the run instead. Any other failure of the
gate (arguments the core cannot take, a broken ledger or policy, a bug) is handled the same way:
the tool does not run and the model reads why (``on_deny="raise"`` raises the error).

``input_guardrail(...)`` is the lighter form: a ``ToolInputGuardrail`` that asks ``decide``
(no hold, nothing committed) and rejects the call with the same message on DENY.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any, Callable, Literal, Mapping, Optional, Sequence, Union

from agents import FunctionTool, ToolGuardrailFunctionOutput, ToolInputGuardrail
from agents.exceptions import ModelBehaviorError
from agents.tool import (
    maybe_invoke_function_tool_failure_error_function,
    set_function_tool_failure_error_function,
)
from agents.tool_context import ToolContext
from agents.tool_guardrails import ToolInputGuardrailData

from .._cycles import Authority, Denied
from .._guard import _areserve, _finish, _raised, _settle_quietly
from ._common import DenyMessage, message_for, settle_ran

__all__ = ["guard_function_tool", "input_guardrail"]

Amounts = Union[Mapping[str, int], Sequence[Mapping[str, Any]]]


def _arguments(raw: str) -> Any:
    # The model's arguments as JSON; an empty string is a call without arguments. Malformed
    # JSON is classified as the raw string, so it is still gated rather than skipped.
    if not raw or not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return {"raw_arguments": raw}


def _parser(tool: FunctionTool, input: str, tool_name: str) -> Optional[Callable[[str, str], Any]]:
    """The SDK's argument preparation for ``tool`` (parse the JSON, validate it with the
    tool's pydantic model, the first step of every invocation), or ``None`` when the tool
    gives no way to run it apart from the call.

    ``@function_tool``'s invoker exposes it as ``prepare_arguments``, whose result's ``owner``
    is the function that prepares the arguments of an invocation; its result, handed to the
    invocation through ``ToolContext._function_tool_arguments``, is accepted by the SDK's
    invoker instead of preparing them again.
    """
    prepare = getattr(tool.on_invoke_tool, "prepare_arguments", None)
    if not callable(prepare):
        return None
    try:
        parse = getattr(prepare(input, tool_name), "owner", None)
    except Exception:
        return None
    return parse if callable(parse) else None


def _refused(tool: FunctionTool, input: str, tool_name: str) -> Optional[ModelBehaviorError]:
    """The SDK's own error for arguments the tool's schema refuses (invalid JSON, a pydantic
    validation error), found before anything is reserved; ``None`` when they are accepted or
    the tool gives no way to check them first. Only the SDK's ``ModelBehaviorError`` counts as
    a refusal; the tool's function is not called."""
    parse = _parser(tool, input, tool_name)
    if parse is None:
        return None
    try:
        parse(input, tool_name)
    except ModelBehaviorError as e:
        return e
    except Exception:  # not a refusal the SDK names: the invocation decides, under the gate
        return None
    return None


async def _refusal_output(tool: FunctionTool, ctx: ToolContext[Any], refused: ModelBehaviorError) -> Any:
    # What the SDK gives for a refusal of the arguments: its failure function's text, or the
    # error raised when the tool has none.
    out = await maybe_invoke_function_tool_failure_error_function(
        function_tool=tool, context=ctx, error=refused
    )
    if out is None:
        raise refused
    return out


def _observing(tool: FunctionTool, handled: list[Exception]) -> FunctionTool:
    """A copy of ``tool`` whose failure function notes in ``handled`` when it fires.

    ``@function_tool`` catches the tool's exception inside ``on_invoke_tool`` and returns its
    ``failure_error_function``'s text instead (by default "An error occurred while running
    the tool..."), so the caller cannot tell it from a result. The copy's failure function
    records the error, then gives exactly what the SDK gives for the original tool (its own
    failure function, the default one with the run's ``tool_error_formatter``, or none: the
    error is raised), so the model reads the same text.
    """

    async def noting(ctx: Any, error: Exception) -> Any:
        out = await maybe_invoke_function_tool_failure_error_function(
            function_tool=tool, context=ctx, error=error
        )
        if out is not None:
            handled.append(error)
        return out

    # FunctionTool.__copy__ binds the SDK's invoker to the copy, so it asks the copy's
    # failure function.
    return set_function_tool_failure_error_function(copy.copy(tool), noting)


def guard_function_tool(
    tool: FunctionTool,
    authority: Authority,
    *,
    subject: Mapping[str, Any],
    estimate: Optional[Amounts] = None,
    name: Optional[str] = None,
    on_deny: Literal["message", "raise"] = "message",
    deny_message: Optional[DenyMessage] = None,
    actual: Optional[Callable[[Any], Optional[Amounts]]] = None,
) -> FunctionTool:
    """A copy of ``tool`` whose invocation goes through reserve -> run -> settle.

    ``name`` is the tool name the policy classifies (default: the tool's name). ``actual``
    maps the tool's output to the amounts to charge (default: what was reserved); it is not
    called for a call settled ``FAILED`` (a tool that raised, or whose failure function turned
    its error into output).
    """
    cycles_tool = name or tool.name
    subject = dict(subject)

    async def on_invoke_tool(ctx: ToolContext[Any], input: str) -> Any:
        refused = _refused(tool, input, ctx.tool_name)
        if refused is not None:
            # The function would never run: nothing is reserved, and the model reads what the
            # SDK gives for this error (its failure function's text), or the error is raised.
            return await _refusal_output(tool, ctx, refused)
        try:
            r = await _areserve(
                authority, cycles_tool, _arguments(input), subject=subject, estimate=estimate
            )
        except Exception as e:  # a denial, or any failure of the gate: the tool does not run
            if on_deny == "raise":
                raise
            return message_for(e, cycles_tool, deny_message)
        # The arguments are prepared here, once, under the reservation, and handed to the
        # SDK's invoker (which then does not prepare them again): the tool's validators can
        # answer differently from the pre-check, and a refusal now is still the SDK's refusal
        # of the arguments, before the function ran: NOT_STARTED (released, whatever
        # `on_failure` says), and the model reads what the SDK gives for it.
        parse = _parser(tool, input, ctx.tool_name)
        prepared: Any = None
        if parse is not None:
            try:
                prepared = parse(input, ctx.tool_name)
            except ModelBehaviorError as e:
                await _finish(
                    _settle_quietly, r, "NOT_STARTED", f"the SDK refused the tool's arguments: {e}"
                )
                return await _refusal_output(tool, ctx, e)
            except Exception:  # not a refusal the SDK names: the invocation prepares them itself
                prepared = None
            except BaseException:  # interrupted while preparing: the function did not start
                await _finish(
                    _settle_quietly, r, "NOT_STARTED", "interrupted while preparing the tool's arguments"
                )
                raise
        handled: list[Exception] = []
        try:
            if prepared is not None:
                ctx._function_tool_arguments = prepared
            result = await _observing(tool, handled).on_invoke_tool(ctx, input)
        except BaseException as exc:
            await _finish(_raised, r, exc)
            raise
        if handled:  # the tool raised and its failure function made the error its output
            await _finish(_raised, r, handled[-1])
        else:
            await _finish(settle_ran, r, actual, result, cycles_tool)
        return result

    # FunctionTool.__copy__ keeps the SDK's own normalisation; only the invoker changes.
    guarded = copy.copy(tool)
    guarded.on_invoke_tool = on_invoke_tool
    return guarded


def input_guardrail(
    authority: Authority,
    *,
    subject: Mapping[str, Any],
    estimate: Optional[Amounts] = None,
    deny_message: Optional[DenyMessage] = None,
) -> ToolInputGuardrail[Any]:
    """A tool input guardrail that asks the authority's ``decide`` before a tool runs.

    It holds nothing and commits nothing (use ``guard_function_tool`` for budgets that are
    charged); on DENY the call is rejected and the model reads why.
    """
    subject = dict(subject)

    async def cycles_decide(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        ctx = data.context
        try:
            d = await authority.adecide(
                ctx.tool_name, _arguments(ctx.tool_arguments), subject=subject, estimate=estimate
            )
        except Exception as e:  # the gate failed: the call is rejected, never let through
            return ToolGuardrailFunctionOutput.reject_content(
                message_for(e, ctx.tool_name, deny_message), output_info={"error": str(e)}
            )
        if d.allowed:
            return ToolGuardrailFunctionOutput.allow(output_info=d.to_dict())
        denied = Denied(f"denied: {d.reason_code}")
        denied.code = d.reason_code or "DENIED"
        denied.reason_code = d.reason_code
        denied.decision = d
        return ToolGuardrailFunctionOutput.reject_content(
            message_for(denied, ctx.tool_name, deny_message), output_info=d.to_dict()
        )

    return ToolInputGuardrail(guardrail_function=cycles_decide, name="cycles_decide")
