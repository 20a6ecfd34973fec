"""Runs created beside a worker (``serve``'s embedded worker) go to it directly: no notification
round trip and no claim round, and nothing lost when another worker gets there first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from agent_engine.config import Settings
from agent_engine.domain.records import ChangeSet
from agent_engine.engine.context import EngineContext, build_context
from agent_engine.engine.runs import CreateRunRequest, create_run
from agent_engine.storage.audit import list_events_txn
from agent_engine.storage.changes import ChangeWriter
from agent_engine.storage.database import read_transaction
from agent_engine.storage.runs import get_run_txn, list_steps_txn
from agent_engine.storage.tables import AuditEvent, Step
from agent_engine.worker.worker import Worker, WorkerOptions
from tests.integration.test_workers import step


@asynccontextmanager
async def running_worker(
    settings: Settings, *, concurrency: int = 4, writer: type[ChangeWriter] | None = None
) -> AsyncIterator[tuple[EngineContext, Worker]]:
    """A context with an in-process worker that polls so rarely that only wake-ups and hand-offs
    drive it; yields once its start-up claim round is done."""
    ctx = build_context(settings)
    if writer is not None:
        ctx._changes = writer(ctx.db, ctx.notifier.publish)
    await ctx.start()
    worker = Worker(ctx, WorkerOptions(worker_id="here", concurrency=concurrency, poll_s=600.0))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await _until(lambda: worker.claim_rounds == 1 and ctx.hand_off is worker)
        yield ctx, worker
    finally:
        stop.set()
        await task
        await ctx.close()


async def _until(condition: Callable[[], bool], limit_s: float = 10.0) -> None:
    async with asyncio.timeout(limit_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


def _request(steps: list[dict[str, Any]], **extra: Any) -> CreateRunRequest:
    return CreateRunRequest.model_validate(
        {"goal": "hand-off", "steps": steps, "auto_start": True, **extra}
    )


async def _finished(
    ctx: EngineContext, run_id: Any, limit_s: float = 20.0
) -> tuple[str, list[Step], list[AuditEvent]]:
    """Wait until the run stops moving (completed, failed or waiting); its status, steps, audit."""
    async with asyncio.timeout(limit_s):
        while True:
            async with read_transaction(ctx.sessions) as session:
                run = await get_run_txn(session, run_id)
                if run.status in ("completed", "failed", "awaiting_approval"):
                    steps = await list_steps_txn(session, run.id)
                    events = await list_events_txn(session, run.id, after_seq=0, limit=1000)
                    return run.status, steps, list(events)
            await asyncio.sleep(0.02)


async def _stored(ctx: EngineContext, run_id: Any) -> tuple[str, list[Step]]:
    async with read_transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id)
        return run.status, await list_steps_txn(session, run.id)


async def test_a_run_created_beside_a_worker_runs_without_any_claim_round(
    settings: Settings,
) -> None:
    async with running_worker(settings) as (ctx, worker):
        view = await create_run(
            ctx, _request([step(1), step(2), step(3)]), actor="t", idempotency_key=None
        )
        status, steps, events = await _finished(ctx, view.run.id)
        assert status == "completed"
        assert [s.output_data["value"] for s in steps] == [1, 2, 3]
        assert all(s.attempt == 1 and s.fence == 1 for s in steps)
        # Only the round every worker makes at start: the run's own notification woke nothing.
        assert worker.claim_rounds == 1
        assert worker.known_runs.hits == 3  # three results, each with the next step's claim
        assert worker.inflight == 0
        assert {e.actor for e in events if e.type == "step.running"} == {"here"}
        types = [e.type for e in events]
        # Its first step was claimed in the write that created it.
        assert types[: types.index("step.completed")] == [
            "run.created",
            "run.planning",
            "plan.recorded",
            "run.planned",
            "run.running",
            "step.running",
        ]


async def test_the_answer_to_creating_a_run_beside_a_worker_is_the_run_as_written(
    settings: Settings,
) -> None:
    async with running_worker(settings) as (ctx, _worker):
        view = await create_run(ctx, _request([step(1), step(2)]), actor="t", idempotency_key=None)
        status, _steps, events = await _finished(ctx, view.run.id)
        assert status == "completed"
    creating_write = [e.type for e in events][: view.run.audit_seq]
    assert creating_write[-1] == "step.running"
    assert view.run.status == "running"
    assert [(s.status, s.lease_owner) for s in view.steps] == [
        ("running", "here"),
        ("pending", None),
    ]
    # The worker went on with copies: the instances the creator answered with did not move.
    assert view.steps[0].status == "running"


async def test_ready_branches_are_taken_together_up_to_the_free_slots(
    settings: Settings,
) -> None:
    branches = [step(n, depends_on=[], sleep_s=0.3) for n in range(3)]
    async with running_worker(settings, concurrency=2) as (ctx, worker):
        view = await create_run(ctx, _request(branches), actor="t", idempotency_key=None)
        status, steps, _events = await _finished(ctx, view.run.id)
        assert status == "completed"
        by_start = sorted(steps, key=lambda s: s.started_at)
        # Two slots: two branches at once from the hand-off, the third once a slot freed up.
        assert by_start[1].started_at < by_start[0].completed_at
        assert by_start[2].started_at >= min(s.completed_at for s in by_start[:2])
        assert worker.claim_rounds >= 2  # the third branch needed a claim round


async def test_a_first_step_that_needs_approval_is_parked_by_the_hand_off(
    settings: Settings,
) -> None:
    gated = {**step("gated"), "requires_approval": True}
    async with running_worker(settings) as (ctx, worker):
        view = await create_run(ctx, _request([gated]), actor="t", idempotency_key=None)
        status, steps, events = await _finished(ctx, view.run.id)
        assert status == "awaiting_approval"
        assert steps[0].status == "awaiting_approval"
        assert steps[0].preview is not None
        assert [e.type for e in events][-2:] == ["step.awaiting_approval", "run.awaiting_approval"]
        assert worker.claim_rounds == 1


async def test_a_first_step_reading_earlier_outputs_is_taken_in_the_creating_write(
    settings: Settings,
) -> None:
    # summarize reads every earlier output when it is claimed: a new run has none to read.
    first = {"step_type": "summarize", "input_data": {"instruction": "sum up"}}
    async with running_worker(settings) as (ctx, worker):
        view = await create_run(ctx, _request([first]), actor="t", idempotency_key=None)
        status, _steps, events = await _finished(ctx, view.run.id)
        assert status == "completed"
        assert worker.claim_rounds == 1
        assert [e.actor for e in events if e.type == "step.running"] == ["here"]


async def test_a_new_run_without_a_plan_goes_to_a_claim_round_that_plans_it(
    settings: Settings,
) -> None:
    async with running_worker(settings) as (ctx, worker):
        request = CreateRunRequest.model_validate(
            {"goal": "Summarize the risks", "auto_start": True}
        )
        view = await create_run(ctx, request, actor="t", idempotency_key=None)
        status, steps, events = await _finished(ctx, view.run.id)
        assert status == "completed", [(s.step_type, s.status, s.error) for s in steps]
        assert worker.claim_rounds >= 2  # its notification woke the worker's claim round
        assert {e.actor for e in events if e.type in ("run.planning", "step.running")} == {"here"}


async def test_a_worker_leaves_new_runs_of_step_types_it_does_not_serve(
    settings: Settings,
) -> None:
    ctx = build_context(settings)
    await ctx.start()
    worker = Worker(ctx, WorkerOptions(worker_id="picky", step_types=frozenset({"read_file"})))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await _until(lambda: ctx.hand_off is worker)
        view = await create_run(ctx, _request([step(1)]), actor="t", idempotency_key=None)
        status, steps = await _stored(ctx, view.run.id)
        assert status == "planned"
        assert [(s.status, s.lease_owner, s.fence) for s in steps] == [("pending", None, 0)]
        assert worker.inflight == 0
    finally:
        stop.set()
        await task
        await ctx.close()


class SameKeyBarrierWriter(ChangeWriter):
    """The real writer, holding each new run until two are waiting, so that two requests with
    the same idempotency key both insert (a race the unique constraint settles)."""

    waiting: list[asyncio.Event]
    run_ids: list[Any]

    async def insert(self, changes: ChangeSet) -> None:
        self.run_ids.append(changes.run.id)
        arrived = asyncio.Event()
        self.waiting.append(arrived)
        if len(self.waiting) == 2:
            for event in self.waiting:
                event.set()
        await arrived.wait()
        await super().insert(changes)


async def test_a_hand_off_whose_run_lost_an_idempotency_race_frees_its_slot(
    settings: Settings,
) -> None:
    async with running_worker(settings, writer=SameKeyBarrierWriter) as (ctx, worker):
        writer = ctx.changes
        assert isinstance(writer, SameKeyBarrierWriter)
        writer.waiting = []
        writer.run_ids = []
        request = _request([step(1)])
        first, second = await asyncio.gather(
            create_run(ctx, request, actor="t", idempotency_key="same"),
            create_run(ctx, request, actor="t", idempotency_key="same"),
        )
        assert first.run.id == second.run.id
        assert [first.replayed, second.replayed].count(True) == 1
        status, steps, _events = await _finished(ctx, first.run.id)
        assert status == "completed"
        assert steps[0].attempt == 1
        await _until(lambda: worker.inflight == 0)  # the loser's reserved slot is free again
        (lost,) = set(writer.run_ids) - {first.run.id}

        async def must_not_decide(_changes: ChangeSet) -> None:
            raise AssertionError("a run that was never written has no records to decide on")

        # The run that was not written is not kept: nothing is decided on its records.
        misses = worker.known_runs.misses
        outcome = await worker.known_runs.change(writer, ctx.sessions, lost, must_not_decide)
        assert outcome == (False, None) and worker.known_runs.misses == misses + 1
