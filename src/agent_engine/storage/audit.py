"""The per-run audit chain: gap-free ``seq``, each event hashing the one before it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.audit_verify import RunRows
from agent_engine.domain.blob_refs import BLOBBED_COLUMNS
from agent_engine.domain.records import RunRecord
from agent_engine.domain.transitions import event_hash
from agent_engine.storage.blobs import expand_events_txn, expand_rows_txn
from agent_engine.storage.notifications import RunNotice
from agent_engine.storage.tables import (
    AgentRun,
    Approval,
    AuditEvent,
    Base,
    LLMCall,
    PlanVersion,
    Step,
)

CHANGED_RUNS = "agent_engine_changed_runs"
# Runs a transaction ended (their spans are emitted at its commit, forgotten at rollback).
ENDED_RUNS = "agent_engine_ended_runs"


def notice_of(run: RunRecord) -> str:
    """The notification payload for ``run`` as a write leaves it, as PostgreSQL's trigger would
    send it at commit."""
    return RunNotice.of(run.id, run.audit_seq, run.status, run.claimable_at).payload()


def take_notices(info: dict[str, Any]) -> list[str]:
    """The notification payloads for the runs a committed transaction changed (and forget them):
    one per run, its state after the commit."""
    runs: dict[uuid.UUID, RunRecord] = info.pop(CHANGED_RUNS, {})
    return [notice_of(run) for run in runs.values()]


async def list_events_txn(
    session: AsyncSession, run_id: uuid.UUID, *, after_seq: int = 0, limit: int = 1000
) -> Sequence[AuditEvent]:
    """Events of one run in chain order, starting after ``after_seq``, payloads whole."""
    result = await session.scalars(
        select(AuditEvent)
        .where(AuditEvent.run_id == run_id, AuditEvent.seq > after_seq)
        .order_by(AuditEvent.seq)
        .limit(limit)
    )
    return await expand_events_txn(session, result.all())


async def waiting_since_txn(
    session: AsyncSession, run_id: uuid.UUID, step_id: uuid.UUID
) -> datetime | None:
    """When the step last began to wait for approval (its latest ``step.awaiting_approval``
    event), or None if it never did."""
    result: datetime | None = await session.scalar(
        select(func.max(AuditEvent.created_at)).where(
            AuditEvent.run_id == run_id,
            AuditEvent.step_id == step_id,
            AuditEvent.type == "step.awaiting_approval",
        )
    )
    return result


async def has_event_txn(session: AsyncSession, run_id: uuid.UUID, seq: int, digest: str) -> bool:
    """Whether event ``seq`` of ``run_id`` is stored with exactly this hash (a write that
    appended it committed: hashes chain every earlier event and the event's own time)."""
    stored = await session.scalar(
        select(AuditEvent.hash).where(AuditEvent.run_id == run_id, AuditEvent.seq == seq)
    )
    return stored == digest


def verify_chain(events: Sequence[AuditEvent]) -> tuple[bool, int | None]:
    """Check seq continuity and every hash link; returns (ok, first bad seq)."""
    prev_hash: str | None = None
    for expected_seq, event in enumerate(events, start=1):
        recomputed = event_hash(
            run_id=event.run_id,
            seq=event.seq,
            type=event.type,
            step_id=event.step_id,
            payload=event.payload,
            actor=event.actor,
            created_at=event.created_at,
            prev_hash=event.prev_hash,
        )
        if event.seq != expected_seq or event.prev_hash != prev_hash or recomputed != event.hash:
            return False, event.seq
        prev_hash = event.hash
    return True, None


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


async def _rows(
    session: AsyncSession, model: type[Base], run_id: uuid.UUID, *order: str
) -> list[dict[str, Any]]:
    table = _table(model)
    query = (
        select(table).where(table.c.run_id == run_id).order_by(*(table.c[name] for name in order))
    )
    return [dict(row) for row in (await session.execute(query)).mappings()]


async def _whole(
    session: AsyncSession, table: str, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    return await expand_rows_txn(session, rows, BLOBBED_COLUMNS[table])


async def load_run_rows_txn(
    session: AsyncSession, run_id: uuid.UUID, *, whole: bool = False
) -> RunRows | None:
    """Every row of one run that its audit covers, as plain dicts of columns (None: no run);
    ``whole``: the documents that may reference blobs (``BLOBBED_COLUMNS``) expanded (what
    their hashes are over), else as stored (what a bundle carries, beside the blobs)."""
    runs = _table(AgentRun)
    run = (await session.execute(select(runs).where(runs.c.id == run_id))).mappings().one_or_none()
    if run is None:
        return None
    steps = await _rows(session, Step, run_id, "step_number")
    calls = await _rows(session, LLMCall, run_id, "created_at", "id")
    approvals = await _rows(session, Approval, run_id, "decided_at", "id")
    plans = await _rows(session, PlanVersion, run_id, "version")
    events = await _rows(session, AuditEvent, run_id, "seq")
    return RunRows(
        run=dict(run),
        steps=await _whole(session, "steps", steps) if whole else steps,
        llm_calls=await _whole(session, "llm_calls", calls) if whole else calls,
        approvals=await _whole(session, "approvals", approvals) if whole else approvals,
        plans=await _whole(session, "plans", plans) if whole else plans,
        events=await _whole(session, "audit_events", events) if whole else events,
    )


async def list_run_ids_txn(session: AsyncSession) -> list[uuid.UUID]:
    """Every run's id, oldest first (``audit verify --all``)."""
    runs = _table(AgentRun)
    result = await session.execute(select(runs.c.id).order_by(runs.c.created_at, runs.c.id))
    return list(result.scalars())
