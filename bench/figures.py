"""Turning measurements into the figures the report prints: one value for our engine, one for
DBOS (or, in one section, LangGraph) measured in the same invocation, and their ratio."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bench.results import SequentialResult, StreamResult, ThroughputResult
from bench.stats import Summary


@dataclass(frozen=True)
class Figure:
    backend: str
    metric: str
    unit: str
    ours: float | None
    dbos: float | None
    higher_is_better: bool = False

    @property
    def ratio(self) -> float | None:
        """Ours divided by DBOS's."""
        if self.ours is None or not self.dbos:
            return None
        return self.ours / self.dbos

    @property
    def verdict(self) -> str:
        ratio = self.ratio
        if ratio is None:
            return ""
        if 0.95 <= ratio <= 1.05:
            return "on par"
        better = ratio > 1 if self.higher_is_better else ratio < 1
        factor = ratio if ratio > 1 else 1 / ratio
        return f"{factor:.1f}× {'better' if better else 'worse'}"


@dataclass
class Section:
    title: str
    notes: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    other: str = "DBOS"  # the system the figures compare us with


@dataclass
class BackendResults:
    """Everything measured on one backend; DBOS's half is None when skipped or failed."""

    backend: str
    sequential: tuple[SequentialResult | None, SequentialResult | None] = (None, None)
    throughput: dict[int, tuple[ThroughputResult | None, ThroughputResult | None]] = field(
        default_factory=dict
    )
    stream: tuple[StreamResult | None, StreamResult | None] = (None, None)
    langgraph: SequentialResult | None = None  # the sequential workload (PostgreSQL only)
    analyze: SequentialResult | None = None  # the sequential workload of analyze steps (ours)


def _pick(
    pair: tuple[SequentialResult | None, SequentialResult | None],
    read: Callable[[SequentialResult], float | None],
) -> tuple[float | None, float | None]:
    ours, dbos = pair
    return (read(ours) if ours else None, read(dbos) if dbos else None)


_SEQUENTIAL_METRICS: list[tuple[str, Callable[[SequentialResult], float | None]]] = [
    ("per-step overhead p50", lambda r: Summary.of(r.per_step_ms).p50),
    ("run latency p50", lambda r: Summary.of(r.run_ms).p50),
    ("run latency p95", lambda r: Summary.of(r.run_ms).p95),
    ("step cycle p50", lambda r: Summary.of(r.latencies.cycle_ms).p50),
    ("step cycle p95", lambda r: Summary.of(r.latencies.cycle_ms).p95),
    ("step span p50", lambda r: Summary.of(r.latencies.span_ms).p50),
    ("step span p95", lambda r: Summary.of(r.latencies.span_ms).p95),
    ("hand-over gap p50", lambda r: Summary.of(r.latencies.gap_ms).p50),
    ("hand-over gap p95", lambda r: Summary.of(r.latencies.gap_ms).p95),
]


def sequential_section(results: list[BackendResults], runs: int, steps: int) -> Section:
    section = Section(
        f"Sequential: {runs} runs × {steps} no-op steps, one run at a time, one in-process worker",
        notes=[
            "run latency: submit → completion seen by the client; per-step overhead: run latency "
            "÷ steps; step cycle: a step's completion → the next step's completion; step span: "
            "a step's start → its completion; hand-over gap: a step's completion → the next "
            "step's start.",
            "Step times come from our audit log (µs) and from DBOS's operation_outputs "
            "(ms resolution: DBOS values below 1 ms show as 0 and get no ratio).",
        ],
    )
    for result in results:
        for metric, read in _SEQUENTIAL_METRICS:
            ours, dbos = _pick(result.sequential, read)
            section.figures.append(Figure(result.backend, metric, "ms", ours, dbos))
    return section


_LANGGRAPH_METRICS = _SEQUENTIAL_METRICS[:3]  # LangGraph's steps keep no times of their own


def langgraph_section(results: list[BackendResults], runs: int, steps: int) -> Section | None:
    """Ours against LangGraph on the sequential workload (None when LangGraph was not run)."""
    measured = [r for r in results if r.langgraph is not None]
    if not measured:
        return None
    section = Section(
        f"Sequential against LangGraph: {runs} runs × {steps} no-op steps",
        notes=[
            "LangGraph: a StateGraph of no-op nodes in a chain, PostgresSaver checkpointer, "
            'invoke(..., durability="sync"): each node\'s checkpoint commits before the next '
            "node runs. Measured in the same rounds as ours (our figures as in the table above).",
        ],
        other="LangGraph",
    )
    for result in measured:
        for metric, read in _LANGGRAPH_METRICS:
            ours, theirs = _pick((result.sequential[0], result.langgraph), read)
            section.figures.append(Figure(result.backend, metric, "ms", ours, theirs))
    return section


def throughput_section(
    results: list[BackendResults], runs: int, steps: int, concurrency: int, rounds: int = 1
) -> Section:
    section = Section(
        f"Throughput: {runs} runs × {steps} steps submitted at once, worker processes with "
        f"concurrency {concurrency} each",
        notes=[
            "steps/s = total steps ÷ (first submission → last run finished)"
            + (f", over {rounds} rounds." if rounds > 1 else ".")
        ],
    )
    for result in results:
        for workers, (ours, dbos) in sorted(result.throughput.items()):
            section.figures.append(
                Figure(
                    result.backend,
                    f"{workers} worker process{'es' if workers > 1 else ''}",
                    "steps/s",
                    ours.steps_per_s if ours else None,
                    dbos.steps_per_s if dbos else None,
                    higher_is_better=True,
                )
            )
    return section


def stream_section(results: list[BackendResults], runs: int, steps: int) -> Section:
    section = Section(
        f"Live progress: {runs} runs × {steps} steps, latency from a step's completion being "
        "recorded to a client receiving it",
        notes=[
            "Ours: GET /v1/agent-runs/{id}/events (SSE) from `agent-engine serve` with its "
            "embedded worker, measured against the event's created_at. DBOS: a stream written "
            "after each step, read with DBOSClient.read_stream from another process.",
        ],
    )
    for result in results:
        ours, dbos = result.stream
        if ours is not None and ours.skipped:
            section.notes.append(f"{result.backend}: {ours.skipped}")
        for label, q in (("p50", 50), ("p95", 95)):
            section.figures.append(
                Figure(
                    result.backend,
                    f"step event latency {label}",
                    "ms",
                    _quantile(ours, q),
                    _quantile(dbos, q),
                )
            )
    return section


def _quantile(result: StreamResult | None, q: int) -> float | None:
    if result is None or not result.step_ms:
        return None
    summary = Summary.of(result.step_ms)
    return summary.p50 if q == 50 else summary.p95
