"""Helpers shared by the integrations: argument conversion, the refusal text for a model, and
settling a reservation after the tool ran."""

from __future__ import annotations

from typing import Any, Callable, Optional

from .._cycles import CyclesError, Denied, InvalidInput, Reservation
from .._guard import _FINISHED, Actual, _amounts, _completed, log

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
        # As the MCP gate and the Claude Code hook say: the grant is bound to this exact call,
        # so retrying it once approved is how it is used.
        parts.append(
            f"Approval request {exc.request_id} awaits an approver; retry this exact call once "
            "it is approved, or choose a safer action."
        )
    elif d is not None and d.retry_after_ms is not None:
        parts.append("Until then, choose another action or ask the user.")
    else:
        parts.append("Do not retry the same call; choose a safer action or ask the user.")
    return " ".join(parts)


def gate_error_message(exc: BaseException, tool: str) -> str:
    """What the model reads when the gate itself failed (bad arguments, a broken policy or
    ledger, a bug): the call was not run, exactly as for a denial."""
    code = exc.code if isinstance(exc, CyclesError) else f"GATE_ERROR ({type(exc).__name__})"
    return (
        f"Cycles could not check the call to {tool!r}, so it was not run: {code}: {exc}. "
        "Do not retry the same call; choose another action or ask the user."
    )


def message_for(exc: BaseException, tool: str, deny_message: Optional[DenyMessage]) -> str:
    if isinstance(exc, Denied):
        return (deny_message or default_deny_message)(exc, tool)
    return gate_error_message(exc, tool)


def settle_ran(r: Reservation, actual: Actual, result: Any, tool: str) -> None:
    """The tool ran and returned ``result``: settle it ``COMPLETED`` with what it cost.

    A settlement the ledger refuses does not hide the result from the model: the call already
    happened, and a model told it failed would run it again (the MCP gate does the same). A
    ledger that is unavailable owes the settlement (``settle_or_owe``: a warning on the
    ``cycles`` logger; the authority makes it when the ledger answers again); any other
    refusal is logged as an error and the hold expires with its TTL. A failing
    ``actual`` (or amounts the core refuses) settles ``COMPLETED`` without amounts (what was
    held is charged) and raises: that is a bug in the caller's code, not the ledger's.
    """
    spent = _amounts(r, actual, result)
    try:
        _completed(r, spent)
    except InvalidInput:
        raise
    except CyclesError as e:
        if spent is not None and e.code not in _FINISHED:
            # Amounts the core refuses (`_completed` settled COMPLETED without them).
            log.error(
                "the call to %r ran but committing %s with the amounts of actual failed (%s: %s); "
                "its result stands and it is settled COMPLETED without amounts (what was held)",
                tool, r.reservation_id, e.code, e,
            )
            return
        log.error(
            "the call to %r ran but committing %s failed (%s: %s); its result stands and the "
            "hold expires with its TTL",
            tool, r.reservation_id, e.code, e,
        )
