"""What each measurement returns; the same shapes for our engine and for DBOS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.sql_profile import StatementProfile
from bench.stats import StepLatencies


@dataclass(frozen=True)
class SequentialResult:
    """Runs of sequential no-op steps, one run at a time."""

    runs: int
    steps: int
    run_ms: list[float]  # submit → completion seen by the client
    latencies: StepLatencies
    profile: StatementProfile | None = None

    @property
    def per_step_ms(self) -> list[float]:
        """Engine overhead per step: each run's latency divided by its steps."""
        return [value / self.steps for value in self.run_ms]

    @classmethod
    def combined(cls, parts: Sequence[SequentialResult]) -> SequentialResult:
        """Rounds of the same workload as one sample (runs and latencies pooled)."""
        profiles = [part.profile for part in parts if part.profile is not None]
        return cls(
            runs=sum(part.runs for part in parts),
            steps=parts[0].steps,
            run_ms=[value for part in parts for value in part.run_ms],
            latencies=StepLatencies(
                [v for part in parts for v in part.latencies.span_ms],
                [v for part in parts for v in part.latencies.gap_ms],
                [v for part in parts for v in part.latencies.cycle_ms],
            ),
            profile=StatementProfile.combined(profiles) if profiles else None,
        )


@dataclass(frozen=True)
class ThroughputResult:
    """Many runs at once on ``workers`` processes."""

    workers: int
    concurrency: int
    runs: int
    steps: int
    wall_s: float | None  # first submission → all runs finished; None if they never did
    submit_s: float
    statuses: dict[str, int]
    problems: list[str] = field(default_factory=list)

    @property
    def steps_per_s(self) -> float | None:
        if self.wall_s is None or self.wall_s <= 0:
            return None
        return self.runs * self.steps / self.wall_s

    @classmethod
    def combined(cls, parts: Sequence[ThroughputResult]) -> ThroughputResult:
        """Rounds as one: all their steps over all their wall time (None if one never ended)."""
        walls = [part.wall_s for part in parts]
        statuses: dict[str, int] = {}
        for part in parts:
            for status, count in part.statuses.items():
                statuses[status] = statuses.get(status, 0) + count
        return cls(
            workers=parts[0].workers,
            concurrency=parts[0].concurrency,
            runs=sum(part.runs for part in parts),
            steps=parts[0].steps,
            wall_s=None if any(w is None for w in walls) else sum(w for w in walls if w),
            submit_s=sum(part.submit_s for part in parts),
            statuses=statuses,
            problems=[problem for part in parts for problem in part.problems],
        )


@dataclass(frozen=True)
class StreamResult:
    """Latency from a step's completion being recorded to a live client receiving it."""

    step_ms: list[float]  # one per completed step
    all_ms: list[float] = field(default_factory=list)  # every event (ours only)
    skipped: str | None = None
    problems: list[str] = field(default_factory=list)
