"""What budgets cost a model-calling step, and how the 50-call case behaves: runs of 20 ``analyze``
steps against the benchmark's model server on loopback, one at a time on one in-process worker,
alternately with a budget (every call reserves its worst case and settles after: two short
transactions, plus a read of what is left) and without one. Printed per backend: per-step time
(run latency ÷ steps, p50 and p95), provider time per step (the calls' recorded ``latency_ms``),
engine time per step (the rest), and the difference the budget makes. Then the concurrency case:
50 analyze steps of one run claimed at once and executed concurrently against a budget that fits
10 worst cases — the wall time, the requests that reached the server, the steps paused for budget,
and the spend against the budget.

Target: reserving and settling adds at most 1 ms to a model-calling step on PostgreSQL.

    python -m bench.budgets [--runs 10] [--steps 20] [--postgres-url URL] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select

from agent_engine.config import Settings
from agent_engine.domain.plan import PlanStep
from agent_engine.engine.claiming import claim_ready
from agent_engine.engine.context import EngineContext, build_context, lazy_llm
from agent_engine.engine.locking import change_run
from agent_engine.engine.runs import CreateRunRequest, create_run
from agent_engine.engine.stepping import record_result, run_claimed
from agent_engine.storage.budget_tables import BudgetReservation
from agent_engine.storage.database import read_transaction
from agent_engine.storage.migrations import upgrade
from agent_engine.storage.notifications import RunNotice
from agent_engine.storage.tables import AgentRun, LLMCall, Step
from agent_engine.worker.worker import Worker, WorkerOptions
from bench.analyze_harness import analyze_request
from bench.databases import DEFAULT_ADMIN_URL, check_postgres, fresh_database
from bench.engine_harness import settings_for
from bench.model_server import MODEL_ID, ModelServer
from bench.stats import Summary

ACTOR = "bench"
FINISHED = ("completed", "failed", "cancelled")
RUN_TIMEOUT_S = 120.0
BIG_BUDGET = Decimal("1000")


@dataclass(frozen=True)
class Overhead:
    label: str
    step_ms: Summary
    provider_step_ms: float

    @property
    def engine_ms(self) -> float:
        return (self.step_ms.p50 or 0.0) - self.provider_step_ms


@dataclass(frozen=True)
class Burst:
    steps: int
    wall_ms: float
    requests: int
    completed: int
    paused: int
    budget_usd: Decimal
    spent_usd: Decimal


@dataclass(frozen=True)
class BudgetFigures:
    backend: str
    steps: int
    without: Overhead
    with_budget: Overhead
    burst: Burst


def _finished(payload: str) -> bool:
    notice = RunNotice.parse(payload)
    return notice is not None and notice.status in FINISHED


async def _wait(wakeups: asyncio.Queue[str], run_id: uuid.UUID) -> str:
    async with asyncio.timeout(RUN_TIMEOUT_S):
        while True:
            notice = RunNotice.parse(await wakeups.get())
            if notice is not None and notice.run_id == run_id and notice.status in FINISHED:
                return notice.status


async def _provider_ms(ctx: EngineContext, run_ids: list[uuid.UUID]) -> float:
    async with read_transaction(ctx.sessions) as session:
        total = await session.scalar(
            select(func.coalesce(func.sum(LLMCall.latency_ms), 0)).where(
                LLMCall.run_id.in_(run_ids)
            )
        )
    return float(total or 0)


async def _overheads(ctx: EngineContext, runs: int, steps: int) -> tuple[Overhead, Overhead]:
    """Runs alternately without and with a budget (the first pair warms up)."""
    times: dict[bool, list[float]] = {False: [], True: []}
    ids: dict[bool, list[uuid.UUID]] = {False: [], True: []}
    stop = asyncio.Event()
    worker = Worker(ctx, WorkerOptions(worker_id="bench-budgets"))
    task = asyncio.create_task(worker.run(stop))
    try:
        async with ctx.notifier.subscribe(accept=_finished) as wakeups:
            for number in range(runs + 1):
                for budgeted in (False, True):
                    request = analyze_request(steps)
                    if budgeted:
                        request = request.model_copy(update={"budget_usd": BIG_BUDGET})
                    started = time.perf_counter()
                    view = await create_run(ctx, request, actor=ACTOR, idempotency_key=None)
                    status = await _wait(wakeups, view.run.id)
                    elapsed = (time.perf_counter() - started) * 1000
                    if status != "completed":
                        raise RuntimeError(f"run {view.run.id} ended {status}")
                    if number:
                        times[budgeted].append(elapsed / steps)
                        ids[budgeted].append(view.run.id)
    finally:
        stop.set()
        await task
    out = []
    for budgeted in (False, True):
        provider = await _provider_ms(ctx, ids[budgeted]) / max(len(ids[budgeted]) * steps, 1)
        label = "with budget" if budgeted else "no budget"
        out.append(Overhead(label, Summary.of(times[budgeted]), provider))
    return out[0], out[1]


async def _fire(ctx: EngineContext, run_id: uuid.UUID, steps: int) -> None:
    """Claim the run's ready steps at once, execute them concurrently, record each."""
    async with change_run(ctx, run_id, open_steps=True) as locked:
        claims = await claim_ready(
            ctx,
            locked.changes,
            locked.read,
            owner=ACTOR,
            limit=steps,
            lease=timedelta(seconds=ctx.settings.worker_lease_s),
            llm=lazy_llm(ctx, None),
        )
    results = await asyncio.gather(*(run_claimed(ctx, claim) for claim in claims))
    for claim, result in zip(claims, results, strict=True):
        if result is not None:
            await record_result(ctx, claim, result, actor=ACTOR)


