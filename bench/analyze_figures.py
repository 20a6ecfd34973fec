"""The analyze workload against the no-op one: what a model-calling step costs the engine beyond a
no-op step, per backend, set against the target, and the checks that every step made one call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bench.figures import BackendResults
from bench.results import ModelCallFacts, SequentialResult
from bench.stats import Summary

TARGET_MS = 1.0
TARGET = (
    f"target: a model-calling step costs the engine at most {TARGET_MS:g} ms more than a no-op "
    "step (its ledger row, its cost roll-up)"
)


@dataclass(frozen=True)
class TextTable:
    """A table already in words: a title, its headers, its rows, and notes printed below it."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) < 100:
        return f"{round(value, 2) + 0.0:.2f}"  # + 0.0: no "-0.00" for a difference of nothing
    return f"{value:,.0f}"


def _met(value: float | None) -> str:
    if value is None:
        return "–"
    return "yes" if value <= TARGET_MS else f"no (+{_ms(value - TARGET_MS)} ms over)"


def _minus(left: float | None, right: float | None) -> float | None:
    return None if left is None or right is None else left - right


def _per_step_p50(result: SequentialResult) -> float | None:
    return Summary.of(result.per_step_ms).p50


@dataclass(frozen=True)
class _Pair:
    backend: str
    noop: SequentialResult | None
    analyze: SequentialResult
    facts: ModelCallFacts

    @property
    def difference_ms(self) -> float | None:
        noop = _per_step_p50(self.noop) if self.noop is not None else None
        return _minus(_per_step_p50(self.analyze), noop)


def _pairs(results: list[BackendResults]) -> list[_Pair]:
    return [
        _Pair(r.backend, r.sequential[0], r.analyze, r.analyze.model_calls)
        for r in results
        if r.analyze is not None and r.analyze.model_calls is not None
    ]


def _headline(pairs: list[_Pair], runs: int, steps: int) -> TextTable:
    rows = []
    for pair in pairs:
        round_trip = pair.facts.round_trips.reused_mean_ms
        net = _minus(pair.difference_ms, round_trip)
        noop = _per_step_p50(pair.noop) if pair.noop is not None else None
        rows += [
            [pair.backend, "no-op step: per-step overhead p50", _ms(noop), ""],
            [
                pair.backend,
                "analyze step: per-step overhead p50",
                _ms(_per_step_p50(pair.analyze)),
                "",
            ],
            [pair.backend, "analyze − no-op", _ms(pair.difference_ms), _met(pair.difference_ms)],
            [pair.backend, "bare round trip to the model server, mean", _ms(round_trip), ""],
            [pair.backend, "analyze − no-op − bare round trip", _ms(net), _met(net)],
        ]
    return TextTable(
        f"Sequential, model-calling steps: {runs} runs × {steps} analyze steps against the no-op "
        "runs above",
        ["backend", "metric", "ms per step", f"≤ {TARGET_MS:g} ms?"],
        rows,
        [
            TARGET + ".",
            "Every analyze step makes one Chat Completions call to the benchmark's own model "
            "server on loopback, which answers at once with a fixed reply and usage; the engine "
            "routes it, prices it, writes its llm_calls row and adds its cost to the step and the "
            "run. Per-step overhead = run latency ÷ steps, as for the no-op runs (measured in the "
            "same rounds, alternating). Bare round trip: the mean client-side time of a plain "
            "httpx POST to the same server on one kept-alive client, measured in the same process "
            "just before each analyze measurement: what any client pays for the call itself.",
        ],
    )


_SPLIT: list[tuple[str, Callable[[SequentialResult], list[float]]]] = [
    ("step span p50", lambda r: r.latencies.span_ms),
    ("hand-over gap p50", lambda r: r.latencies.gap_ms),
    ("step cycle p50", lambda r: r.latencies.cycle_ms),
]


def _split(pairs: list[_Pair]) -> TextTable:
    rows = []
    for pair in pairs:
        for metric, read in _SPLIT:
            noop = Summary.of(read(pair.noop)).p50 if pair.noop is not None else None
            analyze = Summary.of(read(pair.analyze)).p50
            rows.append(
                [
                    pair.backend,
                    f"{metric} (ms)",
                    _ms(noop),
                    _ms(analyze),
                    _ms(_minus(analyze, noop)),
                ]
            )
        info = [
            (
                "bare round trip, fresh client per request, mean",
                pair.facts.round_trips.fresh_mean_ms,
            ),
            ("model server's own time per request, mean", pair.facts.handler_mean_ms),
        ]
        rows += [[pair.backend, f"{name} (ms)", "–", _ms(value), "–"] for name, value in info]
    return TextTable(
        "Where a model-calling step's time goes",
        ["backend", "metric", "no-op", "analyze", "analyze − no-op"],
        rows,
        [
            "Step span (start → completion, from the audit log) holds the model call, its pricing "
            "and the write that records it with its llm_calls row; the hand-over gap (completion "
            "→ the next step's start) the hand-over to the next step. A fresh httpx client per "
            "request (a new connection, and the SSL context httpx builds for every client) is "
            "what a call costs when no client is kept between calls. The server's own time runs "
            "from the request body's arrival to the response being handed to the socket.",
        ],
    )


def _check_rows(backend: str, facts: ModelCallFacts) -> list[list[str]]:
    rows = [[backend, "analyze steps completed", str(facts.steps), "", ""]]
    for check in facts.checks():
        verdict = "ok" if check.ok else "MISMATCH"
        rows.append([backend, check.name, check.value, check.expected, verdict])
    return rows


def _checks(pairs: list[_Pair]) -> TextTable:
    return TextTable(
        "Model calls of the analyze runs, checked (warm-up runs included)",
        ["backend", "check", "value", "expected", "ok?"],
        [row for pair in pairs for row in _check_rows(pair.backend, pair.facts)],
    )


def analyze_tables(results: list[BackendResults], runs: int, steps: int) -> list[TextTable]:
    """The analyze workload's tables (none when it was skipped or failed everywhere)."""
    pairs = _pairs(results)
    if not pairs:
        return []
    return [_headline(pairs, runs, steps), _split(pairs), _checks(pairs)]
