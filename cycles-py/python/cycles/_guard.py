"""The ``guard`` decorator: reserve before the body runs, then settle the reservation by how
the body ended.

Only plumbing lives here: whether a call may run is decided by the core's ``reserve``, and
what each ending costs by its ``settle``. This module only says which ending happened
(returned: ``COMPLETED``; raised an ``Exception``: ``FAILED``; stopped from outside by a
cancellation, Ctrl-C or ``SystemExit``: ``INTERRUPTED``; never started: ``NOT_STARTED``). The
helpers below are shared with the framework integrations (``cycles.integrations``).
"""

from __future__ import annotations

import asyncio
import collections.abc
import functools
import inspect
import logging
import weakref
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Mapping,
    Optional,
    Sequence,
    TypeVar,
    Union,
)

from ._cycles import CyclesError, InvalidInput
from ._owed import _log_owed

if TYPE_CHECKING:
    from ._cycles import Authority, Reservation, _CallOutcome

F = TypeVar("F", bound=Callable[..., Any])

Amounts = Union[Mapping[str, int], Sequence[Mapping[str, Any]]]
Actual = Optional[Callable[[Any], Optional[Amounts]]]

log = logging.getLogger("cycles")


def _settle_quietly(r: Reservation, outcome: _CallOutcome, reason: Optional[str] = None) -> None:
    # Settling after the call ran or raised: the body's outcome (its exception) is what the
    # caller must see. A ledger that is unavailable owes the settlement (the authority makes
    # it when the ledger answers again); any other refusal is logged and the hold expires
    # with the reservation's TTL.
    try:
        if r.settle_or_owe(outcome, reason=reason) is None:
            _log_owed(r.reservation_id, outcome)
    except CyclesError as e:
        log.warning(
            "settling %s as %s failed (%s); the hold expires with its TTL", r.reservation_id, outcome, e
        )


def _raised(r: Reservation, exc: BaseException) -> None:
    """The body raised ``exc``: an error it reported (an ``Exception``) is a ``FAILED`` call
    (the policy's ``[defaults] on_failure`` says whether it is charged); an interruption from
    outside (a cancellation or a timeout, which arrive as ``CancelledError``, Ctrl-C,
    ``SystemExit``) is ``INTERRUPTED``, which the core charges: the body may already have
    acted when it was stopped."""
    outcome: _CallOutcome = "FAILED" if isinstance(exc, Exception) else "INTERRUPTED"
    _settle_quietly(r, outcome, f"exception: {type(exc).__name__}")


async def _shielded(aw: Awaitable[Any], if_abandoned: Callable[[asyncio.Future[Any]], None]) -> Any:
    """Awaits ``aw`` so that cancelling the caller does not cancel it: it runs to the end,
    and ``if_abandoned`` sees its outcome when the caller was gone by then."""
    task = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(if_abandoned)
        raise


async def _finish(fn: Callable[..., Any], *args: Any) -> Any:
    """Runs a ledger step that follows a call that ran or raised (its settlement)
    in a worker thread, to the end even if the caller is cancelled meanwhile: a cancellation
    arriving as the step is handed to the thread (anyio cancel scopes cancel every await)
    would otherwise drop it, and a call that ran would go uncharged."""
    return await _shielded(asyncio.to_thread(fn, *args), _log_unfinished)