def _parallel(steps: int) -> list[PlanStep]:
    return [
        PlanStep(step_type="analyze", input_data={"instruction": "Report."}, depends_on=[])
        for _ in range(steps)
    ]


async def _burst(ctx: EngineContext, server: ModelServer, steps: int, fits: int) -> Burst:
    """``steps`` parallel analyze steps fired at once against room for ``fits`` worst cases
    (one call's worst case is what a probe run's reservation held)."""
    probe = CreateRunRequest(goal="probe", steps=_parallel(1), budget_usd=BIG_BUDGET)
    probe_id = (await create_run(ctx, probe, actor=ACTOR, idempotency_key=None)).run.id
    await _fire(ctx, probe_id, 1)
    async with read_transaction(ctx.sessions) as session:
        worst = await session.scalar(
            select(BudgetReservation.amount_usd).where(BudgetReservation.run_id == probe_id)
        )
    budget = Decimal(worst or 0) * fits
    request = CreateRunRequest(
        goal="burst", steps=_parallel(steps), budget_usd=budget, max_parallel=steps
    )
    run_id = (await create_run(ctx, request, actor=ACTOR, idempotency_key=None)).run.id
    before = server.count().answered
    started = time.perf_counter()
    await _fire(ctx, run_id, steps)
    wall = (time.perf_counter() - started) * 1000
    async with read_transaction(ctx.sessions) as session:
        statuses = list(await session.scalars(select(Step.status).where(Step.run_id == run_id)))
        spent = await session.scalar(select(AgentRun.total_cost_usd).where(AgentRun.id == run_id))
    return Burst(
        steps,
        wall,
        server.count().answered - before,
        statuses.count("completed"),
        statuses.count("awaiting_approval"),
        budget,
        Decimal(spent or 0),
    )


async def _measure(
    settings: Settings, server: ModelServer, backend: str, runs: int, steps: int
) -> BudgetFigures:
    ctx = build_context(settings)
    await ctx.start()
    try:
        without, with_budget = await _overheads(ctx, runs, steps)
        burst = await _burst(ctx, server, 50, 10)
    finally:
        await ctx.close()
    return BudgetFigures(backend, steps, without, with_budget, burst)


def measure(
    backend: str, server: ModelServer, *, admin_url: str, runs: int, steps: int
) -> BudgetFigures:
    """One backend's figures, on a database of its own."""
    with fresh_database(backend, "budgets", admin_url=admin_url) as db:
        upgrade(db.engine_url)
        with tempfile.TemporaryDirectory(prefix="ae_bench_models_") as directory:
            catalog = server.write_catalog(Path(directory))
            settings = settings_for(db.engine_url, models_file=catalog, model=MODEL_ID)
            return asyncio.run(_measure(settings, server, backend, runs, steps))


def _ms(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "–"


def report(figures: list[BudgetFigures]) -> None:
    """Two tables: per-step overhead with and without a budget, and the 50-call burst."""
    header = (
        f"{'backend':<9} {'runs':<12} {'ms/step p50':>11} {'ms/step p95':>11} "
        f"{'provider ms/step':>16} {'engine ms/step':>14} {'budget adds ms':>14}"
    )
    print(header)
    print("-" * len(header))
    for f in figures:
        added = f.with_budget.engine_ms - f.without.engine_ms
        for row, extra in ((f.without, ""), (f.with_budget, f"{added:.2f}")):
            print(
                f"{f.backend:<9} {row.label:<12} {_ms(row.step_ms.p50):>11} "
                f"{_ms(row.step_ms.p95):>11} {_ms(row.provider_step_ms):>16} "
                f"{_ms(row.engine_ms):>14} {extra:>14}"
            )
    print()
    header = (
        f"{'backend':<9} {'steps at once':>13} {'room for':>8} {'wall ms':>9} {'requests':>9} "
        f"{'completed':>9} {'paused':>7} {'spent / budget USD':>24}"
    )
    print(header)
    print("-" * len(header))
    for f in figures:
        b = f.burst
        print(
            f"{f.backend:<9} {b.steps:>13} {10:>8} {b.wall_ms:>9.1f} {b.requests:>9} "
            f"{b.completed:>9} {b.paused:>7} {f'{b.spent_usd:.6f} / {b.budget_usd:.6f}':>24}"
        )
    print()
    for f in figures:
        added = f.with_budget.engine_ms - f.without.engine_ms
        within = f.burst.spent_usd <= f.burst.budget_usd
        verdict = "met" if added <= 1.0 else "NOT met"
        print(
            f"{f.backend}: {f.without.step_ms.count} runs of {f.steps} analyze steps each way; "
            f"reserving and settling adds {added:.2f} ms per step (target <= 1 ms on "
            f"PostgreSQL: {verdict}); the burst spent "
            f"{'within' if within else 'PAST'} its budget."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="measured runs each way")
    parser.add_argument("--steps", type=int, default=20, help="analyze steps per run")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("AGENT_ENGINE_BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL),
        help="PostgreSQL admin URL (AGENT_ENGINE_BENCH_POSTGRES_URL)",
    )
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    backends = ["sqlite"]
    if not args.skip_postgres:
        problem = check_postgres(args.postgres_url)
        if problem is None:
            backends.append("postgres")
        else:
            print(f"skipping PostgreSQL: {problem}")
    figures = []
    with ModelServer().running() as server:
        for backend in backends:
            figures.append(
                measure(
                    backend, server, admin_url=args.postgres_url, runs=args.runs, steps=args.steps
                )
            )
    report(figures)


if __name__ == "__main__":
    main()
