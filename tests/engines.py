"""An engine, its workers and its writer in one process, for tests of how runs are written: what
each write held, which statements reached the database, and the rows as stored."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from typing import Any, ClassVar

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent_engine.config import Settings
from agent_engine.domain.plan import PlanStep
from agent_engine.domain.records import ChangeSet
from agent_engine.engine.claiming import Claim, OutputReader, claim_ready
from agent_engine.engine.context import EngineContext, build_context, lazy_llm
from agent_engine.engine.locking import change_run
from agent_engine.engine.runs import CreateRunRequest, create_run
from agent_engine.errors import CancelledError
from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.noop import NoopExecutor, NoopInput, NoopOutput
from agent_engine.executors.registry import ExecutorRegistry, load_registry
from agent_engine.storage.audit import list_events_txn
from agent_engine.storage.changes import ChangeWriter, Write
from agent_engine.storage.database import read_transaction
from agent_engine.storage.runs import load_open_steps_of_runs_txn, load_run_txn, outputs_txn
from agent_engine.storage.tables import AuditEvent, Base
from agent_engine.worker.known_runs import KnownRuns
from agent_engine.worker.worker import Worker, WorkerOptions

ACTOR = "test"
LEASE = timedelta(seconds=60)
FINISHED = frozenset({"completed", "failed", "cancelled"})
STUCK_S = 60.0  # only a guard against hanging forever: no test measures time
RUNS = Base.metadata.tables["agent_runs"]
STEPS = Base.metadata.tables["steps"]
EVENTS = Base.metadata.tables["audit_events"]
CALLS = Base.metadata.tables["llm_calls"]


@asynccontextmanager
async def engine_context(
    settings: Settings,
    *,
    registry: ExecutorRegistry | None = None,
    writer: type[ChangeWriter] | None = None,
    **extra: Any,
) -> AsyncIterator[EngineContext]:
    """A started context (PostgreSQL: LISTEN), optionally with another registry or writer class."""
    ctx = build_context(settings, registry=registry, **extra)
    if writer is not None:
        ctx._changes = writer(ctx.db, ctx.notifier.publish)
    await ctx.start()
    try:
        yield ctx
    finally:
        await ctx.close()


@asynccontextmanager
async def running_worker(
    ctx: EngineContext,
    worker_id: str = "w",
    *,
    concurrency: int = 1,
    known: KnownRuns | None = None,
    poll_s: float = 0.05,
    lease_s: float = 30.0,
) -> AsyncIterator[Worker]:
    """A worker running in this process until the block ends (it then drains)."""
    options = WorkerOptions(
        worker_id=worker_id, concurrency=concurrency, poll_s=poll_s, lease_s=lease_s
    )
    worker = Worker(ctx, options)
    if known is not None:
        worker.known_runs = known
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await task


async def wait_until(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(STUCK_S):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


async def wait_finished(ctx: EngineContext, run_id: uuid.UUID) -> dict[str, Any]:
    """The run's snapshot once it completed, failed or was cancelled."""

    async def finished() -> bool:
        return (await snapshot(ctx, run_id))["run"]["status"] in FINISHED

    await wait_until(finished)
    return await snapshot(ctx, run_id)


async def new_run(
    ctx: EngineContext, steps: Sequence[PlanStep], *, goal: str = "writes", auto_start: bool
) -> uuid.UUID:
    request = CreateRunRequest(goal=goal, steps=list(steps), auto_start=auto_start)
    view = await create_run(ctx, request, actor=ACTOR, idempotency_key=None)
    return view.run.id


def noop(
    value: Any, *, depends_on: list[int] | None = None, step_type: str = "noop", **extra: Any
) -> PlanStep:
    """A noop-like step; keywords that are PlanStep fields go there, the rest into its input."""
    fields = {k: v for k, v in extra.items() if k in PlanStep.model_fields}
    inputs = {k: v for k, v in extra.items() if k not in PlanStep.model_fields}
    return PlanStep(
        step_type=step_type,
        input_data={"value": value, **inputs},
        depends_on=depends_on,
        **fields,
    )


async def snapshot(ctx: EngineContext, run_id: uuid.UUID) -> dict[str, Any]:
    """Every column of the run, its steps, its audit events and its ledger rows, as stored."""
    async with read_transaction(ctx.sessions) as session:
        run = (await session.execute(select(RUNS).where(RUNS.c.id == run_id))).mappings().one()
        steps = await session.execute(
            select(STEPS).where(STEPS.c.run_id == run_id).order_by(STEPS.c.step_number)
        )
        events = await session.execute(
            select(EVENTS).where(EVENTS.c.run_id == run_id).order_by(EVENTS.c.seq)
        )
        calls = await session.execute(
            select(CALLS).where(CALLS.c.run_id == run_id).order_by(CALLS.c.created_at)
        )
        return {
            "run": dict(run),
            "steps": [dict(row) for row in steps.mappings()],
            "events": [dict(row) for row in events.mappings()],
            "calls": [dict(row) for row in calls.mappings()],
        }


async def chain_of(ctx: EngineContext, run_id: uuid.UUID) -> list[AuditEvent]:
    async with read_transaction(ctx.sessions) as session:
        return list(await list_events_txn(session, run_id))


def stored_outputs(ctx: EngineContext, run_id: uuid.UUID) -> OutputReader:
    """What a worker reads outputs with when it decides on records it holds."""

    async def read(numbers: set[int] | None) -> dict[int, Any]:
        async with read_transaction(ctx.sessions) as session:
            return await outputs_txn(session, run_id, numbers)

    return read


