"""Reservations hold under concurrency: fifty calls fired at once against room for exactly ten
send exactly ten requests, the spend never passes the budget at any instant, and the other
forty steps wait for budget instead of failing — for one run's budget and for a project's
monthly budget shared by several runs (on PostgreSQL and SQLite)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from agent_engine.config import Settings
from agent_engine.engine.budget_changes import MonthlyBudget, set_monthly_budget
from agent_engine.engine.runs import CreateRunRequest, create_run
from agent_engine.storage.database import read_transaction
from agent_engine.storage.tables import LLMCall
from tests.budget_flow import (
    counters,
    fire_at_once,
    metered_server,
    metered_settings,
    parallel_analyses,
    peak_commitment,
    reservations,
)
from tests.engines import engine_context, snapshot
from tests.fakes.llm_servers import FakeLLMServer


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with metered_server() as running:
        yield running


async def _one_call_cost(settings: Settings) -> Decimal:
    """What one analyze call costs (its worst case, by the metered server's construction)."""
    async with engine_context(settings) as ctx:
        request = CreateRunRequest(goal="calibrate", steps=parallel_analyses(1))
        run = (await create_run(ctx, request, actor="t", idempotency_key=None)).run
        await fire_at_once(ctx, [run.id], per_run=1)
        async with read_transaction(ctx.sessions) as session:
            (call,) = await session.scalars(select(LLMCall).where(LLMCall.run_id == run.id))
    assert call.cost_usd is not None and call.cost_usd > 0
    return call.cost_usd


async def test_fifty_parallel_calls_of_one_run_against_room_for_ten_send_exactly_ten(
    settings: Settings, tmp_path: Path, server: FakeLLMServer
) -> None:
    metered = metered_settings(settings, tmp_path, server)
    cost = await _one_call_cost(metered)
    sent_before = len(server.requests)
    budget = cost * 10
    async with engine_context(metered) as ctx:
        request = CreateRunRequest(
            goal="fifty at once", steps=parallel_analyses(50), budget_usd=budget, max_parallel=50
        )
        run = (await create_run(ctx, request, actor="t", idempotency_key=None)).run
        claims = await fire_at_once(ctx, [run.id], per_run=50)
        assert len(claims) == 50
        state = await snapshot(ctx, run.id)
        holds = await reservations(ctx)
        (counter,) = [c for c in await counters(ctx) if c.subject == str(run.id)]

    assert len(server.requests) - sent_before == 10
    statuses = [step["status"] for step in state["steps"]]
    assert statuses.count("completed") == 10
    assert statuses.count("awaiting_approval") == 40 and "failed" not in statuses
    paused = [step for step in state["steps"] if step["status"] == "awaiting_approval"]
    assert all(step["budget_pause"]["reason"] == "budget" for step in paused)
    assert paused[0]["budget_pause"]["needed_usd"] == format(cost, "f")
    assert state["run"]["status"] == "awaiting_approval"
    assert state["run"]["total_cost_usd"] == budget  # spent to the last digit, never past it
    assert counter.spent_usd == budget and counter.reserved_usd == 0
    run_holds = [h for h in holds if h.run_id == run.id]
    assert len(run_holds) == 10 and all(h.status == "settled" for h in run_holds)
    assert peak_commitment(run_holds) <= budget


async def test_fifty_calls_of_five_runs_sharing_a_project_budget_send_exactly_ten(
    settings: Settings, tmp_path: Path, server: FakeLLMServer
) -> None:
    metered = metered_settings(settings, tmp_path, server)
    cost = await _one_call_cost(metered)
    sent_before = len(server.requests)
    project = f"p-{uuid.uuid4().hex[:8]}"
    async with engine_context(metered) as ctx:
        await set_monthly_budget(
            ctx, "project", project, MonthlyBudget(limit_usd=cost * 10), actor="admin"
        )
        run_ids = []
        for number in range(5):
            request = CreateRunRequest(
                goal=f"run {number}",
                steps=parallel_analyses(10),
                project=project,
                max_parallel=10,
            )
            run_ids.append((await create_run(ctx, request, actor="t", idempotency_key=None)).run.id)
        await fire_at_once(ctx, run_ids, per_run=10)
        states = [await snapshot(ctx, run_id) for run_id in run_ids]
        (counter,) = [c for c in await counters(ctx) if c.subject == project]
        holds = [h for h in await reservations(ctx) if h.run_id in run_ids]

    assert len(server.requests) - sent_before == 10
    statuses = [step["status"] for state in states for step in state["steps"]]
    assert statuses.count("completed") == 10 and statuses.count("awaiting_approval") == 40
    assert sum(state["run"]["total_cost_usd"] for state in states) == cost * 10
    assert counter.spent_usd == cost * 10 and counter.reserved_usd == 0
    assert counter.scope == "project" and len(counter.period) == 7  # this calendar month
    assert peak_commitment(holds) <= cost * 10