def _log_unfinished(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a ledger step after a cancelled call failed: %s", task.exception())


async def _areserve(authority: Authority, tool: str, args: Any, **kw: Any) -> Reservation:
    """``authority.areserve`` for a caller that may be cancelled while it waits: the reserve
    goes on in its worker thread whatever happens to the caller, so when the caller is gone
    by the time it lands, its hold is given back (it would otherwise stay, with nobody to
    release it, until its TTL)."""
    r: Reservation = await _shielded(authority.areserve(tool, args, **kw), _release_orphan)
    return r


def _release_orphan(task: asyncio.Future[Reservation]) -> None:
    if task.cancelled() or task.exception() is not None:
        return
    r = task.result()
    # Off the event loop: the ledger call may wait on a disk or a lock.
    task.get_loop().run_in_executor(None, _release_cancelled, r)


def _release_cancelled(r: Reservation) -> None:
    # The caller was gone before the call started: it never ran.
    _settle_quietly(r, "NOT_STARTED", "cancelled before the call ran")


def _amounts(r: Reservation, actual: Actual, result: Any) -> Optional[Amounts]:
    # The body returned: if `actual` fails, the call is still COMPLETED, without amounts.
    try:
        return actual(result) if actual is not None else None
    except BaseException:
        _settle_quietly(r, "COMPLETED")
        raise


def _completed(r: Reservation, spent: Optional[Amounts]) -> None:
    # The call ran: a ledger that is unavailable owes the settlement (made when it answers
    # again), logged; the call's result stands.
    try:
        if r.settle_or_owe("COMPLETED", spent) is None:
            _log_owed(r.reservation_id, "COMPLETED")
    except CyclesError as e:
        # Amounts from `actual` the core refuses (bad input, a unit the reservation does not
        # hold, an overage the policy rejects, an overdraft past its limit: it changed
        # nothing): COMPLETED without amounts, so what was held is charged, then say why.
        if spent is not None and e.code not in _FINISHED:
            _settle_quietly(r, "COMPLETED")
        raise


# Answers to a settlement that mean there is nothing left to settle: the reservation is already
# finalized, expired or unknown (LEDGER_UNAVAILABLE never reaches here: `settle_or_owe` owes it).
_FINISHED = frozenset({"LEDGER_UNAVAILABLE", "RESERVATION_FINALIZED", "RESERVATION_EXPIRED", "NOT_FOUND"})


def _settle(r: Reservation, actual: Actual, result: Any) -> None:
    """The body returned ``result``: settle ``COMPLETED`` with ``actual(result)`` as the
    amounts (none given: the core charges what was held).

    When ``actual`` raises or gives amounts the core refuses, the call is settled
    ``COMPLETED`` without amounts and that error is raised. A ledger that is unavailable owes
    the settlement (``settle_or_owe``: logged, made when the ledger answers again) and the
    result stands; any other refusal of the settlement raises its ``CyclesError`` with the
    body's result on ``.result`` (the body did run).
    """
    spent = _amounts(r, actual, result)
    try:
        _completed(r, spent)
    except CyclesError as e:
        e.result = result  # type: ignore[attr-defined]
        raise


async def _asettle(r: Reservation, actual: Actual, result: Any) -> None:
    await _finish(_settle, r, actual, result)


def _guarded_generator(r: Reservation, gen: Generator[Any, Any, Any], actual: Actual) -> Generator[Any, Any, Any]:
    # The body runs while the consumer iterates: the hold lasts until the generator is done.
    try:
        value = yield from gen
    except GeneratorExit:
        # Closed before the end (or collected): the body ran in part and was stopped.
        _settle_quietly(r, "INTERRUPTED", "generator closed early")
        raise
    except BaseException as exc:
        _raised(r, exc)
        raise
    _settle(r, actual, value)
    return value


async def _guarded_async_generator(r: Reservation, agen: AsyncIterator[Any], actual: Actual) -> AsyncIterator[Any]:
    try:
        async for item in agen:
            yield item
    except GeneratorExit:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            await aclose()
        await _finish(_settle_quietly, r, "INTERRUPTED", "generator closed early")
        raise
    except BaseException as exc:
        await _finish(_raised, r, exc)
        raise
    await _asettle(r, actual, None)


async def _guarded_awaitable(r: Reservation, aw: Awaitable[Any], actual: Actual) -> Any:
    try:
        result = await aw
    except BaseException as exc:
        await _finish(_raised, r, exc)
        raise
    await _asettle(r, actual, result)
    return result


def _abandoned_unstarted(r: Reservation) -> None:
    # What the guarded function returned was closed or dropped before its first step. The
    # function itself ran (it may have acted before returning it), so this is an interruption,
    # charged, as the Node binding settles a returned generator dropped unfinished.
    _settle_quietly(r, "INTERRUPTED", "abandoned before it started")


class _Unstarted:
    """What a sync callable returned that runs later (a generator, a coroutine, an async
    generator), none of whose code has run yet, holding its reservation. ``_finalizer`` settles
    it ``INTERRUPTED`` when it is abandoned or collected before its first step; the first step
    detaches it and the guarded body settles the call from then on."""

    __slots__ = ("_r", "_body", "_actual", "_inner", "_finalizer", "__weakref__")

    def __init__(self, r: Reservation, body: Any, actual: Actual) -> None:
        self._r = r
        self._body = body
        self._actual = actual
        self._inner: Any = None
        self._finalizer = weakref.finalize(self, _abandoned_unstarted, r)


class _Deferred(_Unstarted):
    """A generator or coroutine a sync callable returned, none of whose code has run yet.
    Closed, thrown into or collected before its first step, it is settled ``INTERRUPTED``
    (charged: the function that returned it ran; a generator's ``close()`` before its start
    runs none of its code, so a guarded generator alone never sees it, and the hold would wait
    for its TTL and expire uncharged). From its first step on, the guarded body settles it (as
    ``_guarded_generator`` / ``_guarded_awaitable``)."""

    __slots__ = ()

    def _guarded(self) -> Any:
        raise NotImplementedError

    def _abandon(self) -> None:
        self._finalizer()  # INTERRUPTED, once
        self._inner = self._guarded()
        self._inner.close()  # closed before its start: runs nothing; later steps end at once

    def send(self, value: Any) -> Any:
        if self._inner is None:
            if value is not None:
                raise TypeError("can't send non-None value to a just-started generator")
            self._finalizer.detach()
            self._inner = self._guarded()
        return self._inner.send(value)

    def __next__(self) -> Any:
        return self.send(None)

    def throw(self, *args: Any) -> Any:
        if self._inner is None:
            self._abandon()  # the error comes out, the body never runs
        return self._inner.throw(*args)

    def close(self) -> None:
        if self._inner is None:
            self._abandon()
        else:
            self._inner.close()


class _DeferredGenerator(_Deferred, collections.abc.Generator):  # type: ignore[type-arg]
    __slots__ = ()

    def _guarded(self) -> Any:
        return _guarded_generator(self._r, self._body, self._actual)


class _DeferredCoroutine(_Deferred, collections.abc.Coroutine):  # type: ignore[type-arg]
    __slots__ = ()

    def _guarded(self) -> Any:
        return _guarded_awaitable(self._r, self._body, self._actual)

    def __await__(self) -> Any:
        return self


class _DeferredAsyncGenerator(_Unstarted, collections.abc.AsyncGenerator):  # type: ignore[type-arg]
    """An async generator a sync callable returned, none of whose code has run yet: the same
    rule as ``_Deferred`` (closed, thrown into or collected before its first step:
    ``INTERRUPTED``, charged; from its first step on, ``_guarded_async_generator`` settles it).
    A step that is created but never awaited is not a first step."""

    __slots__ = ()

    async def _abandon(self) -> None:
        if self._finalizer.detach() is not None:  # INTERRUPTED, once
            await _finish(_abandoned_unstarted, self._r)
        self._inner = _guarded_async_generator(self._r, self._body, self._actual)
        await self._inner.aclose()  # closed before its start: runs nothing; later steps end at once
        aclose = getattr(self._body, "aclose", None)
        if aclose is not None:
            await aclose()

    def _started(self) -> Any:
        if self._inner is None:
            self._finalizer.detach()
            self._inner = _guarded_async_generator(self._r, self._body, self._actual)
        return self._inner

    async def asend(self, value: Any) -> Any:
        if self._inner is None and value is not None:
            raise TypeError("can't send non-None value to a just-started async generator")
        return await self._started().asend(value)

    async def __anext__(self) -> Any:
        return await self.asend(None)

    async def athrow(self, *args: Any) -> Any:
        if self._inner is None:
            await self._abandon()  # the error comes out, the body never runs
        return await self._inner.athrow(*args)

    async def aclose(self) -> None:
        if self._inner is None:
            await self._abandon()
        else:
            await self._inner.aclose()


def _future_done(r: Reservation, actual: Actual, fut: asyncio.Future[Any]) -> None:
    """A running Task/Future a sync callable returned has finished, whether or not anyone
    awaits it: settle it by how it ended (on the loop's thread, as the sync callable's own
    reserve ran on its caller's thread). Nobody may be there to see an error here, so a failing
    ``actual`` or a refused settlement is logged (the former after settling ``COMPLETED``
    without amounts)."""
    if fut.cancelled():
        _settle_quietly(r, "INTERRUPTED", "exception: CancelledError")
        return
    exc = fut.exception()
    if exc is not None:
        _raised(r, exc)
        return
    try:
        _settle(r, actual, fut.result())
    except Exception as e:
        log.error("settling %s after its task returned failed: %s", r.reservation_id, e)


def _deferred(r: Reservation, result: Any, actual: Actual) -> Any:
    """A sync callable's result that has not run yet (a coroutine, a generator, an async
    generator, another awaitable) carries the reservation until it has; a Task/Future that is
    already running is settled when it finishes (it is returned as it is); anything else is
    settled now."""
    if inspect.isgenerator(result):
        return _DeferredGenerator(r, result, actual)
    if inspect.isasyncgen(result):
        return _DeferredAsyncGenerator(r, result, actual)
    if inspect.iscoroutine(result):
        return _DeferredCoroutine(r, result, actual)
    if asyncio.isfuture(result):
        result.add_done_callback(functools.partial(_future_done, r, actual))
        return result
    if inspect.isawaitable(result):
        return _DeferredCoroutine(r, result, actual)
    _settle(r, actual, result)
    return result


# How a named tuple's class could make its items read differently from what the core reads
# (the core reads the tuple's own items); a class overriding any of these is copied into a
# plain tuple.
_TUPLE_READERS = frozenset({
    "__getitem__", "__iter__", "__len__", "__contains__", "__reversed__", "__getattribute__",
    "__getattr__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__",
    "__add__", "__mul__", "__rmul__", "index", "count",
})
_TUPLEGETTER = type(collections.namedtuple("_Probe", "x").__dict__["x"])


def _plain_named_tuple(t: type) -> bool:
    """Whether ``t`` is a named tuple class (``collections.namedtuple``, ``typing.NamedTuple``)
    whose items, fields included, read as the tuple's own items: every field is the
    generated accessor and no class above ``tuple`` overrides how items are read."""
    fields = t.__dict__.get("_fields")
    for c in t.__mro__:
        if c is tuple or c is object:
            continue
        if _TUPLE_READERS & c.__dict__.keys():
            return False
        if fields is None:
            fields = c.__dict__.get("_fields")
    return isinstance(fields, tuple) and all(
        isinstance(f, str) and isinstance(inspect.getattr_static(t, f, None), _TUPLEGETTER) for f in fields
    )


def _mapping_items(value: Any) -> list[tuple[Any, Any]]:
    # What the core would read from a Mapping that is not a dict (its items()), read once.
    try:
        return [(k, v) for k, v in value.items()]
    except Exception as e:
        err = InvalidInput(f"invalid input: mapping items() failed: {e}")
        err.code = "INVALID_REQUEST"
        raise err from e


def _snapshot(value: Any, depth: int = 0) -> Any:
    """A private copy of a JSON-like argument, made of plain containers only. ``dict``,
    ``list`` and ``tuple`` are copied, recursively; a subclass of ``dict`` is copied into a
    plain ``dict`` with the items the core reads (``dict.items``, not the subclass's own
    methods), a subclass of ``list`` or ``tuple`` into a plain ``list`` or ``tuple``, and any
    other ``Mapping`` into a plain ``dict`` of its ``items()`` (read once; if that raises, the
    call is refused with ``InvalidInput``). A named tuple keeps its type when its class reads
    its items as a tuple does (see ``_plain_named_tuple``; otherwise it becomes a plain
    tuple). ``str``, ``int``, ``float``, ``bool`` and ``None`` are immutable and kept. Anything
    else is returned as it is (by reference): the core refuses it as ``InvalidInput`` when it
    is classified (the call does not run). The guard classifies this copy and calls the
    function with the same copy, so neither code that shares the caller's objects nor a
    container class with its own reading methods can make the function see anything other
    than what was classified."""
    if depth > 64:  # deeper than the core reads (it refuses the call): kept as it is
        return value
    t = type(value)
    if t is dict:
        return {k: _snapshot(v, depth + 1) for k, v in value.items()}
    if t is list:
        return [_snapshot(v, depth + 1) for v in value]
    if t is tuple:
        return tuple(_snapshot(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return {k: _snapshot(v, depth + 1) for k, v in dict.items(value)}
    if isinstance(value, list):
        return [_snapshot(v, depth + 1) for v in list.__iter__(value)]
    if isinstance(value, tuple):
        items = (_snapshot(v, depth + 1) for v in tuple.__iter__(value))
        return tuple.__new__(t, items) if _plain_named_tuple(t) else tuple(items)
    if isinstance(value, (str, int, float)) or value is None:
        return value
    if isinstance(value, collections.abc.Mapping):
        return {k: _snapshot(v, depth + 1) for k, v in _mapping_items(value)}
    return value


def guard(
    authority: Authority,
    tool: Optional[str] = None,
    *,
    subject: Mapping[str, Any],
    estimate: Optional[Amounts] = None,
    kind: Optional[str] = None,
    tags: Optional[Sequence[str]] = None,
    map_args: Optional[Callable[[dict[str, Any]], Any]] = None,
    actual: Actual = None,
) -> Callable[[F], F]:
    """Gate a sync or async function (or generator) with ``authority``.

    The function's bound call arguments (defaults applied) become the classified ``args`` of
    the tool call (pass ``map_args`` to select or transform them, e.g. to drop ``self``).
    ``reserve`` runs before the body: a DENY raises ``Denied`` and the body never runs. A
    body's ending settles the reservation (``Reservation.settle``; the core decides what each
    ending costs): a body that returns is ``COMPLETED`` (charged ``actual(result)`` when
    given, otherwise what was held); a body that raises an ``Exception`` is ``FAILED``
    (released, or charged what was held under the policy's ``[defaults] on_failure =
    "CHARGE"``) and the exception propagates; a body interrupted from outside (cancelled,
    timed out, Ctrl-C) is ``INTERRUPTED``, charged what was held, since it may have acted. A
    generator (sync or async) holds its reservation until it is exhausted (``COMPLETED``),
    raises (as above) or is closed early (``INTERRUPTED``: it ran in part); so does a
    coroutine, async generator or other awaitable returned by a sync callable, until it has
    run; such a result closed, thrown into or garbage-collected before its first step is
    ``INTERRUPTED`` (charged: the callable that returned it ran). A running ``Task``/``Future``
    a sync callable returned is returned as it is and settled when it finishes, awaited or not
    (returned: ``COMPLETED``; raised: as above; cancelled: ``INTERRUPTED``); an error of
    ``actual`` or of the ledger is then logged on the ``cycles`` logger. Async functions await
    the ledger calls in a worker thread.

    JSON-like arguments are copied once into plain containers (``dict``, ``list``, ``tuple``;
    a subclass of them or another ``Mapping`` becomes the plain container, a named tuple keeps
    its type when its class reads items as a tuple does); the copy is classified and the
    function runs on that same copy. Other objects pass by reference and are refused by the
    core as ``InvalidInput`` (the call does not run) unless ``map_args`` leaves them out, see
    the README's "What the function receives".

    If ``actual`` raises, the call is settled ``COMPLETED`` without amounts (what was held is
    charged) and the error propagates; a body that outlived its reservation (TTL and grace)
    is still charged, as an event. Settlements go through ``settle_or_owe``: when the ledger
    is unavailable as the body ends, the settlement is owed by the authority (a warning on the
    ``cycles`` logger), made after the next operation the ledger answers (or by
    ``Authority.retry_owed``, which also runs once at interpreter exit), and the body's result
    or exception is what the caller gets. If the ledger refuses the settlement otherwise, its
    ``CyclesError`` propagates with the body's result on ``.result``.
    """

    def decorate(fn: F) -> F:
        name = tool if tool is not None else fn.__name__
        signature = inspect.signature(fn)

        def call_args(a: tuple[Any, ...], kw: dict[str, Any]) -> Any:
            bound = signature.bind(*a, **kw)
            bound.apply_defaults()
            args = dict(bound.arguments)
            return map_args(args) if map_args is not None else args

        def snapshot(a: tuple[Any, ...], kw: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
            # Classified and called with the same private copy (see _snapshot).
            return tuple(_snapshot(v) for v in a), {k: _snapshot(v) for k, v in kw.items()}

        def reserve(a: tuple[Any, ...], kw: dict[str, Any]) -> Reservation:
            return authority.reserve(
                name, call_args(a, kw), subject=subject, estimate=estimate, kind=kind, tags=tags
            )

        async def areserve(a: tuple[Any, ...], kw: dict[str, Any]) -> Reservation:
            return await _areserve(
                authority, name, call_args(a, kw), subject=subject, estimate=estimate, kind=kind, tags=tags
            )

        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def async_gen_wrapper(*a: Any, **kw: Any) -> Any:
                a, kw = snapshot(a, kw)
                r = await areserve(a, kw)
                inner = _guarded_async_generator(r, fn(*a, **kw), actual)
                try:
                    async for item in inner:
                        yield item
                finally:
                    # Closed early: close the body now, not whenever it is collected.
                    await inner.aclose()  # type: ignore[attr-defined]

            return async_gen_wrapper  # type: ignore[return-value]

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*a: Any, **kw: Any) -> Any:
                # Reserved on the first next(): that is when the body starts.
                a, kw = snapshot(a, kw)
                r = reserve(a, kw)
                return (yield from _guarded_generator(r, fn(*a, **kw), actual))

            return gen_wrapper  # type: ignore[return-value]

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*a: Any, **kw: Any) -> Any:
                a, kw = snapshot(a, kw)
                r = await areserve(a, kw)
                try:
                    result = await fn(*a, **kw)
                except BaseException as exc:
                    await _finish(_raised, r, exc)
                    raise
                await _asettle(r, actual, result)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            a, kw = snapshot(a, kw)
            r = reserve(a, kw)
            try:
                result = fn(*a, **kw)
            except BaseException as exc:
                _raised(r, exc)
                raise
            return _deferred(r, result, actual)

        return wrapper  # type: ignore[return-value]

    return decorate
