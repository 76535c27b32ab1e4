"""The seed incident through the Python binding: reads and a small write run, the volume and
backup deletions are denied before anything runs, and the SQLite audit trail verifies."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import cycles

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "incident_replay.py"


def load_example():
    spec = importlib.util.spec_from_file_location("incident_replay", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_destructive_calls_are_denied_before_they_run(tmp_path: Path) -> None:
    out = io.StringIO()
    result = load_example().replay(tmp_path, out)

    assert result["executed"] == ["railway.list_services", "db.query", "fs.write_file"]
    assert result["denied"] == [
        ("railway.delete_volume", "TIER_NOT_PERMITTED", 4),
        ("railway.delete_backups", "TIER_NOT_PERMITTED", 4),
    ]
    assert result["audit"] == [
        ("budget_set", None, None),
        ("budget_set", None, None),
        ("reserve", "railway.list_services", None),
        ("commit", "railway.list_services", None),
        ("reserve", "db.query", None),
        ("commit", "db.query", None),
        ("reserve", "fs.write_file", None),
        ("commit", "fs.write_file", None),
        ("denial", "railway.delete_volume", "TIER_NOT_PERMITTED"),
        ("denial", "railway.delete_backups", "TIER_NOT_PERMITTED"),
    ]
    session = result["balances"]["tenant:pocketos/workflow:session-42"]
    assert (session["spent"], session["reserved"], session["remaining"]) == (1, 0, 59)
    assert result["verify"].ok and result["verify"].records == 10
    assert "DENY   railway.delete_volume" in out.getvalue()

    # The trail is in the file: a new authority on it (another process would do the same)
    # sees the same chain, intact.
    again = cycles.Authority.open(tmp_path / "cycles.db", policy=tmp_path / "policy.toml")
    report = again.verify()
    assert report.ok and report.records == 10
    assert [r.kind for r in again.audit(kinds=["denial"])] == ["denial", "denial"]


def test_the_example_runs_as_a_program() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.startswith("  DENY ") for line in lines) == 2
    assert sum(line.startswith("  ALLOW ") for line in lines) == 3
    assert "verify(): OK (10 records)" in done.stdout
