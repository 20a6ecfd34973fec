"""Ed25519 signatures of audit chain heads, made with a key the database never holds.

The signed message is the UTF-8 text ``agent-engine audit head v1\\n{run_id}\\n{audit_seq}\\n
{audit_head_hash}`` (the run id in its hyphenated form, the seq in decimal, the head hash in hex),
so a chain recomputed wholesale, or one cut short with its head moved back, no longer matches a
signature only the key's holder can make. The key id is the SHA-256 (hex) of the raw 32-byte
public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

RAW_KEY_SIZE = 32


class KeyFormatError(ValueError):
    """The bytes are not an Ed25519 key in a form we read (PEM or raw 32 bytes)."""


def head_message(run_id: uuid.UUID | str, audit_seq: int, audit_head_hash: str | None) -> bytes:
    """The bytes a chain head's signature is made over."""
    head = audit_head_hash or ""
    return f"agent-engine audit head v1\n{uuid.UUID(str(run_id))}\n{audit_seq}\n{head}".encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    """The public key's fingerprint: SHA-256 (hex) of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def load_private_key(data: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8) or its raw 32 bytes."""
    if len(data) == RAW_KEY_SIZE:
        return Ed25519PrivateKey.from_private_bytes(data)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not an Ed25519 private key (PEM or raw 32 bytes): {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError("the PEM key is not an Ed25519 private key")
    return key


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo), raw 32 bytes, or a private key's
    PEM or raw bytes (its public half)."""
    if len(data) == RAW_KEY_SIZE:
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        return load_private_key(data).public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFormatError("the PEM key is not an Ed25519 public key")
    return key


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM (what ``audit keygen`` writes)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    """The public key as SubjectPublicKeyInfo PEM."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class HeadSigner:
    """Signs chain heads with one private key."""

    private_key: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return key_id(self.private_key.public_key())

    def sign(self, run_id: uuid.UUID, audit_seq: int, audit_head_hash: str | None) -> str:
        """The base64 signature of this head."""
        message = head_message(run_id, audit_seq, audit_head_hash)
        return base64.b64encode(self.private_key.sign(message)).decode("ascii")


def signature_holds(
    public_key: Ed25519PublicKey,
    signature: str,
    run_id: uuid.UUID | str,
    audit_seq: int,
    audit_head_hash: str | None,
) -> bool:
    """Whether ``signature`` (base64) is ``public_key``'s signature of this head."""
    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, head_message(run_id, audit_seq, audit_head_hash))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
