"""The SQL of claiming: find runs with work and lock them, skipping runs another worker holds."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.storage.tables import AgentRun, Step

# CREATED: a worker plans it; PLANNING: only when the planner's lease (claimable_at) expired.
CLAIMABLE_RUN_STATES = ("created", "planning", "planned", "running", "awaiting_approval")


async def lock_claimable_runs_txn(
    session: AsyncSession,
    *,
    now: datetime,
    limit: int,
    step_types: Sequence[str] = (),
    exclude: Sequence[uuid.UUID] = (),
) -> Sequence[AgentRun]:
    """Lock up to ``limit`` started runs that have a step ready now or a lease that expired.

    ``claimable_at`` is the earliest of both (every transaction that changes steps keeps it), so
    one indexed column answers. A heartbeat extends a lease without moving it: the run is then
    looked at once too early, and that round moves it to the new expiry.

    ``FOR UPDATE SKIP LOCKED`` on PostgreSQL: a run another worker is claiming from or recording
    into is skipped, not waited for. SQLite's IMMEDIATE transaction already holds the database.
    """
    query = select(AgentRun).where(
        AgentRun.claimable_at <= now,
        AgentRun.started.is_(True),
        AgentRun.status.in_(CLAIMABLE_RUN_STATES),
    )
    if step_types:
        query = query.where(
            exists().where(
                Step.run_id == AgentRun.id,
                Step.status.in_(("pending", "approved", "running")),
                Step.step_type.in_(step_types),
            )
        )
    if exclude:
        query = query.where(AgentRun.id.not_in(exclude))
    query = (
        query.order_by(AgentRun.claimable_at, AgentRun.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (await session.scalars(query)).all()


async def extend_leases_txn(
    session: AsyncSession, owner: str, fences: Mapping[uuid.UUID, int], until: datetime
) -> set[uuid.UUID]:
    """Heartbeat: push the leases of steps ``owner`` still holds; returns the ids still held.

    A step missing from the answer was cancelled, or reclaimed after our lease lapsed: the worker
    must stop it and never write its result.
    """
    if not fences:
        return set()
    result = await session.execute(
        update(Step)
        .where(Step.id.in_(list(fences)), Step.lease_owner == owner, Step.status == "running")
        .values(lease_expires_at=until)
        .returning(Step.id, Step.fence)
    )
    return {row.id for row in result if fences.get(row.id) == row.fence}
