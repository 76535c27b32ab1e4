"""The Python binding on a PostgreSQL ledger: `Authority.open("postgres://...")`.

Run by scripts/pg-test.sh, which starts a server and sets CYCLES_PG_URL; scripts/test-python.sh
does not collect this directory. Without CYCLES_PG_URL the module fails to import: these tests
never pass without a server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import cycles

SERVER = os.environ.get("CYCLES_PG_URL")
if not SERVER:
    raise RuntimeError("CYCLES_PG_URL is not set: run scripts/pg-test.sh, which starts a PostgreSQL server")

POLICY: dict[str, Any] = {
    "tools": [
        {"name": "write_file", "tier": 1},
        {"name": "send_email", "tier": 2},
    ],
    "budgets": [{"scope": "tenant:acme", "unit": "RISK_POINTS", "allocated": 10}],
}
BOT = {"tenant": "acme", "agent": "bot"}


def schema_url(server: str = SERVER) -> str:
    """The server URL with a fresh schema (the ledger creates it on open). pg-test.sh drops
    the schemas of its run (CYCLES_PG_TEST_RUN) afterwards."""
    run = os.environ.get("CYCLES_PG_TEST_RUN", "x")
    return f"{server}?schema=t_py_{run}_{uuid.uuid4().hex[:12]}"


def spent(auth: cycles.Authority) -> tuple[int, int]:
    [b] = [b for b in auth.balances("tenant:acme") if b.unit == "RISK_POINTS"]
    return b.spent, b.reserved


SECOND_PROCESS = """
import json, sys
import cycles
auth = cycles.Authority.open(sys.argv[1], json.loads(sys.argv[2]))
before = [b.to_dict() for b in auth.balances("tenant:acme")]
r = auth.reserve("write_file", {"path": "/tmp/b"}, subject={"tenant": "acme", "agent": "other"})
r.commit()
print(json.dumps({"before": before, "records": auth.verify().records}))
"""


def test_two_processes_share_one_postgres_ledger() -> None:
    url = schema_url()
    auth = cycles.Authority.open(url, POLICY)
    assert "postgres://" in repr(auth) and url.split("?")[1] in repr(auth)

    r = auth.reserve("write_file", {"path": "/tmp/a"}, subject=BOT)
    assert spent(auth) == (0, 1)
    assert r.commit().charged == {"RISK_POINTS": 1}
    with auth.reserve("send_email", {"to": "ops"}, subject=BOT) as r2:
        r2.commit()
    assert spent(auth) == (6, 0)

    # Another process opens the same URL with the same policy: it sees this process's
    # spending (its policy budget is not re-created over it), and adds its own.
    out = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS, url, json.dumps(POLICY)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    [before] = [b for b in seen["before"] if b["unit"] == "RISK_POINTS"]
    assert (before["allocated"], before["spent"], before["reserved"]) == (10, 6, 0)

    # ... and this process sees the other's commit.
    assert spent(auth) == (7, 0)
    with pytest.raises(cycles.Denied) as denied:
        auth.reserve("send_email", {"to": "ops"}, subject=BOT)  # 5 points, 3 left
    assert denied.value.reason_code == "BUDGET_EXCEEDED"

    report = auth.verify()
    assert report.ok
    # 2 × (reserve + commit) here, reserve + commit there, the denial, the budget's creation.
    assert report.records == seen["records"] + 1 == 8
    kinds = [rec.kind for rec in auth.audit()]
    assert kinds.count("reserve") == 3 and kinds.count("commit") == 3

    # A second Authority in this process (another pool) is one more client of the same state.
    again = cycles.Authority.open(url, POLICY)
    assert spent(again) == (7, 0)


def test_an_unreachable_server_is_a_ledger_error_and_never_a_file() -> None:
    # Port 1 on loopback: nothing listens there.
    url = "postgres://cycles:pw@127.0.0.1:1/cycles"
    with pytest.raises(cycles.LedgerError) as e:
        cycles.Authority.open(url, POLICY)
    assert e.value.code == "LEDGER_UNAVAILABLE"
    assert ":pw@" not in str(e.value), str(e.value)
    with pytest.raises(cycles.InvalidInput) as bad:
        cycles.Authority.open("mysql://127.0.0.1/cycles", POLICY)
    assert bad.value.code == "INVALID_REQUEST"


class Proxy:
    """A TCP proxy to the server whose forwarding threads are Python threads of this process:
    they can move a byte only while the thread calling into the binding does not hold the GIL.
    """

    def __init__(self, server: str) -> None:
        parts = urlsplit(server)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.listener = socket.create_server(("127.0.0.1", 0))
        port = self.listener.getsockname()[1]
        user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        netloc = f"{user}127.0.0.1:{port}"
        self.url = urlunsplit(parts._replace(netloc=netloc))
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def test_connecting_and_every_call_release_the_gil() -> None:
    # Every byte between the ledger and the server passes through Python threads. A binding
    # that held the GIL while it connects or waits for the server would starve them, and the
    # call would end in LEDGER_UNAVAILABLE (connect timeout) instead of succeeding.
    proxy = Proxy(SERVER)
    try:
        auth = cycles.Authority.open(schema_url(proxy.url), POLICY)
        results: list[Any] = []

        def worker(i: int) -> None:
            try:
                r = auth.reserve("write_file", {"i": i}, subject=BOT)
                results.append(r.commit().charged["RISK_POINTS"])
            except BaseException as e:  # surfaced below
                results.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [1, 1, 1, 1]
        assert spent(auth) == (4, 0)
        assert auth.verify().ok
        assert proxy.connections >= 1
    finally:
        proxy.close()
