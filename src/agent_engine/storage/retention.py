"""Retention in the database: finding finished runs older than a cutoff, replacing their
payloads by markers that keep their hashes, and deleting whole runs through the audit prune
permit of migration 0016; the same for the model calls of no run (the OpenAI-compatible
endpoint's), which no audit chain covers. Each function runs inside the caller's (short)
transaction and touches only the runs or calls it is given."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.blob_refs import BLOBBED_COLUMNS
from agent_engine.domain.canonical import content_hash
from agent_engine.domain.clock import utcnow
from agent_engine.domain.pruned_payloads import PRUNED_COLUMNS, pruned_digest, pruned_marker
from agent_engine.domain.states import RUN_OVER_STATES
from agent_engine.storage.blobs import expand_rows_txn
from agent_engine.storage.tables import (
    AgentRun,
    Approval,
    AuditEvent,
    AuditPrunePermit,
    LLMCall,
    PlanVersion,
    Step,
)

RUNS = cast(Table, AgentRun.__table__)
STEPS = cast(Table, Step.__table__)
CALLS = cast(Table, LLMCall.__table__)
APPROVALS = cast(Table, Approval.__table__)
EVENTS = cast(Table, AuditEvent.__table__)
PLANS = cast(Table, PlanVersion.__table__)
PERMITS = cast(Table, AuditPrunePermit.__table__)
_OVER = sorted(state.value for state in RUN_OVER_STATES)
_TABLES = {"steps": STEPS, "llm_calls": CALLS, "approvals": APPROVALS}


@dataclass(frozen=True)
class PrunedCounts:
    """How many documents one batch replaced by markers, by table."""

    steps: int = 0
    llm_calls: int = 0
    approvals: int = 0

    def __add__(self, other: PrunedCounts) -> PrunedCounts:
        return PrunedCounts(
            self.steps + other.steps,
            self.llm_calls + other.llm_calls,
            self.approvals + other.approvals,
        )


def _old_runs(cutoff: datetime, *, unpruned: bool) -> Any:
    """Finished runs (completed, failed, cancelled) whose end (or last change) is before
    ``cutoff``; ``unpruned``: only those whose payloads are still there."""
    ended = or_(
        RUNS.c.completed_at < cutoff,
        and_(RUNS.c.completed_at.is_(None), RUNS.c.updated_at < cutoff),
    )
    condition = and_(RUNS.c.status.in_(_OVER), ended)
    if unpruned:
        condition = and_(condition, RUNS.c.payloads_pruned_at.is_(None))
    return condition


async def old_run_ids_txn(
    session: AsyncSession, cutoff: datetime, limit: int, *, unpruned: bool
) -> list[uuid.UUID]:
    """At most ``limit`` such runs, oldest first, locked ``FOR UPDATE SKIP LOCKED`` on
    PostgreSQL (two processes pruning at once take different runs)."""
    query = (
        select(RUNS.c.id)
        .where(_old_runs(cutoff, unpruned=unpruned))
        .order_by(RUNS.c.created_at, RUNS.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(query)).scalars())


async def count_old_runs_txn(session: AsyncSession, cutoff: datetime, *, unpruned: bool) -> int:
    """How many runs a prune with this cutoff would visit (``--dry-run``)."""
    query = select(func.count()).select_from(RUNS).where(_old_runs(cutoff, unpruned=unpruned))
    return int((await session.execute(query)).scalar_one())


async def prune_payloads_txn(session: AsyncSession, run_ids: Sequence[uuid.UUID]) -> PrunedCounts:
    """Replace the payloads of ``run_ids`` by markers keeping each document's hash (of the
    whole document, blobs expanded: what the audit recorded) and mark the runs pruned."""
    if not run_ids:
        return PrunedCounts()
    counts: dict[str, int] = {}
    for name, table in _TABLES.items():
        counts[name] = await _replace_payloads_txn(session, name, table.c.run_id.in_(run_ids))
    now = utcnow()
    # The response cache never serves a pruned call.
    await session.execute(
        update(CALLS).where(CALLS.c.run_id.in_(run_ids)).values(payloads_pruned_at=now)
    )
    # The version bump is what every write of a run does (migration 0006's guard).
    await session.execute(
        update(RUNS)
        .where(RUNS.c.id.in_(run_ids))
        .values(payloads_pruned_at=now, version=RUNS.c.version + 1)
    )
    return PrunedCounts(**counts)


async def _replace_payloads_txn(session: AsyncSession, name: str, where: Any) -> int:
    """Replace the payloads of ``name``'s rows that match ``where`` by markers; how many rows
    changed."""
    table, columns = _TABLES[name], PRUNED_COLUMNS[name]
    selected = select(table.c.id, *(table.c[c] for c in columns)).where(where)
    rows: list[dict[str, Any]] = [dict(r) for r in (await session.execute(selected)).mappings()]
    if name in BLOBBED_COLUMNS:
        rows = await expand_rows_txn(session, rows, BLOBBED_COLUMNS[name])
    changes = [change for row in rows if (change := _markers(row, columns))]
    # One executemany per set of columns changed, not one statement per row.
    by_columns: dict[frozenset[str], list[dict[str, Any]]] = {}
    for change in changes:
        by_columns.setdefault(frozenset(change), []).append(change)
    for group in by_columns.values():
        await session.execute(update(table).where(table.c.id == bindparam("row_id")), group)
    return len(changes)


def _markers(row: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any] | None:
    """The new values of ``row``'s payload columns (None: nothing left to prune)."""
    values = {
        column: pruned_marker(content_hash(row[column]))
        for column in columns
        if row[column] is not None and pruned_digest(row[column]) is None
    }
    return {"row_id": row["id"], **values} if values else None


