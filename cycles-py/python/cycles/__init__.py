"""Cycles: an embeddable runtime authority for AI agents.

Every proposed tool call is classified into a tier (0..4), checked against RISK_POINTS and
money budgets on every scope of its subject, reserved before it runs and committed or released
after; every step is a hash-chained audit record. All of it happens in the Rust core
(``cycles-core``); this package is a thin binding over it.

    import cycles

    auth = cycles.Authority.open("cycles.db", policy="policy.toml")
    subject = {"tenant": "acme", "agent": "coder"}
    with auth.reserve("run_sql", {"query": "DELETE FROM t WHERE id = 1"}, subject=subject) as r:
        run_sql("DELETE FROM t WHERE id = 1")
        r.commit()
"""

from ._cycles import (
    ApprovalRequired,
    AuditRecord,
    Authority,
    Balance,
    Caps,
    CommitResult,
    Conflict,
    CyclesError,
    Decision,
    Denied,
    EventResult,
    InvalidInput,
    LedgerError,
    ManualClock,
    NotFound,
    PolicyError,
    ReleaseResult,
    Reservation,
    VerifyReport,
    __version__,
)
from ._guard import guard

__all__ = [
    "ApprovalRequired",
    "AuditRecord",
    "Authority",
    "Balance",
    "Caps",
    "CommitResult",
    "Conflict",
    "CyclesError",
    "Decision",
    "Denied",
    "EventResult",
    "InvalidInput",
    "LedgerError",
    "ManualClock",
    "NotFound",
    "PolicyError",
    "ReleaseResult",
    "Reservation",
    "VerifyReport",
    "__version__",
    "guard",
]
