"""Approvals through the binding: a tier-4 call raises ApprovalRequired with the request id;
an approver outside the agent signs a grant (Ed25519, with the `cryptography` package, over
the core's documented message); the grant lets exactly that call through once."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import cycles

SUBJECT = {"tenant": "acme", "agent": "bot"}
# The subject's innermost scope: a grant names it (grant v2).
SCOPE = "tenant:acme/agent:bot"
CALL = ("railway.delete_volume", {"volumeId": "vol_prod_main"})


class Approver:
    """Holds a private key the agent never sees and signs grants for request ids."""

    def __init__(self, approver_id: str) -> None:
        self.id = approver_id
        self.key = Ed25519PrivateKey.generate()
        self.public_hex = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def grant(
        self, request_id: str, call_digest: str, expires_at_ms: int, scope: str = SCOPE
    ) -> dict[str, Any]:
        message = (
            "cycles.approval.grant.v2\n"
            f"request_id:{request_id}\nscope:{scope}\ncall_digest:{call_digest}\n"
            f"approver_id:{self.id}\nexpires_at_ms:{expires_at_ms}\n"
        ).encode()
        return {
            "approver_id": self.id,
            "call_digest": call_digest,
            "expires_at_ms": expires_at_ms,
            "public_key": self.public_hex,
            "request_id": request_id,
            "scope": scope,
            "signature": self.key.sign(message).hex(),
        }


@pytest.fixture
def alice() -> Approver:
    return Approver("alice")


@pytest.fixture
def auth(alice: Approver) -> cycles.Authority:
    return cycles.Authority.in_memory({
        "tools": [{"name": "railway.delete_volume", "tier": 4}, {"name": "read_file", "tier": 0}],
        "budgets": [{"scope": "tenant:acme", "unit": "RISK_POINTS", "allocated": 100}],
        "approval": {"threshold_tier": 4, "public_keys": [alice.public_hex]},
    })


def held(a: cycles.Authority) -> int:
    [b] = a.balances("tenant:acme")
    return b.reserved


def ask(a: cycles.Authority, args: dict[str, Any] = CALL[1]) -> cycles.ApprovalRequired:
    with pytest.raises(cycles.ApprovalRequired) as e:
        a.reserve(CALL[0], args, subject=SUBJECT)
    return e.value


def test_approval_required_carries_the_request(auth: cycles.Authority) -> None:
    err = ask(auth)
    assert isinstance(err, cycles.Denied)
    assert err.code == err.reason_code == "APPROVAL_REQUIRED"
    assert err.request_id is not None and err.request_id.startswith("apr_")
    assert err.decision is not None and err.decision.approval_request_id == err.request_id
    assert held(auth) == 0
    [pending] = auth.approvals("PENDING")
    assert pending["request_id"] == err.request_id
    assert pending["call"] == {"name": CALL[0], "args": CALL[1]} and pending["tier"] == 4
    assert auth.approval(err.request_id) == pending
    assert [r.kind for r in auth.audit()][-2:] == ["approval_requested", "denial"]
    # decide says the same without a second request
    d = auth.decide(*CALL, subject=SUBJECT)
    assert d.reason_code == "APPROVAL_REQUIRED" and d.approval_request_id == err.request_id


def test_a_grant_lets_exactly_that_call_through_once(auth: cycles.Authority, alice: Approver) -> None:
    err = ask(auth)
    request = auth.approval(err.request_id)  # type: ignore[arg-type]
    grant = alice.grant(request["request_id"], request["call_digest"], auth.now_ms() + 60_000)

    # Another call (other arguments) cannot use it.
    with pytest.raises(cycles.Denied) as e:
        auth.reserve(CALL[0], {"volumeId": "vol_other"}, subject=SUBJECT, grant=grant)
    assert e.value.reason_code == "APPROVAL_INVALID"
    assert e.value.decision is not None and e.value.decision.approval_invalid_reason == "digest_mismatch"
    assert held(auth) == 0

    r = auth.reserve(*CALL, subject=SUBJECT, grant=grant)
    assert r.status == "ACTIVE" and r.reserved == {"RISK_POINTS": 50}
    assert "approval.grant" in r.decision.rules
    assert auth.approval(err.request_id)["status"] == "CONSUMED"  # type: ignore[arg-type]
    r.commit()

    with pytest.raises(cycles.Denied) as e:
        auth.reserve(*CALL, subject=SUBJECT, grant=grant)
    assert e.value.decision is not None and e.value.decision.approval_invalid_reason == "already_used"
    [b] = auth.balances("tenant:acme")
    assert (b.spent, b.reserved) == (50, 0)
    assert auth.verify().ok


def test_a_forged_or_foreign_grant_is_refused(auth: cycles.Authority, alice: Approver) -> None:
    err = ask(auth)
    request = auth.approval(err.request_id)  # type: ignore[arg-type]
    mallory = Approver("mallory")  # a key the policy does not list
    foreign = mallory.grant(request["request_id"], request["call_digest"], auth.now_ms() + 60_000)
    forged = dict(alice.grant(request["request_id"], request["call_digest"], auth.now_ms() + 60_000))
    forged["expires_at_ms"] += 1  # the signature no longer covers the fields
    # Signed for the same request and call as shown with another subject: not this subject's.
    elsewhere = alice.grant(
        request["request_id"], request["call_digest"], auth.now_ms() + 60_000, "tenant:acme/agent:bot2"
    )
    for grant, reason in (
        (foreign, "unknown_key"),
        (forged, "bad_signature"),
        (elsewhere, "subject_mismatch"),
    ):
        with pytest.raises(cycles.Denied) as e:
            auth.reserve(*CALL, subject=SUBJECT, grant=grant)
        assert e.value.decision is not None and e.value.decision.approval_invalid_reason == reason
    assert held(auth) == 0
    with pytest.raises(cycles.InvalidInput):
        auth.reserve(*CALL, subject=SUBJECT, grant={"approver_id": "x"})


def test_recording_an_approvers_answer(auth: cycles.Authority, alice: Approver) -> None:
    err = ask(auth)
    rid: str = err.request_id  # type: ignore[assignment]
    request = auth.approval(rid)
    grant = alice.grant(rid, request["call_digest"], auth.now_ms() + 60_000)
    assert auth.record_approval(rid, "pending")["status"] == "PENDING"
    stored = auth.record_approval(rid, {"grant": grant})
    assert stored["status"] == "GRANTED" and stored["grant"] == grant
    assert auth.approvals("GRANTED")[0]["request_id"] == rid

    bad = dict(grant, signature="00" * 64)
    err2 = ask(auth, {"volumeId": "vol_two"})
    with pytest.raises(cycles.CyclesError) as e:
        auth.record_approval(err2.request_id, {"grant": dict(bad, request_id=err2.request_id)})  # type: ignore[arg-type]
    assert e.value.code == "APPROVAL_INVALID"
    assert auth.approval(err2.request_id)["status"] == "PENDING"  # type: ignore[arg-type]
    with pytest.raises(cycles.NotFound):
        auth.approval("apr_" + "0" * 32)
