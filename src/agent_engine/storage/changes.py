"""Writing change sets: every change of a run goes through here, in one guarded write.

A ``ChangeSet`` (``domain/records.py``) holds the fields a decision changed on a run and its
steps, and the rows it added. Written, it is one update of the run that applies only if the run's
``version`` is still the one the decision read (and bumps it), the updates of its steps, and the
inserts, all in one transaction. When the guard fails, nothing of that run is written and the
caller decides again from what the database holds (``apply`` answers False).

- PostgreSQL: one call, ``SELECT agent_engine_apply_changes_v3(…)`` (``storage/sql/``), either
  alone (its own implicit transaction: one round trip) or inside the caller's transaction.
- SQLite: the same changes as Core statements, in one transaction; a worker's write goes whole
  to a thread, over a blocking engine on the same file (one hop instead of one per statement).

Change sets that become ready while a write is in flight go together in the next one (group
commit): one commit for all the runs whose results are ready.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Table, insert, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from agent_engine.domain.audit_signing import HeadSigner
from agent_engine.domain.canonical import wire_json
from agent_engine.domain.records import ChangeSet, RunRecord
from agent_engine.domain.states import RUN_OVER_STATES
from agent_engine.domain.transitions import append_event
from agent_engine.storage.audit import CHANGED_RUNS, ENDED_RUNS, notice_of
from agent_engine.storage.blobs import (
    DEFAULT_THRESHOLD_BYTES,
    blob_rows,
    externalize_row,
    externalize_step_values,
    touching_insert,
)
from agent_engine.storage.database import create_sqlite_sync_engine
from agent_engine.storage.tables import Base
from agent_engine.tracing import emit_run_span

# Foreign keys first: a plan version names the LLM call that made it, calls name their step.
# ``webhook_deliveries`` is the outbox of events the change set makes (budget alerts).
INSERT_ORDER = (
    "agent_runs",
    "steps",
    "llm_calls",
    "plans",
    "approvals",
    "audit_events",
    "webhook_deliveries",
)
TABLES: dict[str, Table] = {name: Base.metadata.tables[name] for name in INSERT_ORDER}
MAX_BATCH = 64  # runs per group commit
_RUN_OVER = frozenset(state.value for state in RUN_OVER_STATES)
APPLY_SQL = text("SELECT agent_engine_apply_changes_v3(CAST(:batch AS jsonb))")


class DuplicateRowError(Exception):
    """A unique constraint refused a new row (a concurrent run with the same idempotency key)."""


@dataclass(frozen=True)
class Write:
    """A change set as the values to write (what both backends execute)."""

    run_id: uuid.UUID
    expected_version: int | None  # None: a new run, only inserted
    run_values: dict[str, Any]
    step_values: list[tuple[uuid.UUID, dict[str, Any]]]
    inserts: list[tuple[str, list[dict[str, Any]]]]
    # Rows of ``blobs`` the documents written reference, inserted (or, already stored, their
    # ``created_at`` moved on: see storage/blobs.py).
    blobs: list[dict[str, Any]] = field(default_factory=list)
    # The run as this write ends it (completed, failed, cancelled), when it has a trace: its
    # ``invoke_agent`` span is emitted once the write committed (docs/tracing.md).
    ended_run: RunRecord | None = None

    def document(self) -> dict[str, Any]:
        """The element of ``agent_engine_apply_changes_v3``'s batch for this write."""
        return {
            "run_id": self.run_id,
            "expected_version": self.expected_version,
            "run": self.run_values,
            "steps": [{"id": step_id, "set": values} for step_id, values in self.step_values],
            "inserts": [[table, rows] for table, rows in self.inserts],
            # bytea from text: PostgreSQL's hex form.
            "blobs": [{**row, "content": "\\x" + row["content"].hex()} for row in self.blobs],
        }


