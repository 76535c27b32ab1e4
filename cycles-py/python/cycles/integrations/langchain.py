"""LangChain integration: gate any ``BaseTool`` (including ``@tool`` functions).

    from cycles.integrations.langchain import guard_tool

    safe = guard_tool(run_sql, auth, subject={"tenant": "acme", "agent": "coder"})
    safe.invoke({"query": "SELECT 1"})          # reserve -> run -> settle COMPLETED

Invoking the returned tool reserves the call with the authority before the wrapped tool runs,
then settles the reservation by how the tool ended (the core decides what each ending costs):
returned is ``COMPLETED`` (committed), raised an error is ``FAILED`` (released, or charged
under the policy's ``[defaults] on_failure = "CHARGE"``), cancelled or timed out is
``INTERRUPTED`` (charged: it may have acted). A tool that turns its own error into its output
(``handle_tool_error``, or ``handle_validation_error`` for an error raised while it ran) raised
inside: the agent gets the tool's error message (``status="error"``) and the call is ``FAILED``;
so is a call whose tool returns its own ``ToolMessage(status="error")`` (or a ``Command``
whose update carries one for this call): the tool reported an error.
Invoked with a tool call, the guarded tool gives the agent exactly the ``ToolMessage`` the
wrapped tool gives (content, artifact, status). A DENY does not run the tool: by default
the tool's output is a message the model can read (a ``ToolMessage`` with ``status="error"``
when invoked with a tool call), so the agent loop continues; ``on_deny="raise"`` raises
``cycles.Denied`` instead. Any other failure of the gate (arguments the core cannot take, a
broken ledger or policy, a bug) is handled the same way: the tool does not run and the model
reads why (``on_deny="raise"`` raises the error).
"""

from __future__ import annotations

import asyncio
import json
from contextvars import ContextVar
from typing import Any, Callable, Literal, Mapping, Optional, Sequence, Union

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import patch_config
from langchain_core.tools import BaseTool, InjectedToolCallId, ToolException
from langchain_core.tools.base import (
    FILTERED_ARGS,
    _handle_tool_error,
    _handle_validation_error,
    _is_injected_arg_type,
    get_all_basemodel_annotations,
)

from .._cycles import Authority, Denied
from .._guard import _areserve, _finish, _raised, _settle_quietly, _snapshot
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


class _GuardedCall:
    """The guarded tool's input as LangChain received it, handed unparsed to ``_run``.

    LangChain parses a tool's input in ``_to_args_and_kwargs``; the guard replaces that step
    so that the wrapped tool parses the input itself (its own schema, its own injected
    arguments, the tool call id) and receives exactly what it would without the guard. No tool
    call can produce an instance of this class.

    ``tool_input`` is a private copy of the input (``_snapshot``, made before anything is
    awaited), and each parse gets its own copy of it: the parse that is classified and the
    parse the tool runs with share no container with the caller or with each other, so code
    that shares the caller's nested objects cannot change the call after it was classified.
    """

    __slots__ = ("tool_input", "tool_call_id")

    def __init__(self, tool_input: Union[str, dict[str, Any]], tool_call_id: Optional[str]) -> None:
        self.tool_input = _snapshot(tool_input)
        self.tool_call_id = tool_call_id

    def copy(self) -> Union[str, dict[str, Any]]:
        # A fresh deep copy for each parse: LangChain's parsing writes the tool call id into
        # the dict it is given, and a parse may keep (and the tool change) nested containers.
        copied: Union[str, dict[str, Any]] = _snapshot(self.tool_input)
        return copied


def _call_id_keys(tool: BaseTool) -> frozenset[str]:
    """The arguments LangChain fills with the tool call id when it runs ``tool``: fields of
    its schema annotated ``InjectedToolCallId``, and a ``tool_call_id`` parameter injected
    from its signature."""
    keys: set[str] = set()
    schema = tool.args_schema
    if schema is not None and not isinstance(schema, dict):
        for k, v in get_all_basemodel_annotations(schema).items():
            if _is_injected_arg_type(v, injected_type=InjectedToolCallId):
                keys.add(k)
    if "tool_call_id" in tool._injected_args_keys:
        keys.add("tool_call_id")
    return frozenset(keys)


# The errors the wrapped tool turned into its output during the current guarded call (see
# `_observing`); a fresh list is set for each call, so concurrent calls do not share one.
_handled: ContextVar[Optional[list[Exception]]] = ContextVar("cycles_langchain_handled", default=None)


