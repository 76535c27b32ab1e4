"""The ``guard`` decorator: reserve before the body runs, commit after, release on error.

Only plumbing lives here; whether a call may run is decided by the core's ``reserve``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, TypeVar, Union

from ._cycles import CyclesError

if TYPE_CHECKING:
    from ._cycles import Authority, Reservation

F = TypeVar("F", bound=Callable[..., Any])

Amounts = Union[Mapping[str, int], Sequence[Mapping[str, Any]]]


def _release_quietly(r: Reservation, exc: BaseException) -> None:
    # The body's exception is what the caller must see. If the ledger cannot take the release
    # the hold is not lost: it expires with the reservation's TTL.
    try:
        r.release(f"exception: {type(exc).__name__}")
    except CyclesError:
        pass


def guard(
    authority: Authority,
    tool: Optional[str] = None,
    *,
    subject: Mapping[str, Any],
    estimate: Optional[Amounts] = None,
    kind: Optional[str] = None,
    tags: Optional[Sequence[str]] = None,
    map_args: Optional[Callable[[dict[str, Any]], Any]] = None,
    actual: Optional[Callable[[Any], Optional[Amounts]]] = None,
) -> Callable[[F], F]:
    """Gate a sync or async function with ``authority``.

    The function's bound call arguments (defaults applied) become the classified ``args`` of
    the tool call (pass ``map_args`` to select or transform them, e.g. to drop ``self``).
    ``reserve`` runs before the body: a DENY raises ``Denied`` and the body never runs. A
    body that returns commits the reservation (with ``actual(result)`` as the actual amounts
    when given, otherwise what was held); a body that raises releases it and the exception
    propagates. Async functions await the ledger calls in a worker thread.
    """

    def decorate(fn: F) -> F:
        name = tool if tool is not None else fn.__name__
        signature = inspect.signature(fn)

        def call_args(a: tuple[Any, ...], kw: dict[str, Any]) -> Any:
            bound = signature.bind(*a, **kw)
            bound.apply_defaults()
            args = dict(bound.arguments)
            return map_args(args) if map_args is not None else args

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*a: Any, **kw: Any) -> Any:
                r = await authority.areserve(
                    name, call_args(a, kw), subject=subject, estimate=estimate, kind=kind, tags=tags
                )
                try:
                    result = await fn(*a, **kw)
                    spent = actual(result) if actual is not None else None
                except BaseException as exc:
                    await asyncio.to_thread(_release_quietly, r, exc)
                    raise
                await asyncio.to_thread(r.commit, spent)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            r = authority.reserve(
                name, call_args(a, kw), subject=subject, estimate=estimate, kind=kind, tags=tags
            )
            try:
                result = fn(*a, **kw)
                spent = actual(result) if actual is not None else None
            except BaseException as exc:
                _release_quietly(r, exc)
                raise
            r.commit(spent)
            return result

        return wrapper  # type: ignore[return-value]

    return decorate
