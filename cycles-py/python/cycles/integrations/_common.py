"""Helpers shared by the integrations: argument conversion and the denial text for a model."""

from __future__ import annotations

from typing import Any, Callable, Optional

from .._cycles import Denied

DenyMessage = Callable[[Denied, str], str]


def jsonable(value: Any) -> Any:
    """Framework values as plain JSON values for classification.

    Pydantic models (nested tool argument models) are dumped in JSON mode; containers are
    walked; anything else is passed through unchanged, so a value JSON cannot represent
    reaches the core and is refused there as ``InvalidInput`` (the call does not run).
    """
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def default_deny_message(exc: Denied, tool: str) -> str:
    """What the model reads instead of the tool's output when the gate says no."""
    d = exc.decision
    reason = exc.reason_code or exc.code
    parts = [f"Cycles denied the call to {tool!r} before it ran: {reason}."]
    if d is not None:
        parts.append(f"Tier {d.tier}, {d.risk_points} risk points.")
        if d.message:
            parts.append(d.message + ".")
        if d.retry_after_ms is not None:
            parts.append(f"Retry after {d.retry_after_ms} ms.")
    if exc.request_id:
        parts.append(f"An approval was requested: {exc.request_id}.")
    parts.append("Do not retry the same call; choose a safer action or ask the user.")
    return " ".join(parts)


def message_for(exc: Denied, tool: str, deny_message: Optional[DenyMessage]) -> str:
    return (deny_message or default_deny_message)(exc, tool)
