"""What replaying a recorded run costs beside running it: runs of 20 ``analyze`` steps against
the benchmark's model server on loopback, each then replayed (hermetic) from its records, one
at a time on one in-process worker. Printed per backend: per-step time of the originals and of
their replays (run latency ÷ steps, p50 and p95), the originals' provider time per step (their
calls' recorded ``latency_ms``), the engine's time per step (the rest), the requests the model
server answered during each, and the cost the replays recorded.

Target: a replay's per-step time is at most the original's engine overhead per step (its
per-step time minus its provider time), with no request to the provider: replay pays no
provider time, and reading the recorded calls must cost no more than the engine's own handling
of the call it replaces.

    python -m bench.replay [--runs 10] [--steps 20] [--postgres-url URL] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select

from agent_engine.config import Settings
from agent_engine.engine.context import EngineContext, build_context
from agent_engine.engine.replay import replay_run
from agent_engine.engine.runs import create_run
from agent_engine.storage.database import read_transaction
from agent_engine.storage.migrations import upgrade
from agent_engine.storage.notifications import RunNotice
from agent_engine.storage.tables import AgentRun, LLMCall
from agent_engine.worker.worker import Worker, WorkerOptions
from bench.analyze_harness import analyze_request
from bench.databases import DEFAULT_ADMIN_URL, check_postgres, fresh_database
from bench.engine_harness import settings_for
from bench.model_server import MODEL_ID, ModelServer, measure_round_trips
from bench.stats import Summary

ACTOR = "bench"
FINISHED = ("completed", "failed", "cancelled")
RUN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ReplayFigures:
    backend: str
    steps: int
    original_step_ms: Summary
    replay_step_ms: Summary
    round_trip_ms: float
    provider_step_ms: float  # the originals' recorded provider latency, per step
    original_requests: int
    replay_requests: int
    replay_cost_usd: Decimal
    replayed_rows: int
    replay_rows: int


async def _wait(ctx: EngineContext, wakeups: asyncio.Queue[str], run_id: uuid.UUID) -> str:
    async with asyncio.timeout(RUN_TIMEOUT_S):
        while True:
            notice = RunNotice.parse(await wakeups.get())
            if notice is not None and notice.run_id == run_id and notice.status in FINISHED:
                return notice.status


def _finished(payload: str) -> bool:
    notice = RunNotice.parse(payload)
    return notice is not None and notice.status in FINISHED


async def _provider_ms(ctx: EngineContext, run_ids: list[uuid.UUID]) -> float:
    """The recorded provider latency of the runs' calls, in total."""
    async with read_transaction(ctx.sessions) as session:
        total = await session.scalar(
            select(func.coalesce(func.sum(LLMCall.latency_ms), 0)).where(
                LLMCall.run_id.in_(run_ids)
            )
        )
    return float(total or 0)


async def _ledger(ctx: EngineContext, run_ids: list[uuid.UUID]) -> tuple[Decimal, int, int]:
    async with read_transaction(ctx.sessions) as session:
        cost = await session.scalar(
            select(func.coalesce(func.sum(AgentRun.total_cost_usd), 0)).where(
                AgentRun.id.in_(run_ids)
            )
        )
        rows = (
            await session.execute(select(LLMCall.replayed).where(LLMCall.run_id.in_(run_ids)))
        ).all()
    return Decimal(cost or 0), sum(1 for row in rows if row.replayed), len(rows)


