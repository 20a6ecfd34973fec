"""The SQL of claiming: find runs with work and lock them, skipping runs another worker holds."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.records import RunRecord
from agent_engine.domain.states import CLAIMABLE_RUN_STATES, STARTABLE_STEP_STATES, StepStatus
from agent_engine.storage.runs import RUNS, lock_runs_txn
from agent_engine.storage.tables import Step

_CLAIMABLE = sorted(CLAIMABLE_RUN_STATES)
# Steps a round may take: startable, or running (a lease that may have lapsed).
_CLAIMABLE_STEPS = sorted(STARTABLE_STEP_STATES | {StepStatus.RUNNING})


async def lock_claimable_runs_txn(
    session: AsyncSession,
    *,
    now: datetime,
    limit: int,
    step_types: Sequence[str] = (),
    exclude: Sequence[uuid.UUID] = (),
) -> list[RunRecord]:
    """Lock up to ``limit`` started runs that have a step ready now or a lease that expired.

    ``claimable_at`` is the earliest of both (every transaction that changes steps keeps it), so
    one indexed column answers. A heartbeat extends a lease without moving it: the run is then
    looked at once too early, and that round moves it to the new expiry.

    ``FOR UPDATE SKIP LOCKED`` on PostgreSQL: a run another worker is claiming from or recording
    into is skipped, not waited for. SQLite's IMMEDIATE transaction already holds the database.
    """
    query = select(RUNS).where(
        RUNS.c.claimable_at <= now,
        RUNS.c.started.is_(True),
        RUNS.c.status.in_(_CLAIMABLE),
    )
    if step_types:
        query = query.where(
            exists().where(
                Step.run_id == RUNS.c.id,
                Step.status.in_(_CLAIMABLE_STEPS),
                Step.step_type.in_(step_types),
            )
        )
    if exclude:
        query = query.where(RUNS.c.id.not_in(exclude))
    query = (
        query.order_by(RUNS.c.claimable_at, RUNS.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return await lock_runs_txn(session, query)


async def extend_leases_txn(
    session: AsyncSession, owner: str, fences: Mapping[uuid.UUID, int], until: datetime
) -> set[uuid.UUID]:
    """Heartbeat: push the leases of steps ``owner`` still holds; returns the ids still held.

    A step missing from the answer was cancelled, or reclaimed after our lease lapsed: the worker
    must stop it and never write its result. The steps' runs get a new version, like every
    write of a run's rows: a change decided from the leases as they were is refused.
    """
    if not fences:
        return set()
    held = (Step.id.in_(list(fences)), Step.lease_owner == owner, Step.status == "running")
    # Runs first, in id order, as every write locks them: no deadlock with a write of a run.
    runs = (
        await session.scalars(
            select(RUNS.c.id)
            .where(RUNS.c.id.in_(select(Step.run_id).where(*held)))
            .order_by(RUNS.c.id)
            .with_for_update()
        )
    ).all()
    if runs:
        await session.execute(
            update(RUNS).where(RUNS.c.id.in_(runs)).values(version=RUNS.c.version + 1)
        )
    result = await session.execute(
        update(Step).where(*held).values(lease_expires_at=until).returning(Step.id, Step.fence)
    )
    return {row.id for row in result if fences.get(row.id) == row.fence}
