"""Owed settlements: ``settle_or_owe``, ``owed_settlements``, ``retry_owed`` and the exit hook,
over a real SQLite ledger whose write lock another process holds (``BEGIN EXCLUSIVE`` and an
insert, from Python's sqlite3) past the authority's short busy timeout.

A process, not a connection of this one: SQLite's POSIX locks do not exclude each other within
one process (and the binding's SQLite is a copy of its own).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path
from typing import Any

import pytest

import cycles

POLICY: dict[str, Any] = {
    "tools": [
        {"name": "read_file", "tier": 0},
        {"name": "send_email", "tier": 2},
    ],
    # send_email holds 5 points.
    "budgets": [{"scope": "agent:bot", "unit": "RISK_POINTS", "allocated": 7}],
}
BOT = {"agent": "bot"}

LOCKER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
con.execute("INSERT OR REPLACE INTO kv (ns, key, value) VALUES ('test', 'lock', '1')")
print("locked", flush=True)
sys.stdin.readline()
con.execute("ROLLBACK")
"""


class WriteLock:
    """Another process holds the ledger's write lock until ``release()``."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.wait(timeout=60) == 0


@pytest.fixture
def ledger(tmp_path: Path) -> tuple[cycles.Authority, Path]:
    path = tmp_path / "cycles.db"
    return cycles.Authority.open(path, POLICY, busy_timeout_ms=50), path


def risk(a: cycles.Authority) -> cycles.Balance:
    [b] = a.balances("agent:bot")
    return b


def assert_made(auth: cycles.Authority, rid: str) -> None:
    """Nothing owed; the reservation committed: what was held is spent, nothing held."""
    assert auth.owed_settlements() == []
    assert auth.reservation(rid).status == "COMMITTED"
    assert risk(auth).spent == 5 and risk(auth).reserved == 0


def assert_still_held(auth: cycles.Authority, rid: str) -> None:
    assert auth.reservation(rid).status == "ACTIVE"
    assert risk(auth).spent == 0 and risk(auth).reserved == 5


def test_settle_or_owe_owes_while_locked_and_the_next_decide_makes_it(
    ledger: tuple[cycles.Authority, Path],
) -> None:
    auth, path = ledger
    r = auth.reserve("send_email", {"to": "a@b.c"}, subject=BOT)
    lock = WriteLock(path)
    assert auth.settle_or_owe(r.reservation_id, "COMPLETED", reason="done") is None
    [owed] = auth.owed_settlements()
    assert owed["reservation_id"] == r.reservation_id
    assert owed["request"] == {"outcome": "COMPLETED", "reason": "done"}
    assert owed["attempts"] == 1 and owed["last_error"] and isinstance(owed["since_ms"], int)
    lock.release()
    assert_still_held(auth, r.reservation_id)  # reading balances does not settle
    assert auth.decide("read_file", {}, subject=BOT).decision == "ALLOW"
    assert_made(auth, r.reservation_id)


def test_settle_or_owe_with_the_ledger_up_is_settle() -> None:
    auth = cycles.Authority.in_memory(POLICY)
    r = auth.reserve("send_email", {}, subject=BOT)
    res = auth.settle_or_owe(r.reservation_id, "NOT_STARTED")
    assert isinstance(res, cycles.ReleaseResult)
    r2 = auth.reserve("send_email", {}, subject=BOT)
    res2 = r2.settle_or_owe("COMPLETED", {"RISK_POINTS": 3})
    assert isinstance(res2, cycles.CommitResult) and res2.charged == {"RISK_POINTS": 3}
    assert r2.status == "COMMITTED" and auth.owed_settlements() == []


def test_settle_or_owe_raises_other_errors_and_owes_nothing(ledger: tuple[cycles.Authority, Path]) -> None:
    auth, path = ledger
    r = auth.reserve("send_email", {}, subject=BOT)
    with pytest.raises(cycles.InvalidInput):
        auth.settle_or_owe(r.reservation_id, "DONE")
    r.settle_or_owe("NOT_STARTED")
    with pytest.raises(cycles.Conflict) as e:
        auth.settle_or_owe(r.reservation_id, "COMPLETED")
    assert e.value.code == "RESERVATION_FINALIZED"
    assert auth.owed_settlements() == []


def test_reservation_settle_or_owe_and_the_block_exit_does_not_settle_again(
    ledger: tuple[cycles.Authority, Path],
) -> None:
    auth, path = ledger
    with auth.reserve("send_email", {}, subject=BOT) as r:
        lock = WriteLock(path)
        assert r.settle_or_owe("COMPLETED") is None
        assert r.status == "ACTIVE"
    lock.release()
    # One entry: the exit saw it owed and did not add a second settlement.
    [owed] = auth.owed_settlements()
    assert owed["reservation_id"] == r.reservation_id
    auth.decide("read_file", {}, subject=BOT)
    assert_made(auth, r.reservation_id)


def test_a_block_left_normally_while_locked_owes_its_settlement(
    ledger: tuple[cycles.Authority, Path], caplog: pytest.LogCaptureFixture
) -> None:
    auth, path = ledger
    with caplog.at_level(logging.WARNING, logger="cycles"):
        with auth.reserve("send_email", {}, subject=BOT) as r:
            lock = WriteLock(path)  # no error comes out of the block's exit
    lock.release()
    assert "owed and will be made when the ledger answers again" in caplog.text
    [owed] = auth.owed_settlements()
    assert owed["request"]["outcome"] == "COMPLETED"
    auth.decide("read_file", {}, subject=BOT)
    assert_made(auth, r.reservation_id)


def test_a_block_interrupted_while_locked_owes_an_interrupted_settlement(
    ledger: tuple[cycles.Authority, Path],
) -> None:
    auth, path = ledger
    with pytest.raises(KeyboardInterrupt):
        with auth.reserve("send_email", {}, subject=BOT) as r:
            lock = WriteLock(path)
            raise KeyboardInterrupt
    lock.release()
    [owed] = auth.owed_settlements()
    assert owed["request"] == {"outcome": "INTERRUPTED", "reason": "exception: KeyboardInterrupt"}
    auth.decide("read_file", {}, subject=BOT)
    assert_made(auth, r.reservation_id)  # INTERRUPTED is charged what was held


def test_retry_owed_while_still_locked_keeps_it_then_makes_it(ledger: tuple[cycles.Authority, Path]) -> None:
    auth, path = ledger
    r = auth.reserve("send_email", {}, subject=BOT)
    lock = WriteLock(path)
    assert auth.settle_or_owe(r.reservation_id, "COMPLETED") is None
    [still] = auth.retry_owed()
    assert still["reservation_id"] == r.reservation_id and still["attempts"] == 2
    assert auth.owed_settlements() == [still]
    lock.release()
    assert auth.retry_owed() == []
    assert_made(auth, r.reservation_id)


def test_guarded_function_returns_its_result_and_owes_the_settlement(
    ledger: tuple[cycles.Authority, Path], caplog: pytest.LogCaptureFixture
) -> None:
    auth, path = ledger
    locks: list[WriteLock] = []

    @auth.guard("send_email", subject=BOT)
    def send_email(to: str) -> str:
        locks.append(WriteLock(path))  # the ledger goes away while the body runs
        return f"sent to {to}"

    with caplog.at_level(logging.WARNING, logger="cycles"):
        assert send_email("a@b.c") == "sent to a@b.c"
    [owed] = auth.owed_settlements()
    assert "settling %s as COMPLETED" % owed["reservation_id"] in caplog.text
    assert "owed and will be made when the ledger answers again" in caplog.text
    assert "expires" not in caplog.text
    locks[0].release()
    auth.decide("read_file", {}, subject=BOT)
    assert_made(auth, owed["reservation_id"])


def test_guarded_function_that_raises_owes_a_failed_settlement(ledger: tuple[cycles.Authority, Path]) -> None:
    auth, path = ledger
    locks: list[WriteLock] = []

    @auth.guard("send_email", subject=BOT)
    def send_email(to: str) -> str:
        locks.append(WriteLock(path))
        raise ValueError("smtp down")

    with pytest.raises(ValueError):
        send_email("a@b.c")
    [owed] = auth.owed_settlements()
    assert owed["request"] == {"outcome": "FAILED", "reason": "exception: ValueError"}
    locks[0].release()
    auth.decide("read_file", {}, subject=BOT)
    assert auth.owed_settlements() == []
    assert auth.reservation(owed["reservation_id"]).status == "RELEASED"  # FAILED: released
    assert risk(auth).spent == 0 and risk(auth).reserved == 0


def test_async_guarded_function_returns_its_result_and_owes_the_settlement(
    ledger: tuple[cycles.Authority, Path],
) -> None:
    auth, path = ledger
    locks: list[WriteLock] = []

    @auth.guard("send_email", subject=BOT)
    async def send_email(to: str) -> str:
        locks.append(WriteLock(path))
        return f"sent to {to}"

    assert asyncio.run(send_email("a@b.c")) == "sent to a@b.c"
    [owed] = auth.owed_settlements()
    locks[0].release()
    auth.decide("read_file", {}, subject=BOT)
    assert_made(auth, owed["reservation_id"])


def test_an_authority_that_owes_is_kept_alive_until_it_owes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cycles.db"
    auth = cycles.Authority.open(path, POLICY, busy_timeout_ms=50)
    r = auth.reserve("send_email", {}, subject=BOT)
    lock = WriteLock(path)
    assert r.settle_or_owe("COMPLETED") is None
    rid = r.reservation_id
    ref = weakref.ref(auth)
    del auth, r
    gc.collect()
    # Dropped by its caller, it still owes: the binding keeps it (and what it owes) alive.
    assert ref() is not None
    lock.release()
    assert ref().retry_owed() == []  # type: ignore[union-attr]
    gc.collect()
    assert ref() is not None  # let go only when another authority owes
    # Another authority owes a settlement: the first, owing nothing now, is let go.
    other_path = tmp_path / "other.db"
    other = cycles.Authority.open(other_path, POLICY, busy_timeout_ms=50)
    o = other.reserve("send_email", {}, subject=BOT)
    other_lock = WriteLock(other_path)
    assert o.settle_or_owe("COMPLETED") is None
    other_lock.release()
    assert other.retry_owed() == []
    gc.collect()
    assert ref() is None
    after = cycles.Authority.open(path, POLICY)
    assert after.reservation(rid).status == "COMMITTED"
    assert risk(after).spent == 5 and risk(after).reserved == 0


CHILD = textwrap.dedent(
    """
    import subprocess, sys
    import cycles

    path, mode, locker = sys.argv[1], sys.argv[2], sys.argv[3]
    policy = {
        "tools": [{"name": "send_email", "tier": 2}],
        "budgets": [{"scope": "agent:bot", "unit": "RISK_POINTS", "allocated": 7}],
    }
    auth = cycles.Authority.open(path, policy, busy_timeout_ms=50)
    r = auth.reserve("send_email", {}, subject={"agent": "bot"})
    lock = subprocess.Popen([sys.executable, "-c", locker, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert lock.stdout.readline().strip() == "locked"
    assert r.settle_or_owe("COMPLETED") is None
    print(r.reservation_id, flush=True)
    if mode == "release":
        lock.stdin.write("\\n")
        lock.stdin.flush()
        assert lock.wait() == 0
    # Exits with the settlement owed (and, in "held" mode, the ledger still locked).
    """
)


def run_child(path: Path, mode: str) -> tuple[str, str]:
    p = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), mode, LOCKER], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    return p.stdout.strip(), p.stderr


def test_exit_hook_logs_a_settlement_still_owed_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "cycles.db"
    rid, stderr = run_child(path, "held")
    assert rid.startswith("rsv_")
    [line] = [ln for ln in stderr.splitlines() if "NOT SETTLED" in ln]
    assert rid in line and "COMPLETED" in line and "its hold expires uncharged" in line
    after = cycles.Authority.open(path, POLICY)
    assert_still_held(after, rid)


def test_exit_hook_makes_a_settlement_owed_once_the_ledger_answers(tmp_path: Path) -> None:
    path = tmp_path / "cycles.db"
    rid, stderr = run_child(path, "release")
    assert "NOT SETTLED" not in stderr
    after = cycles.Authority.open(path, POLICY)
    assert after.reservation(rid).status == "COMMITTED"
    assert risk(after).spent == 5 and risk(after).reserved == 0


# An authority opened per request (review 19 #3): the handler returns, its authority is
# dropped and collected with the settlement of the guarded call still owed (the ledger was
# locked as the call ended). The binding keeps it alive, so the exit hook still makes it (lock
# gone) or says NOT SETTLED (lock held).
PER_REQUEST_CHILD = textwrap.dedent(
    """
    import gc, subprocess, sys
    import cycles

    path, mode, locker = sys.argv[1], sys.argv[2], sys.argv[3]
    policy = {
        "tools": [{"name": "send_email", "tier": 2}],
        "budgets": [{"scope": "agent:bot", "unit": "RISK_POINTS", "allocated": 7}],
    }
    locks = []

    def handle_request():
        auth = cycles.Authority.open(path, policy, busy_timeout_ms=50)

        @auth.guard("send_email", subject={"agent": "bot"})
        def send_email(to):
            lock = subprocess.Popen([sys.executable, "-c", locker, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert lock.stdout.readline().strip() == "locked"
            locks.append(lock)
            return "sent"

        assert send_email("a@b.c") == "sent"
        [owed] = auth.owed_settlements()
        return owed["reservation_id"]

    rid = handle_request()
    gc.collect()
    print(rid, flush=True)
    if mode == "release":
        locks[0].stdin.write("\\n")
        locks[0].stdin.flush()
        assert locks[0].wait() == 0
    # Exits with the settlement owed by an authority nothing in this script references.
    """
)


def run_per_request_child(path: Path, mode: str) -> tuple[str, str]:
    p = subprocess.run(
        [sys.executable, "-c", PER_REQUEST_CHILD, str(path), mode, LOCKER],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    return p.stdout.strip(), p.stderr


def test_a_dropped_authority_still_makes_its_owed_settlement_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "cycles.db"
    rid, stderr = run_per_request_child(path, "release")
    assert rid.startswith("rsv_")
    assert "NOT SETTLED" not in stderr
    after = cycles.Authority.open(path, POLICY)
    assert after.reservation(rid).status == "COMMITTED"
    assert risk(after).spent == 5 and risk(after).reserved == 0


def test_a_dropped_authority_says_not_settled_at_exit_while_still_locked(tmp_path: Path) -> None:
    path = tmp_path / "cycles.db"
    rid, stderr = run_per_request_child(path, "held")
    [line] = [ln for ln in stderr.splitlines() if "NOT SETTLED" in ln]
    assert rid in line and "COMPLETED" in line and "its hold expires uncharged" in line
    after = cycles.Authority.open(path, POLICY)
    assert_still_held(after, rid)
