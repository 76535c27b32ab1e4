"""Audit anchors: a record's SEQ:HASH kept outside the ledger shows what the hash chain alone
cannot, the removal of its last records and a chain rebuilt from scratch."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import cycles

POLICY = {"tools": [{"name": "read_file", "tier": 0}]}
BOT = {"agent": "bot"}


def test_anchors_catch_removed_records_and_a_rebuilt_chain(tmp_path: Path) -> None:
    path = tmp_path / "cycles.db"
    auth = cycles.Authority.open(path, POLICY)
    assert auth.audit_anchor() is None
    for _ in range(5):
        auth.decide("read_file", {"path": "a"}, subject=BOT)
    anchor = auth.audit_anchor()
    assert anchor is not None and anchor.startswith("5:") and len(anchor) == 2 + 64
    assert auth.verify(anchors=[anchor]).ok

    # Someone who can write the file removes the last two records: the chain alone still
    # verifies, the anchor does not.
    with sqlite3.connect(path) as raw:
        raw.execute("DELETE FROM audit WHERE seq > 3")
    assert auth.verify().ok
    report = auth.verify(anchors=[anchor])
    assert not report.ok
    assert report.first_broken_seq == 4
    assert "removed" in (report.first_broken_reason or "")

    # A fresh, valid chain in another file does not carry the anchored record either.
    other = cycles.Authority.open(tmp_path / "rebuilt.db", POLICY)
    for _ in range(6):
        other.decide("read_file", {"path": "b"}, subject={"agent": "someone-else"})
    assert other.verify().ok
    rebuilt = other.verify(anchors=[anchor])
    assert not rebuilt.ok
    assert rebuilt.first_broken_seq == 5
    assert "rewritten" in (rebuilt.first_broken_reason or "")


@pytest.mark.parametrize("bad", ["", "5", "5:abc", "0:" + "ab" * 32, "x:" + "ab" * 32])
def test_a_malformed_anchor_is_invalid_input(bad: str) -> None:
    auth = cycles.Authority.in_memory(POLICY)
    with pytest.raises(cycles.InvalidInput) as e:
        auth.verify(anchors=[bad])
    assert e.value.code == "INVALID_REQUEST"
