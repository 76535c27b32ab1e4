"""Owed settlements at interpreter exit.

``settle_or_owe`` keeps a settlement the ledger refused as unavailable owed in the authority
(the core's queue, in this process's memory); the authority makes it after the next operation
the ledger answers. A process that exits first would lose it and the call's hold would expire
uncharged. So the first time an authority owes a settlement, the binding names it here and an
``atexit`` hook is registered (once); at exit the hook calls ``retry_owed()`` on each such
authority still alive (held by weak reference: this never keeps an authority alive) and logs,
on the ``cycles`` logger at WARNING, every settlement still owed after that.

No queue and no retry rule live here: the core keeps what is owed and decides what a retry
does; this module only calls ``retry_owed`` once, at exit.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._cycles import Authority

log = logging.getLogger("cycles")

_authorities: weakref.WeakSet[Authority] = weakref.WeakSet()
_lock = threading.Lock()
_registered = False


def _note_owed(authority: Authority) -> None:
    """``authority`` owes a settlement (called by the binding): retry its owed settlements at
    interpreter exit."""
    global _registered
    with _lock:
        _authorities.add(authority)
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
