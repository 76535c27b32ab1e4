"""LangChain integration: gate any ``BaseTool`` (including ``@tool`` functions).

    from cycles.integrations.langchain import guard_tool

    safe = guard_tool(run_sql, auth, subject={"tenant": "acme", "agent": "coder"})
    safe.invoke({"query": "SELECT 1"})          # reserve -> run -> settle COMPLETED

Invoking the returned tool reserves the call with the authority before the wrapped tool runs,
then settles the reservation by how the tool ended (the core decides what each ending costs):
returned is ``COMPLETED`` (committed), raised an error is ``FAILED`` (released, or charged
under the policy's ``[defaults] on_failure = "CHARGE"``), cancelled or timed out is
``INTERRUPTED`` (charged: it may have acted). A DENY does not run the tool: by default
the tool's output is a message the model can read (a ``ToolMessage`` with ``status="error"``
when invoked with a tool call), so the agent loop continues; ``on_deny="raise"`` raises
``cycles.Denied`` instead. Any other failure of the gate (arguments the core cannot take, a
broken ledger or policy, a bug) is handled the same way: the tool does not run and the model
reads why (``on_deny="raise"`` raises the error).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Literal, Mapping, Optional, Sequence, Union

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import patch_config
from langchain_core.tools import BaseTool, ToolException
from langchain_core.tools.base import FILTERED_ARGS

from .._cycles import Authority, Denied
from .._guard import _areserve, _finish, _raised
from ._common import DenyMessage, jsonable, message_for, settle_ran

__all__ = ["CyclesDeniedToolException", "CyclesGateToolException", "CyclesGuardedTool", "guard_tool"]

Amounts = Union[Mapping[str, int], Sequence[Mapping[str, Any]]]


class CyclesDeniedToolException(ToolException):
    """A denial turned into a tool error the model reads; ``.denied`` is the original."""

    def __init__(self, message: str, denied: Denied) -> None:
        super().__init__(message)
        self.denied = denied


class CyclesGateToolException(ToolException):
    """The gate failed (not a denial) and the tool did not run; ``.error`` is the original."""

    def __init__(self, message: str, error: Exception) -> None:
        super().__init__(message)
        self.error = error


def _injected(value: Any) -> Any:
    """The classified form of a value given for an injected argument.

    LangChain hides injected arguments from the model's schema but does not stop a tool call
    from carrying one: a value the model supplied reaches the tool. So whatever is JSON data
    is classified as it is (a value JSON cannot carry, such as a NaN or an integer beyond 64
    bits, goes to the core and is refused there: the call does not run). Only a value no
    JSON tool call can produce, a runtime object (``ToolRuntime``, a store, a callback
    handler), is classified as a placeholder naming its type.
    """
    data = jsonable(value)
    try:
        json.dumps(data)
    except TypeError:
        return f"<injected {type(value).__name__}>"
    return data


def _handle_denial_only(e: ToolException) -> str:
    # Only our refusals become model-readable output here. A ToolException from the wrapped
    # tool already went through that tool's own `handle_tool_error` and was meant to raise.
    if isinstance(e, (CyclesDeniedToolException, CyclesGateToolException)):
        return str(e.args[0])
    raise e


class CyclesGuardedTool(BaseTool):
    """A LangChain tool that runs ``inner`` only after the authority reserves the call."""

    inner: BaseTool
    authority: Any
    subject: dict[str, Any]
    estimate: Optional[Any] = None
    cycles_tool: str
    on_deny: Literal["message", "raise"] = "message"
    deny_message: Optional[Callable[[Denied, str], str]] = None
    actual: Optional[Callable[[Any], Optional[Amounts]]] = None

    def _classified_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            if len(args) == 1:
                # A string input: LangChain runs the tool with it as its first argument (the
                # first field of the schema), so that is the argument classified.
                fields = list(self.inner.args)
                return {fields[0] if fields else "input": jsonable(args[0])}
            return jsonable(list(args))
        # Everything the tool will run with is classified, including keys a JSON-schema tool
        # passes through without declaring them and injected arguments (hidden from the
        # model's schema, but a tool call may still carry them: fail closed). Only LangChain's
        # own plumbing (run manager, callbacks) is left out, and runtime objects no tool call
        # can carry are named by their type (see `_injected`).
        visible = self.inner._filter_injected_args(kwargs)
        return {
            k: jsonable(v) if k in visible else _injected(v)
            for k, v in kwargs.items()
            if k in visible or k not in FILTERED_ARGS
        }

    def _refused(self, e: Exception) -> Any:
        if self.on_deny == "raise":
            raise e
        message = message_for(e, self.cycles_tool, self.deny_message)
        if isinstance(e, Denied):
            raise CyclesDeniedToolException(message, e) from e
        raise CyclesGateToolException(message, e) from e

    def _inner_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return args[0] if args else kwargs

    def _run(
        self,
        *args: Any,
        config: RunnableConfig,
        run_manager: Optional[CallbackManagerForToolRun] = None,
        **kwargs: Any,
    ) -> Any:
        try:
            r = self.authority.reserve(
                self.cycles_tool,
                self._classified_args(args, kwargs),
                subject=self.subject,
                estimate=self.estimate,
            )
        except Exception as e:  # a denial, or any failure of the gate: the tool does not run
            return self._refused(e)
        child = patch_config(config, callbacks=run_manager.get_child() if run_manager else None)
        try:
            result = self.inner.invoke(self._inner_input(args, kwargs), child)
        except BaseException as exc:
            _raised(r, exc)
            raise
        settle_ran(r, self.actual, result, self.cycles_tool)
        return result

    async def _arun(
        self,
        *args: Any,
        config: RunnableConfig,
        run_manager: Optional[AsyncCallbackManagerForToolRun] = None,
        **kwargs: Any,
    ) -> Any:
        try:
            r = await _areserve(
                self.authority,
                self.cycles_tool,
                self._classified_args(args, kwargs),
                subject=self.subject,
                estimate=self.estimate,
            )
        except Exception as e:  # a denial, or any failure of the gate: the tool does not run
            return self._refused(e)
        child = patch_config(config, callbacks=run_manager.get_child() if run_manager else None)
        try:
            result = await self.inner.ainvoke(self._inner_input(args, kwargs), child)
        except BaseException as exc:
            await _finish(_raised, r, exc)
            raise
        await _finish(settle_ran, r, self.actual, result, self.cycles_tool)
        return result


def guard_tool(
    tool: BaseTool,
    authority: Authority,
    *,
    subject: Mapping[str, Any],
    estimate: Optional[Amounts] = None,
    name: Optional[str] = None,
    on_deny: Literal["message", "raise"] = "message",
    deny_message: Optional[DenyMessage] = None,
    actual: Optional[Callable[[Any], Optional[Amounts]]] = None,
) -> CyclesGuardedTool:
    """Wrap ``tool`` so that every invocation is reserved, run, then settled.

    ``name`` is the tool name the policy classifies (default: the LangChain tool's name);
    the model sees the same name, description and argument schema as before. ``actual``
    maps the tool's result to the amounts to charge (default: what was reserved).
    """
    return CyclesGuardedTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
        return_direct=tool.return_direct,
        handle_tool_error=_handle_denial_only,
        inner=tool,
        authority=authority,
        subject=dict(subject),
        estimate=estimate,
        cycles_tool=name or tool.name,
        on_deny=on_deny,
        deny_message=deny_message,
        actual=actual,
    )
