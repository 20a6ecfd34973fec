"""Load on the API: ``agent-engine serve`` on a fresh PostgreSQL database (offline model,
embedded worker), driven by closed-loop asyncio httpx clients on the same machine.

First each request kind alone, one at a time (the unloaded cost: latency and the server's CPU
time per request); then, at each concurrency level, the mix of ``bench/load_mix.py`` (create :
read : list = 1 : 6 : 2, approvers, SSE subscribers) for ``--seconds`` after ``--warmup``:
requests/s, p50/p95/p99 per kind and overall, errors (any non-2xx or exception; there must be
none), and the servers' CPU time per request. Target: p99 under 50 ms at 50 clients.

    python -m bench.load [--clients 10,50,200] [--seconds 5] [--servers 1] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

import agent_engine
from agent_engine.storage.migrations import upgrade
from bench.databases import DEFAULT_ADMIN_URL, check_postgres, fresh_database, postgres_version
from bench.environment import source_state
from bench.load_mix import Level, Recorder, noop_run, run_level
from bench.processes import (
    READY_TIMEOUT_S,
    ProcessError,
    WorkerProcess,
    clean_env,
    logged_problems,
    worker_processes,
)
from bench.sse_harness import free_port
from bench.stats import percentile

TARGET_CLIENTS = 50
TARGET_P99_MS = 50.0
SEED_RUNS = 50
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Row:
    """One line of a table: a request kind at a level (or one kind alone, unloaded)."""

    level: str
    kind: str
    requests: int
    per_s: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    errors: int
    cpu_ms: float | None = None  # the servers' CPU time per request


def _cpu_seconds(processes: Sequence[WorkerProcess]) -> float:
    """User + system CPU time of the server processes so far (from /proc)."""
    total = 0
    for process in processes:
        fields = Path(f"/proc/{process.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
    return total / CLOCK_TICKS


def _row(level: str, kind: str, samples: list[float], errors: int, seconds: float) -> Row:
    return Row(
        level,
        kind,
        len(samples),
        len(samples) / seconds if seconds else None,
        percentile(samples, 50),
        percentile(samples, 95),
        percentile(samples, 99),
        errors,
    )


def level_rows(label: str, recorder: Recorder, seconds: float, cpu_s: float) -> list[Row]:
    """Per kind, then overall (with the servers' CPU per request) for one level."""
    kinds = sorted((set(recorder.latencies) | set(recorder.errors)) - {"stream"})
    rows = [
        _row(label, kind, recorder.latencies.get(kind, []), recorder.errors.get(kind, 0), seconds)
        for kind in kinds
    ]
    everything = [ms for samples in recorder.latencies.values() for ms in samples]
    overall = _row(label, "all requests", everything, sum(recorder.errors.values()), seconds)
    per_request = cpu_s * 1000 / overall.requests if overall.requests else None
    rows.append(replace(overall, cpu_ms=per_request))
    return rows


async def _wait_healthy(urls: Sequence[str], processes: Sequence[WorkerProcess]) -> None:
    """Until every server answers ``/healthz`` (ProcessError if one exits or takes too long)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(timeout=1.0) as http:
        for url, process in zip(urls, processes, strict=True):
            while True:
                if process.popen.poll() is not None:
                    raise ProcessError(f"{process.name} exited early:\n{process.log()[-4000:]}")
                try:
                    if (await http.get(f"{url}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise ProcessError(f"{process.name} not ready:\n{process.log()[-4000:]}")
                await asyncio.sleep(0.1)


async def _seed(base_url: str, count: int) -> list[str]:
    """Runs for the reads to find, made before any measurement."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0) as http:
        ids = []
        for n in range(count):
            response = await http.post("/v1/agent-runs", json=noop_run(f"seed {n}"))
            response.raise_for_status()
            ids.append(str(response.json()["id"]))
        return ids


async def _unloaded(
    base_url: str, run_ids: list[str], repeat: int, processes: Sequence[WorkerProcess]
) -> list[Row]:
    """Each kind alone, one request at a time: latency and the servers' CPU per request."""
    paths = {
        "healthz": ("GET", "/healthz", None),
        "read": ("GET", f"/v1/agent-runs/{run_ids[0]}", None),
        "list": ("GET", "/v1/agent-runs", None),
        "create": ("POST", "/v1/agent-runs", noop_run("unloaded")),
    }
    rows = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0) as http:
        for kind, (method, path, body) in paths.items():
            for _ in range(max(repeat // 10, 5)):  # warm-up
                (await http.request(method, path, json=body)).raise_for_status()
            await asyncio.sleep(0.5)  # let the worker finish the warm-up's runs
            samples: list[float] = []
            errors = 0
            cpu_before = _cpu_seconds(processes)
            for _ in range(repeat):
                began = time.perf_counter()
                response = await http.request(method, path, json=body)
                if response.is_success:
                    samples.append((time.perf_counter() - began) * 1000)
                else:
                    errors += 1
            if kind == "create":
                await asyncio.sleep(1.0)  # the worker's share of a create: running the run
            cpu_s = _cpu_seconds(processes) - cpu_before
            row = _row("unloaded", kind, samples, errors, 0.0)
            rows.append(replace(row, cpu_ms=cpu_s * 1000 / max(len(samples), 1)))
    return rows


def _number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


HEADERS = ["level", "kind", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "CPU ms"]


def _cells(row: Row) -> list[str]:
    return [
        row.level,
        row.kind,
        str(row.requests),
        _number(row.per_s, 0),
        _number(row.p50),
        _number(row.p95),
        _number(row.p99),
        str(row.errors),
        _number(row.cpu_ms, 2),
    ]


def print_table(title: str, rows: Sequence[Row], *, markdown: bool) -> None:
    """The rows as a Markdown table or as aligned text."""
    print(f"\n{'#### ' if markdown else ''}{title}\n")
    if markdown:
        print("| " + " | ".join(HEADERS) + " |")
        print("|" + "|".join("---" if i < 2 else "--:" for i in range(len(HEADERS))) + "|")
        for row in rows:
            print("| " + " | ".join(_cells(row)) + " |")
        return
    widths = [12, 18, 9, 8, 9, 9, 9, 7, 8]
    print(
        " ".join(
            h.ljust(w) if i < 2 else h.rjust(w)
            for i, (h, w) in enumerate(zip(HEADERS, widths, strict=True))
        )
    )
    print("-" * (sum(widths) + len(widths) - 1))
    for row in rows:
        cells = _cells(row)
        print(
            " ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )


@dataclass(frozen=True)
class Options:
    clients: list[int]
    seconds: float
    warmup_s: float
    approvers: int
    subscribers: int
    servers: int
    repeat: int
    log_level: str


def measure(
    admin_url: str, options: Options, log_dir: Path
) -> tuple[list[Row], list[Row], list[str], list[str]]:
    """Start the servers on a fresh database, measure; the unloaded rows, the level rows, notes
    on the event streams, and the problems seen."""
    with fresh_database("postgres", "load", admin_url=admin_url) as db:
        upgrade(db.engine_url)
        ports = [free_port() for _ in range(options.servers)]
        env = clean_env(
            AGENT_ENGINE_DATABASE_URL=db.engine_url,
            AGENT_ENGINE_AUTO_MIGRATE="false",
            AGENT_ENGINE_LOG_LEVEL=options.log_level,
        )

        def argv(index: int) -> list[str]:
            return ["agent_engine", "serve", "--host", "127.0.0.1", "--port", str(ports[index])]

        urls = [f"http://127.0.0.1:{port}" for port in ports]
        # Ready when /healthz answers: at log level warning no start-up line is written.
        with worker_processes(
            options.servers, argv, env=env, log_dir=log_dir, ready_marker=""
        ) as processes:
            asyncio.run(_wait_healthy(urls, processes))
            run_ids = asyncio.run(_seed(urls[0], SEED_RUNS))
            unloaded = asyncio.run(_unloaded(urls[0], run_ids, options.repeat, processes))
            rows: list[Row] = []
            problems = [
                f"unloaded {row.kind}: {row.errors} requests failed"
                for row in unloaded
                if row.errors
            ]
            notes: list[str] = []
            for clients in options.clients:
                level = Level(
                    clients,
                    options.approvers,
                    options.subscribers,
                    options.warmup_s,
                    options.seconds,
                )
                own_before = time.process_time()
                recorder = asyncio.run(
                    run_level(urls, level, run_ids, lambda: _cpu_seconds(processes))
                )
                own_s = time.process_time() - own_before
                own_wall_s = options.warmup_s + options.seconds
                cpu_s = recorder.cpu_s
                rows += level_rows(f"{clients} clients", recorder, options.seconds, cpu_s)
                problems += recorder.error_samples
                notes.append(
                    f"{clients} clients: {recorder.streams} event streams opened, "
                    f"{recorder.events} events received, "
                    f"{recorder.errors.get('stream', 0)} stream errors; servers "
                    f"{cpu_s / options.seconds:.0%} of a core, the load generator "
                    f"{own_s / own_wall_s:.0%}"
                )
                if recorder.streams == 0 and options.subscribers + options.approvers:
                    problems.append(f"{clients} clients: no event stream was opened")
            problems += [p for p in logged_problems(processes) if "GET /" not in p]
    return unloaded, rows, notes, problems


def _verdict(rows: Sequence[Row]) -> str:
    overall = [
        r for r in rows if r.kind == "all requests" and r.level == f"{TARGET_CLIENTS} clients"
    ]
    if not overall or overall[0].p99 is None:
        return f"target (p99 < {TARGET_P99_MS:.0f} ms at {TARGET_CLIENTS} clients): not measured"
    p99 = overall[0].p99
    met = "met" if p99 < TARGET_P99_MS else "missed"
    return f"target p99 < {TARGET_P99_MS:.0f} ms at {TARGET_CLIENTS} clients: {met} ({p99:.1f} ms)"


def _header(admin_url: str) -> list[str]:
    """What the figures were measured on: the code, the machine and how busy it was."""
    engine_src = Path(agent_engine.__file__).resolve().parent.parent
    own_src = Path(__file__).resolve().parent.parent / "src"
    code = source_state() if engine_src == own_src else f"agent_engine from {engine_src}"
    return [
        f"agent-engine {agent_engine.__version__} ({code}), Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs",
        f"PostgreSQL {postgres_version(admin_url)} on loopback",
        time.strftime("measured %Y-%m-%d %H:%M UTC", time.gmtime())
        + f", load average {os.getloadavg()[0]:.1f} at the start",
    ]


def main() -> None:
    """Parse the options, run the measurements, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="10,50,200", help="concurrency levels")
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("LOAD_SECONDS", 5)))
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each window")
    parser.add_argument("--approvers", type=int, default=2, help="gated runs approved in turn")
    parser.add_argument("--subscribers", type=int, default=10, help="SSE streams held open")
    parser.add_argument("--servers", type=int, default=1, help="serve processes (round robin)")
    parser.add_argument("--repeat", type=int, default=200, help="unloaded requests per kind")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["info", "warning"],
        help="the servers' AGENT_ENGINE_LOG_LEVEL (info, the default, logs every request)",
    )
    parser.add_argument("--postgres-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    problem = check_postgres(args.postgres_url)
    if problem is not None:
        raise SystemExit(problem)
    options = Options(
        clients=[int(c) for c in args.clients.split(",") if c.strip()],
        seconds=args.seconds,
        warmup_s=args.warmup,
        approvers=args.approvers,
        subscribers=args.subscribers,
        servers=args.servers,
        repeat=args.repeat,
        log_level=args.log_level,
    )
    header = _header(args.postgres_url)
    with tempfile.TemporaryDirectory(prefix="ae_load_") as log_dir:
        unloaded, rows, notes, problems = measure(args.postgres_url, options, Path(log_dir))
    print("\n".join(f"{'- ' if args.markdown else '  '}{line}" for line in header))
    print(f"{'- ' if args.markdown else '  '}load average {os.getloadavg()[0]:.1f} at the end")
    print_table("Unloaded: one request at a time", unloaded, markdown=args.markdown)
    title = (
        f"Mixed load, {options.servers} serve process(es), {options.seconds:g} s per level "
        f"(+ {options.approvers} approvers, {options.subscribers} SSE subscribers)"
    )
    print_table(title, rows, markdown=args.markdown)
    print()
    for note in notes:
        print(f"{'- ' if args.markdown else '  '}{note}")
    print(f"\n{_verdict(rows)}")
    if problems:
        print("\nProblems seen:")
        for line in problems:
            print(f"- {line}")
        raise SystemExit(1)
    print("No errors.")


if __name__ == "__main__":
    main()
