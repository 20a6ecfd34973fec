"""The hot path: a worker changes a run it already knows without reading it first.

A worker keeps, per run it is executing, the run and its open steps as it last committed them.
To record a result (and claim the next step) it runs the very same state-machine code as the
locking path against that state, with a session that collects the audit events instead of talking
to the database, then writes the changed columns and the events in one guarded round trip
(``storage/run_changes.py``). The guard is the run's ``audit_seq``: every state change of a run
appends an audit event under its row lock, so an unchanged ``audit_seq`` means the state the
changes were computed from is still the truth.

Anything the hot path cannot decide from memory (a read, an LLM call to record, a lease that looks
expired, a column it may not write) makes it give up before writing; the caller then takes the
locking path, which re-reads everything. Giving up is always safe.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.orm.exc import DetachedInstanceError

from agent_engine.domain.states import TERMINAL_RUN_STATES, RunStatus, StepStatus
from agent_engine.errors import EngineError
from agent_engine.storage.audit import take_notices
from agent_engine.storage.collecting import CollectingSession, NeedsDatabase
from agent_engine.storage.run_changes import RunChanges, RunChangeWriter, StepPatch
from agent_engine.storage.runs import OPEN_STEP_STATES
from agent_engine.storage.tables import AgentRun, Base, Step
from agent_engine.storage.types import utcnow

T = TypeVar("T")
Row = TypeVar("Row", bound=Base)
MAX_KNOWN_RUNS = 1024
# Written on every hot-path change even when equal to what we last wrote: another worker's claim
# round may have moved ``claimable_at`` without an audit event (it only refreshes it).
ALWAYS_WRITTEN = ("status", "claimable_at", "audit_seq", "audit_head_hash", "updated_at")


def _column_names(model: type[Any]) -> dict[str, str]:
    """Attribute key → column name for a mapped class."""
    return {attr.key: attr.columns[0].name for attr in inspect(model).column_attrs}


_RUN_COLUMNS = _column_names(AgentRun)
_STEP_COLUMNS = _column_names(Step)
_COLUMN_KEYS: dict[type[Base], tuple[str, ...]] = {
    AgentRun: tuple(_RUN_COLUMNS),
    Step: tuple(_STEP_COLUMNS),
}


def _pending(instance: object) -> dict[str, Any]:
    """Attribute key → value before, for each attribute set since the state was last committed.

    SQLAlchemy tracks this on detached instances as on attached ones (``committed_state``), so
    only the attributes the state machine touched are looked at.
    """
    return instance_state(instance).committed_state


def _changed(instance: object, columns: dict[str, str]) -> dict[str, Any]:
    """Column name → new value of what really changed (setting an equal value is no change)."""
    current = instance.__dict__  # never getattr: a detached instance must not try to load
    changed = {}
    for key, before in _pending(instance).items():
        value = current.get(key)
        if before is not value and before != value:
            changed[columns[key]] = value
    return changed


def detached_copy(instance: Row) -> Row:
    """A new instance holding ``instance``'s column values as its committed state, sharing
    nothing mutable with it but the (never mutated in place) JSON values. Columns it never set
    are None, as in the row written from it."""
    mapper = inspect(type(instance))
    copy = cast(Row, mapper.class_manager.new_instance())
    loaded = instance.__dict__
    copy.__dict__.update({key: loaded.get(key) for key in _COLUMN_KEYS[type(instance)]})
    return copy


def _mark_committed(instance: object) -> None:
    """What was written is now the committed state (what a session's commit does)."""
    _pending(instance).clear()


def changes_made(
    run: AgentRun, steps: list[Step], expected_seq: int, audit_rows: list[dict[str, Any]]
) -> RunChanges | None:
    """What state-machine code changed in ``run`` and ``steps`` since they were last committed,
    with the audit events it appended, as one guarded write (None: it changed nothing)."""
    run_values = _changed(run, _RUN_COLUMNS)
    patches = []
    for step in steps:
        pending = _pending(step)
        if not pending:
            continue
        values = _changed(step, _STEP_COLUMNS)
        if values:
            fence = pending.get("fence", step.fence)  # the fence it had before: the guard
            patches.append(StepPatch(step.id, fence, values))
    if not audit_rows and not patches and not run_values:
        return None
    for key in ALWAYS_WRITTEN:
        run_values.setdefault(_RUN_COLUMNS[key], run.__dict__.get(key))
    return RunChanges(run.id, expected_seq, run_values, patches, audit_rows)


def mark_written(run: AgentRun, steps: list[Step]) -> None:
    """The changes were written: they are now the committed state."""
    for instance in (run, *steps):
        _mark_committed(instance)


def _still_open(steps: list[Step]) -> list[Step]:
    """The steps a later change may touch (what ``list_open_steps_txn`` would read)."""
    return [step for step in steps if step.status in OPEN_STEP_STATES]


def _finished(run: AgentRun) -> bool:
    status = RunStatus(run.status)
    return status in TERMINAL_RUN_STATES or status is RunStatus.FAILED


@dataclass
class KnownRun:
    """A run and its open steps exactly as this worker last wrote them (or is writing them)."""

    run: AgentRun
    steps: list[Step]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    usable: bool = True
    # The write of the last change while it is in flight: the next change of the run is computed
    # on top of it, and sent once it committed (each write is guarded by the one before).
    writing: asyncio.Future[bool] | None = None


@dataclass(frozen=True)
class Started(Generic[T]):
    """A change computed and sent: ``result`` is the mutation's; ``written`` resolves True once
    the change committed, False when it was not written (the run moved on: take the locking
    path), or raises when its outcome is unknown (the connection broke mid-call)."""

    result: T
    written: asyncio.Future[bool]
    # The run's audit chain head once written (seq, hash), when the change appends events: finding
    # it in the database proves a write whose answer was lost did commit.
    head: tuple[int, str] | None = None


class KnownRuns:
    """The runs a worker holds state for; bounded, and dropped on any doubt."""

    def __init__(self, capacity: int = MAX_KNOWN_RUNS) -> None:
        self._runs: OrderedDict[uuid.UUID, KnownRun] = OrderedDict()
        self._capacity = capacity
        self.hits = 0
        self.misses = 0

    def remember(self, run: AgentRun, steps: list[Step]) -> None:
        """Keep ``run`` and ``steps`` as just committed (the caller's session is done with them)."""
        if _finished(run):
            self.forget(run.id)
            return
        self._runs[run.id] = KnownRun(run, _still_open(steps))
        self._runs.move_to_end(run.id)
        while len(self._runs) > self._capacity:
            self._runs.popitem(last=False)

    def adopt(self, run: AgentRun, steps: list[Step]) -> None:
        """Keep a run this process just created and claimed, as a copy: its creator goes on
        using its own instances."""
        self.remember(detached_copy(run), [detached_copy(step) for step in steps])

    def forget(self, run_id: uuid.UUID) -> None:
        self._runs.pop(run_id, None)

    def _drop(self, known: KnownRun) -> None:
        """Trust nothing known about the run any more (a write failed, or may have)."""
        known.usable = False
        if self._runs.get(known.run.id) is known:
            self.forget(known.run.id)

    def get(self, run_id: uuid.UUID) -> KnownRun | None:
        return self._runs.get(run_id)

    async def change(
        self,
        writer: RunChangeWriter,
        run_id: uuid.UUID,
        mutate: Callable[[AsyncSession, AgentRun, list[Step]], Awaitable[T]],
        *,
        on_committed: Callable[[list[str]], None] | None = None,
    ) -> tuple[bool, T | None]:
        """Run ``mutate`` against the known state of ``run_id`` and write what it changed.

        Returns ``(True, result)`` when written, ``(False, None)`` when the caller must take the
        locking path (nothing was written).
        """
        started = await self.start_change(writer, run_id, mutate, on_committed=on_committed)
        if started is None or not await started.written:
            return False, None
        return True, started.result

    async def start_change(
        self,
        writer: RunChangeWriter,
        run_id: uuid.UUID,
        mutate: Callable[[AsyncSession, AgentRun, list[Step]], Awaitable[T]],
        *,
        on_committed: Callable[[list[str]], None] | None = None,
    ) -> Started[T] | None:
        """Run ``mutate`` against the known state of ``run_id`` and send what it changed, without
        waiting for the write to commit (None: take the locking path, nothing was sent).

        The known state moves on at once, so the run's next change can be computed while this
        one is written; that next change is sent only after this one committed. When a write
        fails, the state is dropped and later changes of the run take the locking path.
        """
        known = self._runs.get(run_id)
        if known is None:
            self.misses += 1
            return None
        async with known.lock:  # one change at a time per run in this worker
            if not known.usable or self._runs.get(run_id) is not known:
                self.misses += 1
                return None
            started = None
            try:
                started = await self._start(writer, known, mutate, on_committed)
            finally:  # on an error the state may be half changed: trust nothing known
                if started is None:
                    self._drop(known)
                    self.misses += 1
            if _finished(known.run):
                self.forget(run_id)
            else:
                known.steps = _still_open(known.steps)
            return started

    async def _start(
        self,
        writer: RunChangeWriter,
        known: KnownRun,
        mutate: Callable[[AsyncSession, AgentRun, list[Step]], Awaitable[T]],
        on_committed: Callable[[list[str]], None] | None,
    ) -> Started[T] | None:
        run, steps = known.run, known.steps
        now = utcnow()
        # Another worker's lease may have been extended since we last saw it (heartbeats are not
        # audited): only the locking path may decide that a lease expired.
        for step in steps:
            expires = step.lease_expires_at
            if step.status == StepStatus.RUNNING.value and expires is not None and expires < now:
                return None
        expected_seq = run.audit_seq
        collector = CollectingSession()
        try:
            result = await mutate(collector, run, steps)
        except (NeedsDatabase, EngineError, DetachedInstanceError):
            return None
        changes = changes_made(run, steps, expected_seq, collector.audit_rows)
        if changes is None:
            return None  # nothing to write would confirm the state: let the lock decide
        if not changes.within_hot_columns():
            return None
        previous = known.writing
        if previous is not None and not await committed(previous):
            return None  # the change this one was computed on top of was not written
        notices = take_notices(collector.info)  # the run's state as this change leaves it
        mark_written(run, steps)  # what is being written is the base of the next change
        written = asyncio.ensure_future(self._write(writer, known, changes, notices, on_committed))
        known.writing = written
        # Let the write go out now (it runs up to waiting for the database's answer): the caller
        # may not yield to the loop before it has run its next step.
        await asyncio.sleep(0)
        head = (
            (run.audit_seq, run.audit_head_hash) if changes.events and run.audit_head_hash else None
        )
        return Started(result, written, head)

    async def _write(
        self,
        writer: RunChangeWriter,
        known: KnownRun,
        changes: RunChanges,
        notices: list[str],
        on_committed: Callable[[list[str]], None] | None,
    ) -> bool:
        written = False
        try:
            written = await writer.apply(changes)
        finally:
            if not written:  # refused, or unknown (an error): the locking path decides
                self._drop(known)
                self.misses += 1
        if not written:
            return False
        self.hits += 1
        if on_committed is not None:
            on_committed(notices)
        return True


async def committed(write: asyncio.Future[bool]) -> bool:
    """Whether an earlier write of the run committed (shielded: a caller that is cancelled while
    waiting must not cancel a write that others wait for too)."""
    try:
        return await asyncio.shield(write)
    except Exception:  # its outcome is unknown: its sender falls back, and so does this change
        return False
