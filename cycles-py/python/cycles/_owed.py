"""Owed settlements at interpreter exit.

``settle_or_owe`` keeps a settlement the ledger refused as unavailable owed in the authority
(the core's queue, in this process's memory); the authority makes it after the next operation
the ledger answers. A process that exits first would lose it and the call's hold would expire
uncharged. So each time an authority owes a settlement, the binding names it here and an
``atexit`` hook is registered (once). An authority named here is held by a strong reference:
one that owes a settlement lives until its settlements are made or the process exits, even when
the code that opened it has dropped it (its owed settlements live in it; dropped, they would be
lost without a word). Each time an authority is named, those named before that owe nothing
any more (``owed_settlements()`` empty) are let go. At exit the hook calls ``retry_owed()`` once
on each authority held and logs, on the ``cycles`` logger at WARNING, every settlement still
owed after that ("NOT SETTLED").

No queue and no retry rule live here: the core keeps what is owed and decides what a retry
does; this module only calls ``retry_owed`` once, at exit.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._cycles import Authority

log = logging.getLogger("cycles")

# Strong references: an authority that owes a settlement is kept until it owes nothing.
_authorities: list[Authority] = []
_lock = threading.Lock()
_registered = False


def _still_owes(authority: Authority) -> bool:
    try:
        return bool(authority.owed_settlements())
    except Exception:  # pragma: no cover - owed_settlements reads memory only
        return True


def _note_owed(authority: Authority) -> None:
    """``authority`` owes a settlement (called by the binding): keep it alive and retry its
    owed settlements at interpreter exit. Authorities noted before that owe nothing any more
    are let go."""
    global _registered
    with _lock:
        kept = [a for a in _authorities if a is not authority and _still_owes(a)]
        kept.append(authority)
        _authorities[:] = kept
        if not _registered:
            atexit.register(_retry_owed_at_exit)
            _registered = True


def _log_owed(reservation_id: str, outcome: str) -> None:
    """What an integration logs when ``settle_or_owe`` answered ``None``."""
    log.warning(
        "settling %s as %s: the ledger is unavailable (LEDGER_UNAVAILABLE); the settlement is "
        "owed and will be made when the ledger answers again",
        reservation_id,
        outcome,
    )


def _retry_owed_at_exit() -> None:
    with _lock:
        authorities = list(_authorities)
        _authorities.clear()
    for authority in authorities:
        try:
            still = authority.retry_owed()
        except Exception as e:  # pragma: no cover - retry_owed reports through its result
            log.warning("retrying the owed settlements of %r at exit failed: %s", authority, e)
            continue
        for owed in still:
            log.warning(
                "NOT SETTLED: reservation %s (%s) was still owed at exit (%s); its hold expires "
                "uncharged",
                owed["reservation_id"],
                owed["request"]["outcome"],
                owed["last_error"],
            )
