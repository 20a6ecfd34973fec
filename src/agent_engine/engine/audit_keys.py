"""The audit keys the settings name: the signer of chain heads and the key verify checks with."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent_engine.config import Settings
from agent_engine.domain.audit_signing import (
    HeadSigner,
    KeyFormatError,
    load_private_key,
    load_public_key,
)
from agent_engine.errors import AuditKeyFileError

SIGNING_VARIABLE = "AGENT_ENGINE_AUDIT_SIGNING_KEY_FILE"
VERIFY_VARIABLE = "AGENT_ENGINE_AUDIT_VERIFY_KEY_FILE"


def _read(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AuditKeyFileError(f"{variable}: cannot read {path}: {exc.strerror}") from exc


def load_signer(settings: Settings) -> HeadSigner | None:
    """The signer of chain heads (None: heads are not signed); AuditKeyFileError names a file
    that is not an Ed25519 private key."""
    path = settings.audit_signing_key_file
    if path is None:
        return None
    try:
        return HeadSigner(load_private_key(_read(path, SIGNING_VARIABLE)))
    except KeyFormatError as exc:
        raise AuditKeyFileError(f"{SIGNING_VARIABLE}: {path}: {exc}") from exc


def public_key_file(path: Path, variable: str = "--public-key") -> Ed25519PublicKey:
    """The public key in ``path`` (PEM, raw 32 bytes, or a private key's public half)."""
    try:
        return load_public_key(_read(path, variable))
    except (KeyFormatError, ValueError) as exc:
        raise AuditKeyFileError(f"{variable}: {path}: {exc}") from exc


def load_verify_key(settings: Settings) -> Ed25519PublicKey | None:
    """The key signatures are checked with: the verify key file, else the signing key's public
    half (None: no key, signatures are not checked)."""
    if settings.audit_verify_key_file is not None:
        return public_key_file(settings.audit_verify_key_file, VERIFY_VARIABLE)
    signer = load_signer(settings)
    return signer.private_key.public_key() if signer is not None else None
