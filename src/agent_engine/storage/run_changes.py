"""Writing a new run, or a run's changes, in one round trip (the hot path's storage half).

Changes are written without reading first, guarded by the run's ``audit_seq``.

This is the storage half of the hot path (``engine/hot_path.py`` computes the changes). Every
state change of a run appends an audit event under the run's row lock, which moves ``audit_seq``;
so "the run's ``audit_seq`` is still what I last wrote" proves that nothing about the run or its
steps changed since, and the changes computed from that state are the ones the locking path would
have made. When the guard fails nothing is written and the caller takes the locking path.

PostgreSQL: one round trip, ``SELECT agent_engine_apply_run_changes(...)`` or
``SELECT agent_engine_insert_run(...)`` (migration 0004), over a small asyncpg pool of its own.
SQLite: one IMMEDIATE transaction of Core statements run whole in a worker thread.
Changes that become ready while a write is in flight go together in the next (group commit).

The rows come from the same state-machine code as everywhere else, run with a
``CollectingSession`` (``storage/collecting.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
from sqlalchemy import Engine, Executable, Table, insert, inspect, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Mapper

from agent_engine.domain.canonical import wire_json
from agent_engine.storage.collecting import NeedsDatabase
from agent_engine.storage.database import create_sqlite_sync_engine
from agent_engine.storage.tables import AgentRun, AuditEvent, PlanVersion, Step

# The only columns the hot path may write (the same lists as migration 0004's function); any
# other change takes the locking path. What a run or a step *is* never changes here.
RUN_COLUMNS = frozenset(
    {
        "status",
        "error",
        "total_cost_usd",
        "input_tokens",
        "output_tokens",
        "claimable_at",
        "audit_seq",
        "audit_head_hash",
        "updated_at",
        "completed_at",
    }
)
STEP_COLUMNS = frozenset(
    {
        "status",
        "resolved_input",
        "output_data",
        "preview",
        "attempt",
        "max_attempts",
        "output_hash",
        "cost_usd",
        "input_tokens",
        "output_tokens",
        "model",
        "latency_ms",
        "error",
        "lease_owner",
        "lease_expires_at",
        "fence",
        "not_before",
        "effect_intent",
        "effect_outcome",
        "outcome_unknown",
        "started_at",
        "completed_at",
    }
)
EVENT_COLUMNS = (
    "run_id",
    "seq",
    "type",
    "step_id",
    "payload",
    "actor",
    "created_at",
    "prev_hash",
    "hash",
)
POOL_MAX_SIZE = 8
MAX_BATCH = 64  # runs per group commit
RUNS = cast(Table, AgentRun.__table__)
STEPS = cast(Table, Step.__table__)
EVENTS = cast(Table, AuditEvent.__table__)
PLANS = cast(Table, PlanVersion.__table__)
NEW_RUN_TABLES = (RUNS, PLANS, STEPS, EVENTS)  # in foreign-key order


class DuplicateRowError(Exception):
    """A unique constraint refused a new row (a concurrent run with the same idempotency key)."""


@dataclass(frozen=True)
class _ColumnFill:
    key: str  # the attribute
    name: str  # the column
    default: Callable[[], Any] | None  # the model's Python-side default, if any
    numbered: bool  # the database numbers it when no value is given


_FILLS: dict[type, tuple[_ColumnFill, ...]] = {}


def _fills(model: type) -> tuple[_ColumnFill, ...]:
    """How to fill each column of a model's new rows (worked out once per model)."""
    known = _FILLS.get(model)
    if known is not None:
        return known
    mapper: Mapper[Any] = inspect(model)
    fills = []
    for attribute in mapper.column_attrs:
        column = attribute.columns[0]
        default: Callable[[], Any] | None = None
        if column.default is not None and column.default.is_scalar:
            default = functools.partial(lambda value: value, column.default.arg)
        elif column.default is not None and column.default.is_callable:
            default = functools.partial(column.default.arg, None)
        fills.append(_ColumnFill(attribute.key, column.name, default, column.autoincrement is True))
    _FILLS[model] = tuple(fills)
    return _FILLS[model]


def fill_defaults(instance: object) -> None:
    """Set the model's Python-side defaults a flush would set on a new instance (its callers go on
    using it, and code that reads it before the write expects them). Written as loaded values,
    not as changes: the instance is written whole, and never flushed by a session."""
    loaded = instance.__dict__
    for fill in _fills(type(instance)):
        if fill.key not in loaded and fill.default is not None:
            loaded[fill.key] = fill.default()


def _with_defaults(instance: object) -> dict[str, Any]:
    """Every column of a new row, the model's Python-side defaults applied as a flush would."""
    fill_defaults(instance)
    loaded = instance.__dict__
    row: dict[str, Any] = {}
    for fill in _fills(type(instance)):
        value = loaded.get(fill.key)
        if value is None and fill.numbered:
            continue  # the database numbers it
        row[fill.name] = value
    return row


