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

from agent_engine.config import Settings
from agent_engine.engine.context import EngineContext, build_context
from agent_engine.engine.runs import CreateRunRequest, create_run
from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.noop import NoopExecutor, NoopInput, NoopOutput
from agent_engine.executors.registry import ExecutorRegistry, load_registry
from agent_engine.storage.audit import list_events_txn, verify_chain
from agent_engine.storage.database import read_transaction
from agent_engine.storage.run_changes import RunChanges, RunChangeWriter
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
        await asyncio.sleep(WRITE_DELAY_S)
        target = LOG.refuse_claim_of
        if target is not None and any(target in LOG.claims_in(c) for c in batch):
            LOG.refuse_claim_of = None
            LOG.refused += 1
            return [False] * len(batch)
        applied = await super()._write_batch(batch)
        for changes, ok in zip(batch, applied, strict=True):
            if ok:
                LOG.claimed.update((changes.run_id, n) for n in LOG.claims_in(changes))
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
async def _worker(settings: Settings) -> AsyncIterator[tuple[EngineContext, Worker]]:
    ctx = build_context(settings)
    ctx.registry = _registry()
    ctx._run_changes = SlowWriter(ctx.db, settings.database_url)
    await ctx.start()
    stop = asyncio.Event()
    worker = Worker(ctx, WorkerOptions(worker_id="w", concurrency=1, poll_s=0.2))
    task = asyncio.create_task(worker.run(stop))
    try:
        yield ctx, worker
    finally:
        stop.set()
        await task
        await ctx.close()


async def _run_to_completion(ctx: EngineContext, step_types: list[str]) -> uuid.UUID:
    plan = [{"step_type": t, "input_data": {"value": n}} for n, t in enumerate(step_types)]
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
    assert not started[2][1] and not started[4][1]
    assert verify_chain(events) == (True, None)
    completions = [e.payload["step_number"] for e in events if e.type == "step.completed"]
    assert completions == [1, 2, 3, 4, 5, 6]


async def test_an_early_start_whose_claim_was_not_written_is_forgotten_and_run_again(
    settings: Settings,
) -> None:
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
    assert [(s.status, s.attempt) for s in steps] == [("completed", 1)] * 4
    assert verify_chain(events) == (True, None)
    per_step = [(e.type, e.payload["step_number"]) for e in events if e.type.startswith("step.")]
    assert per_step == [
        (kind, number) for number in range(1, 5) for kind in ("step.running", "step.completed")
    ]
