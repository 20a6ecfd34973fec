"""Our engine under the benchmark workloads: sequential runs on one in-process worker (with the
SQL statements counted) and fan-out throughput on worker processes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from agent_engine.config import Settings
from agent_engine.domain.plan import PlanStep
from agent_engine.engine.context import EngineContext, build_context
from agent_engine.engine.runs import CreateRunRequest, create_run
from agent_engine.storage.database import transaction
from agent_engine.storage.migrations import upgrade
from agent_engine.storage.notifications import RunNotice
from agent_engine.storage.tables import AgentRun, AuditEvent
from agent_engine.worker.worker import WorkerOptions
from bench.databases import BenchDatabase
from bench.processes import clean_env, logged_problems, worker_processes
from bench.results import SequentialResult, ThroughputResult
from bench.sql_profile import ProfiledWorker, StatementProfile, attributed_phases
from bench.stats import StepLatencies, StepTimeline

ACTOR = "bench"
SEQUENTIAL_GOAL = "bench: sequential no-op steps"
THROUGHPUT_GOAL = "bench: fan-out throughput"
WARMUP_GOAL = "bench: warm-up"
FINISHED = ("completed", "failed", "cancelled")
SUBMITTERS = 8  # concurrent run submissions (the same for DBOS)
POLL_S = 0.02
RUN_TIMEOUT_S = 60.0
WORKER_READY = "started (concurrency"


class StuckRunsError(RuntimeError):
    """Runs did not finish in time: an engine problem worth reporting."""


def settings_for(url: str, **overrides: Any) -> Settings:
    """The engine's settings for the benchmark: no embedded worker, no migration at start."""
    return Settings(
        database_url=url, embedded_worker=False, auto_migrate=False, _env_file=None, **overrides
    )


def noop_request(goal: str, steps: int, *, auto_start: bool = True) -> CreateRunRequest:
    """A run of ``steps`` no-op steps, each depending on the one before (the default)."""
    plan = [PlanStep(step_type="noop", input_data={"value": n}) for n in range(steps)]
    return CreateRunRequest(goal=goal, steps=plan, auto_start=auto_start)


def _announces_an_end(payload: str) -> bool:
    """The client's filter: only notices of finished runs wake it (it waits for nothing else)."""
    notice = RunNotice.parse(payload)
    return notice is not None and notice.status in FINISHED


async def _wait_finished(wakeups: asyncio.Queue[str], run_id: str) -> str:
    """Wait for the run's terminal audit event; returns its type."""
    async with asyncio.timeout(RUN_TIMEOUT_S):
        while True:
            notice = RunNotice.parse(await wakeups.get())
            if notice is not None and str(notice.run_id) == run_id and notice.status in FINISHED:
                return f"run.{notice.status}"


async def _timelines(ctx: EngineContext, run_ids: Sequence[uuid.UUID]) -> list[StepTimeline]:
    """Each run's step start and completion times, from its audit log."""
    query = (
        select(AuditEvent.run_id, AuditEvent.type, AuditEvent.payload, AuditEvent.created_at)
        .where(
            AuditEvent.run_id.in_(run_ids),
            AuditEvent.type.in_(("step.running", "step.completed")),
        )
        .order_by(AuditEvent.run_id, AuditEvent.seq)
    )
    lines = {run_id: StepTimeline({}, {}) for run_id in run_ids}
    async with transaction(ctx.sessions) as session:
        for row in await session.execute(query):
            line = lines[row.run_id]
            target = line.started if row.type == "step.running" else line.completed
            target[int(row.payload["step_number"])] = row.created_at.timestamp()
    return list(lines.values())


RequestFor = Callable[[int], CreateRunRequest]  # steps → the run to create


async def _one_run(
    ctx: EngineContext,
    wakeups: asyncio.Queue[str],
    request: CreateRunRequest,
    profile: StatementProfile,
) -> uuid.UUID:
    with profile.timed("create"):
        view = await create_run(ctx, request, actor=ACTOR, idempotency_key=None)
    outcome = await _wait_finished(wakeups, str(view.run.id))
    if outcome != "run.completed":
        raise StuckRunsError(f"run {view.run.id} ended with {outcome}")
    return view.run.id


