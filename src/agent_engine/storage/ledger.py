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
