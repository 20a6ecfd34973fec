"""What a worker knows of the runs it executes: each run and its open steps as records, exactly
as this worker last wrote them. Recording a result then needs no read: the decision is made on
these records and written guarded by the run's version, so if anything changed the run since
(an approval, a cancel, another worker, a heartbeat), the write is refused, the records are
forgotten, and the worker decides again under the run's lock from what the database holds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.states import OPEN_STEP_STATES, RUN_OVER_STATES
from agent_engine.errors import EngineError
from agent_engine.storage.audit import has_event_txn, notice_of
from agent_engine.storage.changes import ChangeWriter, Write, mark_saved, prepare
from agent_engine.storage.database import read_transaction

T = TypeVar("T")
MAX_KNOWN_RUNS = 1024


@dataclass
class KnownRun:
    run: RunRecord
    steps: list[StepRecord]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The run's last write while it is in flight: the next one is sent once it committed.
    writing: asyncio.Future[bool] | None = None


class KnownRuns:
    """The runs a worker holds records of; bounded, and dropped on any doubt."""

    def __init__(self, capacity: int = MAX_KNOWN_RUNS) -> None:
        self._runs: OrderedDict[uuid.UUID, KnownRun] = OrderedDict()
        self._capacity = capacity
        self.hits = 0
        self.misses = 0

    def remember(self, changes: ChangeSet) -> None:
        """Keep a run as a write just left it (copies: the writer's caller keeps its own)."""
        run = changes.run
        if run.status in RUN_OVER_STATES:
            self.forget(run.id)
            return
        steps = [step.copy() for step in changes.steps if step.status in OPEN_STEP_STATES]
        self._runs[run.id] = KnownRun(run.copy(), steps)
        self._runs.move_to_end(run.id)
        while len(self._runs) > self._capacity:
            self._runs.popitem(last=False)

    def forget(self, run_id: uuid.UUID) -> None:
        self._runs.pop(run_id, None)

    async def change(
        self,
        writer: ChangeWriter,
        sessions: async_sessionmaker[AsyncSession],
        run_id: uuid.UUID,
        decide: Callable[[ChangeSet], Awaitable[T]],
    ) -> tuple[bool, T | None]:
        """Decide on the known records of ``run_id`` and write the change set; ``(True, result)``
        when written, ``(False, None)`` when the caller must decide under the lock instead
        (nothing of this decision was written)."""
        sent = await self.send(writer, sessions, run_id, decide)
        if sent is None or not await sent.committed():
            return False, None
        return True, sent.result

    async def send(
        self,
        writer: ChangeWriter,
        sessions: async_sessionmaker[AsyncSession],
        run_id: uuid.UUID,
        decide: Callable[[ChangeSet], Awaitable[T]],
    ) -> Sent[T] | None:
        """Decide on the known records of ``run_id`` and send the write without waiting for it
        (None: decide under the lock instead; nothing was sent).

        The records move on at once, as if the write had committed, so the run's next change
        can be decided while this one is written; that next decision is sent (and this call
        returns) only once this write committed. When a write fails, the records are forgotten:
        the state they show is never trusted unless every write before it committed.
        """
        known = self._runs.get(run_id)
        if known is None:
            self.misses += 1
            return None
        async with known.lock:  # one decision at a time per run in this worker
            if self._runs.get(run_id) is not known:
                self.misses += 1
                return None
            if known.writing is None or known.writing.done():
                # Steps finished by writes that committed are in the database now; those of
                # a write in flight stay, so that this decision sees their outputs.
                known.steps = [s for s in known.steps if s.status in OPEN_STEP_STATES]
            changes = ChangeSet(known.run, known.steps)
            try:
                result = await decide(changes)
            except (EngineError, DBAPIError):
                self._drop(known)  # the records may be half changed: trust none of them
                return None
            write = prepare(changes, writer.blob_threshold)
            mark_saved(changes)
            events = changes.events()
            last = (events[-1]["seq"], events[-1]["hash"]) if events else None
            notice = notice_of(known.run)
            if known.writing is not None and not await committed(known.writing):
                return None  # decided on top of a write that did not commit (already dropped)
            written = asyncio.ensure_future(
                self._send(writer, sessions, known, write, notice, last)
            )
            known.writing = written
            if known.run.status in RUN_OVER_STATES:
                self.forget(run_id)
        await asyncio.sleep(0)  # let the write go out before the caller goes on
        return Sent(result, written)

    def _drop(self, known: KnownRun) -> None:
        if self._runs.get(known.run.id) is known:
            self.forget(known.run.id)
        self.misses += 1

    async def _send(
        self,
        writer: ChangeWriter,
        sessions: async_sessionmaker[AsyncSession],
        known: KnownRun,
        write: Write,
        notice: str,
        last_event: tuple[int, str] | None,
    ) -> bool:
        """Send ``write``; whether it committed."""
        try:
            written = await writer.send(write, notice)
        except DBAPIError:
            # The answer was lost (the connection broke): it committed if its last audit event
            # is stored (hashes chain every earlier event and the event's own time).
            if last_event is None:
                written = False
            else:
                async with read_transaction(sessions) as session:
                    written = await has_event_txn(session, write.run_id, *last_event)
        if written:
            self.hits += 1
        else:
            self._drop(known)
        return written


@dataclass(frozen=True)
class Sent(Generic[T]):
    """A decision made on known records and sent: ``written`` resolves to whether it
    committed."""

    result: T
    written: asyncio.Future[bool]

    async def committed(self) -> bool:
        return await committed(self.written)


async def committed(write: asyncio.Future[bool]) -> bool:
    """Whether a write committed (shielded: a waiter that is cancelled must not cancel a write
    that others wait for too; a write that failed did not)."""
    try:
        return await asyncio.shield(write)
    except Exception:
        return False
