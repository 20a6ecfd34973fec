"""How the API holds up as the database grows: list and filter latency with 1,000, 10,000 and
100,000 runs (and the plan PostgreSQL chose for each), then the memory of the API and worker
processes with 1,000 active runs and 500 open event streams.

Everything goes through ``agent-engine serve`` and ``agent-engine worker`` as their own
processes on a fresh PostgreSQL database, measured by an httpx client in this process. Runs for
the lists are seeded by SQL (``bench/scale_seed.py``); the active runs are made through the API:
each waits for an approval of its first step after a worker claimed it, and an event stream is
held open on 500 of them.

Targets: list latency flat as the table grows; each process under 300 MB resident.

    python -m bench.scale [--sizes 1000,10000,100000] [--active 1000] [--streams 500]
                          [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from agent_engine.domain.states import RunStatus
from agent_engine.engine import runs
from agent_engine.engine.context import EngineContext, build_context
from agent_engine.engine.run_overview import runs_page
from agent_engine.storage.migrations import upgrade
from bench.analyze_figures import TextTable
from bench.databases import DEFAULT_ADMIN_URL, check_postgres, fresh_database
from bench.engine_harness import settings_for
from bench.processes import clean_env
from bench.scale_seed import explain, seed_runs
from bench.sse_harness import free_port
from bench.stats import Summary

SAMPLES = 40
WARMUP = 5
RSS_TARGET_MB = 300
NO_SUCH_RUN = uuid.UUID(int=7)  # no run was forked from it: the lineage filter matches nothing


@dataclass(frozen=True)
class ListQuery:
    """One list request, and the same read made in-process for its plan."""

    label: str
    path: str
    read: Callable[[EngineContext], Awaitable[object]]


def _queries() -> list[ListQuery]:
    def api(**filters: object) -> Callable[[EngineContext], Awaitable[object]]:
        async def read(ctx: EngineContext) -> object:
            return await runs.list_runs(
                ctx,
                statuses=filters.get("statuses", []),  # type: ignore[arg-type]
                cursor=None,
                limit=50,
                forked_from=filters.get("forked_from"),  # type: ignore[arg-type]
                replay_of=None,
            )

        return read

    def console(**filters: str) -> Callable[[EngineContext], Awaitable[object]]:
        async def read(ctx: EngineContext) -> object:
            return await runs_page(
                ctx,
                statuses=[],
                project=filters.get("project"),
                search=filters.get("search"),
                cursor=None,
                limit=50,
            )

        return read

    return [
        ListQuery("newest 50", "/v1/agent-runs?limit=50", api()),
        ListQuery(
            "status=failed",
            "/v1/agent-runs?status=failed&limit=50",
            api(statuses=[RunStatus.FAILED]),
        ),
        ListQuery(
            "forked_from=(none)",
            f"/v1/agent-runs?forked_from={NO_SUCH_RUN}&limit=50",
            api(forked_from=NO_SUCH_RUN),
        ),
        ListQuery("console: project", "/runs?project=project-7", console(project="project-7")),
        ListQuery("console: goal text", "/runs?q=module%20613", console(search="module 613")),
    ]


@contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "agent_engine", *argv], env=env, stdout=out, stderr=out
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"serve never became healthy:\n{log.read_text(errors='replace')[-3000:]}")


async def _latencies(client: httpx.AsyncClient, path: str) -> Summary:
    times = []
    for index in range(WARMUP + SAMPLES):
        started = time.perf_counter()
        response = await client.get(path)
        elapsed = (time.perf_counter() - started) * 1000
        response.raise_for_status()
        if index >= WARMUP:
            times.append(elapsed)
    return Summary.of(times)


def _rss_mb(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of ``pid`` in MB (Linux /proc)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@dataclass
class ScaleFigures:
    lists: dict[str, dict[int, Summary]]
    plans: dict[str, list[str]]
    memory: dict[str, tuple[float, float]]
    active: int
    streams: int


async def _measure_lists(
    ctx: EngineContext, url: str, sizes: list[int], figures: ScaleFigures
) -> None:
    seeded = 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for size in sizes:
            await seed_runs(ctx.db, seeded + 1, size)
            seeded = size
            for query in _queries():
                figures.lists.setdefault(query.label, {})[size] = await _latencies(
                    client, query.path
                )
        for query in _queries():
            figures.plans[query.label] = await explain(ctx, query.read)


async def _hold_streams(
    client: httpx.AsyncClient, run_ids: list[str], opened: asyncio.Event, stop: asyncio.Event
) -> None:
    """One open event stream per run; ``opened`` once every one has sent its first event."""
    ready = 0

    async def follow(run_id: str) -> None:
        nonlocal ready
        async with client.stream("GET", f"/v1/agent-runs/{run_id}/events") as response:
            response.raise_for_status()
            lines = response.aiter_lines()
            async for line in lines:
                if line.startswith("data:"):
                    break
            ready += 1
            if ready == len(run_ids):
                opened.set()
            await stop.wait()

    await asyncio.gather(*(follow(run_id) for run_id in run_ids))


async def _measure_memory(
    url: str, workspace: Path, serve_pid: int, worker_pid: int, figures: ScaleFigures
) -> None:
    plan = [
        {"step_type": "list_files", "input_data": {}, "requires_approval": True},
        {"step_type": "read_file", "input_data": {"path": "README.md"}},
    ]
    limits = httpx.Limits(max_connections=figures.streams + 20)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        run_ids = []
        for number in range(figures.active):
            body = {
                "goal": f"active run {number}",
                "workspace": str(workspace),
                "steps": plan,
                "auto_start": True,
            }
            response = await client.post("/v1/agent-runs", json=body)
            response.raise_for_status()
            run_ids.append(response.json()["id"])
        waiting = await _wait_waiting(client, run_ids)
        stop, opened = asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(
            _hold_streams(client, run_ids[: figures.streams], opened, stop)
        )
        await asyncio.wait_for(opened.wait(), timeout=300)
        figures.memory["serve (API)"] = _rss_mb(serve_pid)
        figures.memory["worker"] = _rss_mb(worker_pid)
        figures.memory["waiting runs"] = (float(waiting), float(waiting))
        stop.set()
        await holder


async def _wait_waiting(client: httpx.AsyncClient, run_ids: list[str]) -> int:
    """Until every run waits for its approval (or ten minutes passed); how many do."""
    deadline = time.monotonic() + 600
    pending = set(run_ids)
    gate = asyncio.Semaphore(16)

    async def waits(run_id: str) -> bool:
        async with gate:
            response = await client.get(f"/v1/agent-runs/{run_id}")
        return bool(response.json()["status"] == "awaiting_approval")

    while pending and time.monotonic() < deadline:
        order = sorted(pending)
        answers = await asyncio.gather(*(waits(run_id) for run_id in order))
        pending -= {run_id for run_id, ok in zip(order, answers, strict=True) if ok}
        if pending:
            await asyncio.sleep(1)
    return len(run_ids) - len(pending)


def measure(admin_url: str, sizes: list[int], active: int, streams: int) -> ScaleFigures:
    """The figures, on a fresh PostgreSQL database of their own."""
    figures = ScaleFigures({}, {}, {}, active, streams)
    with (
        fresh_database("postgres", "scale", admin_url=admin_url) as db,
        tempfile.TemporaryDirectory(prefix="ae_scale_") as folder,
    ):
        upgrade(db.engine_url)
        root = Path(folder)
        workspace = root / "workspaces" / "app"
        workspace.mkdir(parents=True)
        (workspace / "README.md").write_text("# app\n", encoding="utf-8")
        port = free_port()
        env = clean_env(
            AGENT_ENGINE_DATABASE_URL=db.engine_url,
            AGENT_ENGINE_AUTO_MIGRATE="false",
            AGENT_ENGINE_EMBEDDED_WORKER="false",
            AGENT_ENGINE_WORKSPACE_ROOTS=str(root / "workspaces"),
            AGENT_ENGINE_LOG_LEVEL="warning",
            AGENT_ENGINE_WORKER_CONCURRENCY="16",
        )
        serve_log, worker_log = root / "serve.log", root / "worker.log"
        serve_argv = ["serve", "--port", str(port)]
        with (
            _process(serve_argv, env, serve_log) as serve,
            _process(["worker"], env, worker_log) as worker,
        ):
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, serve, serve_log)
            ctx = build_context(settings_for(db.engine_url))

            async def lists_then_memory() -> None:
                await ctx.start()
                try:
                    await _measure_lists(ctx, url, sizes, figures)
                finally:
                    await ctx.close()
                await _measure_memory(url, workspace, serve.pid, worker.pid, figures)

            asyncio.run(lists_then_memory())
    return figures


def tables(figures: ScaleFigures, sizes: list[int]) -> list[TextTable]:
    """The list latencies by table size, the plans, and the memory, as tables in words."""
    rows = []
    for label, by_size in figures.lists.items():
        cells = [f"{by_size[size].p50:.1f} / {by_size[size].p95:.1f}" for size in sizes]
        first, last = by_size[sizes[0]].p50 or 0.0, by_size[sizes[-1]].p50 or 0.0
        rows.append([label, *cells, f"{last / first:.2f}×" if first else "–"])
    lists = TextTable(
        "List latency through serve, ms p50 / p95 (40 requests each)",
        ["request", *[f"{size:,} runs" for size in sizes], "largest ÷ smallest"],
        rows,
        [f"Target: flat as the table grows (runs seeded by SQL; {SAMPLES} requests per cell)."],
    )
    plans = TextTable(
        f"Plans PostgreSQL chose at {sizes[-1]:,} runs (EXPLAIN ANALYZE, outermost node first)",
        ["request", "plan"],
        [[label, line] for label, nodes in figures.plans.items() for line in nodes],
    )
    memory = TextTable(
        f"Memory with {figures.active:,} active runs and {figures.streams} open event streams",
        ["process", "resident MB", "peak MB", f"under {RSS_TARGET_MB} MB"],
        [
            [name, f"{rss:.0f}", f"{peak:.0f}", "yes" if peak < RSS_TARGET_MB else "NO"]
            for name, (rss, peak) in figures.memory.items()
            if name != "waiting runs"
        ],
        [f"{figures.memory['waiting runs'][0]:.0f} runs waiting for approval when measured."],
    )
    return [lists, plans, memory]


def _print(table: TextTable) -> None:
    widths = [
        max(len(str(row[i])) for row in [table.headers, *table.rows])
        for i in range(len(table.headers))
    ]
    print(f"\n{table.title}")
    print("  ".join(h.ljust(w) for h, w in zip(table.headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in table.rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    for note in table.notes:
        print(note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--active", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("AGENT_ENGINE_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL),
    )
    args = parser.parse_args()
    problem = check_postgres(args.postgres_url)
    if problem:
        sys.exit(problem)
    sizes = sorted(int(size) for size in args.sizes.split(","))
    figures = measure(args.postgres_url, sizes, args.active, args.streams)
    for table in tables(figures, sizes):
        _print(table)


if __name__ == "__main__":
    main()
