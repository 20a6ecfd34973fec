"""The cost ledger: one ``llm_calls`` row per provider call; step and run totals move with it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.llm.base import LLMCallRecord
from agent_engine.storage.tables import AgentRun, LLMCall, Step
from agent_engine.storage.types import quantize_money


def record_calls_txn(
    session: AsyncSession,
    run: AgentRun,
    step: Step | None,
    records: Sequence[LLMCallRecord],
    *,
    purpose: str = "step",
) -> list[LLMCall]:
    """Add ``records`` to the ledger and to the step and run totals, in the caller's transaction.

    Returns the new rows (their ids are set). An unpriced call (no known price) is stored with a
    NULL cost and ``priced = false``: it adds nothing to the totals and the cost summary flags it.
    """
    if not records:
        return []  # most steps call no model: nothing to add, and no totals to touch
    added = Decimal(0)
    rows: list[LLMCall] = []
    for record in records:
        cost = quantize_money(record.cost_usd) if record.cost_usd is not None else None
        rows.append(
            LLMCall(
                id=uuid.uuid4(),
                run_id=run.id,
                step_id=step.id if step is not None else None,
                purpose=purpose,
                provider=record.provider,
                model=record.model,
                request=record.request,
                request_hash=record.request_hash,
                response=record.response,
                input_tokens=record.usage.input_tokens,
                output_tokens=record.usage.output_tokens,
                cached_input_tokens=record.usage.cached_input_tokens,
                cache_write_tokens=record.usage.cache_write_tokens,
                reasoning_tokens=record.usage.reasoning_tokens,
                usage_estimated=record.usage.estimated,
                cost_usd=cost,
                priced=cost is not None,
                price_source=record.price_source,
                latency_ms=record.latency_ms,
                attempt=record.attempt,
                error=record.error,
                routing=record.routing,
                replayed=record.replayed,
            )
        )
        session.add(rows[-1])
        if cost is not None:
            added += cost
        run.input_tokens += record.usage.input_tokens
        run.output_tokens += record.usage.output_tokens
        if step is not None:
            step.input_tokens += record.usage.input_tokens
            step.output_tokens += record.usage.output_tokens
    run.total_cost_usd = quantize_money(run.total_cost_usd + added)
    if step is not None:
        step.cost_usd = quantize_money(step.cost_usd + added)
        successful = [r for r in records if r.error is None]
        if successful:
            step.model = f"{successful[-1].provider}:{successful[-1].model}"
    return rows


async def list_calls_txn(session: AsyncSession, run: AgentRun) -> Sequence[LLMCall]:
    result = await session.scalars(
        select(LLMCall).where(LLMCall.run_id == run.id).order_by(LLMCall.created_at, LLMCall.id)
    )
    return result.all()
