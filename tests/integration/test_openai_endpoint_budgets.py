"""The OpenAI-compatible endpoint within budgets: a project's or key's monthly budget that fits
exactly N calls lets exactly N reach the provider, fired at once; the rest are refused with
429 ``insufficient_quota`` (the official client's RateLimitError) and send nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from agent_engine.config import Settings
from agent_engine.domain.principals import Role
from agent_engine.storage.tables import LLMCall
from tests.budget_flow import metered_server, metered_settings
from tests.fakes.llm_servers import FakeLLMServer
from tests.keys import authed_app, bearer

ASK: dict[str, Any] = {
    "model": "auto",
    "messages": [{"role": "user", "content": "Say ok."}],
    "max_tokens": 20,
}


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with metered_server() as running:
        yield running


def _sdk(app: FastAPI, key: str, project: str | None = None) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    return openai.AsyncOpenAI(
        base_url="http://engine.test/v1",
        api_key=key,
        project=project,
        http_client=http,
        max_retries=0,
    )


async def _fire(sdk: openai.AsyncOpenAI, count: int) -> list[Any]:
    return await asyncio.gather(
        *(sdk.chat.completions.create(**ASK) for _ in range(count)), return_exceptions=True
    )


async def _gateway_costs(app: FastAPI) -> list[Decimal | None]:
    async with app.state.engine.sessions() as session:
        rows = await session.scalars(select(LLMCall).where(LLMCall.purpose == "gateway"))
        return [row.cost_usd for row in rows]


def _refusals(outcomes: list[Any]) -> list[openai.RateLimitError]:
    return [o for o in outcomes if isinstance(o, openai.RateLimitError)]


async def test_project_and_key_budgets_let_exactly_the_calls_that_fit_reach_the_provider(
    settings: Settings, tmp_path: Path, server: FakeLLMServer
) -> None:
    metered = metered_settings(settings, tmp_path, server)
    async with authed_app(metered) as authed:
        admin = await authed.key("boss", Role.ADMIN)
        token = await authed.key("ide", Role.OPERATOR)
        key_id = (await authed.guard.keys.authenticate(token)).key_id  # type: ignore[union-attr]
        async with _sdk(authed.app, token, project="calibration") as sdk:
            await sdk.chat.completions.create(**ASK)  # no budget: what one call costs
        (cost,) = await _gateway_costs(authed.app)
        assert cost is not None and cost > 0

        put = await authed.http.put(
            "/v1/budgets/project/alpha", json={"limit_usd": str(cost * 3)}, headers=bearer(admin)
        )
        assert put.status_code == 200, put.text
        sent_before = len(server.requests)
        async with _sdk(authed.app, token, project="alpha") as sdk:
            outcomes = await _fire(sdk, 7)
        answered = [o for o in outcomes if not isinstance(o, BaseException)]
        assert len(answered) == 3 and len(_refusals(outcomes)) == 4
        assert len(server.requests) - sent_before == 3
        refusal = _refusals(outcomes)[0]
        assert refusal.status_code == 429 and refusal.code == "insufficient_quota"
        assert "project alpha" in refusal.message

        # A budget set mid-month counts the month's spend so far (the key's 4 calls): a limit
        # of 6 calls leaves room for exactly 2.
        put = await authed.http.put(
            f"/v1/budgets/api_key/{key_id}",
            json={"limit_usd": str(cost * 6)},
            headers=bearer(admin),
        )
        assert put.status_code == 200, put.text
        sent_before = len(server.requests)
        async with _sdk(authed.app, token) as sdk:
            outcomes = await _fire(sdk, 5)
        assert len(_refusals(outcomes)) == 3
        assert _refusals(outcomes)[0].code == "insufficient_quota"
        assert len(server.requests) - sent_before == 2
        spent = await authed.http.get(f"/v1/budgets/api_key/{key_id}", headers=bearer(admin))
        costs = await _gateway_costs(authed.app)
    assert len(costs) == 1 + 3 + 2  # refused calls reached no provider and left no call row
    assert spent.status_code == 200, spent.text
    assert Decimal(str(spent.json()["spent_usd"])) == cost * 6
