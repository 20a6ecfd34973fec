"""Reading the cost ledger, and writing the calls that belong to no run (``engine/ledger.py``
builds the rows; a run's calls are written with the run's change set). A call read here comes
with its request and response whole, whatever part of them is stored as blobs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent_engine.storage.blobs import (
    DEFAULT_THRESHOLD_BYTES,
    blob_rows,
    expand_calls_txn,
    externalize_row,
    store_blobs_txn,
)
from agent_engine.storage.database import transaction
from agent_engine.storage.tables import LLMCall


async def list_calls_txn(
    session: AsyncSession, run_id: uuid.UUID, *, whole: bool = True
) -> Sequence[LLMCall]:
    """The run's calls in order, their documents whole (``whole=False``: as stored, for a
    reader of their numbers only, which need not read their blobs)."""
    result = await session.scalars(
        select(LLMCall).where(LLMCall.run_id == run_id).order_by(LLMCall.created_at, LLMCall.id)
    )
    calls = result.all()
    return await expand_calls_txn(session, calls) if whole else calls


async def cacheable_call_txn(session: AsyncSession, request_hash: str) -> LLMCall | None:
    """The earliest successful call with ``request_hash`` that answered itself (not served from
    the cache nor replayed) and kept its response (not pruned by retention): what the response
    cache serves, its response whole."""
    query = (
        select(LLMCall)
        .where(
            LLMCall.request_hash == request_hash,
            LLMCall.error.is_(None),
            LLMCall.response.is_not(None),
            LLMCall.cached.is_(False),
            LLMCall.replayed.is_(False),
            LLMCall.payloads_pruned_at.is_(None),
        )
        .order_by(LLMCall.created_at, LLMCall.id)
        .limit(1)
    )
    found: LLMCall | None = (await session.scalars(query)).first()
    if found is None:
        return None
    (whole,) = await expand_calls_txn(session, [found])
    return whole


async def insert_calls_txn(
    session: AsyncSession,
    rows: Sequence[dict[str, Any]],
    blob_threshold: int = DEFAULT_THRESHOLD_BYTES,
) -> None:
    """Insert ``llm_calls`` rows of calls made outside any run (``run_id`` NULL), the strings
    of their requests and responses longer than ``blob_threshold`` bytes stored as blobs."""
    if not rows:
        return
    blobs: dict[str, bytes] = {}
    stored = [externalize_row("llm_calls", row, blob_threshold, blobs) for row in rows]
    await store_blobs_txn(session, blob_rows(blobs))
    await session.execute(insert(LLMCall), stored)


async def insert_calls(
    sessions: async_sessionmaker[AsyncSession],
    rows: Sequence[dict[str, Any]],
    blob_threshold: int = DEFAULT_THRESHOLD_BYTES,
) -> None:
    """Insert ``rows`` in a transaction of their own."""
    async with transaction(sessions) as session:
        await insert_calls_txn(session, rows, blob_threshold)
