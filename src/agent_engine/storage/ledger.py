"""Reading the cost ledger (``engine/ledger.py`` adds to it)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

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
