"""Reading the cost ledger, and writing the calls that belong to no run (``engine/ledger.py``
builds the rows; a run's calls are written with the run's change set)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent_engine.storage.database import transaction
from agent_engine.storage.tables import LLMCall


async def list_calls_txn(session: AsyncSession, run_id: uuid.UUID) -> Sequence[LLMCall]:
    result = await session.scalars(
        select(LLMCall).where(LLMCall.run_id == run_id).order_by(LLMCall.created_at, LLMCall.id)
    )
    return result.all()


async def cacheable_call_txn(session: AsyncSession, request_hash: str) -> LLMCall | None:
    """The earliest successful call with ``request_hash`` that answered itself (not served from
    the cache nor replayed) and kept its response: what the response cache serves."""
    query = (
        select(LLMCall)
        .where(
            LLMCall.request_hash == request_hash,
            LLMCall.error.is_(None),
            LLMCall.response.is_not(None),
            LLMCall.cached.is_(False),
            LLMCall.replayed.is_(False),
        )
        .order_by(LLMCall.created_at, LLMCall.id)
        .limit(1)
    )
    found: LLMCall | None = (await session.scalars(query)).first()
    return found


async def insert_calls_txn(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``llm_calls`` rows of calls made outside any run (``run_id`` NULL)."""
    if rows:
        await session.execute(insert(LLMCall), list(rows))


async def insert_calls(
    sessions: async_sessionmaker[AsyncSession], rows: Sequence[dict[str, Any]]
) -> None:
    """Insert ``rows`` in a transaction of their own."""
    async with transaction(sessions) as session:
        await insert_calls_txn(session, rows)