def _noting(flag: Any, handle: Callable[..., Any]) -> Callable[[Any], Any]:
    """A handler that gives what LangChain gives for ``flag`` and notes that it was used."""

    def handler(e: Any) -> Any:
        seen = _handled.get()
        if seen is not None:
            seen.append(e)
        return handle(e, flag=flag)

    return handler


def _observing(tool: BaseTool) -> BaseTool:
    """``tool`` with its error handlers noting when they turn an error into output.

    LangChain catches a ``ToolException`` (``handle_tool_error``) or a ``ValidationError``
    (``handle_validation_error``) inside the tool and returns the handler's text as the tool's
    output, so the caller cannot tell it from a result (without a tool call the status is not
    even in the output). The guard runs a shallow copy whose handlers give the same text and
    record the error; a tool without handlers is run as it is.
    """
    update: dict[str, Any] = {}
    if tool.handle_tool_error:
        update["handle_tool_error"] = _noting(tool.handle_tool_error, _handle_tool_error)
    if tool.handle_validation_error:
        update["handle_validation_error"] = _noting(tool.handle_validation_error, _handle_validation_error)
    return tool.model_copy(update=update) if update else tool


def _error_messages(messages: Any, tool_call_id: Optional[str]) -> bool:
    if isinstance(messages, ToolMessage):
        messages = [messages]
    if not isinstance(messages, (list, tuple)):
        return False
    return any(
        isinstance(m, ToolMessage)
        and m.status == "error"
        and (tool_call_id is None or m.tool_call_id == tool_call_id)
        for m in messages
    )