def prepare(changes: ChangeSet, blob_threshold: int = DEFAULT_THRESHOLD_BYTES) -> Write:
    """What writing ``changes`` writes; strings of the documents ``BLOBBED_COLUMNS`` names
    (steps' inputs and outputs, model calls' requests and responses, plan versions, what
    approvers were shown, audit events' payloads) longer than ``blob_threshold`` bytes go to
    ``blobs``. The run's version moves on here: a change computed on top of this one is
    guarded by the version this one leaves. LLM calls no event named yet get an
    ``llm.recorded`` event."""
    run = changes.run
    if changes.uncovered_calls:
        append_event(changes, run, "llm.recorded", {}, actor="ledger")
    rows: dict[str, list[dict[str, Any]]] = {}
    if changes.new_run:
        rows["agent_runs"] = [run.row()]
        expected: int | None = None
        run_values: dict[str, Any] = {}
    else:
        expected = changes.expected_version
        run.version = expected + 1
        run_values = run.changes()
    new = {id(step) for step in changes.new_steps}
    blobs: dict[str, bytes] = {}
    if changes.new_steps:
        rows["steps"] = [
            externalize_step_values(step.row(), blob_threshold, blobs) for step in changes.new_steps
        ]
    step_values = [
        (step.id, externalize_step_values(values, blob_threshold, blobs))
        for step in changes.steps
        if id(step) not in new and (values := step.changes())
    ]
    for table, row in changes.rows:
        # Model calls, plan versions, approvals, audit events: their hashes (and the events'
        # coverage) are of the whole documents, taken before.
        row = externalize_row(table, row, blob_threshold, blobs)
        rows.setdefault(table, []).append(row)
    inserts = [(table, rows[table]) for table in INSERT_ORDER if table in rows]
    ended = None
    if run.trace_id is not None and (changes.new_run or "status" in run_values):
        ended = run.copy() if run.status in _RUN_OVER else None
    return Write(run.id, expected, run_values, step_values, inserts, blob_rows(blobs), ended)


def sign_head(write: Write, signer: HeadSigner) -> None:
    """Add the signature of the chain head ``write`` leaves, if it moves it: once per write,
    whatever the number of events in it."""
    if write.expected_version is None:
        values = next(rows[0] for table, rows in write.inserts if table == "agent_runs")
    elif "audit_head_hash" in write.run_values:
        values = write.run_values
    else:
        return
    values["audit_signature"] = signer.sign(
        write.run_id, values["audit_seq"], values["audit_head_hash"]
    )
    values["audit_key_id"] = signer.key_id


def mark_saved(changes: ChangeSet) -> None:
    """The change set was written: its records' stored state is what they hold now."""
    changes.run.saved()
    for step in changes.steps:
        step.saved()


