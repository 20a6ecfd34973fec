"""Live events: the audit log, in order, followed as it grows.

Events are read from ``audit_events`` (never from memory), so a client that reconnects with the
last id it saw gets exactly the events after it; notifications only say *when* to read again.

One run's stream is positioned by the run's gap-free ``seq``: every writer of a run holds its row,
so seq order is commit order and a reader never sees seq N+1 before seq N.

The global stream is delivered in an order in which every event is appended after all the events
a reader may already have been given, so that resuming after the last id seen never skips one.
Event ids cannot be that order: an id is taken at insert, not at commit, so a transaction may
commit a lower id after a reader has already passed it. On PostgreSQL each event carries the id
of the transaction that wrote it (``xact_id``, its default ``pg_current_xact_id()``, migration
0007), and the stream is ordered by ``(xact_id, id)`` and holds back every event whose transaction
is not older than the oldest one still in progress (``pg_snapshot_xmin``): below that horizon no
transaction is open and no new one can start, so the set of events there is final and grows only
at its end. Filtering by the horizon alone while paging by id would still skip: a transaction
with an older xact id may insert a higher id and commit while a younger one holding a lower id
is still open. A run's events keep their seq order in it unless a transaction that writes several
runs waited for this run's row after it took its transaction id (a run's own stream is by seq).

The cost of never skipping: a writing transaction that stays open anywhere on the server (the
horizon is the server's, a prepared transaction counts too) holds back what commits after it
until it ends. On SQLite one writer commits at a time (IMMEDIATE transactions), so id order is
commit order: there ``xact_id`` is always 0 and nothing is held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, exists, literal, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from agent_engine.domain.states import TERMINAL_RUN_STATES, RunStatus, StepStatus
from agent_engine.engine.context import EngineContext
from agent_engine.storage.blobs import expand_documents_txn, expand_events_txn
from agent_engine.storage.database import read_transaction
from agent_engine.storage.notifications import LOOK_AGAIN
from agent_engine.storage.runs import get_run_txn
from agent_engine.storage.tables import AgentRun, AuditEvent, Step

BATCH = 500
POLL_S = 5.0  # fallback when a notification is lost; normal latency comes from notifications
# While events are held back by an open transaction: how soon to look again (it may end without
# a notification, e.g. a transaction that wrote no events), doubling up to POLL_S.
HELD_BACK_FIRST_S = 0.05
# The transaction that wrote an event (see the module's docstring); not named by inserts.
XACT_ID = AuditEvent.xact_id
HORIZON = text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
Position = tuple[int, int]  # (xact_id, id) of the last event delivered by the global stream
START: Position = (-1, 0)
COMPLETED = "step.completed"  # the event whose body carries the step's output
NEEDS_A_PERSON = frozenset({RunStatus.AWAITING_APPROVAL, RunStatus.FAILED})


class StopAt(StrEnum):
    """When one run's stream ends."""

    FINISHED = "finished"  # after the last event of a completed or cancelled run
    # ... or as soon as the run waits for a person: it or one of its steps awaits approval, or
    # it failed (a person resumes, retries or cancels it).
    WAITING = "waiting"


@dataclass(frozen=True)
class StreamFilter:
    run_id: uuid.UUID | None = None
    type_prefix: str | None = None


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


async def _outputs(
    session: AsyncSession, events: Sequence[AuditEvent]
) -> dict[uuid.UUID, dict[str, Any]]:
    """The outputs of the steps whose completion is among ``events``."""
    completed = [e.step_id for e in events if e.type == COMPLETED and e.step_id]
    if not completed:
        return {}
    query = select(Step.id, Step.output_data).where(
        Step.id.in_(completed), Step.output_data.is_not(None)
    )
    rows = (await session.execute(query)).all()
    outputs = await expand_documents_txn(session, [row.output_data for row in rows])
    return {row.id: output for row, output in zip(rows, outputs, strict=True)}


def _bodies(
    events: Sequence[AuditEvent], outputs: dict[uuid.UUID, dict[str, Any]]
) -> list[dict[str, Any]]:
    # Only the completion carries the output: the step's other events in the same batch do not
    # (a reader that got them in an earlier batch would see them without it).
    return [
        event_body(e, outputs.get(e.step_id) if e.step_id and e.type == COMPLETED else None)
        for e in events
    ]


async def _stop_seq(session: AsyncSession, run_id: uuid.UUID, until: StopAt) -> int | None:
    """The run's last seq when its stream is to end there (None: it goes on)."""
    # One statement, one snapshot: the run's state and the head of its chain agree. Under READ
    # COMMITTED a later statement sees at least these commits, so every event up to the head is
    # visible to the read that follows.
    step_waits: ColumnElement[bool] = literal(False)
    if until is StopAt.WAITING:
        step_waits = exists().where(
            Step.run_id == AgentRun.id, Step.status == StepStatus.AWAITING_APPROVAL
        )
    query = select(AgentRun.status, AgentRun.audit_seq, step_waits.label("step_waits"))
    row = (await session.execute(query.where(AgentRun.id == run_id))).one_or_none()
    if row is None:
        return None
    status = RunStatus(row.status)
    if status in TERMINAL_RUN_STATES:
        return int(row.audit_seq)
    if until is StopAt.WAITING and (status in NEEDS_A_PERSON or row.step_waits):
        return int(row.audit_seq)
    return None


