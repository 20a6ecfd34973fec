"""What replaying a run reads of its original: the recorded model calls with their step numbers,
the calls the replay has already served, its steps' recorded outcomes, and its approvals."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from agent_engine.domain.blob_refs import BLOBBED_STEP_COLUMNS
from agent_engine.storage.blobs import (
    expand_approvals_txn,
    expand_calls_txn,
    expand_objects_txn,
    expand_plans_txn,
)
from agent_engine.storage.tables import Approval, LLMCall, PlanVersion, Step

CallSite = tuple[str, int | None]  # purpose, step number (None: the planner's calls)


def _at(query: Any, site: CallSite | None) -> Any:
    if site is None:
        return query
    purpose, step_number = site
    query = query.where(LLMCall.purpose == purpose)
    if step_number is None:
        return query.where(LLMCall.step_id.is_(None))
    return query.where(Step.step_number == step_number)


async def recorded_calls_txn(session: AsyncSession, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """The run's model calls in the order they were recorded, each with its step's number
    (None for the planner's calls) and its request and response whole. A step the run reused
    from another (a fork's first steps) made no call itself: the calls of the step it reused
    stand for its own, at its number."""
    own = (
        select(LLMCall, Step.step_number)
        .outerjoin(Step, Step.id == LLMCall.step_id)
        .where(LLMCall.run_id == run_id)
    )
    reusing = aliased(Step)
    reused = (
        select(LLMCall, reusing.step_number)
        .join(reusing, reusing.reused_from == LLMCall.step_id)
        .where(reusing.run_id == run_id)
    )
    found = [*(await session.execute(own)).all(), *(await session.execute(reused)).all()]
    found.sort(key=lambda row: (row[0].created_at, row[0].attempt))
    # Served as recorded: the documents whole, whatever part of them is stored as blobs.
    calls = await expand_calls_txn(session, [call for call, _ in found])
    rows = []
    for call, (_, step_number) in zip(calls, found, strict=True):
        rows.append(
            {
                "id": str(call.id),
                "purpose": call.purpose,
                "step_number": step_number,
                "request_hash": call.request_hash,
                "request": call.request,
                "response": call.response,
                "provider": call.provider,
                "model": call.model,
                "input_tokens": call.input_tokens,
                "output_tokens": call.output_tokens,
                "cached_input_tokens": call.cached_input_tokens,
                "cache_write_tokens": call.cache_write_tokens,
                "reasoning_tokens": call.reasoning_tokens,
                "usage_estimated": call.usage_estimated,
                "attempt": call.attempt,
                "error": call.error,
            }
        )
    return rows


async def served_exchanges_txn(
    session: AsyncSession, run_id: uuid.UUID, site: CallSite | None = None
) -> list[tuple[str, int | None, str]]:
    """(purpose, step number, request hash) of each recorded exchange the run already replayed
    (one per exchange: its first attempt's row); ``site``: only those of that call site."""
    query = _at(
        select(LLMCall.purpose, Step.step_number, LLMCall.request_hash)
        .outerjoin(Step, Step.id == LLMCall.step_id)
        .where(LLMCall.run_id == run_id, LLMCall.replayed.is_(True), LLMCall.attempt == 1),
        site,
    )
    return [(row[0], row[1], row[2]) for row in (await session.execute(query)).all()]


async def has_live_calls_txn(session: AsyncSession, run_id: uuid.UUID) -> bool:
    """Whether the run called a model itself (not replayed, not in a step reused from another)."""
    query = (
        select(func.count())
        .select_from(LLMCall)
        .outerjoin(Step, Step.id == LLMCall.step_id)
        .where(
            LLMCall.run_id == run_id,
            LLMCall.replayed.is_(False),
            LLMCall.cached.is_(False),
            Step.reused_from.is_(None),
        )
    )
    return bool(await session.scalar(query))


async def recorded_step_txn(
    session: AsyncSession, run_id: uuid.UUID, step_number: int
) -> Step | None:
    """The run's step with ``step_number``, as recorded, documents whole (None: the run had
    no such step)."""
    query = select(Step).where(Step.run_id == run_id, Step.step_number == step_number)
    step = (await session.scalars(query)).one_or_none()
    if step is None:
        return None
    (whole,) = await expand_objects_txn(session, [step], BLOBBED_STEP_COLUMNS)
    return whole


async def step_decisions_txn(session: AsyncSession, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """The run's decisions on steps, oldest first, with the step's number and what was shown."""
    query = (
        select(Approval, Step.step_number)
        .join(Step, Step.id == Approval.step_id)
        .where(Approval.run_id == run_id)
        .order_by(Approval.decided_at)
    )
    found = (await session.execute(query)).all()
    approvals = await expand_approvals_txn(session, [approval for approval, _ in found])
    return [
        {
            "approval_id": str(approval.id),
            "step_number": step_number,
            "attempt": approval.attempt,
            "decision": approval.decision,
            "actor": approval.actor,
            "comment": approval.comment,
            "shown": approval.shown,
        }
        for approval, (_, step_number) in zip(approvals, found, strict=True)
    ]


async def plan_decisions_txn(session: AsyncSession, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """The run's decisions on its plan versions, oldest first, with what was shown."""
    query = (
        select(Approval)
        .where(Approval.run_id == run_id, Approval.step_id.is_(None))
        .order_by(Approval.decided_at)
    )
    return [
        {
            "approval_id": str(approval.id),
            "plan_version": approval.attempt,
            "decision": approval.decision,
            "actor": approval.actor,
            "comment": approval.comment,
            "shown": approval.shown,
        }
        for approval in await expand_approvals_txn(session, (await session.scalars(query)).all())
    ]


async def first_plan_txn(session: AsyncSession, run_id: uuid.UUID) -> PlanVersion | None:
    """The run's plan version 1, its document whole (None: it was never planned)."""
    query = select(PlanVersion).where(PlanVersion.run_id == run_id, PlanVersion.version == 1)
    plan = (await session.scalars(query)).one_or_none()
    return None if plan is None else (await expand_plans_txn(session, [plan]))[0]