async def _measure(
    settings: Settings, server: ModelServer, backend: str, runs: int, steps: int
) -> ReplayFigures:
    round_trips = await measure_round_trips(server.base_url)
    ctx = build_context(settings)
    await ctx.start()
    stop = asyncio.Event()
    worker = Worker(ctx, WorkerOptions(worker_id="bench-replay"))
    task = asyncio.create_task(worker.run(stop))
    original_ms: list[float] = []
    replay_ms: list[float] = []
    replays: list[uuid.UUID] = []
    originals: list[uuid.UUID] = []
    original_requests = replay_requests = 0
    try:
        async with ctx.notifier.subscribe(accept=_finished) as wakeups:
            for number in range(runs + 1):  # the first pair warms up
                before = server.count().answered
                started = time.perf_counter()
                view = await create_run(
                    ctx, analyze_request(steps), actor=ACTOR, idempotency_key=None
                )
                status = await _wait(ctx, wakeups, view.run.id)
                elapsed = (time.perf_counter() - started) * 1000
                if status != "completed":
                    raise RuntimeError(f"run {view.run.id} ended {status}")
                middle = server.count().answered
                started = time.perf_counter()
                replay = await replay_run(ctx, str(view.run.id), "hermetic", actor=ACTOR)
                status = await _wait(ctx, wakeups, replay.run.id)
                replayed = (time.perf_counter() - started) * 1000
                if status != "completed":
                    raise RuntimeError(f"replay {replay.run.id} ended {status}")
                if number:
                    original_ms.append(elapsed / steps)
                    replay_ms.append(replayed / steps)
                    replays.append(replay.run.id)
                    originals.append(view.run.id)
                    original_requests += middle - before
                    replay_requests += server.count().answered - middle
        cost, replayed_rows, rows = await _ledger(ctx, replays)
        provider_ms = await _provider_ms(ctx, originals) / max(len(originals) * steps, 1)
    finally:
        stop.set()
        await task
        await ctx.close()
    return ReplayFigures(
        backend,
        steps,
        Summary.of(original_ms),
        Summary.of(replay_ms),
        round_trips.reused_mean_ms or 0.0,
        provider_ms,
        original_requests,
        replay_requests,
        cost,
        replayed_rows,
        rows,
    )


def measure(
    backend: str, server: ModelServer, *, admin_url: str, runs: int, steps: int
) -> ReplayFigures:
    """One backend's figures, on a database of its own."""
    with fresh_database(backend, "replay", admin_url=admin_url) as db:
        upgrade(db.engine_url)
        with tempfile.TemporaryDirectory(prefix="ae_bench_models_") as directory:
            catalog = server.write_catalog(Path(directory))
            settings = settings_for(db.engine_url, models_file=catalog, model=MODEL_ID)
            return asyncio.run(_measure(settings, server, backend, runs, steps))


def _ms(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "–"


def report(figures: list[ReplayFigures]) -> None:
    """The table, two rows per backend (originals, replays), and the target's verdict."""
    header = (
        f"{'backend':<9} {'runs':<9} {'ms/step p50':>11} {'ms/step p95':>11} "
        f"{'provider ms/step':>16} {'engine ms/step':>14} {'requests':>9} {'cost USD':>9}"
    )
    print(header)
    print("-" * len(header))
    for f in figures:
        engine = (f.original_step_ms.p50 or 0.0) - f.provider_step_ms
        print(
            f"{f.backend:<9} {'original':<9} {_ms(f.original_step_ms.p50):>11} "
            f"{_ms(f.original_step_ms.p95):>11} {_ms(f.provider_step_ms):>16} "
            f"{_ms(engine):>14} {f.original_requests:>9} {'':>9}"
        )
        print(
            f"{'':<9} {'replay':<9} {_ms(f.replay_step_ms.p50):>11} "
            f"{_ms(f.replay_step_ms.p95):>11} {_ms(0.0):>16} {_ms(f.replay_step_ms.p50):>14} "
            f"{f.replay_requests:>9} {f.replay_cost_usd:>9}"
        )
    print()
    for f in figures:
        engine = (f.original_step_ms.p50 or 0.0) - f.provider_step_ms
        met = (f.replay_step_ms.p50 or 0.0) <= engine and f.replay_requests == 0
        print(
            f"{f.backend}: {f.original_step_ms.count} runs of {f.steps} analyze steps and their "
            f"replays; bare round trip {f.round_trip_ms:.2f} ms; {f.replayed_rows} of "
            f"{f.replay_rows} replay calls replayed. Target (replay ms/step p50 <= the original's "
            f"engine ms/step, no provider request): {'met' if met else 'NOT met'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="measured runs (and replays)")
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