def _reports_error(result: Any, tool_call_id: Optional[str]) -> bool:
    """Whether the tool's own output says it failed: a ``ToolMessage`` with
    ``status="error"`` (or a list of them holding one), or a ``Command`` (LangGraph) whose
    ``update`` carries such a message for this call (its ``messages``), as an error the
    tool's ``handle_tool_error`` turned into output would. The MCP gate reads an ``isError``
    result the same way."""
    if isinstance(result, ToolMessage):
        return result.status == "error"
    if isinstance(result, list):
        return _error_messages(result, None)
    update = getattr(result, "update", None)
    if isinstance(update, dict):
        return _error_messages(update.get("messages"), tool_call_id)
    if isinstance(update, (list, tuple)):  # (key, value) pairs
        return any(
            isinstance(kv, (list, tuple)) and len(kv) == 2 and kv[0] == "messages"
            and _error_messages(kv[1], tool_call_id)
            for kv in update
        )
    return False


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
    def _observed(self) -> BaseTool:
        # What the guard invokes: `inner`, its error handlers noting their use (`_observing`).
        # Made for each call, so later changes to `inner` (its handlers, callbacks, metadata,
        # response_format) are seen.
        return _observing(self.inner)

    def _classified_args(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], tool_call_id: Optional[str] = None
    ) -> Any:
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
        # can carry are named by their type (see `_injected`). The tool call id LangChain
        # injects (`InjectedToolCallId`) is left out too: it is the id of the call being
        # classified, not a choice of the model, and classifying it would give every call a
        # different digest (an approval granted for a call would never match its retry). An
        # argument for the id that holds any other value (a tool call that supplies it when
        # the schema does not declare it) is classified like any injected argument.
        visible = self.inner._filter_injected_args(kwargs)
        call_id = (
            _call_id_keys(self.inner) if tool_call_id is not None else frozenset()
        )
        return {
            k: jsonable(v) if k in visible else _injected(v)
            for k, v in kwargs.items()
            if (k in visible or k not in FILTERED_ARGS)
            and not (k in call_id and v == tool_call_id)
        }

    def _refused(self, e: Exception) -> Any:
        if self.on_deny == "raise":
            raise e
        message = message_for(e, self.cycles_tool, self.deny_message)
        if isinstance(e, Denied):
            raise CyclesDeniedToolException(message, e) from e
        raise CyclesGateToolException(message, e) from e

    def _to_args_and_kwargs(
        self, tool_input: Union[str, dict[str, Any]], tool_call_id: Optional[str]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        # LangChain calls this to turn the input into `_run`'s arguments; the guard passes the
        # input on unparsed, with the tool call id, so the wrapped tool parses it (see `_prepare`).
        return (_GuardedCall(tool_input, tool_call_id),), {}

    def _prepare(self, call: _GuardedCall) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        """What the wrapped tool will run with (to classify) and what it is invoked with.

        The arguments come from the wrapped tool's own parsing of the input, the step
        LangChain runs before the tool's function (it fills injected arguments and the tool
        call id, and raises for input the tool cannot take, as it would without the guard:
        nothing is reserved; a tool with ``handle_validation_error`` gives its message, as this
        tool carries the same setting). Invoked with a tool call, the wrapped tool is invoked
        with the tool call itself, as an agent invokes it: the id reaches a tool that takes it,
        and the wrapped tool makes the ``ToolMessage`` (its ``response_format``, its artifact,
        its status), which this tool passes on unchanged. Without a tool call it is invoked
        with the input alone.
        """
        args, kwargs = self.inner._to_args_and_kwargs(call.copy(), call.tool_call_id)
        inner_input: Any = call.copy()
        if call.tool_call_id is not None:
            inner_input = {
                "name": self.inner.name,
                "args": inner_input,
                "id": call.tool_call_id,
                "type": "tool_call",
            }
        return args, kwargs, inner_input

    def _run(
        self,
        call: _GuardedCall,
        *,
        config: RunnableConfig,
        run_manager: Optional[CallbackManagerForToolRun] = None,
    ) -> Any:
        args, kwargs, inner_input = self._prepare(call)
        try:
            r = self.authority.reserve(
                self.cycles_tool,
                self._classified_args(args, kwargs, call.tool_call_id),
                subject=self.subject,
                estimate=self.estimate,
            )
        except Exception as e:  # a denial, or any failure of the gate: the tool does not run
            return self._refused(e)
        child = patch_config(config, callbacks=run_manager.get_child() if run_manager else None)
        handled: list[Exception] = []
        token = _handled.set(handled)
        try:
            result = self._observed().invoke(inner_input, child)
        except BaseException as exc:
            _raised(r, exc)
            raise
        finally:
            _handled.reset(token)
        if handled:  # the tool raised inside and LangChain made its error the output: FAILED
            _raised(r, handled[-1])
        elif _reports_error(result, call.tool_call_id):  # the tool reported an error itself
            _settle_quietly(r, "FAILED", "the tool returned an error ToolMessage")
        else:
            settle_ran(r, self.actual, result, self.cycles_tool)
        return result

    async def _arun(
        self,
        call: _GuardedCall,
        *,
        config: RunnableConfig,
        run_manager: Optional[AsyncCallbackManagerForToolRun] = None,
    ) -> Any:
        args, kwargs, inner_input = self._prepare(call)
        try:
            r = await _areserve(
                self.authority,
                self.cycles_tool,
                self._classified_args(args, kwargs, call.tool_call_id),
                subject=self.subject,
                estimate=self.estimate,
            )
        except Exception as e:  # a denial, or any failure of the gate: the tool does not run
            return self._refused(e)
        child = patch_config(config, callbacks=run_manager.get_child() if run_manager else None)
        handled: list[Exception] = []
        token = _handled.set(handled)
        try:
            result = await self._observed().ainvoke(inner_input, child)
        except BaseException as exc:
            await _finish(_raised, r, exc)
            raise
        finally:
            _handled.reset(token)
        if handled:  # the tool raised inside and LangChain made its error the output: FAILED
            await _finish(_raised, r, handled[-1])
        elif _reports_error(result, call.tool_call_id):  # the tool reported an error itself
            await _finish(_settle_quietly, r, "FAILED", "the tool returned an error ToolMessage")
        else:
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
    maps the tool's result to the amounts to charge (default: what was reserved): invoked
    with a tool call, that result is what the agent gets, the ``ToolMessage`` the wrapped tool
    made (read ``.artifact`` for a ``response_format="content_and_artifact"`` tool) or its
    ``Command``; invoked with plain input, the tool's output. ``actual`` is not called for a
    call settled ``FAILED`` (a tool that raised, whose handler turned its error into output, or
    that returned an error ``ToolMessage``).
    """
    return CyclesGuardedTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
        return_direct=tool.return_direct,
        # The wrapped tool parses the input inside this tool's run (`_prepare`): input it
        # refuses is handled here as the tool would handle it (nothing is reserved).
        handle_validation_error=tool.handle_validation_error,
        # This tool keeps response_format="content": with a tool call, the wrapped tool makes
        # the ToolMessage (with its artifact) and this tool passes it on.
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