async def sequential(
    settings: Settings, request_for: RequestFor, *, runs: int, steps: int
) -> SequentialResult:
    """``runs`` runs of ``request_for(steps)``, one at a time, on one in-process worker, after
    one unmeasured warm-up run; their latencies and the statements they issued."""
    ctx = build_context(settings)
    await ctx.start()
    stop = asyncio.Event()
    profile = StatementProfile()
    run_ms: list[float] = []
    run_ids: list[uuid.UUID] = []
    try:
        with profile.listening(ctx.db, ctx.changes.sqlite_writer), attributed_phases(profile):
            worker = ProfiledWorker(
                ctx, WorkerOptions(worker_id="bench-sequential"), profile=profile
            )
            worker_task = asyncio.create_task(worker.run(stop))
            async with ctx.notifier.subscribe(accept=_announces_an_end) as wakeups:
                # warm-up: connections, caches
                await _one_run(ctx, wakeups, request_for(steps), profile)
                with profile.recording():
                    for _ in range(runs):
                        started = time.perf_counter()
                        request = request_for(steps)
                        run_ids.append(await _one_run(ctx, wakeups, request, profile))
                        run_ms.append((time.perf_counter() - started) * 1000)
                    await asyncio.sleep(0.1)  # the idle claim round a last commit triggers
            stop.set()
            await worker_task
        timelines = await _timelines(ctx, run_ids)
    finally:
        stop.set()
        await ctx.close()
    return SequentialResult(runs, steps, run_ms, StepLatencies.of(timelines), profile)


def measure_sequential(db: BenchDatabase, *, runs: int, steps: int) -> SequentialResult:
    """``runs`` runs of ``steps`` sequential no-op steps, one at a time, one in-process worker."""
    upgrade(db.engine_url)

    def request_for(count: int) -> CreateRunRequest:
        return noop_request(SEQUENTIAL_GOAL, count)

    return asyncio.run(sequential(settings_for(db.engine_url), request_for, runs=runs, steps=steps))


async def _status_counts(ctx: EngineContext, goal: str) -> dict[str, int]:
    query = (
        select(AgentRun.status, func.count()).where(AgentRun.goal == goal).group_by(AgentRun.status)
    )
    async with transaction(ctx.sessions) as session:
        return {status: count for status, count in (await session.execute(query)).tuples()}


async def _wait_all(
    ctx: EngineContext, goal: str, runs: int, timeout_s: float
) -> tuple[dict[str, int], bool]:
    """Poll until ``runs`` runs of ``goal`` finished; (status counts, whether they all did)."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = await _status_counts(ctx, goal)
        if sum(counts.get(status, 0) for status in FINISHED) >= runs:
            return counts, True
        if time.monotonic() > deadline:
            return counts, False
        await asyncio.sleep(POLL_S)


async def _submit(ctx: EngineContext, goal: str, runs: int, steps: int) -> None:
    gate = asyncio.Semaphore(SUBMITTERS)

    async def one() -> None:
        async with gate:
            await create_run(ctx, noop_request(goal, steps), actor=ACTOR, idempotency_key=None)

    await asyncio.gather(*(one() for _ in range(runs)))


async def _fanout(
    url: str, workers: int, runs: int, steps: int, timeout_s: float
) -> tuple[float | None, float, dict[str, int]]:
    ctx = build_context(settings_for(url))
    try:
        await _submit(ctx, WARMUP_GOAL, workers * 2, 2)
        await _wait_all(ctx, WARMUP_GOAL, workers * 2, timeout_s)
        started = time.perf_counter()
        await _submit(ctx, THROUGHPUT_GOAL, runs, steps)
        submitted = time.perf_counter() - started
        counts, finished = await _wait_all(ctx, THROUGHPUT_GOAL, runs, timeout_s)
        wall = time.perf_counter() - started if finished else None
        return wall, submitted, counts
    finally:
        await ctx.close()


def measure_throughput(
    db: BenchDatabase,
    *,
    workers: int,
    concurrency: int,
    runs: int,
    steps: int,
    log_dir: Path,
    timeout_s: float = 180.0,
) -> ThroughputResult:
    """``runs`` runs of ``steps`` no-op steps submitted at once to ``workers`` worker processes
    (``agent-engine worker --concurrency``); wall time until every run finished."""
    upgrade(db.engine_url)
    env = clean_env(AGENT_ENGINE_DATABASE_URL=db.engine_url, AGENT_ENGINE_LOG_LEVEL="info")

    def argv(index: int) -> list[str]:
        return [
            "agent_engine",
            "worker",
            "--concurrency",
            str(concurrency),
            "--id",
            f"bench-{index}",
        ]

    with worker_processes(
        workers, argv, env=env, log_dir=log_dir, ready_marker=WORKER_READY
    ) as processes:
        wall, submitted, counts = asyncio.run(
            _fanout(db.engine_url, workers, runs, steps, timeout_s)
        )
        problems = logged_problems(processes)
    if wall is None:
        problems.insert(0, f"not all runs finished within {timeout_s:.0f}s: {counts}")
    elif counts.get("completed", 0) != runs:
        problems.insert(0, f"runs did not all complete: {counts}")
    return ThroughputResult(workers, concurrency, runs, steps, wall, submitted, counts, problems)
