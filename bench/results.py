"""What each measurement returns; the same shapes for our engine and for DBOS."""

from __future__ import annotations

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


@dataclass(frozen=True)
class StreamResult:
    """Latency from a step's completion being recorded to a live client receiving it."""

    step_ms: list[float]  # one per completed step
    all_ms: list[float] = field(default_factory=list)  # every event (ours only)
    skipped: str | None = None
    problems: list[str] = field(default_factory=list)
