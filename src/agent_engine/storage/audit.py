"""The per-run audit chain: gap-free ``seq``, each event hashing the one before it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.canonical import content_hash
from agent_engine.storage.collecting import CollectingSession
from agent_engine.storage.notifications import RunNotice
from agent_engine.storage.tables import AgentRun, AuditEvent
from agent_engine.storage.types import utcnow


def event_hash(
    *,
    run_id: uuid.UUID,
    seq: int,
    type: str,
    step_id: uuid.UUID | None,
    payload: dict[str, Any],
    actor: str,
    created_at: datetime,
    prev_hash: str | None,
) -> str:
    """The chained hash of one event; a verifier recomputes it from the stored columns."""
    return content_hash(
        {
            "run_id": str(run_id),
            "seq": seq,
            "type": type,
            "step_id": str(step_id) if step_id else None,
            "payload": payload,
            "actor": actor,
            "created_at": created_at.isoformat(),
            "prev_hash": prev_hash,
        }
    )


CHANGED_RUNS = "agent_engine_changed_runs"


def take_notices(info: dict[str, Any]) -> list[str]:
    """The notification payloads for the runs a committed transaction changed (and forget them),
    as PostgreSQL's trigger would send them: one per run, its state after the commit."""
    runs: dict[uuid.UUID, AgentRun] = info.pop(CHANGED_RUNS, {})
    return [
        RunNotice.of(run.id, run.audit_seq, run.status, run.claimable_at).payload()
        for run in runs.values()
    ]


def append_event_txn(
    session: AsyncSession,
    run: AgentRun,
    type: str,
    payload: dict[str, Any],
    *,
    actor: str,
    step_id: uuid.UUID | None = None,
) -> None:
    """Add the next event of ``run``'s chain to the caller's transaction.

    The caller holds the run row (locked on PostgreSQL, IMMEDIATE on SQLite); moving the chain head
    on that row is what keeps ``seq`` gap-free under concurrency.
    """
    seq = run.audit_seq + 1
    created_at = utcnow()
    digest = event_hash(
        run_id=run.id,
        seq=seq,
        type=type,
        step_id=step_id,
        payload=payload,
        actor=actor,
        created_at=created_at,
        prev_hash=run.audit_head_hash,
    )
    row = {
        "run_id": run.id,
        "seq": seq,
        "type": type,
        "step_id": step_id,
        "payload": payload,
        "actor": actor,
        "created_at": created_at,
        "prev_hash": run.audit_head_hash,
        "hash": digest,
    }
    if isinstance(session, CollectingSession):
        session.audit_rows.append(row)  # written as a row: no ORM object needed
    else:
        session.add(AuditEvent(**row))
    # Announced after commit (SQLite, in-process); PostgreSQL's trigger does it across processes.
    session.info.setdefault(CHANGED_RUNS, {})[run.id] = run
    run.audit_seq = seq
    run.audit_head_hash = digest


async def list_events_txn(
    session: AsyncSession, run_id: uuid.UUID, *, after_seq: int = 0, limit: int = 1000
) -> Sequence[AuditEvent]:
    """Events of one run in chain order, starting after ``after_seq``."""
    result = await session.scalars(
        select(AuditEvent)
        .where(AuditEvent.run_id == run_id, AuditEvent.seq > after_seq)
        .order_by(AuditEvent.seq)
        .limit(limit)
    )
    return result.all()


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
