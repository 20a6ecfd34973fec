"""Chain-head signatures and the verifier's chain checks, on plain values."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent_engine.domain.audit_signing import (
    HeadSigner,
    KeyFormatError,
    head_message,
    key_id,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    signature_holds,
)
from agent_engine.domain.audit_verify import RunRows, recompute_event_hash, verify_run

RUN = uuid.UUID(int=42)


def test_the_signed_message_is_the_documented_text() -> None:
    assert head_message(RUN, 3, "ab" * 32) == (
        f"agent-engine audit head v1\n{RUN}\n3\n{'ab' * 32}".encode()
    )


def test_a_signature_holds_for_its_head_only() -> None:
    key = Ed25519PrivateKey.generate()
    signer = HeadSigner(key)
    signature = signer.sign(RUN, 3, "ab" * 32)
    public = key.public_key()
    assert signature_holds(public, signature, RUN, 3, "ab" * 32)
    assert not signature_holds(public, signature, RUN, 2, "ab" * 32)  # cut short
    assert not signature_holds(public, signature, RUN, 3, "cd" * 32)  # other head
    assert not signature_holds(public, signature, uuid.UUID(int=1), 3, "ab" * 32)
    assert not signature_holds(
        Ed25519PrivateKey.generate().public_key(), signature, RUN, 3, "ab" * 32
    )
    assert not signature_holds(public, "not base64!", RUN, 3, "ab" * 32)
    assert signer.key_id == key_id(public) and len(signer.key_id) == 64


def test_keys_load_from_pem_or_raw_bytes_and_the_public_half_from_a_private_key() -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    wanted = key_id(key.public_key())
    assert key_id(load_private_key(private_key_pem(key)).public_key()) == wanted
    assert key_id(load_private_key(raw).public_key()) == wanted
    assert key_id(load_public_key(public_key_pem(key.public_key()))) == wanted
    assert key_id(load_public_key(private_key_pem(key))) == wanted
    with pytest.raises(KeyFormatError):
        load_private_key(b"not a key at all")


def _chain(count: int) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    prev = None
    for seq in range(1, count + 1):
        event: dict[str, object] = {
            "run_id": RUN,
            "seq": seq,
            "type": "run.created" if seq == 1 else "test.event",
            "step_id": None,
            "payload": {"goal": "g", "workspace": None, "request_hash": None} if seq == 1 else {},
            "actor": "alice",
            "created_at": datetime(2030, 1, 1, 0, 0, seq, tzinfo=UTC),
            "prev_hash": prev,
        }
        event["hash"] = recompute_event_hash(event)
        prev = event["hash"]
        events.append(event)
    return events


def _run(events: list[dict[str, object]], **extra: object) -> dict[str, object]:
    return {
        "id": RUN,
        "goal": "g",
        "workspace": None,
        "request_hash": None,
        "created_by": "alice",
        "plan_version": 0,
        "audit_seq": len(events),
        "audit_head_hash": events[-1]["hash"] if events else None,
        **extra,
    }


def test_a_gap_a_length_and_a_head_are_named() -> None:
    events = _chain(4)
    assert verify_run(RunRows(run=_run(events), events=events))["valid"] is True
    gap = verify_run(RunRows(run=_run(events), events=[events[0], events[2], events[3]]))
    assert gap["first_broken"]["kind"] == "seq_gap" and gap["first_broken"]["seq"] == 2
    short = verify_run(RunRows(run=_run(events), events=events[:3]))
    assert short["first_broken"]["kind"] == "chain_truncated"
    moved = verify_run(RunRows(run=_run(events, audit_head_hash="00" * 32), events=events))
    assert moved["first_broken"]["kind"] == "head_mismatch"


def test_with_a_key_an_unsigned_or_wrongly_signed_head_is_not_valid() -> None:
    events = _chain(2)
    key = Ed25519PrivateKey.generate()
    head = str(events[-1]["hash"])
    signed = _run(events, audit_signature=HeadSigner(key).sign(RUN, 2, head))
    assert verify_run(RunRows(run=signed, events=events), key.public_key())["signature"] == "valid"
    assert verify_run(RunRows(run=signed, events=events))["signature"] == "no_key"
    unsigned = verify_run(RunRows(run=_run(events), events=events), key.public_key())
    assert unsigned["valid"] is False and unsigned["first_broken"]["kind"] == "signature_missing"
    other = verify_run(
        RunRows(run=signed, events=events), Ed25519PrivateKey.generate().public_key()
    )
    assert other["signature"] == "invalid" and other["valid"] is False
