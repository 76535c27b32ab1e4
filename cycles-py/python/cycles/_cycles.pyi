"""Type stubs of the compiled module ``cycles._cycles`` (checked by ``mypy.stubtest``)."""

import os
from typing import Any, Callable, Coroutine, Literal, Mapping, Optional, Sequence, TypeVar, Union, final

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
]

__version__: str

_F = TypeVar("_F", bound=Callable[..., Any])

_JSON = Union[None, bool, int, float, str, Sequence["_JSON"], Mapping[str, "_JSON"]]
"""What tool arguments may contain: _JSON values (finite floats, ints within i64, str keys)."""

_Amounts = Union[Mapping[str, int], Sequence[Mapping[str, Any]]]
"""``{"RISK_POINTS": 5, "USD_MICROCENTS": 2_000_000}`` or ``[{"unit": ..., "amount": ...}]``."""

_CallOutcome = Literal["COMPLETED", "FAILED", "INTERRUPTED", "NOT_STARTED"]
"""How a reserved call ended, for ``settle``: returned, raised (the policy's
``[defaults] on_failure`` decides), stopped from outside after it started (charged), never ran
(released)."""

_Subject = Mapping[str, Any]
"""``{"tenant": ..., "workspace": ..., "app": ..., "workflow": ..., "agent": ..., "toolset": ...,
"dimensions": {...}}``: at least one level."""

_PolicyLike = Union[str, os.PathLike[str], Mapping[str, Any], None]
"""A path to a TOML policy file, the policy as a dict, or None (the default policy)."""

class CyclesError(Exception):
    code: str

class Denied(CyclesError):
    reason_code: Optional[str]
    decision: Optional[Decision]
    request_id: Optional[str]

class ApprovalRequired(Denied): ...
class PolicyError(CyclesError): ...
class LedgerError(CyclesError): ...
class InvalidInput(CyclesError): ...
class NotFound(CyclesError): ...
class Conflict(CyclesError): ...

