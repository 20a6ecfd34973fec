"""How fast the console's pages render with a full database: 10,000 runs (the runs list's
first page, a goal search, the approvals inbox) and a completed run of 500 steps (its page:
timeline, costs, lineage; the audit chain's verdict, which the page
fetches once shown, is its own row). The pages are requested over ASGI from the real
app (no network), each ``--repeat`` times after one warm-up; p50 and p95 are printed per backend.

The 500-step run is made and executed by the engine (explicit plan of no-op steps, the embedded
worker), so its page verifies a real audit chain; the 10,000 runs are bulk copies of one run
made by the engine, inserted into ``agent_runs`` with distinct ids, goals and ages.

Targets: the runs list's first page under 200 ms and the 500-step run's page under 500 ms.

    python -m bench.console [--runs 10000] [--steps 500] [--repeat 20]
                            [--postgres-url URL] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import insert, select

from agent_engine.api.app import create_app
from agent_engine.domain.clock import utcnow
from agent_engine.engine.context import EngineContext
from agent_engine.storage.database import transaction
from agent_engine.storage.migrations import upgrade_async
from agent_engine.storage.runs import RUNS
from bench.databases import DEFAULT_ADMIN_URL, check_postgres, fresh_database
from bench.engine_harness import settings_for
from bench.stats import Summary

TARGETS_MS = {"runs list, first page": 200.0, "run page, 500 steps": 500.0}
STATUSES = ("completed", "failed", "cancelled", "completed", "running", "awaiting_approval")
CHUNK = 1000
RUN_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Row:
    backend: str
    page: str
    summary: Summary
    size_kb: float


async def _finished(http: httpx.AsyncClient, run_id: str) -> str:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        status = str((await http.get(f"/v1/agent-runs/{run_id}")).json()["status"])
        if status in ("completed", "failed", "cancelled"):
            return status
        await asyncio.sleep(0.25)
    raise RuntimeError(f"run {run_id} did not finish in {RUN_TIMEOUT_S} s")


async def _copy_runs(ctx: EngineContext, template_id: str, count: int) -> None:
    """``count`` copies of the template run's row, each with its own id, goal, status and age."""
    async with transaction(ctx.sessions) as session:
        query = select(RUNS).where(RUNS.c.id == uuid.UUID(template_id))
        template = dict((await session.execute(query)).mappings().one())
        now = utcnow()
        for start in range(0, count, CHUNK):
            rows = []
            for n in range(start, min(start + CHUNK, count)):
                created = now - timedelta(minutes=n + 1)
                rows.append(
                    {
                        **template,
                        "id": uuid.uuid4(),
                        "goal": f"Bench run {n}: analyze module {n % 97} and suggest fixes",
                        "status": STATUSES[n % len(STATUSES)],
                        "project": f"project-{n % 20}",
                        "idempotency_key": None,
                        "claimable_at": None,
                        "created_at": created,
                        "updated_at": created,
                    }
                )
            await session.execute(insert(RUNS), rows)


async def _time(http: httpx.AsyncClient, path: str, repeat: int) -> tuple[Summary, float]:
    warm = await http.get(path)
    if warm.status_code != 200:
        raise RuntimeError(f"GET {path}: {warm.status_code} {warm.text[:500]}")
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        answer = await http.get(path)
        samples.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200
    return Summary.of(samples), len(warm.content) / 1024


async def measure(backend: str, url: str, *, runs: int, steps: int, repeat: int) -> list[Row]:
    """Seed the database, then time each page; one row per page."""
    await upgrade_async(url)
    app = create_app(settings_for(url).model_copy(update={"embedded_worker": True}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as http,
    ):
        plan = [{"step_type": "noop", "input_data": {"value": n}} for n in range(steps)]
        body = {"goal": f"A run of {steps} steps", "steps": plan, "auto_start": True}
        big = (await http.post("/v1/agent-runs", json=body)).json()["id"]
        await _finished(http, big)
        small = {"goal": "template", "steps": plan[:1]}
        template = (await http.post("/v1/agent-runs", json=small)).json()["id"]
        await _copy_runs(app.state.engine, template, runs)
        pages = {
            "runs list, first page": "/runs",
            "runs list, goal search": "/runs?q=module+42",
            "runs list, status filter": "/runs?status=failed",
            "approvals inbox": "/approvals",
            f"run page, {steps} steps": f"/runs/{big}",
            "its audit state (htmx)": f"/runs/{big}/audit",
        }
        rows = []
        for label, path in pages.items():
            summary, size = await _time(http, path, repeat)
            rows.append(Row(backend, label, summary, size))
    return rows


def _print(rows: list[Row], runs: int) -> None:
    print(f"\nConsole pages over ASGI with {runs:,} runs in the database (ms)\n")
    header = f"{'backend':<10} {'page':<28} {'p50':>8} {'p95':>8} {'target':>8} {'KiB':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        target = TARGETS_MS.get(row.page)
        print(
            f"{row.backend:<10} {row.page:<28} {row.summary.p50 or 0:>8.1f} "
            f"{row.summary.p95 or 0:>8.1f} {'' if target is None else f'< {target:.0f}':>8} "
            f"{row.size_kb:>8.1f}"
        )


def main() -> None:
    """Parse the options, measure each backend, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--postgres-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    backends = ["sqlite"]
    if not args.skip_postgres:
        problem = check_postgres(args.postgres_url)
        if problem is None:
            backends.append("postgres")
        else:
            print(problem)
    rows: list[Row] = []
    for backend in backends:
        with fresh_database(backend, "console", admin_url=args.postgres_url) as db:
            rows += asyncio.run(
                measure(
                    backend, db.engine_url, runs=args.runs, steps=args.steps, repeat=args.repeat
                )
            )
    _print(rows, args.runs)


if __name__ == "__main__":
    main()
