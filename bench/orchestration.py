"""The orchestration benchmark: our engine's per-step overhead, throughput and live-event latency
on PostgreSQL and SQLite, next to DBOS Transact running the same workloads.

``python -m bench.orchestration --help``; ``--markdown`` prints tables for the README.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from bench import analyze_harness, engine_harness, sse_harness
from bench.analyze_figures import analyze_tables
from bench.databases import (
    BACKENDS,
    DEFAULT_ADMIN_URL,
    BenchDatabase,
    check_postgres,
    fresh_database,
)
from bench.environment import dbos_module, environment, langgraph_module
from bench.figures import (
    BackendResults,
    langgraph_section,
    sequential_section,
    stream_section,
    throughput_section,
)
from bench.model_server import ModelServer
from bench.report import ProfileReport, Reporter
from bench.results import SequentialResult, ThroughputResult

T = TypeVar("T")
# What a failed measurement may raise; it is reported and the benchmark goes on.
MEASUREMENT_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,
    TimeoutError,
    OSError,
    SQLAlchemyError,
    httpx.HTTPError,
)


def _int_list(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item.strip()]


def _backend_list(text: str) -> list[str]:
    names = [item.strip() for item in text.split(",") if item.strip()]
    unknown = set(names) - set(BACKENDS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown backend(s) {sorted(unknown)}; use {BACKENDS}")
    return names


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.orchestration",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--backends", type=_backend_list, default=list(BACKENDS))
    parser.add_argument("--workers", type=_int_list, default=[1, 2, 4], help="processes")
    parser.add_argument("--concurrency", type=int, default=8, help="steps/workflows per process")
    parser.add_argument("--sequential-runs", type=int, default=40)
    parser.add_argument("--sequential-steps", type=int, default=20)
    parser.add_argument("--fanout-runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10, help="steps per fan-out run")
    parser.add_argument("--sse-runs", type=int, default=5)
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="sequential and throughput measurements alternate between us and DBOS this many "
        "times (the order flips each round) and are pooled: a machine whose speed drifts "
        "during the run then weighs on both sides alike",
    )
    parser.add_argument("--skip-dbos", action="store_true", help="measure our engine only")
    parser.add_argument(
        "--skip-langgraph",
        action="store_true",
        help="leave out the LangGraph reference (sequential workload, PostgreSQL)",
    )
    parser.add_argument(
        "--skip-analyze",
        action="store_true",
        help="leave out the sequential workload of model-calling (analyze) steps",
    )
    parser.add_argument("--skip-sse", action="store_true")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("AGENT_ENGINE_BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL),
        help="admin connection; a database ae_bench_<pid>_<label> is made per measurement",
    )
    parser.add_argument(
        "--dbos-poll-s",
        type=float,
        default=0.05,
        help="DBOS queue polling interval, and stream polling on SQLite (DBOS default: 1.0)",
    )
    parser.add_argument(
        "--dbos-stock-sqlite",
        action="store_true",
        help="keep DBOS's SQLite defaults (rollback journal, synchronous=FULL)",
    )
    parser.add_argument("--log-dir", type=Path, help="keep worker logs here (default: temp)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    return parser.parse_args(argv)


@dataclass
class Bench:
    """One invocation: the options, where progress goes and the problems seen so far."""

    args: argparse.Namespace
    progress: Console
    log_dir: Path
    problems: list[str]
    errors: tuple[type[BaseException], ...] = MEASUREMENT_ERRORS
    model_server: ModelServer | None = None  # None: the analyze workload is skipped

    def measure(self, label: str, action: Callable[[], T]) -> T | None:
        """Run one measurement, logging its duration; a failure is recorded, not raised."""
        started = time.perf_counter()
        self.progress.print(f"[dim]… {label}[/]")
        try:
            result = action()
        except self.errors as exc:
            self.problems.append(f"{label}: {type(exc).__name__}: {exc}")
            self.progress.print(f"[red]✗ {label}: {type(exc).__name__}: {exc}[/]")
            return None
        self.progress.print(f"[green]✓[/] {label} ({time.perf_counter() - started:.1f}s)")
        for problem in getattr(result, "problems", []) or []:
            self.problems.append(f"{label}: {problem}")
        return result

    def in_database(
        self, backend: str, label: str, action: Callable[[BenchDatabase], T]
    ) -> Callable[[], T]:
        """``action`` run on a fresh database made for it."""

        def run() -> T:
            with fresh_database(backend, label, admin_url=self.args.postgres_url) as db:
                return action(db)

        return run


def _run_backend(bench: Bench, backend: str) -> BackendResults:
    args = bench.args
    dbos = None if args.skip_dbos else dbos_module()
    result = BackendResults(backend)
    rounds = max(1, args.rounds)
    per_round = max(1, -(-args.sequential_runs // rounds))
    seq_steps = args.sequential_steps

    def ours_seq(db: BenchDatabase) -> SequentialResult:
        return engine_harness.measure_sequential(db, runs=per_round, steps=seq_steps)

    def dbos_seq(db: BenchDatabase) -> SequentialResult:
        assert dbos is not None
        measured: SequentialResult = dbos.measure_sequential(
            db, runs=per_round, steps=seq_steps, stock_sqlite=args.dbos_stock_sqlite
        )
        return measured

    langgraph = langgraph_module() if backend == "postgres" and not args.skip_langgraph else None

    def langgraph_seq(db: BenchDatabase) -> SequentialResult:
        assert langgraph is not None
        measured: SequentialResult = langgraph.measure_sequential(
            db, runs=per_round, steps=seq_steps
        )
        return measured

    server = bench.model_server

    def analyze_seq(db: BenchDatabase) -> SequentialResult:
        assert server is not None
        return analyze_harness.measure_sequential_analyze(
            db, server, runs=per_round, steps=seq_steps
        )

    ours_side, analyze_side, dbos_side, langgraph_side = _alternate(
        bench,
        rounds,
        [
            (f"{backend}: sequential, ours", bench.in_database(backend, "seq", ours_seq)),
            None
            if server is None
            else (
                f"{backend}: sequential analyze steps, ours",
                bench.in_database(backend, "analyze_seq", analyze_seq),
            ),
            None
            if dbos is None
            else (
                f"{backend}: sequential, DBOS",
                bench.in_database(backend, "dbos_seq", dbos_seq),
            ),
            None
            if langgraph is None
            else (
                f"{backend}: sequential, LangGraph",
                bench.in_database(backend, "langgraph_seq", langgraph_seq),
            ),
        ],
        combine=SequentialResult.combined,
    )
    result.sequential = (ours_side, dbos_side)
    result.langgraph = langgraph_side
    result.analyze = analyze_side
    for workers in args.workers:
        result.throughput[workers] = _throughput(bench, backend, workers, dbos, rounds)
    if not args.skip_sse:
        result.stream = _stream(bench, backend, dbos)
    return result


def _alternate(
    bench: Bench,
    rounds: int,
    sides: list[tuple[str, Callable[[], T]] | None],
    *,
    combine: Callable[[Sequence[T]], T],
) -> list[T | None]:
    """Each side ``rounds`` times, alternating (the order reversed every other round), pooled
    per side; a side that is None (skipped) stays None."""
    pooled: list[list[T]] = [[] for _ in sides]
    for number in range(rounds):
        order = list(range(len(sides)))
        if number % 2:
            order.reverse()
        for index in order:
            side = sides[index]
            if side is None:
                continue
            label, action = side
            measured = bench.measure(f"{label} (round {number + 1}/{rounds})", action)
            if measured is not None:
                pooled[index].append(measured)
    return [combine(results) if results else None for results in pooled]


def _throughput(
    bench: Bench, backend: str, workers: int, dbos: Any, rounds: int
) -> tuple[Any, Any]:
    args = bench.args
    common = {
        "workers": workers,
        "concurrency": args.concurrency,
        "runs": args.fanout_runs,
        "steps": args.steps,
        "log_dir": bench.log_dir,
    }

    def ours(db: BenchDatabase) -> ThroughputResult:
        return engine_harness.measure_throughput(db, **common)

    def theirs(db: BenchDatabase) -> ThroughputResult:
        measured: ThroughputResult = dbos.measure_throughput(
            db, poll_s=args.dbos_poll_s, stock_sqlite=args.dbos_stock_sqlite, **common
        )
        return measured

    label = f"{backend}: throughput, {workers} worker(s)"
    mine, others = _alternate(
        bench,
        rounds,
        [
            (f"{label}, ours", bench.in_database(backend, f"tp{workers}", ours)),
            None
            if dbos is None
            else (f"{label}, DBOS", bench.in_database(backend, f"dbos_tp{workers}", theirs)),
        ],
        combine=ThroughputResult.combined,
    )
    return mine, others


def _stream(bench: Bench, backend: str, dbos: Any) -> tuple[Any, Any]:
    args = bench.args
    shape = {"runs": args.sse_runs, "steps": args.sequential_steps, "log_dir": bench.log_dir}
    ours = bench.measure(
        f"{backend}: live events (SSE), ours",
        bench.in_database(backend, "sse", lambda db: sse_harness.measure_sse(db, **shape)),
    )
    theirs = None
    if dbos is not None:
        theirs = bench.measure(
            f"{backend}: live events (stream), DBOS",
            bench.in_database(
                backend,
                "dbos_stream",
                lambda db: dbos.measure_stream(
                    db, poll_s=args.dbos_poll_s, stock_sqlite=args.dbos_stock_sqlite, **shape
                ),
            ),
        )
    return ours, theirs


def _report(
    reporter: Reporter, bench: Bench, results: list[BackendResults], header: list[str]
) -> None:
    args = bench.args
    reporter.header(header)
    rounds = max(1, args.rounds)
    per_round = max(1, -(-args.sequential_runs // rounds))
    reporter.section(sequential_section(results, per_round * rounds, args.sequential_steps))
    for table in analyze_tables(results, per_round * rounds, args.sequential_steps):
        reporter.table(table)
    against_langgraph = langgraph_section(results, per_round * rounds, args.sequential_steps)
    if against_langgraph is not None:
        reporter.section(against_langgraph)
    reporter.section(
        throughput_section(results, args.fanout_runs, args.steps, args.concurrency, rounds)
    )
    if not args.skip_sse:
        reporter.section(stream_section(results, args.sse_runs, args.sequential_steps))
    for result in results:
        for workload, measured in (("no-op", result.sequential[0]), ("analyze", result.analyze)):
            if measured is not None and measured.profile is not None:
                steps = measured.runs * measured.steps
                reporter.statements(
                    ProfileReport(result.backend, measured.profile, steps, measured.runs, workload)
                )
    reporter.problems(bench.problems)


@contextmanager
def _model_server(args: argparse.Namespace) -> Iterator[ModelServer | None]:
    """The benchmark's model server for the analyze workload, unless it is skipped."""
    if args.skip_analyze:
        yield None
        return
    with ModelServer().running() as server:
        yield server


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    progress = Console(stderr=True)
    backends = list(args.backends)
    problems: list[str] = []
    if "postgres" in backends:
        reason = check_postgres(args.postgres_url)
        if reason is not None:
            problems.append(f"PostgreSQL skipped: {reason}")
            backends.remove("postgres")
    with tempfile.TemporaryDirectory(prefix="ae_bench_logs_") as temporary:
        log_dir = args.log_dir or Path(temporary)
        log_dir.mkdir(parents=True, exist_ok=True)
        errors = MEASUREMENT_ERRORS
        if not args.skip_dbos:
            errors = (*errors, *dbos_module().ERRORS)
        langgraph = None if args.skip_langgraph else langgraph_module()
        if langgraph is not None:
            errors = (*errors, *langgraph.ERRORS)
        with _model_server(args) as server:
            bench = Bench(args, progress, log_dir, problems, errors, server)
            header = environment(args, backends, server.base_url if server else None)
            started = time.perf_counter()
            results = [_run_backend(bench, backend) for backend in backends]
            header.append(f"benchmark took {time.perf_counter() - started:.0f}s")
        reporter = Reporter(Console(soft_wrap=args.markdown), markdown=args.markdown)
        _report(reporter, bench, results, header)


if __name__ == "__main__":
    main()
