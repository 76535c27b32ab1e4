"""Threads share one Authority without overspending; ledger I/O releases the GIL; the async
helpers never block the event loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import cycles

THREADS = 8
PER_THREAD = 100
ALLOCATED = 500  # fewer points than the 800 attempts: the budget must run out exactly
POLICY: dict[str, Any] = {
    "tools": [{"name": "step", "tier": 1}],
    "budgets": [
        {"scope": "tenant:t", "unit": "RISK_POINTS", "allocated": ALLOCATED},
        {"scope": "tenant:t", "unit": "USD_MICROCENTS", "allocated": 10**12},
    ],
}
SUBJECT = {"tenant": "t", "agent": "a"}


def make(kind: str, tmp_path: Path, **kw: Any) -> cycles.Authority:
    if kind == "memory":
        return cycles.Authority.in_memory(POLICY)
    return cycles.Authority.open(tmp_path / "threads.db", POLICY, **kw)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_eight_threads_one_budget_no_overspend(kind: str, tmp_path: Path) -> None:
    auth = make(kind, tmp_path)
    results: list[list[tuple[str, int]]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(i: int) -> None:
        try:
            start.wait()
            for j in range(PER_THREAD):
                usd = 1 + (i * PER_THREAD + j) % 997
                try:
                    r = auth.reserve("step", {"i": i, "j": j}, subject=SUBJECT, estimate={"USD_MICROCENTS": 1000})
                except cycles.Denied as e:
                    results[i].append((e.reason_code or "?", 0))
                    continue
                charged = r.commit({"USD_MICROCENTS": usd}).charged
                assert charged == {"RISK_POINTS": 1, "USD_MICROCENTS": usd}
                results[i].append(("OK", usd))
        except BaseException as e:  # surfaced below: a thread's failure must fail the test
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors

    outcomes = Counter(kind for per in results for kind, _ in per)
    assert sum(outcomes.values()) == THREADS * PER_THREAD  # every attempt accounted for
    assert outcomes == {"OK": ALLOCATED, "BUDGET_EXCEEDED": THREADS * PER_THREAD - ALLOCATED}

    balances = {b.unit: b for b in auth.balances("tenant:t")}
    risk, usd = balances["RISK_POINTS"], balances["USD_MICROCENTS"]
    assert (risk.spent, risk.reserved, risk.remaining) == (ALLOCATED, 0, 0)
    assert usd.spent == sum(amount for per in results for _, amount in per)
    assert usd.reserved == 0

    kinds = Counter(r.kind for r in auth.audit())
    assert kinds["reserve"] == kinds["commit"] == ALLOCATED
    assert kinds["denial"] == THREADS * PER_THREAD - ALLOCATED
    assert auth.verify().ok


LOCKER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
con.execute("COMMIT")
print("released", flush=True)
"""


class WriteLock:
    """Another process takes the SQLite write lock, so the next ledger write must wait.

    A process, not a second connection here: SQLite's locks are POSIX locks, which do not
    exclude each other between two SQLite libraries inside one process.
    """

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "released"
        self.proc.wait(timeout=60)


def test_a_blocked_ledger_call_releases_the_gil(tmp_path: Path) -> None:
    # The worker's reserve blocks on the SQLite lock (busy timeout 30 s). Only Python code in
    # this thread can tell the other process to release that lock. If the binding held the GIL while waiting, this thread
    # could not run until the busy timeout expired, and the reserve would be denied
    # LEDGER_UNAVAILABLE; with the GIL released the lock is freed and the reserve succeeds.
    auth = make("sqlite", tmp_path, busy_timeout_ms=30_000)
    lock = WriteLock(tmp_path / "threads.db")
    entered = threading.Event()
    outcome: list[Any] = []

    def worker() -> None:
        entered.set()
        try:
            outcome.append(auth.reserve("step", subject=SUBJECT))
        except cycles.CyclesError as e:
            outcome.append(e)

    t = threading.Thread(target=worker)
    t.start()
    entered.wait()
    # Let the worker get into the core call; Python threads in this process can only run
    # this loop while the worker does not hold the GIL.
    spins = 0
    while t.is_alive() and spins < 20:
        threading.Event().wait(0.01)
        spins += 1
    lock.release()
    t.join()
    [r] = outcome
    assert isinstance(r, cycles.Reservation), r
    assert r.status == "ACTIVE"


def test_async_helpers_do_not_block_the_event_loop(tmp_path: Path) -> None:
    # Same trap as above, on the event loop: a coroutine on the same loop frees the lock. If
    # areserve ran the core call on the loop's thread, that coroutine could never run.
    auth = make("sqlite", tmp_path, busy_timeout_ms=30_000)

    async def main() -> tuple[cycles.Reservation, cycles.Decision, int]:
        lock = WriteLock(tmp_path / "threads.db")
        ticks = 0

        async def free_the_lock() -> None:
            nonlocal ticks
            for _ in range(20):
                await asyncio.sleep(0.01)
                ticks += 1
            lock.release()

        r, _ = await asyncio.gather(auth.areserve("step", subject=SUBJECT), free_the_lock())
        d = await auth.adecide("step", subject=SUBJECT)
        return r, d, ticks

    r, d, ticks = asyncio.run(main())
    assert isinstance(r, cycles.Reservation) and r.status == "ACTIVE"
    assert d.allowed and ticks == 20
    r.commit()
    assert {b.unit: b.spent for b in auth.balances("tenant:t")}["RISK_POINTS"] == 1


def test_async_helpers_raise_the_same_errors() -> None:
    auth = cycles.Authority.in_memory(POLICY)

    async def main() -> None:
        with pytest.raises(cycles.Denied) as e:
            await auth.areserve("step", subject={"tenant": "other"})
        assert e.value.reason_code == "BUDGET_NOT_FOUND"
        with pytest.raises(cycles.InvalidInput):
            await auth.adecide("step", {"x": float("nan")}, subject=SUBJECT)

    asyncio.run(main())
