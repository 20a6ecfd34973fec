"""API keys: made (shown once), listed, revoked, and checked on every request.

A key reads ``ae_<prefix>_<secret>``: the prefix finds its row with one indexed lookup, the
secret (256 random bits) is checked against a salted HMAC-SHA256. A slow password hash (bcrypt,
argon2) protects guessable passwords; a 256-bit random secret cannot be guessed, and a hash that
costs tens of milliseconds per request would dwarf the request itself.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent_engine.access_errors import ApiKeyNameTakenError
from agent_engine.domain.clock import utcnow
from agent_engine.domain.principals import Principal, Role
from agent_engine.errors import ConflictError, InputValidationError, NotFoundError
from agent_engine.storage.api_keys import (
    DuplicateKeyError,
    admin_key_exists_txn,
    find_key_by_name_txn,
    find_key_by_prefix_txn,
    insert_key_txn,
    list_keys_txn,
    revoke_key_txn,
)
from agent_engine.storage.database import read_transaction, transaction
from agent_engine.storage.tables import ApiKey

logger = logging.getLogger(__name__)

KEY_SCHEME = "ae"
PREFIX_RE = re.compile(r"[0-9a-f]{12}")
SECRET_BYTES = 32
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}")
NAME_RULE = "1–100 letters, digits and . _ @ : - (starting with a letter or digit)"
CACHE_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown of a key: everything but its secret and hash."""

    name: str
    role: Role
    prefix: str
    may_auto_approve: bool
    created_by: str
    created_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyInfo:
        return cls(
            name=row.name,
            role=Role(row.role),
            prefix=row.prefix,
            may_auto_approve=row.may_auto_approve,
            created_by=row.created_by,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            revoked_by=row.revoked_by,
        )


@dataclass(frozen=True)
class NewKey:
    info: KeyInfo
    token: str  # the key itself: shown to its creator once, stored nowhere


def parse_role(value: str) -> Role:
    """The role named ``value``; a 422 naming the roles otherwise."""
    try:
        return Role(value.strip().lower())
    except ValueError:
        names = ", ".join(role.value for role in Role)
        raise InputValidationError(
            f"unknown role {value!r}; one of {names}",
            errors=[{"field": "role", "message": f"unknown role {value!r}"}],
        ) from None


def check_key_name(name: str) -> str:
    if NAME_RE.fullmatch(name) is None:
        raise InputValidationError(
            f"invalid key name {name!r}: {NAME_RULE}",
            errors=[{"field": "name", "message": NAME_RULE}],
        )
    return name


def _digest(salt: bytes, secret: str) -> str:
    return hmac.new(salt, secret.encode(), hashlib.sha256).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """``(prefix, secret)`` of a well-formed key, else None (the secret may contain ``_``)."""
    scheme, _, rest = token.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != KEY_SCHEME or PREFIX_RE.fullmatch(prefix) is None or not secret:
        return None
    return prefix, secret


def principal_of(row: ApiKey) -> Principal:
    role = Role(row.role)
    return Principal(
        name=row.name,
        role=role,
        key_id=row.id,
        may_auto_approve=row.may_auto_approve or role is Role.ADMIN,
    )


class ApiKeys:
    """The key service of one process: its database, and the keys it verified recently.

    A verified key is believed for ``cache_ttl_s`` without asking the database again: a
    revocation made in this process takes effect at once, one made elsewhere within the TTL.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        cache_ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._ttl = cache_ttl_s
        self._clock = clock
        # sha256(token) → (principal, believed until): the tokens themselves are not kept.
        self._verified: dict[bytes, tuple[Principal, float]] = {}

    async def create(
        self, *, name: str, role: Role, may_auto_approve: bool, created_by: str
    ) -> NewKey:
        """Make a key; its token is in the result and nowhere else. 409 if the name is taken
        (names stay taken after revocation: the audit log knows actors by name)."""
        check_key_name(name)
        prefix = secrets.token_hex(6)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        salt = secrets.token_bytes(16)
        row = {
            "id": uuid.uuid4(),
            "name": name,
            "prefix": prefix,
            "salt": salt.hex(),
            "secret_hash": _digest(salt, secret),
            "role": role.value,
            "may_auto_approve": may_auto_approve or role is Role.ADMIN,
            "created_by": created_by,
            "created_at": utcnow(),
        }
        try:
            async with transaction(self._sessions) as session:
                key = await insert_key_txn(session, row)
        except DuplicateKeyError:
            raise ApiKeyNameTakenError(
                f"an API key named {name!r} exists already (names are never reused)", name=name
            ) from None
        logger.info("API key %r (%s) created by %s", name, role.value, created_by)
        return NewKey(KeyInfo.of(key), f"{KEY_SCHEME}_{prefix}_{secret}")

    async def list_keys(self) -> list[KeyInfo]:
        async with read_transaction(self._sessions) as session:
            return [KeyInfo.of(row) for row in await list_keys_txn(session)]

    async def revoke(self, name: str, *, actor: str) -> KeyInfo:
        """Revoke the key ``name`` (404 unknown, 409 already revoked); effective in this
        process at once."""
        async with transaction(self._sessions) as session:
            key = await find_key_by_name_txn(session, name)
            if key is None:
                raise NotFoundError(f"no API key named {name!r}", name=name)
            if key.revoked_at is not None:
                raise ConflictError(
                    f"API key {name!r} was revoked at {key.revoked_at.isoformat()}", name=name
                )
            key = await revoke_key_txn(session, key, at=utcnow(), actor=actor)
            info = KeyInfo.of(key)
            key_id = key.id
        self._forget(key_id)
        logger.info("API key %r revoked by %s", name, actor)
        return info

    async def admin_exists(self) -> bool:
        async with read_transaction(self._sessions) as session:
            return await admin_key_exists_txn(session)

    async def authenticate(self, token: str) -> Principal | None:
        """The principal of ``token``, or None if it is malformed, unknown or revoked."""
        fingerprint = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        cached = self._verified.get(fingerprint)
        if cached is not None and cached[1] > now:
            return cached[0]
        parts = split_token(token)
        if parts is None:
            return None
        prefix, secret = parts
        async with read_transaction(self._sessions) as session:
            row = await find_key_by_prefix_txn(session, prefix)
        if row is None or row.revoked_at is not None:
            self._verified.pop(fingerprint, None)
            return None
        if not hmac.compare_digest(_digest(bytes.fromhex(row.salt), secret), row.secret_hash):
            return None
        principal = principal_of(row)
        if self._ttl > 0:
            if len(self._verified) >= CACHE_MAX_ENTRIES:
                self._verified.clear()
            self._verified[fingerprint] = (principal, now + self._ttl)
        return principal

    def _forget(self, key_id: uuid.UUID) -> None:
        stale: Sequence[bytes] = [
            fingerprint
            for fingerprint, (principal, _) in self._verified.items()
            if principal.key_id == key_id
        ]
        for fingerprint in stale:
            del self._verified[fingerprint]
