"""Percentiles and summaries of latency samples (no numpy: a handful of values per figure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0–100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    """p50, p95 and mean of a sample, in the sample's unit."""

    count: int
    p50: float | None
    p95: float | None
    mean: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        mean = sum(values) / len(values) if values else None
        return cls(len(values), percentile(values, 50), percentile(values, 95), mean)


@dataclass(frozen=True)
class StepTimeline:
    """When each step of one run started and completed (seconds on the wall clock)."""

    started: dict[int, float]
    completed: dict[int, float]


@dataclass(frozen=True)
class StepLatencies:
    """Per-step latencies (ms) of sequential runs: execution span, hand-over gap and cycle."""

    span_ms: list[float]  # a step's start → its completion (includes recording it)
    gap_ms: list[float]  # a step's completion → the next step's start (claiming the next)
    cycle_ms: list[float]  # a step's completion → the next step's completion

    @classmethod
    def of(cls, timelines: Sequence[StepTimeline]) -> StepLatencies:
        span: list[float] = []
        gap: list[float] = []
        cycle: list[float] = []
        for line in timelines:
            for number, done in sorted(line.completed.items()):
                if number in line.started:
                    span.append((done - line.started[number]) * 1000)
                previous = line.completed.get(number - 1)
                if previous is not None:
                    cycle.append((done - previous) * 1000)
                    if number in line.started:
                        gap.append((line.started[number] - previous) * 1000)
        return cls(span, gap, cycle)