async def load_changes(ctx: EngineContext, run_id: uuid.UUID) -> ChangeSet:
    """The run and its open steps as a claim round reads them (a change set to decide on)."""
    async with read_transaction(ctx.sessions) as session:
        run = await load_run_txn(session, run_id)
        steps = (await load_open_steps_of_runs_txn(session, [run.id]))[run.id]
    return ChangeSet(run, steps)


async def remember(ctx: EngineContext, known: KnownRuns, run_id: uuid.UUID) -> ChangeSet:
    """Keep the run's records as stored (what a worker holds after its own write)."""
    changes = await load_changes(ctx, run_id)
    known.remember(changes)
    return changes


async def claim_locking(
    ctx: EngineContext,
    run_id: uuid.UUID,
    *,
    owner: str = "w",
    limit: int = 1,
    lease: timedelta = LEASE,
) -> list[Claim]:
    """Claim the run's next ready steps under its lock, as a claim round does."""
    async with change_run(ctx, run_id, open_steps=True) as locked:
        return await claim_ready(
            ctx,
            locked.changes,
            locked.read,
            owner=owner,
            limit=limit,
            lease=lease,
            llm=lazy_llm(ctx, None),
        )


def claim_next(ctx: EngineContext, owner: str = "w") -> Callable[[ChangeSet], Awaitable[Any]]:
    """A decision a worker makes on records it holds: claim the run's next ready step."""

    async def decide(changes: ChangeSet) -> list[Claim]:
        return await claim_ready(
            ctx,
            changes,
            stored_outputs(ctx, changes.run.id),
            owner=owner,
            limit=1,
            lease=LEASE,
            llm=lazy_llm(ctx, None),
        )

    return decide


# --- watching the writer -------------------------------------------------------------------------


class Attempt:
    """One guarded write the known-runs path asked for: what it held, and what became of it."""

    def __init__(self, write: Write) -> None:
        self.run_id = write.run_id
        self.expected_version = write.expected_version
        self.events = [
            row for table, rows in write.inserts if table == "audit_events" for row in rows
        ]
        self.applied: bool | None = None  # None: the call raised (the answer was lost)

    def recorded(self, step_number: int) -> bool:
        """Whether this write recorded a result of step ``step_number``."""
        return any(
            e["type"] in ("step.completed", "step.failed", "step.pending")
            and e["payload"].get("step_number") == step_number
            and e["payload"].get("from") == "running"
            for e in self.events
        )


class WatchedWriter:
    """The real writer; every write the known-runs path sends is kept in ``attempts``."""

    def __init__(self, writer: ChangeWriter, attempts: list[Attempt]) -> None:
        self._writer = writer
        self._attempts = attempts
        self.blob_threshold = writer.blob_threshold

    async def send(self, write: Write, notice: str) -> bool:
        attempt = Attempt(write)
        self._attempts.append(attempt)
        attempt.applied = await self._writer.send(write, notice)
        return attempt.applied


class WatchedRuns(KnownRuns):
    """Known runs whose guarded writes (and only those) are kept in ``attempts``."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[Attempt] = []

    async def send(
        self,
        writer: ChangeWriter,
        sessions: async_sessionmaker[AsyncSession],
        run_id: uuid.UUID,
        decide: Callable[[ChangeSet], Awaitable[Any]],
    ) -> Any:
        watched: Any = WatchedWriter(writer, self.attempts)
        return await super().send(watched, sessions, run_id, decide)


class LockingOnlyRuns(KnownRuns):
    """Known runs that never decide: every result is recorded under the run's lock."""

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        self.misses += 1
        return None


class BatchLog(ChangeWriter):
    """The real writer, keeping every batch of writes it executed (in the caller's transaction or
    its own) and the size of each group commit."""

    writes: ClassVar[list[Write]] = []
    batches: ClassVar[list[int]] = []

    async def _write_batch(self, writes: list[Write]) -> list[bool]:
        BatchLog.batches.append(len(writes))
        return await super()._write_batch(writes)

    async def _execute(self, connection: Any, writes: list[Write]) -> list[bool]:
        BatchLog.writes.extend(writes)
        return await super()._execute(connection, writes)

    def _write_sqlite(self, writes: list[Write]) -> list[bool]:
        BatchLog.writes.extend(writes)
        return super()._write_sqlite(writes)


@contextmanager
def statements(ctx: EngineContext) -> Iterator[list[str]]:
    """Every SQL statement sent through the engine while the block runs."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    engines = [ctx.db.sync_engine]
    if ctx.changes.sqlite_writer is not None:
        engines.append(ctx.changes.sqlite_writer)  # a worker's own writes on SQLite
    for engine in engines:
        event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", note)


# --- a step the test lets finish ------------------------------------------------------------------


class Gate(NoopExecutor):
    """A no-op that waits until the test opens it (a cancel ends the wait as a cancelled step).
    Unlike ``noop`` it does not start before its claim commits, so each run is counted once."""

    name = "gate"
    may_start_early = False

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()
        self.starts: list[tuple[int, int]] = []  # (step number, attempt) of each execution

    async def execute(self, input: NoopInput, context: ExecutorContext) -> NoopOutput:
        self.starts.append((context.step_number, context.attempt))
        self.entered.set()
        opened = asyncio.ensure_future(self.opened.wait())
        cancelled = asyncio.ensure_future(context.cancel_event.wait())
        done, pending = await asyncio.wait({opened, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        if opened not in done:
            raise CancelledError("gate step cancelled while waiting")
        return await super().execute(input, context)


def registry_with(*executors: Any) -> ExecutorRegistry:
    return ExecutorRegistry([*load_registry().values(), *executors])
