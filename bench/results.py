"""What each measurement returns; the same shapes for our engine and for DBOS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from bench.sql_profile import StatementProfile
from bench.stats import StepLatencies, Summary


@dataclass(frozen=True)
class RoundTrips:
    """Client-side times (ms) of bare httpx requests to the benchmark's model server: on one
    reused client (a kept-alive connection) and on a fresh client per request."""

    reused_ms: list[float]
    fresh_ms: list[float]

    @property
    def reused_mean_ms(self) -> float | None:
        return Summary.of(self.reused_ms).mean

    @property
    def fresh_mean_ms(self) -> float | None:
        return Summary.of(self.fresh_ms).mean


@dataclass(frozen=True)
class Check:
    """One thing the model-calling workload must have left behind, and whether it did."""

    name: str
    value: str
    expected: str
    ok: bool


@dataclass(frozen=True)
class ModelCallFacts:
    """What the model-calling workload left behind (warm-up run included), to check that every
    step made exactly one call and that the ledger and the runs' cost roll-up agree."""

    steps: int  # completed steps in the measurement's database
    server_answered: int  # chat completions the model server answered meanwhile
    server_refused: int
    handler_s: float  # time spent inside the server's handler
    llm_call_rows: int
    steps_with_a_call: int
    priced_rows: int
    ledger_cost_usd: Decimal
    run_cost_usd: Decimal  # the runs' total_cost_usd
    ledger_tokens: int
    run_tokens: int
    round_trips: RoundTrips

    @property
    def handler_mean_ms(self) -> float | None:
        return self.handler_s * 1000 / self.server_answered if self.server_answered else None

    def checks(self) -> list[Check]:
        """One priced call per step, answered by the server, rolled up into the runs."""
        per_step = f"{self.steps} (one per step)"
        return [
            Check(
                "requests the model server answered",
                str(self.server_answered),
                per_step,
                self.server_answered == self.steps,
            ),
            Check("requests it refused", str(self.server_refused), "0", self.server_refused == 0),
            Check(
                "llm_calls rows",
                str(self.llm_call_rows),
                per_step,
                self.llm_call_rows == self.steps,
            ),
            Check(
                "steps with an llm_calls row",
                str(self.steps_with_a_call),
                str(self.steps),
                self.steps_with_a_call == self.steps,
            ),
            Check(
                "priced calls",
                str(self.priced_rows),
                str(self.llm_call_rows),
                self.priced_rows == self.llm_call_rows,
            ),
            Check(
                "runs' total_cost_usd (USD)",
                format(self.run_cost_usd, "f"),
                f"{format(self.ledger_cost_usd, 'f')} (the ledger's sum)",
                self.run_cost_usd == self.ledger_cost_usd,
            ),
            Check(
                "runs' input + output tokens",
                str(self.run_tokens),
                f"{self.ledger_tokens} (the ledger's sum)",
                self.run_tokens == self.ledger_tokens,
            ),
        ]

    @property
    def problems(self) -> list[str]:
        """Each check that failed, in words."""
        return [
            f"{check.name}: {check.value}, expected {check.expected} ({self.steps} analyze steps)"
            for check in self.checks()
            if not check.ok
        ]

    @classmethod
    def combined(cls, parts: Sequence[ModelCallFacts]) -> ModelCallFacts:
        return cls(
            steps=sum(p.steps for p in parts),
            server_answered=sum(p.server_answered for p in parts),
            server_refused=sum(p.server_refused for p in parts),
            handler_s=sum(p.handler_s for p in parts),
            llm_call_rows=sum(p.llm_call_rows for p in parts),
            steps_with_a_call=sum(p.steps_with_a_call for p in parts),
            priced_rows=sum(p.priced_rows for p in parts),
            ledger_cost_usd=sum((p.ledger_cost_usd for p in parts), Decimal(0)),
            run_cost_usd=sum((p.run_cost_usd for p in parts), Decimal(0)),
            ledger_tokens=sum(p.ledger_tokens for p in parts),
            run_tokens=sum(p.run_tokens for p in parts),
            round_trips=RoundTrips(
                [v for p in parts for v in p.round_trips.reused_ms],
                [v for p in parts for v in p.round_trips.fresh_ms],
            ),
        )


@dataclass(frozen=True)
class SequentialResult:
    """Runs of sequential steps (no-op, or model-calling with ``model_calls``), one at a time."""

    runs: int
    steps: int
    run_ms: list[float]  # submit → completion seen by the client
    latencies: StepLatencies
    profile: StatementProfile | None = None
    model_calls: ModelCallFacts | None = None

    @property
    def problems(self) -> list[str]:
        return self.model_calls.problems if self.model_calls is not None else []

    @property
    def per_step_ms(self) -> list[float]:
        """Engine overhead per step: each run's latency divided by its steps."""
        return [value / self.steps for value in self.run_ms]

    @classmethod
    def combined(cls, parts: Sequence[SequentialResult]) -> SequentialResult:
        """Rounds of the same workload as one sample (runs and latencies pooled)."""
        profiles = [part.profile for part in parts if part.profile is not None]
        calls = [part.model_calls for part in parts if part.model_calls is not None]
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
            model_calls=ModelCallFacts.combined(calls) if calls else None,
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
