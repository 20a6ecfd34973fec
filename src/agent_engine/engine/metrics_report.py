"""The metrics page: this process's counters and histograms, and what the database knows,
read at scrape time in a few indexed queries (unfinished runs, approvals waiting, workers
alive, steps in flight). Never a scan of the runs' history: finished runs are not counted here
(``agent_engine_steps_total`` and the cost counters say what was done)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent_engine.domain.clock import utcnow
from agent_engine.domain.states import RUN_OVER_STATES, RunStatus
from agent_engine.engine.context import EngineContext
from agent_engine.metrics import REGISTRY
from agent_engine.storage.database import read_transaction
from agent_engine.storage.workers import (
    approvals_waiting_txn,
    count_alive_workers_txn,
    runs_by_status_txn,
    steps_in_flight_txn,
)


class _Found(Collector):
    """Metric families already read from the database, handed to prometheus-client's writer."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        """The families read at this scrape."""
        return iter(self._families)


async def database_families(ctx: EngineContext) -> list[Metric]:
    """The gauges the database answers, as of now (one read transaction)."""
    now = utcnow()
    async with read_transaction(ctx.sessions) as session:
        runs = await runs_by_status_txn(session)
        waiting, oldest = await approvals_waiting_txn(session)
        alive = await count_alive_workers_txn(session, now)
        in_flight = await steps_in_flight_txn(session)
    by_status = GaugeMetricFamily(
        "agent_engine_runs", "Unfinished runs by status.", labels=["status"]
    )
    for status in RunStatus:
        if status not in RUN_OVER_STATES:
            by_status.add_metric([status.value], runs.get(status.value, 0))
    age = (now - oldest).total_seconds() if oldest is not None else 0.0
    return [
        by_status,
        GaugeMetricFamily(
            "agent_engine_approvals_waiting", "Steps waiting for a person.", value=waiting
        ),
        GaugeMetricFamily(
            "agent_engine_approval_oldest_wait_seconds",
            "How long the longest-waiting run has waited for a person (0: none waits).",
            value=max(age, 0.0),
        ),
        GaugeMetricFamily(
            "agent_engine_workers_alive",
            "Workers whose heartbeat is within its lease.",
            value=alive,
        ),
        GaugeMetricFamily(
            "agent_engine_steps_running",
            "Steps running now, leased to a worker.",
            value=sum(in_flight.values()),
        ),
    ]


async def metrics_page(ctx: EngineContext | None) -> bytes:
    """The Prometheus text page: this process's own metrics, and the database's gauges when
    ``ctx`` is given (the API; a worker's own endpoint serves its counters only)."""
    page = generate_latest(REGISTRY)
    if ctx is None:
        return page
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Found(await database_families(ctx)))
    return page + generate_latest(registry)
