"""``/metrics``: the counters of what ran, the database's gauges, a budget refusal counted, and
a Grafana dashboard that queries only metrics the app serves."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_engine import metrics
from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.domain.budget_math import budget_subject
from agent_engine.engine.budgets import reserve
from agent_engine.engine.metrics_report import metrics_page
from agent_engine.engine.runs import CreateRunRequest, create_run
from agent_engine.errors import BudgetExceededError
from agent_engine.worker.worker import Worker, WorkerOptions
from tests.backends import one_backend
from tests.engines import engine_context, new_run, noop, snapshot, wait_until

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "agent-engine.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(page: str) -> Samples:
    """Every sample of a metrics page by name and labels."""
    found: Samples = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def worker_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API with its embedded worker, as `serve` runs it."""
    app = create_app(settings.model_copy(update={"embedded_worker": True, "worker_poll_s": 0.2}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


async def run_to_the_end(client: httpx.AsyncClient, steps: list[dict[str, object]]) -> None:
    body = {"goal": "watched", "steps": steps, "auto_start": True}
    run = (await client.post("/v1/agent-runs", json=body)).json()
    deadline = time.monotonic() + 20
    while (await client.get(f"/v1/agent-runs/{run['id']}")).json()["status"] not in {
        "completed",
        "failed",
    }:
        assert time.monotonic() < deadline, "the run did not finish"
        await asyncio.sleep(0.05)


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_metrics_count_the_steps_that_ran_and_show_the_database_gauges(
    worker_client: httpx.AsyncClient,
) -> None:
    before = await scrape(worker_client)
    noop = {"step_type": "noop", "input_data": {"value": 1}}
    failing = {"step_type": "noop", "input_data": {"value": 2, "fail": True}, "depends_on": [1]}
    await run_to_the_end(worker_client, [noop, dict(noop, depends_on=[1]), failing])
    after = await scrape(worker_client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("agent_engine_steps_total", step_type="noop", status="completed") == 2
    assert grew("agent_engine_steps_total", step_type="noop", status="failed") == 1
    assert grew("agent_engine_step_duration_seconds_count", step_type="noop") == 3
    assert grew("agent_engine_step_queue_wait_seconds_count", step_type="noop") == 3
    assert value(after, "agent_engine_runs", status="running") == 0
    assert value(after, "agent_engine_workers_alive") == 1
    assert value(after, "agent_engine_approvals_waiting") == 0


async def test_a_budget_refusal_increments_the_refusal_counter(settings: Settings) -> None:
    async with engine_context(settings) as ctx:
        request = CreateRunRequest(goal="tight", budget_usd=Decimal("0.000001"))
        run = (await create_run(ctx, request, actor="t", idempotency_key=None)).run
        page = samples((await _own_page()).decode())
        with pytest.raises(BudgetExceededError):
            await reserve(
                ctx,
                budget_subject(run),
                amount_usd=Decimal("1"),
                amount_tokens=10,
                purpose="step",
                estimate={},
            )
        again = samples((await _own_page()).decode())
    refusals = "agent_engine_budget_refusals_total"
    assert value(again, refusals) - value(page, refusals) == 1
    holds = "agent_engine_budget_reservations_total"
    assert value(again, holds) == value(page, holds)


async def _own_page() -> bytes:
    return await metrics_page(None)  # this process's counters alone


@one_backend("sqlite", "the metric names served do not depend on the backend")
async def test_every_metric_the_dashboard_queries_is_served(
    worker_client: httpx.AsyncClient,
) -> None:
    noop = {"step_type": "noop", "input_data": {"value": 1}}
    analyze = {"step_type": "analyze", "input_data": {"instruction": "Say ok."}}
    await run_to_the_end(worker_client, [noop, analyze])  # a model call: its series exist
    served = set()
    for family in text_string_to_metric_families((await worker_client.get("/metrics")).text):
        served.update(sample.name for sample in family.samples)
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"agent_engine_[a-z_]+", target["expr"])
    }
    assert len(queried) >= 10  # the dashboard covers the whole list, not one panel
    assert queried - served == set()


@one_backend("sqlite", "the same counting on both; hand-backs are tested on both elsewhere")
async def test_a_stopping_worker_counts_the_step_it_hands_back(settings: Settings) -> None:
    hand_backs = "agent_engine_hand_backs_total"
    before = metrics.REGISTRY.get_sample_value(hand_backs) or 0
    async with engine_context(settings) as ctx:
        worker = Worker(ctx, WorkerOptions(worker_id="w", shutdown_grace_s=0, poll_s=0.05))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        run_id = await new_run(ctx, [noop(1, sleep_s=30)], auto_start=True)

        async def running() -> bool:
            return (await snapshot(ctx, run_id))["steps"][0]["status"] == "running"

        await wait_until(running)
        stop.set()
        await task
        (step,) = (await snapshot(ctx, run_id))["steps"]
    assert step["status"] == "pending"  # handed back, for another worker to take at once
    assert metrics.REGISTRY.get_sample_value(hand_backs) == before + 1


@one_backend("sqlite", "the same queries on both; the first test reads the gauges on both")
async def test_a_step_waiting_for_approval_shows_in_the_approval_gauges(
    worker_client: httpx.AsyncClient,
) -> None:
    gated = {"step_type": "noop", "input_data": {"value": 1}, "requires_approval": True}
    body = {"goal": "gated", "steps": [gated], "auto_start": True}
    run = (await worker_client.post("/v1/agent-runs", json=body)).json()
    deadline = time.monotonic() + 20
    while (await worker_client.get(f"/v1/agent-runs/{run['id']}")).json()[
        "status"
    ] != "awaiting_approval":
        assert time.monotonic() < deadline, "the run never waited for approval"
        await asyncio.sleep(0.05)
    found = await scrape(worker_client)
    assert value(found, "agent_engine_approvals_waiting") == 1
    assert value(found, "agent_engine_runs", status="awaiting_approval") == 1
    assert value(found, "agent_engine_approval_oldest_wait_seconds") >= 0


@one_backend("sqlite", "the switch is the process's, not the database's")
async def test_metrics_switched_off_count_nothing_and_the_endpoint_says_so(
    settings: Settings,
) -> None:
    before = samples((await _own_page()).decode())
    off = settings.model_copy(
        update={"embedded_worker": True, "worker_poll_s": 0.2, "metrics_enabled": False}
    )
    app = create_app(off)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
        ):
            await run_to_the_end(http, [{"step_type": "noop", "input_data": {"value": 1}}])
            response = await http.get("/metrics")
    finally:
        metrics.set_observing(True)  # the process's default, for the tests that follow
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "metrics_disabled"
    after = samples((await _own_page()).decode())
    for name in ("agent_engine_steps_total", "agent_engine_step_duration_seconds_count"):
        labels = {"step_type": "noop"} | ({"status": "completed"} if "steps" in name else {})
        assert value(after, name, **labels) == value(before, name, **labels)
