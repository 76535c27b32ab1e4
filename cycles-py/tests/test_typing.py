"""The stubs match the compiled module (mypy.stubtest) and the package type-checks strictly,
including code that uses the stubs the way a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "cycles"

USAGE = '''
import asyncio
import cycles

auth = cycles.Authority.in_memory({"tools": [{"name": "t", "tier": 0}]})
d: cycles.Decision = auth.decide("t", {"a": [1, 2.5, None]}, subject={"agent": "bot"})
tier: int = d.tier
reason: str | None = d.reason_code
with auth.reserve("t", subject={"agent": "bot"}, estimate={"TOKENS": 5}) as r:
    res: cycles.CommitResult = r.commit({"TOKENS": 3})
    charged: dict[str, int] = res.charged
settled: cycles.CommitResult | cycles.ReleaseResult = auth.reserve("t", subject={"agent": "bot"}).settle(
    "NOT_STARTED", reason="declined"
)
try:
    auth.reserve("t", subject={"agent": "bot"})
except cycles.Denied as e:
    dec: cycles.Decision | None = e.decision
    code: str = e.code

async def main() -> cycles.Reservation:
    return await auth.areserve("t", subject={"agent": "bot"})

@auth.guard("t", subject={"agent": "bot"})
def f(x: int) -> str:
    return str(x)

s: str = f(1)
'''

BROKEN_USAGE = '''
import cycles
auth = cycles.Authority.in_memory()
tier: str = auth.decide("t", subject={"agent": "bot"}).tier
'''


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600)


def test_stubtest() -> None:
    done = run("mypy.stubtest", "cycles._cycles")
    assert done.returncode == 0, done.stdout + done.stderr


def test_package_is_strictly_typed() -> None:
    done = run("mypy", "--strict", str(PACKAGE))
    assert done.returncode == 0, done.stdout + done.stderr


def test_user_code_type_checks_against_the_stubs(tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_text(USAGE)
    done = run("mypy", "--strict", "--python-version", "3.10", str(good))
    assert done.returncode == 0, done.stdout + done.stderr
    # And a wrong use is caught: the stubs are not Any everywhere.
    bad = tmp_path / "bad.py"
    bad.write_text(BROKEN_USAGE)
    done = run("mypy", "--strict", str(bad))
    assert done.returncode != 0 and "int" in done.stdout, done.stdout
