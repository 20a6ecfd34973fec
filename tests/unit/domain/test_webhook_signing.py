"""Standard Webhooks signatures: the spec's test vector, and a check written from the spec."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from agent_engine.domain.webhook_signing import secret_bytes, signature, signed_headers, verify

# The test vector of the Standard Webhooks reference libraries.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def independent_signature(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    """The spec, step by step: base64-decode after ``whsec_``, HMAC-SHA256 over
    ``id.timestamp.body``, base64, prefixed with the version."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = message_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def test_signature_matches_the_spec_test_vector() -> None:
    key = secret_bytes(SPEC_SECRET)
    assert signature(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_headers_verify_with_an_independent_implementation() -> None:
    body = '{"type":"budget.threshold_reached","data":{"subject":"é"}}'.encode()
    headers = signed_headers(secret_bytes(SPEC_SECRET), "msg_1", 1_700_000_000, body)
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == "1700000000"
    expected = independent_signature(SPEC_SECRET, "msg_1", "1700000000", body)
    assert headers["webhook-signature"] == expected


def test_verify_accepts_the_right_signature_among_several_and_refuses_tampering() -> None:
    key = secret_bytes(SPEC_SECRET)
    headers = signed_headers(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    several = {**headers, "webhook-signature": "v1,bm9wZQ== " + headers["webhook-signature"]}
    assert verify(key, several, SPEC_BODY, now=SPEC_TIMESTAMP, tolerance_s=300)
    assert not verify(key, headers, SPEC_BODY + b" ", now=SPEC_TIMESTAMP, tolerance_s=300)
    assert not verify(key, headers, SPEC_BODY, now=SPEC_TIMESTAMP + 301, tolerance_s=300)
    other = secret_bytes("whsec_" + base64.b64encode(b"x" * 32).decode())
    assert not verify(other, headers, SPEC_BODY, now=SPEC_TIMESTAMP, tolerance_s=300)
    assert not verify(key, {}, SPEC_BODY, now=SPEC_TIMESTAMP, tolerance_s=300)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with"),
        ("whsec_not base64!", "base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "24 to 64 bytes"),
    ],
)
def test_unusable_secrets_are_refused(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        secret_bytes(secret)