async def delete_runs_txn(session: AsyncSession, run_ids: Sequence[uuid.UUID]) -> int:
    """Delete ``run_ids`` with every row of theirs, audit events included: a permit per run
    lets the append-only trigger allow it, and goes with the run in this transaction."""
    if not run_ids:
        return 0
    await session.execute(insert(PERMITS), [{"run_id": run_id} for run_id in run_ids])
    for table in (CALLS, APPROVALS, EVENTS, PLANS, STEPS):
        await session.execute(delete(table).where(table.c.run_id.in_(run_ids)))
    deleted = await session.execute(delete(RUNS).where(RUNS.c.id.in_(run_ids)))
    await session.execute(delete(PERMITS).where(PERMITS.c.run_id.in_(run_ids)))
    return int(getattr(deleted, "rowcount", 0) or 0)


def _gateway_calls(cutoff: datetime, *, unpruned: bool) -> Any:
    """Calls of no run (the OpenAI-compatible endpoint's) made before ``cutoff``; ``unpruned``:
    only those whose payloads are still there."""
    condition = and_(CALLS.c.run_id.is_(None), CALLS.c.created_at < cutoff)
    if unpruned:
        condition = and_(condition, CALLS.c.payloads_pruned_at.is_(None))
    return condition


async def old_gateway_call_ids_txn(
    session: AsyncSession, cutoff: datetime, limit: int, *, unpruned: bool
) -> list[uuid.UUID]:
    """At most ``limit`` such calls, oldest first, locked ``FOR UPDATE SKIP LOCKED`` on
    PostgreSQL (two processes pruning at once take different calls)."""
    query = (
        select(CALLS.c.id)
        .where(_gateway_calls(cutoff, unpruned=unpruned))
        .order_by(CALLS.c.created_at, CALLS.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(query)).scalars())


async def count_old_gateway_calls_txn(
    session: AsyncSession, cutoff: datetime, *, unpruned: bool
) -> int:
    """How many calls of no run a prune with this cutoff would visit (``--dry-run``)."""
    query = select(func.count()).select_from(CALLS).where(_gateway_calls(cutoff, unpruned=unpruned))
    return int((await session.execute(query)).scalar_one())


async def prune_call_payloads_txn(session: AsyncSession, call_ids: Sequence[uuid.UUID]) -> int:
    """Replace the requests and responses of ``call_ids`` by markers keeping their hashes and
    mark the calls pruned; everything else of them (model, tokens, cost) stays."""
    if not call_ids:
        return 0
    await _replace_payloads_txn(session, "llm_calls", CALLS.c.id.in_(call_ids))
    await session.execute(
        update(CALLS).where(CALLS.c.id.in_(call_ids)).values(payloads_pruned_at=utcnow())
    )
    return len(call_ids)


async def delete_calls_txn(session: AsyncSession, call_ids: Sequence[uuid.UUID]) -> int:
    """Delete the calls ``call_ids`` (calls of no run: no audit chain covers them)."""
    if not call_ids:
        return 0
    deleted = await session.execute(
        delete(CALLS).where(CALLS.c.id.in_(call_ids), CALLS.c.run_id.is_(None))
    )
    return int(getattr(deleted, "rowcount", 0) or 0)
