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
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.states import OPEN_STEP_STATES, RUN_OVER_STATES
from agent_engine.errors import EngineError
from agent_engine.storage.audit import has_event_txn
from agent_engine.storage.changes import ChangeWriter, mark_saved
from agent_engine.storage.database import read_transaction

T = TypeVar("T")
MAX_KNOWN_RUNS = 1024


@dataclass
class KnownRun:
    run: RunRecord
    steps: list[StepRecord]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


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
        known = self._runs.get(run_id)
        if known is None:
            self.misses += 1
            return False, None
        async with known.lock:  # one change at a time per run in this worker
            if self._runs.get(run_id) is not known:
                self.misses += 1
                return False, None
            changes = ChangeSet(known.run, known.steps)
            try:
                result = await decide(changes)
                written = await _write(writer, sessions, changes)
            except (EngineError, DBAPIError):
                written = False
            if not written:  # the records may be half changed: trust none of them
                self.forget(run_id)
                self.misses += 1
                return False, None
            self.hits += 1
            if known.run.status in RUN_OVER_STATES:
                self.forget(run_id)
            else:
                known.steps = [s for s in known.steps if s.status in OPEN_STEP_STATES]
            return True, result


async def _write(
    writer: ChangeWriter, sessions: async_sessionmaker[AsyncSession], changes: ChangeSet
) -> bool:
    """Write the change set; when the answer was lost (the connection broke), it committed if
    its last audit event is stored (hashes chain every earlier event and the event's time)."""
    try:
        return await writer.apply(changes)
    except DBAPIError:
        events = changes.events()
        if not events:
            raise
        last = events[-1]
        async with read_transaction(sessions) as session:
            stored = await has_event_txn(session, changes.run.id, last["seq"], last["hash"])
        if stored:
            mark_saved(changes)
        return stored