@dataclass(frozen=True)
class StepPatch:
    step_id: uuid.UUID
    fence: int  # the fence the step has now: a step claimed meanwhile is not ours to change
    values: dict[str, Any]  # column name → new value


@dataclass(frozen=True)
class RunChanges:
    run_id: uuid.UUID
    expected_seq: int  # the run's audit_seq the changes were computed from
    run_values: dict[str, Any]
    steps: list[StepPatch] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # audit_events rows

    def within_hot_columns(self) -> bool:
        """Whether every change is one the hot path may write."""
        return set(self.run_values) <= RUN_COLUMNS and all(
            set(patch.values) <= STEP_COLUMNS for patch in self.steps
        )


class RunChangeWriter:
    """Applies ``RunChanges``; ``apply`` is False when the run moved on (nothing written)."""

    def __init__(self, engine: AsyncEngine, database_url: str) -> None:
        self._engine = engine
        self._url = database_url
        self._postgres = engine.dialect.name == "postgresql"
        self._dsn = make_url(database_url).set(drivername="postgresql")
        self._pool: asyncpg.Pool | None = None
        self._held: asyncpg.Connection | None = None
        self._sqlite: Engine | None = None
        self._queue: list[tuple[RunChanges, asyncio.Future[bool]]] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None  # held: the loop keeps only weak refs

    @property
    def works_elsewhere(self) -> bool:
        """Whether a write's work happens outside this process (PostgreSQL's server), leaving
        the interpreter free while it commits. SQLite's happens in a thread of this process, which
        would compete with whatever runs meanwhile for the interpreter."""
        return self._postgres

    async def apply(self, changes: RunChanges) -> bool:
        # Group commit: changes that arrive while a batch is being written wait and go together
        # in the next one. Alone, a change goes at once (the caller writes its own batch).
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((changes, done))
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
            applied = await self._write_batch([changes for changes, _ in batch])
        except Exception as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        except BaseException:
            # The writing task was cancelled mid-call: whether the batch committed is unknown.
            for _, done in batch:
                if not done.done():
                    done.set_exception(ConnectionError("group commit interrupted"))
            raise
        for (_, done), ok in zip(batch, applied, strict=True):
            if not done.done():
                done.set_result(ok)

    async def insert_run(self, added: list[object], audit_rows: list[dict[str, Any]]) -> None:
        """Insert a new run's rows (run, plans, steps, audit events) in one transaction."""
        rows: dict[str, list[dict[str, Any]]] = {table.name: [] for table in NEW_RUN_TABLES}
        rows[EVENTS.name] = audit_rows
        for instance in added:
            table = cast(Table, inspect(type(instance)).local_table)
            if table.name not in rows:
                raise NeedsDatabase(f"a new run has no {table.name} rows")
            rows[table.name].append(_with_defaults(instance))
        if not self._postgres:
            await asyncio.to_thread(self._insert_sqlite, rows)
            return
        async with self._connection() as connection:
            try:
                await connection.execute(
                    "SELECT agent_engine_insert_run($1::jsonb)",
                    wire_json(rows),
                )
            except asyncpg.UniqueViolationError as exc:
                raise DuplicateRowError(str(exc)) from exc

    def _insert_sqlite(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        try:
            with self._sqlite_engine().begin() as connection:
                for table in NEW_RUN_TABLES:
                    if rows[table.name]:
                        connection.execute(insert(table), rows[table.name])
        except IntegrityError as exc:
            raise DuplicateRowError(str(exc.orig)) from exc

    async def _write_batch(self, batch: list[RunChanges]) -> list[bool]:
        if self._postgres:
            return await self._apply_postgres(batch)
        # SQLite: the whole transaction in one thread hop (aiosqlite would take one per statement).
        return await asyncio.to_thread(self._apply_sqlite, batch)

    def _apply_sqlite(self, batch: list[RunChanges]) -> list[bool]:
        applied = []
        with self._sqlite_engine().begin() as connection:
            for changes in batch:
                savepoint = connection.begin_nested()  # a run whose guard fails leaves nothing
                ok = True
                for statement, rows, guarded in _statements(changes):
                    result = connection.execute(statement, rows)
                    if guarded and result.rowcount != 1:
                        ok = False
                        break
                if ok:
                    savepoint.commit()
                else:
                    savepoint.rollback()
                applied.append(ok)
        return applied

    def _sqlite_engine(self) -> Engine:
        if self._sqlite is None:
            self._sqlite = create_sqlite_sync_engine(self._url)
        return self._sqlite

    async def _apply_postgres(self, batch: list[RunChanges]) -> list[bool]:
        """One call for the batch; whether each run's changes were applied, in batch order."""
        order = _lock_order(batch)
        async with self._connection(held=True) as connection:
            try:
                in_order = await connection.fetchval(
                    "SELECT agent_engine_apply_run_changes($1::jsonb)",
                    _batch_document(batch, order),
                )
            except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError):
                # Nothing was written: each caller takes the locking path for its run.
                return [False] * len(batch)
        return _in_batch_order(order, in_order)

    @asynccontextmanager
    async def _connection(self, *, held: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; driver errors leave as SQLAlchemy's, like every other database
        error of the engine (the API answers 503 for them, workers retry).

        ``held``: the group commit's own connection, outside the pool and kept between batches
        (only one batch is in flight at a time, and taking one from the pool each time cost a
        tenth of a call). One that broke is replaced by the next batch.
        """
        try:
            if not held:
                pool = await self._get_pool()
                async with pool.acquire() as connection:
                    yield connection
                return
            if self._held is None or self._held.is_closed():
                self._held = await asyncpg.connect(self._dsn.render_as_string(hide_password=False))
            try:
                yield self._held
            except asyncpg.PostgresError:
                if self._held.is_closed():
                    self._held = None
                raise
            except BaseException:  # broken, or interrupted mid-call: the next batch reconnects
                self._held.terminate()
                self._held = None
                raise
        except (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
            OSError,
        ) as exc:
            raise OperationalError("hot-path write", None, exc) from exc

    async def _close_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await held.close()

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            # No reset query on release: the function runs in its own implicit transaction and
            # leaves no session state behind, so a reset would be a wasted round trip.
            self._pool = await asyncpg.create_pool(
                self._dsn.render_as_string(hide_password=False),
                min_size=1,
                max_size=POOL_MAX_SIZE,
                reset=_no_reset,
            )
        return self._pool

    async def apply_in(self, session: AsyncSession, batch: list[RunChanges]) -> list[bool]:
        """Apply in the caller's transaction (which may already hold the runs' locks)."""
        if not self._postgres:
            connection = await session.connection()
            return [await _apply_on(connection, changes) for changes in batch]
        order = _lock_order(batch)
        in_order = await session.scalar(
            text("SELECT agent_engine_apply_run_changes(CAST(:batch AS jsonb))"),
            {"batch": _batch_document(batch, order)},
        )
        return _in_batch_order(order, in_order)

    async def close(self) -> None:
        await self._close_held()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._sqlite is not None:
            self._sqlite.dispose()
            self._sqlite = None


async def _no_reset(_connection: asyncpg.Connection) -> None:
    return None


def _lock_order(batch: list[RunChanges]) -> list[int]:
    """Positions of the batch by run id: every batch locks runs in one order (no deadlocks)."""
    return sorted(range(len(batch)), key=lambda i: batch[i].run_id)


def _in_batch_order(order: list[int], in_order: list[bool]) -> list[bool]:
    """The function's answers (given in ``order``) back in the batch's own order."""
    applied = [False] * len(order)
    for position, index in enumerate(order):
        applied[index] = bool(in_order[position])
    return applied


def _batch_document(batch: list[RunChanges], order: list[int]) -> str:
    """The JSON the PostgreSQL function takes: one element per run, in ``order``."""
    return wire_json(
        [
            {
                "run_id": batch[i].run_id,
                "expected_seq": batch[i].expected_seq,
                "run": batch[i].run_values,
                "steps": [
                    {"id": patch.step_id, "fence": patch.fence, "set": patch.values}
                    for patch in batch[i].steps
                ],
                "events": batch[i].events,
            }
            for i in order
        ]
    )


def _statements(changes: RunChanges) -> Iterator[tuple[Executable, list[Any] | None, bool]]:
    """Core statements for one run's changes: (statement, rows, must change exactly one row)."""
    yield (
        update(RUNS)
        .where(RUNS.c.id == changes.run_id, RUNS.c.audit_seq == changes.expected_seq)
        .values({RUNS.c[name]: value for name, value in changes.run_values.items()}),
        None,
        True,
    )
    for patch in changes.steps:
        yield (
            update(STEPS)
            .where(
                STEPS.c.id == patch.step_id,
                STEPS.c.run_id == changes.run_id,
                STEPS.c.fence == patch.fence,
            )
            .values({STEPS.c[name]: value for name, value in patch.values.items()}),
            None,
            True,
        )
    if changes.events:
        yield insert(EVENTS), changes.events, False


async def _apply_on(connection: AsyncConnection, changes: RunChanges) -> bool:
    """One run's changes on ``connection`` (the caller owns the transaction and rolls it back
    when this returns False)."""
    for statement, rows, guarded in _statements(changes):
        result = await connection.execute(statement, rows)
        if guarded and result.rowcount != 1:
            return False
    return True
