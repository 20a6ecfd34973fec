"""The process's own Prometheus metrics: counters and histograms observed where things happen.

Each process (API server, `agent-engine worker`) counts what it did in its own registry and
serves it on its own endpoint (the API's ``/metrics``; a worker's port given by
``AGENT_ENGINE_METRICS_PORT``); Prometheus sums the processes. What the database knows (runs by
status, approvals waiting, workers alive) is not counted here: ``engine/metrics_report.py``
reads it at scrape time. Observing is a few dictionary look-ups and additions, no I/O, so the
hot path pays almost nothing for it.
"""

from __future__ import annotations

from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# Seconds: a no-op step takes milliseconds; a model call or a command may take minutes.
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

STEPS = Counter(
    "agent_engine_steps",
    "Steps executed and recorded by this process, by step type and outcome.",
    ["step_type", "status"],
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "agent_engine_step_duration_seconds",
    "How long a step's executor ran, by step type.",
    ["step_type"],
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "agent_engine_step_queue_wait_seconds",
    "From the moment a step could be claimed to its claim, by step type.",
    ["step_type"],
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
MODEL_TOKENS = Counter(
    "agent_engine_model_tokens",
    "Tokens of recorded model calls, by provider, model and direction (input/output).",
    ["provider", "model", "direction"],
    registry=REGISTRY,
)
MODEL_COST = Counter(
    "agent_engine_model_cost_usd",
    "USD cost of recorded model calls (assumed prices included), by provider and model.",
    ["provider", "model"],
    registry=REGISTRY,
)
MODEL_CALLS = Counter(
    "agent_engine_model_calls",
    "Recorded model calls, by provider and model.",
    ["provider", "model"],
    registry=REGISTRY,
)
BUDGET_RESERVATIONS = Counter(
    "agent_engine_budget_reservations",
    "Budget holds taken before model calls.",
    registry=REGISTRY,
)
BUDGET_REFUSALS = Counter(
    "agent_engine_budget_refusals",
    "Model calls refused because a budget had no room for their hold.",
    registry=REGISTRY,
)
LEASE_EXPIRIES = Counter(
    "agent_engine_lease_expiries",
    "Running steps taken back because their worker stopped heartbeating.",
    registry=REGISTRY,
)
HAND_BACKS = Counter(
    "agent_engine_hand_backs",
    "Unfinished steps a stopping worker handed back for another to take.",
    registry=REGISTRY,
)
NOTIFICATION_RECONNECTS = Counter(
    "agent_engine_notification_reconnects",
    "Times the LISTEN connection dropped and was re-opened (PostgreSQL).",
    registry=REGISTRY,
)


class _Observing:
    """Whether this process observes its metrics (``AGENT_ENGINE_METRICS_ENABLED``)."""

    on = True


def set_observing(on: bool) -> None:
    """Turn the per-step observations below on or off for this process."""
    _Observing.on = on


def observe_step(step_type: str, failed: bool, latency_ms: float) -> None:
    """Count a step whose result was recorded, and how long its executor ran."""
    if not _Observing.on:
        return
    STEPS.labels(step_type, "failed" if failed else "completed").inc()
    STEP_DURATION.labels(step_type).observe(latency_ms / 1000)


def observe_queue_wait(step_type: str, seconds: float) -> None:
    """A step was claimed ``seconds`` after it could first be (never negative)."""
    if not _Observing.on:
        return
    QUEUE_WAIT.labels(step_type).observe(max(seconds, 0.0))


def observe_model_call(
    provider: str, model: str, *, input_tokens: int, output_tokens: int, cost_usd: Decimal | None
) -> None:
    """Count a recorded model call's tokens and cost (Prometheus values are floats: the exact
    figures stay in the ledger)."""
    if not _Observing.on:
        return
    MODEL_CALLS.labels(provider, model).inc()
    MODEL_TOKENS.labels(provider, model, "input").inc(input_tokens)
    MODEL_TOKENS.labels(provider, model, "output").inc(output_tokens)
    MODEL_COST.labels(provider, model).inc(float(cost_usd or 0))
