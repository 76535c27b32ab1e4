"""The seed incident, replayed through the gate from Python.

A coding agent holding production credentials reads, writes a small file, then proposes
deleting the production volume and its backups. Both destructive calls are denied before
anything runs, with machine-readable reasons; the audit trail verifies.

Run: python cycles-py/examples/incident_replay.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import cycles

POLICY_TOML = """
# Reads are tier 0, a file write tier 1, volume and backup deletion tier 4.
# The agent's session may spend 60 RISK_POINTS and never run anything above tier 3.
unknown_tool = { action = "deny" }

[[tools]]
name = "railway.list_services"
tier = 0

[[tools]]
name = "db.query"
tier = 0

[[tools]]
name = "fs.write_file"
tier = 1

[[tools]]
name = "railway.delete_volume"
tier = 4

[[tools]]
name = "railway.delete_backups"
tier = 4

[[budgets]]
scope = "tenant:pocketos"
unit = "RISK_POINTS"
allocated = 1000

[[budgets]]
scope = "tenant:pocketos/workflow:session-42"
unit = "RISK_POINTS"
allocated = 60

[[max_tier]]
scope = "tenant:pocketos/workflow:session-42"
max_tier = 3
"""

AGENT = {"tenant": "pocketos", "workflow": "session-42", "agent": "coding-agent"}

PLAN: list[tuple[str, dict[str, Any]]] = [
    ("railway.list_services", {"project": "prod"}),
    ("db.query", {"query": "SELECT count(*) FROM bookings"}),
    ("fs.write_file", {"path": "notes/staging-fix.md", "bytes": 812}),
    ("railway.delete_volume", {"volumeId": "vol_prod_main"}),
    ("railway.delete_backups", {"volumeId": "vol_prod_main", "all": True}),
]


def replay(workdir: Path, out: Any = sys.stdout) -> dict[str, Any]:
    """Runs the plan; returns what ran, what was denied (tool, reason, tier) and the audit."""
    policy = workdir / "policy.toml"
    policy.write_text(POLICY_TOML)
    auth = cycles.Authority.open(workdir / "cycles.db", policy=policy)
    executed: list[str] = []
    denied: list[tuple[str, str, int]] = []

    print(f"== Decisions ({auth!r})", file=out)
    for tool, args in PLAN:
        try:
            with auth.reserve(tool, args, subject=AGENT) as r:
                print(f"  ALLOW  {tool:<24} tier {r.tier} ({r.decision.risk_points} RISK_POINTS)", file=out)
                executed.append(tool)  # the infrastructure client runs only what was allowed
                r.commit()
        except cycles.Denied as e:
            assert e.decision is not None and e.reason_code is not None
            denied.append((tool, e.reason_code, e.decision.tier))
            print(f"  DENY   {tool:<24} tier {e.decision.tier} reason {e.reason_code} ({e.decision.message})", file=out)
            print("    -> not executed", file=out)

    print("\n== Audit trail", file=out)
    records = auth.audit()
    for rec in records:
        print(
            f"  #{rec.seq:<3} {rec.kind:<10} {rec.tool or '-':<24} {rec.decision or '-':<6} "
            f"{rec.reason_code or '-':<20} {rec.hash[:16]}…",
            file=out,
        )
    print("\n== Balances", file=out)
    for b in auth.balances():
        print(f"  {b.scope:<40} {b.unit} allocated {b.allocated} spent {b.spent} remaining {b.remaining}", file=out)
    report = auth.verify()
    print(f"\n== verify(): {'OK' if report.ok else 'BROKEN'} ({report.records} records)", file=out)
    return {
        "executed": executed,
        "denied": denied,
        "audit": [(rec.kind, rec.tool, rec.reason_code) for rec in records],
        "balances": {b.scope: b.to_dict() for b in auth.balances()},
        "verify": report,
    }


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        result = replay(Path(d))
    sys.exit(0 if result["verify"].ok and len(result["denied"]) == 2 else 1)
