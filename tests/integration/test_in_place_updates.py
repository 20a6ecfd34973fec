"""Runs and steps are updated in place on PostgreSQL (HOT), and leases end on whole seconds.

Each step of a run rewrites the run's row and two step rows; an update that changes no indexed
column and finds room in its page skips every index of its table (migration 0005). These tests
run a real worker (recording on the records it last wrote) and read PostgreSQL's own counters of
heap-only updates.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy.engine import make_url

from agent_engine.config import Settings
from agent_engine.domain.plan import PlanStep
from agent_engine.engine.claiming import lease_until
from agent_engine.engine.context import build_context
from agent_engine.engine.runs import CreateRunRequest, create_run, get_run
from agent_engine.worker.worker import Worker, WorkerOptions
from tests.backends import one_backend
from tests.databases import PostgresServer

STEPS = 12
STUCK_S = 60.0  # a guard against hanging, not a measurement


def test_a_lease_ends_on_the_next_whole_second() -> None:
    lease = timedelta(seconds=30)
    taken = datetime(2031, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert lease_until(taken, lease) == datetime(2031, 1, 2, 3, 4, 36, tzinfo=UTC)
    on_the_second = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert lease_until(on_the_second, lease) == datetime(2031, 1, 2, 3, 4, 35, tzinfo=UTC)
    # Never shorter than asked, at most a second longer.
    for micro in (0, 1, 500_000, 999_999):
        now = taken.replace(microsecond=micro)
        assert timedelta(0) <= lease_until(now, lease) - (now + lease) < timedelta(seconds=1)
    # Two claims within one second hold the run's claimable_at where it was.
    assert lease_until(taken, lease) == lease_until(taken.replace(microsecond=999_999), lease)


async def _updates(dsn: str, tables: tuple[str, ...], at_least: int) -> dict[str, tuple[int, int]]:
    """``table → (updates, of which in place)`` once the counters show ``at_least`` updates of
    every table. Each backend reports its counts when it ends, so this waits for that."""
    connection = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(STUCK_S):
            while True:
                await connection.execute("SELECT pg_stat_clear_snapshot()")
                rows = await connection.fetch(
                    "SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
                    " WHERE relname = ANY($1::text[])",
                    list(tables),
                )
                counts = {row["relname"]: (row["n_tup_upd"], row["n_tup_hot_upd"]) for row in rows}
                if len(counts) == len(tables) and all(u >= at_least for u, _ in counts.values()):
                    return counts
                await asyncio.sleep(0.05)
    finally:
        await connection.close()


@one_backend("postgres", "heap-only updates are PostgreSQL's (SQLite rewrites its B-tree rows)")
async def test_a_sequential_run_updates_its_run_and_steps_in_place(
    settings: Settings, database_url: str, postgres_server: PostgresServer
) -> None:
    # The clone made ahead for the next test and the drops of earlier ones run beside this test
    # otherwise: their CREATE and DROP DATABASE change the counters it reads.
    await asyncio.to_thread(postgres_server.quiesce)
    ctx = build_context(settings)
    await ctx.start()
    stop = asyncio.Event()
    try:
        worker = Worker(ctx, WorkerOptions(worker_id="w", concurrency=1, poll_s=0.05))
        task = asyncio.create_task(worker.run(stop))
        plan = [PlanStep(step_type="noop", input_data={"value": n}) for n in range(STEPS)]
        request = CreateRunRequest(goal="in place", steps=plan, auto_start=True)
        run_id: uuid.UUID = (await create_run(ctx, request, actor="t", idempotency_key=None)).run.id
        async with asyncio.timeout(STUCK_S):
            while True:
                if (await get_run(ctx, str(run_id))).run.status == "completed":
                    break
                await asyncio.sleep(0.02)
        stop.set()
        await task
        assert worker.known_runs.hits >= STEPS - 1  # known records wrote (nearly) every step
    finally:
        stop.set()
        await ctx.close()  # every backend ends and reports its counters

    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    counts = await _updates(dsn, ("agent_runs", "steps"), at_least=STEPS)
    run_updates, run_in_place = counts["agent_runs"]
    step_updates, steps_in_place = counts["steps"]
    # Each step: claimed, then completed. The run moves with every step; only a status change
    # (running, completed) or a lease crossing into the next second touches its indexes.
    assert step_updates >= 2 * STEPS
    assert steps_in_place >= 0.8 * step_updates, counts
    assert run_in_place >= 0.5 * run_updates, counts
