"""Live events: the audit log, in order, followed as it grows.

Events are read from ``audit_events`` (never from memory), so a client that reconnects with the
last id it saw gets exactly the events after it; notifications only say *when* to read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from agent_engine.domain.states import TERMINAL_RUN_STATES, RunStatus
from agent_engine.engine.context import EngineContext
from agent_engine.storage.database import read_transaction
from agent_engine.storage.runs import get_run_txn
from agent_engine.storage.tables import AgentRun, AuditEvent, Step

BATCH = 500
POLL_S = 5.0  # fallback when a notification is lost; normal latency comes from notifications


@dataclass(frozen=True)
class StreamFilter:
    run_id: uuid.UUID | None = None
    type_prefix: str | None = None
    # One run's stream is positioned by the run's gap-free seq; the global one by event id.
    by_seq: bool = False


def event_body(event: AuditEvent, output: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": event.id,
        "seq": event.seq,
        "run_id": str(event.run_id),
        "step_id": str(event.step_id) if event.step_id else None,
        "type": event.type,
        "actor": event.actor,
        "created_at": event.created_at.isoformat(),
        "payload": event.payload,
        "hash": event.hash,
    }
    if output is not None:
        body["output"] = output  # a completed step's output travels with its event
    return body


async def _read(
    ctx: EngineContext, after: int, flt: StreamFilter
) -> tuple[Sequence[AuditEvent], dict[uuid.UUID, dict[str, Any]], bool]:
    """Events after ``after`` (per-run ``seq`` for one run, global id otherwise) and outputs."""
    async with read_transaction(ctx.sessions) as session:
        # Status first: under READ COMMITTED each statement sees newer commits, so a run seen
        # finished here has all its events visible to the query below, never the other way.
        finished = False
        if flt.run_id is not None:
            status = await session.scalar(select(AgentRun.status).where(AgentRun.id == flt.run_id))
            finished = status is not None and RunStatus(status) in TERMINAL_RUN_STATES
        query = select(AuditEvent)
        if flt.run_id is not None:
            query = query.where(AuditEvent.run_id == flt.run_id)
        if flt.by_seq:
            query = query.where(AuditEvent.seq > after).order_by(AuditEvent.seq)
        else:
            query = query.where(AuditEvent.id > after).order_by(AuditEvent.id)
        if flt.type_prefix:
            query = query.where(AuditEvent.type.startswith(flt.type_prefix))
        events = (await session.scalars(query.limit(BATCH))).all()
        completed = [e.step_id for e in events if e.type == "step.completed" and e.step_id]
        outputs: dict[uuid.UUID, dict[str, Any]] = {}
        if completed:
            rows = await session.execute(
                select(Step.id, Step.output_data).where(Step.id.in_(completed))
            )
            outputs = {row.id: row.output_data for row in rows if row.output_data is not None}
        return events, outputs, finished


async def follow(
    ctx: EngineContext, after: int, flt: StreamFilter, *, stop_when_finished: bool = True
) -> AsyncIterator[dict[str, Any]]:
    """Every matching event after ``after``, then new ones as they commit.

    For one run, the stream ends after the last event of a finished (completed/cancelled) run.
    """
    async with ctx.notifier.subscribe() as wakeups:
        while True:
            events, outputs, finished = await _read(ctx, after, flt)
            for event in events:
                after = event.seq if flt.by_seq else event.id
                yield event_body(event, outputs.get(event.step_id) if event.step_id else None)
            if len(events) == BATCH:
                continue
            if stop_when_finished and finished:
                return
            await _wait_for(wakeups, flt)


async def _wait_for(wakeups: asyncio.Queue[str], flt: StreamFilter) -> None:
    wanted = str(flt.run_id) if flt.run_id else None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(POLL_S):
            while True:
                payload = await wakeups.get()
                if wanted is None or payload.startswith(wanted):
                    return


async def check_run(ctx: EngineContext, run_id: str) -> uuid.UUID:
    """The run's id, or NotFoundError before a stream is opened."""
    async with read_transaction(ctx.sessions) as session:
        return (await get_run_txn(session, run_id)).id
