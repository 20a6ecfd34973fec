"""Steps free to repeat start while the write that claimed them commits; others wait for it.

A worker records step N's result and claims step N+1 in one write. When N+1's executor changes
nothing and calls no model (``may_start_early``), N+1 runs while that write is in flight, and its
own result is written only after that write committed. When the write does not commit, the early
start is forgotten: step N's result goes through the locking path, and N+1 runs again under the
claim made there. These tests watch what each executor saw when it started, against the writes
the real writer committed (on both databases).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest
from agent_engine.storage.run_changes import RunChanges, RunChangeWriter
from sqlalchemy.exc import OperationalError

from agent_engine.config import Settings
from agent_engine.engine.context import EngineContext, build_context
from agent_engine.engine.runs import CreateRunRequest, create_run
from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.noop import NoopExecutor, NoopInput, NoopOutput
from agent_engine.executors.registry import ExecutorRegistry, load_registry
from agent_engine.storage.audit import list_events_txn, verify_chain
from agent_engine.storage.database import read_transaction
from agent_engine.storage.runs import list_steps_txn
from agent_engine.worker.worker import Worker, WorkerOptions

STUCK_S = 60.0  # a guard against hanging, not a measurement
WRITE_DELAY_S = 0.05  # each hot-path write takes at least this long: early starts are visible


class CommitLog:
    """What the writer committed: the step numbers whose claim (``step.running``) is durable."""

    def __init__(self) -> None:
        self.claimed: set[tuple[uuid.UUID, int]] = set()
        self.refuse_claim_of: int | None = None  # refuse the first write that claims this step
        self.refused = 0
        self.lose_answer_of: int | None = None  # commit the write claiming it, then fail the call
        self.lost = 0
        self.delay_s = WRITE_DELAY_S

    @staticmethod
    def claims_in(changes: RunChanges) -> list[int]:
        return [
            int(event["payload"]["step_number"])
            for event in changes.events
            if event["type"] == "step.running"
        ]


LOG = CommitLog()


class SlowWriter(RunChangeWriter):
    """The real writer, slowed down, noting the claims it committed. With ``refuse_claim_of``
    it answers the first write claiming that step as a guard that failed would: not written."""

    async def _write_batch(self, batch: list[RunChanges]) -> list[bool]:
        await asyncio.sleep(LOG.delay_s)
        target = LOG.refuse_claim_of
        if target is not None and any(target in LOG.claims_in(c) for c in batch):
            LOG.refuse_claim_of = None
            LOG.refused += 1
            return [False] * len(batch)
        applied = await super()._write_batch(batch)
        for changes, ok in zip(batch, applied, strict=True):
            if ok:
                LOG.claimed.update((changes.run_id, n) for n in LOG.claims_in(changes))
        target = LOG.lose_answer_of
        if target is not None and any(target in LOG.claims_in(c) for c in batch):
            LOG.lose_answer_of = None
            LOG.lost += 1
            raise OperationalError("hot-path write", None, ConnectionResetError("answer lost"))
        return applied


class Probe(NoopExecutor):
    """A no-op that notes, as it starts, whether the write that claimed it had committed."""

    name = "probe"
    may_start_early = False  # stands for any step with effects or model calls
    starts: ClassVar[list[tuple[str, int, bool]]] = []

    async def execute(self, input: NoopInput, context: ExecutorContext) -> NoopOutput:
        committed = (uuid.UUID(str(context.run_id)), context.step_number) in LOG.claimed
        self.starts.append((self.name, context.step_number, committed))
        return await super().execute(input, context)


class EarlyProbe(Probe):
    name = "early_probe"
    may_start_early = True


def _registry() -> ExecutorRegistry:
    return ExecutorRegistry([*load_registry().values(), Probe(), EarlyProbe()])


@asynccontextmanager
async def _worker(
    settings: Settings, *, lease_s: float = 30.0
) -> AsyncIterator[tuple[EngineContext, Worker]]:
    ctx = build_context(settings)
    ctx.registry = _registry()
    ctx._run_changes = SlowWriter(ctx.db, settings.database_url)
    await ctx.start()
    stop = asyncio.Event()
    options = WorkerOptions(worker_id="w", concurrency=1, poll_s=0.2, lease_s=lease_s)
    worker = Worker(ctx, options)
    task = asyncio.create_task(worker.run(stop))
    try:
        yield ctx, worker
    finally:
        stop.set()
        await task
        await ctx.close()


async def _run_to_completion(ctx: EngineContext, step_types: list[str], **inputs: Any) -> uuid.UUID:
    plan = [
        {"step_type": t, "input_data": {"value": n, **inputs}} for n, t in enumerate(step_types)
    ]
    request = CreateRunRequest.model_validate({"goal": "early", "steps": plan, "auto_start": True})
    run_id = (await create_run(ctx, request, actor="t", idempotency_key=None)).run.id
    async with asyncio.timeout(STUCK_S):
        while True:
            async with read_transaction(ctx.sessions) as session:
                steps = await list_steps_txn(session, run_id)
            if all(s.status == "completed" for s in steps):
                return run_id
            await asyncio.sleep(0.02)


async def _events(ctx: EngineContext, run_id: uuid.UUID) -> list[Any]:
    async with read_transaction(ctx.sessions) as session:
        return list(await list_events_txn(session, run_id))


def _early(settings: Settings) -> bool:
    """Whether steps start early on this database (only where writes work outside the process)."""
    return settings.database_url.startswith("postgresql")


def _needs_early_starts(settings: Settings) -> None:
    if not _early(settings):
        pytest.skip("no step starts early on SQLite (it writes in a thread of the worker)")


def _each_step_recorded_once(steps: list[Any], events: list[Any]) -> None:
    """Every step completed in its first attempt, with one start and one completion in an
    intact audit chain, in order."""
    assert [(s.status, s.attempt) for s in steps] == [("completed", 1)] * len(steps)
    assert verify_chain(events) == (True, None)
    per_step = [(e.type, e.payload["step_number"]) for e in events if e.type.startswith("step.")]
    assert per_step == [
        (kind, number)
        for number in range(1, len(steps) + 1)
        for kind in ("step.running", "step.completed")
    ]


@pytest.fixture(autouse=True)
def _fresh_log() -> None:
    global LOG
    LOG = CommitLog()
    Probe.starts = []


async def test_only_steps_free_to_repeat_start_before_their_claim_commits(
    settings: Settings,
) -> None:
    kinds = ["early_probe", "early_probe", "probe", "early_probe", "probe", "early_probe"]
    async with _worker(settings) as (ctx, worker):
        run_id = await _run_to_completion(ctx, kinds)
        events = await _events(ctx, run_id)
    started = {number: (kind, committed) for kind, number, committed in Probe.starts}
    assert len(Probe.starts) == len(kinds)  # each step ran once
    assert worker.known_runs.hits >= len(kinds) - 1  # the hot path recorded them
    # A step that is not free to repeat never starts before the write that claimed it committed.
    assert all(committed for kind, committed in started.values() if kind == "probe")
    # One free to repeat, claimed by the write of its predecessor's result, starts meanwhile
    # (the first step was claimed by the run's creation, which is not the hot path's writer).
    # SQLite writes in a thread of the worker's process: there no step starts early.
    ahead = [number for number, (_, committed) in started.items() if not committed]
    assert ahead == ([1, 2, 4, 6] if _early(settings) else [1])
    assert verify_chain(events) == (True, None)
    completions = [e.payload["step_number"] for e in events if e.type == "step.completed"]
    assert completions == [1, 2, 3, 4, 5, 6]


async def test_an_early_start_whose_claim_was_not_written_is_forgotten_and_run_again(
    settings: Settings,
) -> None:
    _needs_early_starts(settings)
    LOG.refuse_claim_of = 3  # the write recording step 2 and claiming step 3 is not written
    async with _worker(settings) as (ctx, worker):
        run_id = await _run_to_completion(ctx, ["early_probe"] * 4)
        events = await _events(ctx, run_id)
        async with read_transaction(ctx.sessions) as session:
            steps = await list_steps_txn(session, run_id)
    assert LOG.refused == 1
    assert worker.known_runs.misses >= 1
    # Step 3 started early, under a claim that never existed, then again under the claim the
    # locking path made; only the second start left a trace.
    assert [number for _, number, _ in Probe.starts] == [1, 2, 3, 3, 4]
    _each_step_recorded_once(steps, events)


async def test_a_write_whose_answer_was_lost_is_found_committed_and_its_claim_goes_on(
    settings: Settings,
) -> None:
    """The write recording step 2 and claiming step 3 commits, but the call fails as if the
    connection dropped before its answer. Its last audit event is in the database, so the claim
    stands: step 3's early start is recorded, and nothing waits for a lease to lapse (leases of an
    hour here: a wait would hang this test)."""
    LOG.lose_answer_of = 3
    async with _worker(settings, lease_s=3600) as (ctx, _):
        run_id = await _run_to_completion(ctx, ["early_probe"] * 4)
        events = await _events(ctx, run_id)
        async with read_transaction(ctx.sessions) as session:
            steps = await list_steps_txn(session, run_id)
    assert LOG.lost == 1
    assert [number for _, number, _ in Probe.starts] == [1, 2, 3, 4]  # none ran twice
    _each_step_recorded_once(steps, events)


async def test_heartbeats_leave_a_step_alone_while_the_write_claiming_it_commits(
    settings: Settings,
) -> None:
    """Heartbeats every 0.3 s, writes of 0.4 s, steps of 0.5 s: a heartbeat comes while a step
    runs ahead of its claim. It must not take the claim it cannot find yet for a lost one (and
    cancel the step); once the write committed, it extends the lease as usual."""
    _needs_early_starts(settings)
    LOG.delay_s = 0.4
    async with _worker(settings, lease_s=0.9) as (ctx, _):
        run_id = await _run_to_completion(ctx, ["early_probe"] * 4, sleep_s=0.5)
        async with read_transaction(ctx.sessions) as session:
            steps = await list_steps_txn(session, run_id)
    assert sum(not committed for _, _, committed in Probe.starts) >= 2  # ran ahead of claims
    assert [(s.status, s.attempt) for s in steps] == [("completed", 1)] * 4
