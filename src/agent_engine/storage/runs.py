"""Reading and writing runs, steps and approvals (always inside the caller's transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.errors import NotFoundError
from agent_engine.storage.tables import AgentRun, Approval, Step


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
) -> Sequence[AgentRun]:
    """Newest first; ``after`` is the (created_at, id) of the last row of the previous page."""
    query = select(AgentRun)
    if statuses:
        query = query.where(AgentRun.status.in_(statuses))
    if after is not None:
        created_at, run_id = after
        query = query.where(
            or_(
                AgentRun.created_at < created_at,
                and_(AgentRun.created_at == created_at, AgentRun.id < run_id),
            )
        )
    query = query.order_by(AgentRun.created_at.desc(), AgentRun.id.desc()).limit(limit)
    return (await session.scalars(query)).all()


async def list_steps_txn(session: AsyncSession, run_id: uuid.UUID) -> list[Step]:
    result = await session.scalars(
        select(Step).where(Step.run_id == run_id).order_by(Step.step_number)
    )
    return list(result.all())


OPEN_STEP_STATES = ("pending", "running", "awaiting_approval", "approved")


async def list_open_steps_txn(
    session: AsyncSession, run_id: uuid.UUID, *, also: uuid.UUID | None = None
) -> list[Step]:
    """The run's unfinished steps (plus ``also``): what claiming and settling need, in a query
    whose size does not grow with the steps already done."""
    condition: ColumnElement[bool] = Step.status.in_(OPEN_STEP_STATES)
    if also is not None:
        condition = or_(condition, Step.id == also)
    result = await session.scalars(
        select(Step).where(Step.run_id == run_id, condition).order_by(Step.step_number)
    )
    return list(result.all())


async def list_open_steps_of_runs_txn(
    session: AsyncSession, run_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Step]]:
    """The unfinished steps of several runs at once (one query), by run."""
    by_run: dict[uuid.UUID, list[Step]] = {run_id: [] for run_id in run_ids}
    if not run_ids:
        return by_run
    result = await session.scalars(
        select(Step)
        .where(Step.run_id.in_(run_ids), Step.status.in_(OPEN_STEP_STATES))
        .order_by(Step.run_id, Step.step_number)
    )
    for step in result:
        by_run[step.run_id].append(step)
    return by_run


async def outputs_of_txn(
    session: AsyncSession, run_id: uuid.UUID, numbers: set[int] | None = None
) -> dict[int, Any]:
    """Outputs of the run's steps by number (``numbers``: only those), including outputs
    written earlier in this same transaction."""
    await session.flush()
    query = select(Step.step_number, Step.output_data).where(
        Step.run_id == run_id, Step.output_data.is_not(None)
    )
    if numbers is not None:
        query = query.where(Step.step_number.in_(numbers))
    return {row.step_number: row.output_data for row in await session.execute(query)}


async def get_step_txn(
    session: AsyncSession, run_id: uuid.UUID, step_id: str | uuid.UUID, *, lock: bool = False
) -> Step:
    parsed = parse_step_id(step_id)
    query = select(Step).where(Step.run_id == run_id, Step.id == parsed)
    if lock:
        query = query.with_for_update()
    step = (await session.scalars(query)).one_or_none()
    if step is None:
        raise NotFoundError(
            f"run {run_id} has no step with id {str(step_id)!r}",
            run_id=str(run_id),
            step_id=str(step_id),
        )
    return step


async def list_approvals_txn(session: AsyncSession, run_id: uuid.UUID) -> Sequence[Approval]:
    result = await session.scalars(
        select(Approval).where(Approval.run_id == run_id).order_by(Approval.decided_at)
    )
    return result.all()
