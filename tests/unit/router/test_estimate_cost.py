"""Clients state what a request would cost; the planner asks any client, never its class."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agent_engine.domain.plan import Plan
from agent_engine.engine.plan_estimates import estimate_steps as _estimate
from agent_engine.errors import BudgetExceededError
from agent_engine.llm.base import (
    ChatMessage,
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMClient,
)
from agent_engine.llm.catalog import ModelCatalog
from agent_engine.router.client import RoutedLLMClient
from agent_engine.router.service import RouterService


class AnswersNothing(LLMClient):
    """A client that keeps the interface's default estimate (it cannot tell) and calls nothing."""

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        raise AssertionError("estimating must not call a model")

    @property
    def calls(self) -> list[LLMCallRecord]:
        return []


class StatedCost(AnswersNothing):
    """A client that states a fixed estimate, or fails to route."""

    def __init__(self, estimate: Decimal | None = None, *, fail: bool = False) -> None:
        self.estimate = estimate
        self.fail = fail
        self.asked: list[CompletionRequest] = []

    async def estimate_cost(self, request: CompletionRequest) -> Decimal | None:
        self.asked.append(request)
        if self.fail:
            raise BudgetExceededError("no model fits")
        return self.estimate


PLAN = Plan.model_validate(
    {
        "steps": [
            {"step_type": "list_files", "input_data": {}},
            {"step_type": "analyze", "input_data": {"instruction": "find bugs"}},
            {"step_type": "summarize", "input_data": {}},
        ]
    }
)


def _paid_router() -> RouterService:
    catalog = ModelCatalog.model_validate(
        {
            "providers": {"paidai": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "models": [
                {
                    "provider": "paidai",
                    "model": "m",
                    "tier": "small",
                    "context_window": 100_000,
                    "max_output_tokens": 4_096,
                    "prices": {"input": 1, "output": 2},
                }
            ],
        }
    )
    return RouterService(catalog, env={})


async def test_the_routed_client_states_the_routing_estimate() -> None:
    llm = RoutedLLMClient(_paid_router())
    request = CompletionRequest(
        messages=[ChatMessage(role="user", content="x" * 400)], max_output_tokens=1000
    )
    estimate = await llm.estimate_cost(request)
    assert estimate == (await llm.route(request)).estimated_cost_usd
    assert estimate is not None and estimate > 0
    assert llm.calls == []


async def test_a_client_that_cannot_tell_states_none() -> None:
    assert await AnswersNothing().estimate_cost(CompletionRequest(messages=[])) is None


async def test_planner_asks_the_client_for_llm_steps_only() -> None:
    llm = StatedCost(Decimal("0.25"))
    assert await _estimate(llm, PLAN) == [Decimal(0), Decimal("0.25"), Decimal("0.25")]
    assert [r.step_type for r in llm.asked] == ["analyze", "summarize"]
    assert llm.asked[0].messages[0].content == "find bugs"
    assert llm.asked[1].messages[0].content == "summarize"


@pytest.mark.parametrize("llm", [StatedCost(fail=True), AnswersNothing()])
async def test_planner_records_an_unknown_estimate_as_none(llm: LLMClient) -> None:
    assert await _estimate(llm, PLAN) == [Decimal(0), None, None]


async def test_planner_estimates_through_the_router() -> None:
    estimates = await _estimate(RoutedLLMClient(_paid_router()), PLAN)
    assert estimates[0] == Decimal(0)
    assert all(e is not None and e > 0 for e in estimates[1:])