class ChangeWriter:
    """Writes change sets: on PostgreSQL through the engine's pool, on SQLite through the
    caller's connection or (a worker's own writes) a blocking engine on the same file."""

    def __init__(
        self,
        engine: AsyncEngine,
        publish: Callable[[list[str]], None],
        signer: HeadSigner | None = None,
        *,
        blob_threshold: int = DEFAULT_THRESHOLD_BYTES,
    ) -> None:
        self._engine = engine
        self.signer = signer
        self.blob_threshold = blob_threshold
        self._postgres = engine.dialect.name == "postgresql"
        # SQLite: a blocking engine on the same file, so that a whole write is one hop to a
        # thread (through aiosqlite every statement is one; they were most of a step's time).
        self._sqlite: Engine | None = (
            None
            if self._postgres
            else create_sqlite_sync_engine(engine.url.render_as_string(hide_password=False))
        )
        self._publish = publish
        self._queue: list[tuple[Write, str, asyncio.Future[bool]]] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None  # held: the loop keeps only weak refs

    @property
    def works_elsewhere(self) -> bool:
        """Whether a write's work happens outside this process (PostgreSQL's server), leaving
        the interpreter free while it commits (SQLite's runs in a thread of this process)."""
        return self._postgres

    async def apply(self, changes: ChangeSet) -> bool:
        """Write ``changes`` in a transaction of its own (shared with whatever else is ready);
        False when the run moved on (nothing written). Raises when the outcome is unknown (the
        connection broke mid-write)."""
        write = prepare(changes, self.blob_threshold)
        written = await self.send(write, notice_of(changes.run))
        if written:
            mark_saved(changes)
        return written

    def _signed(self, write: Write) -> Write:
        if self.signer is not None:
            sign_head(write, self.signer)
        return write

    async def send(self, write: Write, notice: str) -> bool:
        """Write a prepared change set (``notice``: its run's notification once committed); as
        ``apply``, for a caller that keeps its records itself."""
        self._signed(write)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((write, notice, done))
        if not self._flushing:
            self._flushing = True
            try:
                await self._flush_one_batch()
            finally:
                if self._queue:  # what arrived meanwhile goes next, without this caller
                    self._flusher = asyncio.create_task(self._flush_rest())
                else:
                    self._flushing = False
        return await done

    async def insert(self, changes: ChangeSet) -> None:
        """Write a new run's change set in a transaction of its own, not shared: a unique key it
        breaks (an idempotency key used concurrently) raises ``DuplicateRowError`` to its
        creator alone."""
        write = self._signed(prepare(changes, self.blob_threshold))
        try:
            await self._write_batch([write])
        except IntegrityError as exc:
            raise DuplicateRowError(str(exc.orig)) from exc
        mark_saved(changes)
        self._publish([notice_of(changes.run)])
        if write.ended_run is not None:
            emit_run_span(write.ended_run)

    async def apply_in(self, session: AsyncSession, batch: Sequence[ChangeSet]) -> list[bool]:
        """Write ``batch`` in the caller's transaction; its commit announces them."""
        writes = [self._signed(prepare(changes, self.blob_threshold)) for changes in batch]
        connection = await session.connection()
        applied = await self._execute(connection, writes)
        changed = session.info.setdefault(CHANGED_RUNS, {})
        for changes, write, ok in zip(batch, writes, applied, strict=True):
            if ok:
                mark_saved(changes)
                changed[changes.run.id] = changes.run
                if write.ended_run is not None:  # its span once the caller's commit is done
                    session.info.setdefault(ENDED_RUNS, []).append(write.ended_run)
        return applied

    async def _flush_rest(self) -> None:
        try:
            while self._queue:
                await self._flush_one_batch()
        finally:
            self._flushing = False

    async def _flush_one_batch(self) -> None:
        batch = self._queue[:MAX_BATCH]
        del self._queue[: len(batch)]
        try:
            applied = await self._write_batch([write for write, _, _ in batch])
        except BaseException as exc:
            # Whether the batch committed is unknown: every caller learns it.
            for _, _, done in batch:
                if not done.done():
                    done.set_exception(
                        exc if isinstance(exc, Exception) else ConnectionError("write interrupted")
                    )
            if not isinstance(exc, Exception):
                raise
            return
        notices = []
        for (write, notice, done), ok in zip(batch, applied, strict=True):
            if ok:
                notices.append(notice)
                if write.ended_run is not None:
                    emit_run_span(write.ended_run)
            if not done.done():
                done.set_result(ok)
        if notices:
            self._publish(notices)

    async def _write_batch(self, writes: list[Write]) -> list[bool]:
        if self._postgres:
            # One statement is one implicit transaction: no BEGIN and COMMIT round trips.
            async with self._engine.connect() as connection:
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                return await self._execute(autocommit, writes)
        return await asyncio.to_thread(self._write_sqlite, writes)

    @property
    def sqlite_writer(self) -> Engine | None:
        """SQLite: the blocking engine a worker's writes go through (to watch its statements)."""
        return self._sqlite

    def _write_sqlite(self, writes: list[Write]) -> list[bool]:
        assert self._sqlite is not None
        with self._sqlite.begin() as connection:
            return _apply_sqlite(connection, writes)

    def close(self) -> None:
        """Release the SQLite writer's connections (PostgreSQL writes use the engine's pool)."""
        if self._sqlite is not None:
            self._sqlite.dispose()
            self._sqlite = None

    async def _execute(self, connection: AsyncConnection, writes: list[Write]) -> list[bool]:
        if self._postgres:
            # One lock order for every batch (by run id): two batches never deadlock.
            order = sorted(range(len(writes)), key=lambda i: writes[i].run_id)
            answers = await connection.scalar(
                APPLY_SQL, {"batch": wire_json([writes[i].document() for i in order])}
            )
            applied = [False] * len(writes)
            for position, index in enumerate(order):
                applied[index] = bool(answers[position])
            return applied
        return await connection.run_sync(_apply_sqlite, writes)


def _apply_sqlite(connection: Connection, writes: list[Write]) -> list[bool]:
    """The writes as Core statements, in the caller's (IMMEDIATE) transaction."""
    runs, steps = TABLES["agent_runs"], TABLES["steps"]
    # Blobs first and in hash order, as PostgreSQL's function does; one already stored is kept
    # (its created_at moved on). The same hash twice in a batch is one row.
    blobs = sorted(
        {row["hash"]: row for write in writes for row in write.blobs}.values(),
        key=lambda row: row["hash"],
    )
    if blobs:
        connection.execute(touching_insert("sqlite"), blobs)
    applied = []
    for write in writes:
        if write.expected_version is not None:
            result = connection.execute(
                update(runs)
                .where(runs.c.id == write.run_id, runs.c.version == write.expected_version)
                .values(write.run_values)
            )
            if result.rowcount != 1:
                applied.append(False)  # checked first: nothing else of this run was written
                continue
            for step_id, values in write.step_values:
                statement = (
                    update(steps)
                    .where(steps.c.id == step_id, steps.c.run_id == write.run_id)
                    .values(values)
                )
                if connection.execute(statement).rowcount != 1:
                    # As PostgreSQL's function does: refuse the whole batch, never half of it.
                    raise IntegrityError(
                        str(statement),
                        None,
                        ValueError(f"run {write.run_id}: a changed step is not a step of the run"),
                    )
        for table, rows in write.inserts:
            connection.execute(insert(TABLES[table]), rows)
        applied.append(True)
    return applied
