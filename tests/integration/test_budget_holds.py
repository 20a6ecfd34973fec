"""What happens to holds and spend around the edges: a hold whose attempt is gone is released
when it stands in the way (a live one never is), a call whose step is cancelled mid-flight is
still settled at what the provider reported, and spend reaching 50/80/100 % of a budget is
announced once each in the run's audit chain."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from agent_engine.config import Settings
from agent_engine.domain.budget_math import budget_subject
from agent_engine.engine.budgets import reserve
from agent_engine.engine.runs import CreateRunRequest, create_run
from agent_engine.engine.stepping import run_claimed
from agent_engine.errors import BudgetExceededError
from agent_engine.storage.database import read_transaction
from agent_engine.storage.runs import load_run_txn
from agent_engine.storage.tables import LLMCall
from tests.budget_flow import (
    counters,
    fire_at_once,
    metered_settings,
    parallel_analyses,
    reservations,
    worst_case_reply,
)
from tests.engines import chain_of, claim_locking, engine_context, wait_until
from tests.fakes.llm_servers import FakeLLMServer, ReceivedRequest, Reply


def _slow_reply(received: ReceivedRequest) -> Reply:
    return dataclasses.replace(worst_case_reply(received), delay_s=0.5)


@pytest.fixture
def slow_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(responder=_slow_reply) as running:
        yield running


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(responder=worst_case_reply) as running:
        yield running


async def test_a_hold_of_an_attempt_that_moved_on_is_released_a_live_one_is_not(
    settings: Settings,
) -> None:
    async with engine_context(settings) as ctx:
        request = CreateRunRequest(goal="holds", steps=parallel_analyses(2), budget_usd="1")
        run = (await create_run(ctx, request, actor="t", idempotency_key=None)).run
        first, second = await claim_locking(ctx, run.id, limit=2)
        subject = budget_subject(run)

        async def hold(claim_fence: int, step_id: object) -> None:
            await reserve(
                ctx,
                subject,
                amount_usd=Decimal("0.8"),
                amount_tokens=10,
                purpose="step",
                estimate={},
                step_id=step_id,  # type: ignore[arg-type]
                attempt=1,
                fence=claim_fence,
            )

        # An attempt whose step has since been claimed again (another fence) is gone.
        await hold(first.fence - 1, first.step_id)
        await hold(second.fence, second.step_id)  # fits only once the gone hold is released
        with pytest.raises(BudgetExceededError) as refused:
            await hold(first.fence, first.step_id)  # the live hold of step 2 stays
        holds = await reservations(ctx)
        (counter,) = await counters(ctx)
    assert [h.status for h in holds] == ["released", "held"]
    assert counter.reserved_usd == Decimal("0.8") and counter.spent_usd == 0
    assert refused.value.data["reserved_usd"] == "0.800000000"


async def test_a_call_cancelled_mid_flight_is_settled_at_what_the_provider_reported(
    settings: Settings, tmp_path: Path, slow_server: FakeLLMServer
) -> None:
    metered = metered_settings(settings, tmp_path, slow_server)
    async with engine_context(metered) as ctx:
        request = CreateRunRequest(goal="cancel", steps=parallel_analyses(1), budget_usd="5")
        run = (await create_run(ctx, request, actor="t", idempotency_key=None)).run
        (claim,) = await claim_locking(ctx, run.id)
        task = asyncio.create_task(run_claimed(ctx, claim))

        async def sent() -> bool:
            return len(slow_server.requests) == 1

        await wait_until(sent)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await ctx.settles.wait(run.id)  # the settle runs beside the step, as the run's end does
        (hold,) = await reservations(ctx)
        (counter,) = await counters(ctx)
    assert hold.status == "settled" and hold.actual_usd is not None and hold.actual_usd > 0
    assert hold.calls is not None and hold.calls[0]["usage"]["input_tokens"] > 0
    assert counter.spent_usd == hold.actual_usd and counter.reserved_usd == 0


async def test_spend_reaching_each_threshold_is_announced_once_in_the_runs_chain(
    settings: Settings, tmp_path: Path, server: FakeLLMServer
) -> None:
    metered = metered_settings(settings, tmp_path, server)
    async with engine_context(metered) as ctx:
        probe = CreateRunRequest(goal="probe", steps=parallel_analyses(1))
        probe_run = (await create_run(ctx, probe, actor="t", idempotency_key=None)).run
        await fire_at_once(ctx, [probe_run.id], per_run=1)
        async with read_transaction(ctx.sessions) as session:
            cost = (await load_run_txn(session, probe_run.id)).total_cost_usd
        request = CreateRunRequest(
            goal="thresholds", steps=parallel_analyses(4), budget_usd=cost * 4, max_parallel=1
        )
        run = (await create_run(ctx, request, actor="t", idempotency_key=None)).run
        for _ in range(4):
            await fire_at_once(ctx, [run.id], per_run=1)
        events = await chain_of(ctx, run.id)
    reached = [e.payload for e in events if e.type == "budget.threshold_reached"]
    assert [p["threshold_percent"] for p in reached] == [50, 80, 100]
    assert all(p["scope"] == "run" for p in reached)


SAVER_CATALOG = (
    "providers:\n"
    "  budgetai: {{kind: openai, base_url: '{url}', api_key_env: null, timeout_s: 10}}\n"
    "models:\n"
    "  - {{provider: budgetai, model: meter-1, tier: medium, context_window: 100000,"
    " max_output_tokens: 4096, prices: {{input: 1, output: 2}}}}\n"
    "  - {{provider: budgetai, model: meter-s, tier: small, context_window: 100000,"
    " max_output_tokens: 4096, prices: {{input: 0.1, output: 0.2}}}}\n"
)


async def test_when_little_budget_is_left_the_router_is_told_and_picks_a_cheaper_tier(
    settings: Settings, tmp_path: Path, server: FakeLLMServer
) -> None:
    catalog = tmp_path / "saver.yaml"
    catalog.write_text(SAVER_CATALOG.format(url=server.openai_base_url), encoding="utf-8")
    routed = settings.model_copy(update={"models_file": catalog, "routing_saver_below": 0.5})
    async with engine_context(routed) as ctx:
        probe = CreateRunRequest(goal="probe", steps=parallel_analyses(1))
        probe_run = (await create_run(ctx, probe, actor="t", idempotency_key=None)).run
        await fire_at_once(ctx, [probe_run.id], per_run=1)
        async with read_transaction(ctx.sessions) as session:
            cost = (await load_run_txn(session, probe_run.id)).total_cost_usd
        request = CreateRunRequest(goal="saver", steps=parallel_analyses(2), budget_usd=cost * 3)
        run = (await create_run(ctx, request, actor="t", idempotency_key=None)).run
        await fire_at_once(ctx, [run.id], per_run=1)  # 1/3 spent: 2/3 left, no saver
        await fire_at_once(ctx, [run.id], per_run=1)  # once held, 1/3 left (< 1/2): saver
        async with read_transaction(ctx.sessions) as session:
            calls = list(
                await session.scalars(
                    select(LLMCall).where(LLMCall.run_id == run.id).order_by(LLMCall.created_at)
                )
            )
    assert [c.model for c in calls] == ["meter-1", "meter-s"]
    assert calls[1].saving == "routing" and calls[1].saved_usd is not None
    assert calls[1].saved_usd > 0
    assert "budget saver" in calls[1].routing["reason"]
    assert "budget_fraction_left" not in calls[1].request["hints"]  # never part of the record
