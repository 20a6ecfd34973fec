"""Worker heartbeat rows, and the reads that tell operators which workers live and what they run.

Every read here is bounded by live work, not by history: workers by the ``alive_until`` index,
running steps through the runs that are unfinished (the runs' status index, then each run's
steps by its ``(run_id, step_number)`` key), never a scan of all steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.states import RUN_OVER_STATES, RunStatus, StepStatus
from agent_engine.storage.runs import RUNS
from agent_engine.storage.tables import Step, WorkerHeartbeat

WORKERS = cast(Table, WorkerHeartbeat.__table__)
# A worker row not refreshed for this long is removed by the next heartbeat of any worker.
SWEEP_AFTER = timedelta(days=1)
UNFINISHED_RUN_STATES = sorted(s.value for s in RunStatus if s not in RUN_OVER_STATES)


@dataclass(frozen=True)
class WorkerRow:
    """A worker as its heartbeat row and the running steps leased to it show it."""

    id: str
    host: str
    slots: int
    started_at: datetime
    last_heartbeat_at: datetime
    alive_until: datetime
    steps_in_flight: int


def _insert(session: AsyncSession) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return pg_insert(WORKERS) if dialect == "postgresql" else sqlite_insert(WORKERS)


async def beat_txn(
    session: AsyncSession,
    *,
    worker_id: str,
    host: str,
    slots: int,
    started_at: datetime,
    now: datetime,
    alive_for: timedelta,
) -> None:
    """Write the worker's heartbeat (its row, created at its first), and sweep the rows of
    workers gone for a day (crashed ones: a clean stop removes its own)."""
    values = {
        "id": worker_id,
        "host": host,
        "slots": slots,
        "started_at": started_at,
        "last_heartbeat_at": now,
        "alive_until": now + alive_for,
    }
    statement = _insert(session).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["id"],
        set_={"slots": slots, "last_heartbeat_at": now, "alive_until": values["alive_until"]},
    )
    await session.execute(statement)
    await session.execute(delete(WORKERS).where(WORKERS.c.alive_until < now - SWEEP_AFTER))


async def forget_worker_txn(session: AsyncSession, worker_id: str) -> None:
    """Remove a worker's row: it stopped cleanly."""
    await session.execute(delete(WORKERS).where(WORKERS.c.id == worker_id))


async def steps_in_flight_txn(session: AsyncSession) -> dict[str, int]:
    """How many running steps each lease owner holds (only unfinished runs have any)."""
    query = (
        select(Step.lease_owner, func.count())
        .join(RUNS, RUNS.c.id == Step.run_id)
        .where(
            RUNS.c.status.in_(UNFINISHED_RUN_STATES),
            Step.status == StepStatus.RUNNING.value,
            Step.lease_owner.is_not(None),
        )
        .group_by(Step.lease_owner)
    )
    return {str(owner): int(count) for owner, count in (await session.execute(query)).all()}


async def list_workers_txn(session: AsyncSession, *, limit: int) -> list[WorkerRow]:
    """The workers seen lately (alive or not yet swept), the most recent heartbeat first."""
    query = select(WORKERS).order_by(WORKERS.c.alive_until.desc(), WORKERS.c.id).limit(limit)
    rows = (await session.execute(query)).mappings().all()
    in_flight = await steps_in_flight_txn(session) if rows else {}
    return [WorkerRow(**row, steps_in_flight=in_flight.get(row["id"], 0)) for row in rows]


async def count_alive_workers_txn(session: AsyncSession, now: datetime) -> int:
    """Workers whose heartbeat is still within their lease."""
    query = select(func.count()).select_from(WORKERS).where(WORKERS.c.alive_until >= now)
    return int(await session.scalar(query) or 0)


async def runs_by_status_txn(session: AsyncSession) -> dict[str, int]:
    """Unfinished runs by status (finished ones grow without bound and are not counted)."""
    query = (
        select(RUNS.c.status, func.count())
        .where(RUNS.c.status.in_(UNFINISHED_RUN_STATES))
        .group_by(RUNS.c.status)
    )
    return {str(status): int(count) for status, count in (await session.execute(query)).all()}


async def approvals_waiting_txn(session: AsyncSession) -> tuple[int, datetime | None]:
    """Steps waiting for a person, and since when the longest-waiting run has (its last
    change: a run waiting for approval changes no more until someone decides)."""
    waiting_runs = RUNS.c.status == RunStatus.AWAITING_APPROVAL.value
    count = await session.scalar(
        select(func.count())
        .select_from(Step)
        .join(RUNS, RUNS.c.id == Step.run_id)
        .where(waiting_runs, Step.status == StepStatus.AWAITING_APPROVAL.value)
    )
    oldest = await session.scalar(select(func.min(RUNS.c.updated_at)).where(waiting_runs))
    return int(count or 0), oldest