@final
class Caps:
    @property
    def max_tokens(self) -> Optional[int]: ...
    @property
    def max_steps_remaining(self) -> Optional[int]: ...
    @property
    def tool_allowlist(self) -> Optional[tuple[str, ...]]: ...
    @property
    def tool_denylist(self) -> Optional[tuple[str, ...]]: ...
    @property
    def cooldown_ms(self) -> Optional[int]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Balance:
    @property
    def scope(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def allocated(self) -> int: ...
    @property
    def spent(self) -> int: ...
    @property
    def reserved(self) -> int: ...
    @property
    def debt(self) -> int: ...
    @property
    def remaining(self) -> int: ...
    @property
    def overdraft_limit(self) -> int: ...
    @property
    def is_over_limit(self) -> bool: ...
    @property
    def status(self) -> Literal["ACTIVE", "FROZEN", "CLOSED"]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Decision:
    @property
    def decision(self) -> Literal["ALLOW", "ALLOW_WITH_CAPS", "DENY"]: ...
    @property
    def reason_code(self) -> Optional[str]: ...
    @property
    def allowed(self) -> bool: ...
    @property
    def tier(self) -> int: ...
    @property
    def risk_points(self) -> int: ...
    @property
    def rules(self) -> tuple[str, ...]: ...
    @property
    def caps(self) -> Optional[Caps]: ...
    @property
    def scope(self) -> Optional[str]: ...
    @property
    def balances(self) -> tuple[Balance, ...]: ...
    @property
    def retry_after_ms(self) -> Optional[int]: ...
    @property
    def approval_request_id(self) -> Optional[str]: ...
    @property
    def approval_invalid_reason(self) -> Optional[str]: ...
    @property
    def message(self) -> Optional[str]: ...
    def to_dict(self) -> dict[str, Any]: ...
    def __bool__(self) -> bool: ...

@final
class CommitResult:
    @property
    def reservation_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def event_id(self) -> Optional[str]: ...
    @property
    def charged(self) -> dict[str, int]: ...
    @property
    def released(self) -> dict[str, int]: ...
    @property
    def debt_incurred(self) -> dict[str, int]: ...
    @property
    def balances(self) -> tuple[Balance, ...]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class ReleaseResult:
    @property
    def reservation_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def released(self) -> dict[str, int]: ...
    @property
    def balances(self) -> tuple[Balance, ...]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class EventResult:
    @property
    def event_id(self) -> str: ...
    @property
    def charged(self) -> dict[str, int]: ...
    @property
    def debt_incurred(self) -> dict[str, int]: ...
    @property
    def balances(self) -> tuple[Balance, ...]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class VerifyReport:
    @property
    def ok(self) -> bool: ...
    @property
    def records(self) -> int: ...
    @property
    def head_hash(self) -> str: ...
    @property
    def first_broken_seq(self) -> Optional[int]: ...
    @property
    def first_broken_reason(self) -> Optional[str]: ...
    @property
    def state_mismatches(self) -> list[tuple[str, str]]: ...
    def to_dict(self) -> dict[str, Any]: ...
    def __bool__(self) -> bool: ...

@final
class AuditRecord:
    @property
    def seq(self) -> int: ...
    @property
    def time_ms(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def subject(self) -> Optional[dict[str, Any]]: ...
    @property
    def scopes(self) -> tuple[str, ...]: ...
    @property
    def tool(self) -> Optional[str]: ...
    @property
    def call_digest(self) -> Optional[str]: ...
    @property
    def decision(self) -> Optional[str]: ...
    @property
    def reason_code(self) -> Optional[str]: ...
    @property
    def tier(self) -> Optional[int]: ...
    @property
    def amounts(self) -> dict[str, int]: ...
    @property
    def budgets(self) -> tuple[Balance, ...]: ...
    @property
    def caps(self) -> tuple[dict[str, Any], ...]: ...
    @property
    def reservation_id(self) -> Optional[str]: ...
    @property
    def detail(self) -> Any: ...
    @property
    def prev_hash(self) -> str: ...
    @property
    def hash(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class ManualClock:
    def __new__(cls, start_ms: int = 0) -> ManualClock: ...
    def advance(self, delta_ms: int) -> None: ...
    def set(self, ms: int) -> None: ...
    @property
    def now_ms(self) -> int: ...

@final
class Reservation:
    @property
    def reservation_id(self) -> str: ...
    @property
    def status(self) -> Literal["ACTIVE", "COMMITTED", "RELEASED", "EXPIRED"]: ...
    @property
    def tool(self) -> str: ...
    @property
    def subject(self) -> dict[str, Any]: ...
    @property
    def tier(self) -> int: ...
    @property
    def call_digest(self) -> str: ...
    @property
    def decision(self) -> Decision: ...
    @property
    def reserved(self) -> dict[str, int]: ...
    @property
    def scopes(self) -> dict[str, tuple[str, ...]]: ...
    @property
    def charged(self) -> dict[str, int]: ...
    @property
    def created_at_ms(self) -> int: ...
    @property
    def expires_at_ms(self) -> int: ...
    @property
    def grace_ms(self) -> int: ...
    @property
    def extensions(self) -> int: ...
    @property
    def overage_policy(self) -> str: ...
    def commit(
        self,
        actual: Optional[_Amounts] = None,
        *,
        ran: Optional[Mapping[str, Any]] = None,
        charge_if_expired: bool = False,
        idempotency_key: Optional[str] = None,
    ) -> CommitResult: ...
    def release(
        self, reason: Optional[str] = None, *, idempotency_key: Optional[str] = None
    ) -> ReleaseResult: ...
    def settle(
        self,
        outcome: _CallOutcome,
        actual: Optional[_Amounts] = None,
        *,
        ran: Optional[Mapping[str, Any]] = None,
        reason: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> Union[CommitResult, ReleaseResult]: ...
    def settle_or_owe(
        self,
        outcome: _CallOutcome,
        actual: Optional[_Amounts] = None,
        *,
        ran: Optional[Mapping[str, Any]] = None,
        reason: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> Optional[Union[CommitResult, ReleaseResult]]: ...
    def extend(self, by_ms: int, *, idempotency_key: Optional[str] = None) -> Reservation: ...
    def to_dict(self) -> dict[str, Any]: ...
    def __enter__(self) -> Reservation: ...
    def __exit__(
        self, exc_type: Optional[type[BaseException]] = None, _exc_value: object = None, _traceback: object = None
    ) -> bool: ...

@final
class Authority:
    @staticmethod
    def open(
        path: Union[str, os.PathLike[str]],
        policy: _PolicyLike = None,
        *,
        clock: Optional[ManualClock] = None,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = 10000,
    ) -> Authority: ...
    @staticmethod
    def in_memory(policy: _PolicyLike = None, *, clock: Optional[ManualClock] = None) -> Authority: ...
    def decide(
        self,
        tool: str,
        args: _JSON = None,
        *,
        subject: _Subject,
        estimate: Optional[_Amounts] = None,
        kind: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
    ) -> Decision: ...
    def reserve(
        self,
        tool: str,
        args: _JSON = None,
        *,
        subject: _Subject,
        estimate: Optional[_Amounts] = None,
        kind: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        ttl_ms: Optional[int] = None,
        grace_period_ms: Optional[int] = None,
        overage_policy: Optional[Literal["REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"]] = None,
        idempotency_key: Optional[str] = None,
        grant: Optional[Mapping[str, Any]] = None,
    ) -> Reservation: ...
    def commit(
        self,
        reservation_id: str,
        actual: Optional[_Amounts] = None,
        *,
        ran: Optional[Mapping[str, Any]] = None,
        charge_if_expired: bool = False,
        idempotency_key: Optional[str] = None,
    ) -> CommitResult: ...
    def release(
        self, reservation_id: str, reason: Optional[str] = None, *, idempotency_key: Optional[str] = None
    ) -> ReleaseResult: ...
    def settle(
        self,
        reservation_id: str,
        outcome: _CallOutcome,
        actual: Optional[_Amounts] = None,
        *,
        ran: Optional[Mapping[str, Any]] = None,
        reason: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> Union[CommitResult, ReleaseResult]: ...
    def settle_or_owe(
        self,
        reservation_id: str,
        outcome: _CallOutcome,
        actual: Optional[_Amounts] = None,
        *,
        ran: Optional[Mapping[str, Any]] = None,
        reason: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> Optional[Union[CommitResult, ReleaseResult]]: ...
    def owed_settlements(self) -> list[dict[str, Any]]: ...
    def retry_owed(self) -> list[dict[str, Any]]: ...
    def extend(self, reservation_id: str, by_ms: int, *, idempotency_key: Optional[str] = None) -> Reservation: ...
    def reservation(self, reservation_id: str) -> Reservation: ...
    def reservation_by_key(self, idempotency_key: str) -> Optional[Reservation]: ...
    def approval(self, request_id: str) -> dict[str, Any]: ...
    def approvals(
        self, status: Optional[Literal["PENDING", "GRANTED", "DENIED", "EXPIRED", "CONSUMED"]] = None
    ) -> list[dict[str, Any]]: ...
    def record_approval(self, request_id: str, response: Union[Mapping[str, Any], Literal["pending"]]) -> dict[str, Any]: ...
    def event(
        self,
        tool: str,
        args: _JSON = None,
        *,
        subject: _Subject,
        actual: _Amounts,
        kind: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        overage_policy: Optional[Literal["REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"]] = None,
        idempotency_key: Optional[str] = None,
    ) -> EventResult: ...
    def set_budget(
        self,
        scope: str,
        unit: str,
        allocated: int,
        *,
        overdraft_limit: Optional[int] = None,
        status: Optional[Literal["ACTIVE", "FROZEN", "CLOSED"]] = None,
    ) -> Balance: ...
    def balances(self, scope: Optional[str] = None) -> list[Balance]: ...
    def sweep_expired(self) -> int: ...
    def audit(
        self,
        *,
        scope: Optional[str] = None,
        kinds: Optional[Sequence[str]] = None,
        since_ms: Optional[int] = None,
        until_ms: Optional[int] = None,
        after_seq: Optional[int] = None,
        limit: Optional[int] = None,
    ) -> list[AuditRecord]: ...
    def verify(self, anchors: Optional[Sequence[str]] = None) -> VerifyReport: ...
    def audit_anchor(self) -> Optional[str]: ...
    def export_jsonl(self, path: Union[str, os.PathLike[str]]) -> int: ...
    def now_ms(self) -> int: ...
    def policy(self) -> dict[str, Any]: ...
    def explain(
        self,
        tool: str,
        args: _JSON = None,
        *,
        scope: Optional[str] = None,
        kind: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
    ) -> dict[str, Any]:
        """``{"tool", "tier", "kind", "rules", "unknown", "risk_points", "deny":
        {"reason_code", "message"} | None, "approval_required"}``; reads no ledger."""
    def adecide(
        self,
        tool: str,
        args: _JSON = None,
        *,
        subject: _Subject,
        estimate: Optional[_Amounts] = None,
        kind: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
    ) -> Coroutine[Any, Any, Decision]: ...
    def areserve(
        self,
        tool: str,
        args: _JSON = None,
        *,
        subject: _Subject,
        estimate: Optional[_Amounts] = None,
        kind: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        ttl_ms: Optional[int] = None,
        grace_period_ms: Optional[int] = None,
        overage_policy: Optional[Literal["REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"]] = None,
        idempotency_key: Optional[str] = None,
        grant: Optional[Mapping[str, Any]] = None,
    ) -> Coroutine[Any, Any, Reservation]: ...
    def guard(
        self,
        tool: Optional[str] = None,
        *,
        subject: _Subject,
        estimate: Optional[_Amounts] = None,
        kind: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        map_args: Optional[Callable[[dict[str, Any]], Any]] = None,
        actual: Optional[Callable[[Any], Optional[_Amounts]]] = None,
    ) -> Callable[[_F], _F]: ...
