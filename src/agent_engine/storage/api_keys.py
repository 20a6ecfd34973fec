"""Reading and writing API keys, and counting a creator's runs in flight (always inside the
caller's transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.states import RUN_OVER_STATES
from agent_engine.storage.tables import AgentRun, ApiKey

_OVER = sorted(state.value for state in RUN_OVER_STATES)


class DuplicateKeyError(Exception):
    """Another key already has this name (or, against all odds, this prefix)."""


async def insert_key_txn(session: AsyncSession, row: dict[str, Any]) -> ApiKey:
    """Insert the key ``row``; :class:`DuplicateKeyError` if its name or prefix is taken."""
    key = ApiKey(**row)
    session.add(key)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise DuplicateKeyError(row["name"]) from exc
    return key


async def find_key_by_prefix_txn(session: AsyncSession, prefix: str) -> ApiKey | None:
    return (await session.scalars(select(ApiKey).where(ApiKey.prefix == prefix))).one_or_none()


async def find_key_by_name_txn(session: AsyncSession, name: str) -> ApiKey | None:
    return (await session.scalars(select(ApiKey).where(ApiKey.name == name))).one_or_none()


async def list_keys_txn(session: AsyncSession) -> Sequence[ApiKey]:
    return (await session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.name))).all()


async def revoke_key_txn(session: AsyncSession, key: ApiKey, *, at: datetime, actor: str) -> ApiKey:
    """Mark ``key`` revoked (only if it is not already: the first revocation's time stays)."""
    await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key.id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=at, revoked_by=actor)
    )
    await session.refresh(key)
    return key


async def admin_key_exists_txn(session: AsyncSession) -> bool:
    """Whether at least one admin key has not been revoked."""
    query = select(ApiKey.id).where(ApiKey.role == "admin", ApiKey.revoked_at.is_(None)).limit(1)
    return (await session.scalars(query)).first() is not None


async def count_runs_in_flight_txn(session: AsyncSession, created_by: str) -> int:
    """Runs ``created_by`` made that are not over yet (neither completed, failed nor cancelled)."""
    query = select(func.count()).where(
        AgentRun.created_by == created_by, AgentRun.status.not_in(_OVER)
    )
    return int((await session.execute(query)).scalar_one())
