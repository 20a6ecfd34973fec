"""Reads that gather a run's whole story (plan versions, approvals, model calls expanded) and
the runs that wait for a person, each in few queries however many steps a run has."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.records import RunRecord
from agent_engine.domain.states import RunStatus
from agent_engine.storage.blobs import (
    expand_approvals_txn,
    expand_calls_txn,
    expand_plans_txn,
)
from agent_engine.storage.runs import RUNS
from agent_engine.storage.tables import Approval, LLMCall, PlanVersion


async def plan_versions_txn(session: AsyncSession, run_id: uuid.UUID) -> Sequence[PlanVersion]:
    """Every version of the run's plan, oldest first, documents whole."""
    query = select(PlanVersion).where(PlanVersion.run_id == run_id).order_by(PlanVersion.version)
    return await expand_plans_txn(session, (await session.scalars(query)).all())


async def approvals_txn(session: AsyncSession, run_id: uuid.UUID) -> Sequence[Approval]:
    """The run's decisions, oldest first, what each showed whole."""
    query = select(Approval).where(Approval.run_id == run_id).order_by(Approval.decided_at)
    return await expand_approvals_txn(session, (await session.scalars(query)).all())


async def calls_with_documents_txn(
    session: AsyncSession, run_id: uuid.UUID
) -> list[dict[str, Any]]:
    """The run's model calls in order, each as a mapping with its request and response whole
    (blobbed parts expanded in one query for all of them)."""
    query = select(LLMCall).where(LLMCall.run_id == run_id).order_by(LLMCall.created_at, LLMCall.id)
    calls = await expand_calls_txn(session, (await session.scalars(query)).all())
    rows: list[dict[str, Any]] = []
    for call in calls:
        rows.append(
            {
                "id": call.id,
                "step_id": call.step_id,
                "purpose": call.purpose,
                "provider": call.provider,
                "model": call.model,
                "request": call.request,
                "response": call.response,
                "input_tokens": call.input_tokens,
                "output_tokens": call.output_tokens,
                "cost_usd": call.cost_usd,
                "latency_ms": call.latency_ms,
                "cached": call.cached,
                "replayed": call.replayed,
                "error": call.error,
                "created_at": call.created_at,
            }
        )
    return rows


async def waiting_runs_txn(session: AsyncSession, limit: int) -> list[RunRecord]:
    """Runs waiting for a person (``awaiting_approval``), the longest waiting first."""
    query = (
        select(RUNS)
        .where(RUNS.c.status == RunStatus.AWAITING_APPROVAL.value)
        .order_by(RUNS.c.updated_at, RUNS.c.id)
        .limit(limit)
    )
    return [RunRecord.stored(row) for row in (await session.execute(query)).mappings()]
