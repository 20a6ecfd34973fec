"""The cost of watching: our engine's per-step overhead on the sequential no-op workload with
tracing and Prometheus metrics both off, and both on, alternately, on one in-process worker.

"On" is what a production process does: every step observed in the metrics, and every run,
step and tool span exported by the SDK's BatchSpanProcessor over OTLP/HTTP to a loopback sink
that accepts ``POST /v1/traces`` in a process of its own, as a collector is
(``bench/trace_sink.py``: it counts the spans' requests and bytes, and keeps nothing).
The processor exports every 100 ms here (``OTEL_BSP_SCHEDULE_DELAY``; 5 s by default), so that
its encoding and sending happen during the timed runs, not in the flush after them. "Off" is
what a process does with tracing not set up and ``AGENT_ENGINE_METRICS_ENABLED=false``. The
two alternate in short rounds (each first in every other one): the machine's drift is larger
than the difference measured.

Target: on ≤ 1.10 × off per step (p50).

    python -m bench.watching [--runs 10] [--steps 20] [--rounds 8] [--postgres-url URL]
                             [--skip-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from agent_engine.engine.run_requests import CreateRunRequest
from agent_engine.storage.migrations import upgrade
from agent_engine.tracing import (
    RunTrace,
    end_step,
    new_run_trace,
    setup_tracing,
    shutdown_tracing,
    step_span,
)
from bench.databases import DEFAULT_ADMIN_URL, check_postgres, fresh_database
from bench.engine_harness import SEQUENTIAL_GOAL, noop_request, sequential, settings_for
from bench.results import SequentialResult
from bench.stats import Summary
from bench.trace_sink import sink_stats, trace_sink

TARGET_RATIO = 1.10
SCHEDULE_DELAY_MS = "100"


@dataclass(frozen=True)
class Watching:
    backend: str
    steps: int
    off: Summary
    on: Summary
    exports: int
    export_bytes: int
    span_us: float

    @property
    def ratio(self) -> float | None:
        if self.off.p50 is None or self.on.p50 is None or self.off.p50 == 0:
            return None
        return self.on.p50 / self.off.p50


def _round(url: str, endpoint: str | None, runs: int, steps: int) -> SequentialResult:
    """One round of the workload; ``endpoint``: watched (tracing to it, metrics on)."""
    if endpoint is not None:
        os.environ["OTEL_BSP_SCHEDULE_DELAY"] = SCHEDULE_DELAY_MS  # read by the processor
        setup_tracing("bench-watching", exporter=OTLPSpanExporter(endpoint=endpoint))
    settings = settings_for(url, metrics_enabled=endpoint is not None)

    def request_for(count: int) -> CreateRunRequest:
        return noop_request(SEQUENTIAL_GOAL, count)

    try:
        return asyncio.run(sequential(settings, request_for, runs=runs, steps=steps))
    finally:
        shutdown_tracing()  # flushes what the batch processor still holds


@dataclass(frozen=True)
class _Attempt:
    """What a step span names (as a claimed step does)."""

    run_id: uuid.UUID
    step_id: uuid.UUID
    step_number: int
    step_type: str
    attempt: int
    trace: RunTrace | None


@dataclass(frozen=True)
class _Result:
    error: None
    calls: tuple[()]


def span_cost_us(endpoint: str, spans: int = 2000) -> float:
    """What one step's span costs the step's own task (started, ended, handed to the batch
    processor exporting to ``endpoint``), in microseconds: the share of watching that the
    sequential figures are too noisy to resolve on a shared machine."""
    setup_tracing("bench-watching", exporter=OTLPSpanExporter(endpoint=endpoint))
    step = _Attempt(uuid.uuid4(), uuid.uuid4(), 1, "noop", 1, new_run_trace())
    result = _Result(None, ())
    try:
        started = time.perf_counter()
        for _ in range(spans):
            with step_span(step) as span:
                end_step(span, result)
        return (time.perf_counter() - started) / spans * 1e6
    finally:
        shutdown_tracing()


def measure(backend: str, admin_url: str, *, runs: int, steps: int, rounds: int) -> Watching:
    """``rounds`` alternations of off and on, ``runs`` runs each, on one fresh database."""
    off: list[float] = []
    on: list[float] = []
    with fresh_database(backend, "watching", admin_url=admin_url) as db, trace_sink() as sink:
        upgrade(db.engine_url)
        for number in range(rounds):
            # Each way goes first in every other round: neither gains from the database's drift.
            for endpoint in (None, sink) if number % 2 == 0 else (sink, None):
                figures = _round(db.engine_url, endpoint, runs, steps).per_step_ms
                (off if endpoint is None else on).extend(figures)
        span_us = span_cost_us(sink)
        exports, export_bytes = sink_stats(sink)
    return Watching(backend, steps, Summary.of(off), Summary.of(on), exports, export_bytes, span_us)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def report(figures: list[Watching]) -> None:
    """One row per backend and setting, and the ratio of on to off."""
    header = (
        f"{'backend':<9} {'tracing + metrics':<18} {'ms/step p50':>11} {'ms/step p95':>11} "
        f"{'on / off':>9}"
    )
    print(header)
    print("-" * len(header))
    for f in figures:
        ratio = "–" if f.ratio is None else f"{f.ratio:.3f}"
        for label, figure, shown in (("off", f.off, ""), ("on (OTLP/HTTP)", f.on, ratio)):
            print(
                f"{f.backend:<9} {label:<18} {_ms(figure.p50):>11} {_ms(figure.p95):>11} {shown:>9}"
            )
    print()
    for f in figures:
        met = f.ratio is not None and f.ratio <= TARGET_RATIO
        print(
            f"{f.backend}: {f.off.count} runs of {f.steps} no-op steps each way; watching costs "
            f"{_ms((f.on.p50 or 0) - (f.off.p50 or 0))} ms per step (target on <= "
            f"{TARGET_RATIO:.2f} x off: {'met' if met else 'NOT met'}); the sink took "
            f"{f.exports} exports ({f.export_bytes} bytes of spans). A step's span costs its "
            f"task {f.span_us:.0f} us, {f.span_us / 10 / (f.off.p50 or 1):.1f} % of an unwatched "
            "step."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="measured runs per round and way")
    parser.add_argument("--steps", type=int, default=20, help="no-op steps per run")
    parser.add_argument("--rounds", type=int, default=8, help="alternations of off and on")
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
            backends.insert(0, "postgres")
        else:
            print(f"skipping PostgreSQL: {problem}")
    figures = [
        measure(b, args.postgres_url, runs=args.runs, steps=args.steps, rounds=args.rounds)
        for b in backends
    ]
    report(figures)


if __name__ == "__main__":
    main()
