"""Reading and writing runs, steps and approvals (always inside the caller's transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.blob_refs import BLOBBED_STEP_COLUMNS
from agent_engine.domain.records import RunRecord, StepRecord
from agent_engine.domain.states import OPEN_STEP_STATES
from agent_engine.errors import NotFoundError
from agent_engine.storage.blobs import (
    expand_documents_txn,
    expand_objects_txn,
    expand_step_rows_txn,
)
from agent_engine.storage.tables import AgentRun, Step

RUNS = cast(Table, AgentRun.__table__)
STEPS = cast(Table, Step.__table__)


def _parse_id(kind: str, raw: str | uuid.UUID) -> uuid.UUID:
    if isinstance(raw, uuid.UUID):
        return raw
    try:
        return uuid.UUID(raw)
    except ValueError:
        # A malformed id names nothing, exactly like a well-formed unknown one.
        raise NotFoundError(f"no {kind} with id {raw!r}", **{f"{kind}_id": raw}) from None


def parse_run_id(raw: str | uuid.UUID) -> uuid.UUID:
    return _parse_id("run", raw)


def parse_step_id(raw: str | uuid.UUID) -> uuid.UUID:
    return _parse_id("step", raw)


async def get_run_txn(
    session: AsyncSession, run_id: str | uuid.UUID, *, lock: bool = False
) -> AgentRun:
    """The run, locked ``FOR UPDATE`` when ``lock`` (SQLite's IMMEDIATE transaction already is)."""
    parsed = parse_run_id(run_id)
    query = select(AgentRun).where(AgentRun.id == parsed)
    if lock:
        query = query.with_for_update()
    run = (await session.scalars(query)).one_or_none()
    if run is None:
        raise NotFoundError(f"no run with id {str(run_id)!r}", run_id=str(run_id))
    return run


async def find_run_by_idempotency_key_txn(session: AsyncSession, key: str) -> AgentRun | None:
    return (
        await session.scalars(select(AgentRun).where(AgentRun.idempotency_key == key))
    ).one_or_none()


async def list_runs_txn(
    session: AsyncSession,
    *,
    statuses: Sequence[str] = (),
    after: tuple[datetime, uuid.UUID] | None = None,
    limit: int = 50,
    forked_from: uuid.UUID | None = None,
    replay_of: uuid.UUID | None = None,
    project: str | None = None,
    goal_contains: str | None = None,
) -> list[RunRecord]:
    """Newest first; ``after`` is the (created_at, id) of the last row of the previous page;
    ``forked_from`` / ``replay_of``: only the forks / replays of that run; ``project``: only
    that project's; ``goal_contains``: only goals containing that text (any case). Records,
    not ORM objects: no identity map or instrumented attributes to build for every row."""
    query = select(RUNS)
    if statuses:
        query = query.where(RUNS.c.status.in_(statuses))
    if project is not None:
        query = query.where(RUNS.c.project == project)
    if goal_contains:
        # The text is matched literally: LIKE's wildcards in it are escaped.
        literal = goal_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(RUNS.c.goal.ilike(f"%{literal}%", escape="\\"))
    if forked_from is not None:
        query = query.where(RUNS.c.forked_from == forked_from)
    if replay_of is not None:
        query = query.where(RUNS.c.replay_of == replay_of)
    if after is not None:
        created_at, run_id = after
        query = query.where(
            or_(
                RUNS.c.created_at < created_at,
                and_(RUNS.c.created_at == created_at, RUNS.c.id < run_id),
            )
        )
    query = query.order_by(RUNS.c.created_at.desc(), RUNS.c.id.desc()).limit(limit)
    return [RunRecord.stored(row) for row in (await session.execute(query)).mappings()]


async def derived_runs_txn(
    session: AsyncSession, parents: Sequence[uuid.UUID], limit: int
) -> Sequence[AgentRun]:
    """The replays and forks of the runs ``parents`` (at most ``limit``), oldest first."""
    query = (
        select(AgentRun)
        .where(or_(AgentRun.replay_of.in_(parents), AgentRun.forked_from.in_(parents)))
        .order_by(AgentRun.created_at, AgentRun.id)
        .limit(limit)
    )
    return (await session.scalars(query)).all()


async def list_steps_txn(session: AsyncSession, run_id: uuid.UUID) -> list[Step]:
    """The run's steps loaded as objects in step order, documents whole."""
    result = await session.scalars(
        select(Step).where(Step.run_id == run_id).order_by(Step.step_number)
    )
    return await expand_objects_txn(session, result.all(), BLOBBED_STEP_COLUMNS)


_OPEN = sorted(OPEN_STEP_STATES)


# The state machine's input: runs and steps as plain records (``domain/records.py``).


async def load_run_txn(
    session: AsyncSession, run_id: str | uuid.UUID, *, lock: bool = False
) -> RunRecord:
    """The run as a record, locked ``FOR UPDATE`` when ``lock`` (SQLite's IMMEDIATE
    transaction already holds the database)."""
    parsed = parse_run_id(run_id)
    query = select(RUNS).where(RUNS.c.id == parsed)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().one_or_none()
    if row is None:
        raise NotFoundError(f"no run with id {str(run_id)!r}", run_id=str(run_id))
    return RunRecord.stored(row)


async def lock_runs_txn(session: AsyncSession, query: Any) -> list[RunRecord]:
    """The runs a ``select`` of ``agent_runs`` rows returns, as records."""
    return [RunRecord.stored(row) for row in (await session.execute(query)).mappings()]


async def load_steps_txn(
    session: AsyncSession,
    run_id: uuid.UUID,
    *,
    open_only: bool = False,
    also: uuid.UUID | None = None,
) -> list[StepRecord]:
    """The run's steps as records in step order: all, or only the unfinished ones (plus
    ``also``), which is what claiming and settling need and does not grow with the run."""
    query = select(STEPS).where(STEPS.c.run_id == run_id)
    if open_only:
        condition: ColumnElement[bool] = STEPS.c.status.in_(_OPEN)
        if also is not None:
            condition = or_(condition, STEPS.c.id == also)
        query = query.where(condition)
    rows = (await session.execute(query.order_by(STEPS.c.step_number))).mappings().all()
    return [StepRecord.stored(row) for row in await expand_step_rows_txn(session, rows)]


async def load_open_steps_of_runs_txn(
    session: AsyncSession, run_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[StepRecord]]:
    """The unfinished steps of several runs at once (one query), by run."""
    by_run: dict[uuid.UUID, list[StepRecord]] = {run_id: [] for run_id in run_ids}
    if not run_ids:
        return by_run
    rows = await session.execute(
        select(STEPS)
        .where(STEPS.c.run_id.in_(run_ids), STEPS.c.status.in_(_OPEN))
        .order_by(STEPS.c.run_id, STEPS.c.step_number)
    )
    for row in await expand_step_rows_txn(session, rows.mappings().all()):
        by_run[row["run_id"]].append(StepRecord.stored(row))
    return by_run


async def outputs_txn(
    session: AsyncSession, run_id: uuid.UUID, numbers: set[int] | None = None
) -> dict[int, Any]:
    """Stored outputs of the run's steps by number (``numbers``: only those), whole."""
    query = select(STEPS.c.step_number, STEPS.c.output_data).where(
        STEPS.c.run_id == run_id, STEPS.c.output_data.is_not(None)
    )
    if numbers is not None:
        query = query.where(STEPS.c.step_number.in_(numbers))
    rows = (await session.execute(query)).all()
    outputs = await expand_documents_txn(session, [row.output_data for row in rows])
    return {row.step_number: output for row, output in zip(rows, outputs, strict=True)}


async def delete_steps_txn(session: AsyncSession, run_id: uuid.UUID) -> None:
    """Remove a run's steps before a new plan takes their numbers (re-planning, which is only
    allowed before any step started, and audits each step's departure)."""
    await session.execute(STEPS.delete().where(STEPS.c.run_id == run_id))