async def _read_run(
    ctx: EngineContext, run_id: uuid.UUID, after: int, type_prefix: str | None, until: StopAt
) -> tuple[list[dict[str, Any]], bool, bool]:
    """The run's events after seq ``after``; whether a full batch came back; whether to stop."""
    async with read_transaction(ctx.sessions) as session:
        stop_seq = await _stop_seq(session, run_id, until)
        query = select(AuditEvent).where(AuditEvent.run_id == run_id, AuditEvent.seq > after)
        if stop_seq is not None:
            query = query.where(AuditEvent.seq <= stop_seq)
        if type_prefix:
            query = query.where(AuditEvent.type.startswith(type_prefix))
        stored = (await session.scalars(query.order_by(AuditEvent.seq).limit(BATCH))).all()
        events = await expand_events_txn(session, stored)
        bodies = _bodies(events, await _outputs(session, events))
    return bodies, len(events) == BATCH, stop_seq is not None


async def follow_run(
    ctx: EngineContext,
    run_id: uuid.UUID,
    after: int,
    *,
    type_prefix: str | None = None,
    until: StopAt = StopAt.FINISHED,
) -> AsyncIterator[dict[str, Any]]:
    """Every event of the run after seq ``after``, then new ones as they commit; the stream
    ends after the run's last event at the point ``until`` names."""
    async with ctx.notifier.subscribe() as wakeups:
        while True:
            bodies, full, stop = await _read_run(ctx, run_id, after, type_prefix, until)
            for body in bodies:
                after = body["seq"]
                yield body
            if full:
                continue
            if stop:
                return
            await _wait_for(wakeups, str(run_id), POLL_S)


async def _start_position(ctx: EngineContext, after: int) -> Position:
    """Where the global stream resumes after event id ``after``: that event's place (for an id
    that names no event, the place of the last event inserted before it)."""
    if after <= 0:
        return START
    async with read_transaction(ctx.sessions) as session:
        query = select(XACT_ID, AuditEvent.id).where(AuditEvent.id <= after)
        row = (await session.execute(query.order_by(AuditEvent.id.desc()).limit(1))).first()
    return START if row is None else (int(row[0]), int(row[1]))


async def _read_all(
    ctx: EngineContext, position: Position, flt: StreamFilter
) -> tuple[list[tuple[Position, dict[str, Any]]], bool, bool]:
    """The events after ``position`` that no open transaction holds back, each with its
    position; whether a full batch came back; whether some were held back."""
    async with read_transaction(ctx.sessions) as session:
        # The horizon first: whatever lies below it is committed before the next statement's
        # snapshot is taken, so that statement sees all of it.
        postgres = ctx.db.dialect.name == "postgresql"
        horizon = await session.scalar(HORIZON) if postgres else None
        query = select(AuditEvent, XACT_ID).where(
            # BIGINT binds: transaction ids pass 2**31 (the epoch is in the high bits).
            tuple_(XACT_ID, AuditEvent.id)
            > tuple_(literal(position[0], BigInteger), literal(position[1], BigInteger))
        )
        if flt.run_id is not None:
            query = query.where(AuditEvent.run_id == flt.run_id)
        if flt.type_prefix:
            query = query.where(AuditEvent.type.startswith(flt.type_prefix))
        rows = (await session.execute(query.order_by(XACT_ID, AuditEvent.id).limit(BATCH))).all()
        # Ordered by xact id, the events below the horizon come first.
        ready = [(event, int(xact)) for event, xact in rows if horizon is None or xact < horizon]
        events = await expand_events_txn(session, [event for event, _ in ready])
        outputs = await _outputs(session, events)
    placed = [
        ((xact, e.id), body)
        for (e, xact), body in zip(ready, _bodies(events, outputs), strict=True)
    ]
    return placed, len(ready) == BATCH, len(ready) < len(rows)


async def follow_all(
    ctx: EngineContext, after: int, flt: StreamFilter
) -> AsyncIterator[dict[str, Any]]:
    """Every matching event after event id ``after`` in commit order (see the module's
    docstring), then new ones as they commit; the stream never ends by itself."""
    position = await _start_position(ctx, after)
    held_back_wait = HELD_BACK_FIRST_S
    async with ctx.notifier.subscribe() as wakeups:
        while True:
            placed, full, held_back = await _read_all(ctx, position, flt)
            for place, body in placed:
                position = place
                yield body
            if full:
                continue
            if not held_back:
                held_back_wait = HELD_BACK_FIRST_S
                await _wait_for(wakeups, str(flt.run_id) if flt.run_id else None, POLL_S)
                continue
            # Any commit may be the one that releases them, whatever run it names.
            await _wait_for(wakeups, None, held_back_wait)
            held_back_wait = min(held_back_wait * 2, POLL_S)


async def _wait_for(wakeups: asyncio.Queue[str], wanted: str | None, timeout_s: float) -> None:
    """Until a notification about ``wanted`` (any, for None) or a "look again", or the timeout."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while True:
                payload = await wakeups.get()
                if wanted is None or payload.startswith(wanted) or payload == LOOK_AGAIN:
                    return


async def check_run(ctx: EngineContext, run_id: str) -> uuid.UUID:
    """The run's id, or NotFoundError before a stream is opened."""
    async with read_transaction(ctx.sessions) as session:
        return (await get_run_txn(session, run_id)).id
