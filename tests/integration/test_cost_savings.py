"""Savings and honest prices through real runs: the budget saver's downgrade in the decision and
the row, a model with no known price counted at the assumed price, usage a provider omitted
estimated and flagged; every run's total the sum of its rows."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from agent_engine.config import Settings
from agent_engine.llm.base import CompletionRequest, CompletionResponse, LLMCallRecord, LLMClient
from agent_engine.router.client import build_llm_client
from tests.fakes.llm_servers import FakeLLMServer, ReceivedRequest, Reply, openai_completion
from tests.savings import ledger_rows, priced_app, run_steps, summarize

ANALYZE = {
    "step_type": "analyze",
    "input_data": {"instruction": "Find problems", "inputs": ["def f(): pass"]},
}


def findings(received: ReceivedRequest) -> Reply:
    """A structured analysis when one is asked for, else a summary; 1000 tokens in, 100 out."""
    if received.body.get("response_format") is not None:
        text = '{"report": "# Report", "summary": "fine", "findings": []}'
    else:
        text = "a summary"
    return openai_completion(text, prompt_tokens=1000, completion_tokens=100)


class BudgetLeft(LLMClient):
    """Tells the router how much of the budget is left, as the budget wrapper does."""

    def __init__(self, inner: LLMClient, fraction: float) -> None:
        self.inner = inner
        self.fraction = fraction

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        hints = {**request.hints, "budget_fraction_left": self.fraction}
        return await self.inner.complete(request.model_copy(update={"hints": hints}))

    @property
    def calls(self) -> list[LLMCallRecord]:
        return self.inner.calls


def with_budget_left(settings: Settings, fraction: float) -> Any:
    """An LLM client factory whose clients say ``fraction`` of the budget is left."""
    return lambda remaining: BudgetLeft(build_llm_client(settings, remaining), fraction)


async def _analyze_with(
    settings: Settings, tmp_path: Path, fraction: float
) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
    with FakeLLMServer(findings) as server:
        # priced_app writes the models file; the factory reads it when a step calls the model.
        configured = settings.model_copy(update={"models_file": tmp_path / "models.yaml"})
        factory = with_budget_left(configured, fraction)
        async with priced_app(settings, server, tmp_path, llm_factory=factory) as (app, client):
            run = await run_steps(client, [ANALYZE])
            rows = await ledger_rows(app.state.engine, run["id"])
            cost = (await client.get(f"/v1/agent-runs/{run['id']}/cost")).json()
    return run, rows, cost


async def test_below_the_threshold_a_call_goes_a_tier_down_and_the_row_records_the_saving(
    settings: Settings, tmp_path: Path
) -> None:
    run, (row,), cost = await _analyze_with(settings, tmp_path, 0.1)

    assert run["status"] == "completed"
    assert row.model == "mini-1"  # the small model, not the medium one analyze needs
    assert row.routing["downgraded_from"]["model"] == "fakeai:coder-1"
    assert "budget saver: 10% of the budget left (< 20%)" in row.routing["reason"]
    assert row.cost_usd == Decimal("0.000120000")  # 1000 x $0.1 + 100 x $0.2 per million
    # The same tokens on coder-1 ($1/$2) would have cost $0.0012.
    assert (row.saving, row.saved_usd) == ("routing", Decimal("0.001080000"))
    assert cost["saved_by_routing_usd"] == 0.00108
    assert cost["by_model"]["fakeai:mini-1"]["saved_by_routing_usd"] == 0.00108
    assert cost["by_step"][0]["saved_by_routing_usd"] == 0.00108
    assert Decimal(str(run["total_cost_usd"])) == row.cost_usd


async def test_above_the_threshold_the_tier_stays_and_nothing_is_saved(
    settings: Settings, tmp_path: Path
) -> None:
    run, (row,), cost = await _analyze_with(settings, tmp_path, 0.5)

    assert run["status"] == "completed"
    assert row.model == "coder-1"
    assert row.routing["downgraded_from"] is None
    assert (row.saving, row.saved_usd) == (None, None)
    assert cost["saved_by_routing_usd"] == 0


MYSTERY = (
    "  - {provider: fakeai, model: mystery-9, tier: small, context_window: 128000,"
    " max_output_tokens: 8192, capabilities: {json: true}}\n"
)


async def test_a_model_with_no_known_price_counts_at_the_assumed_price(
    settings: Settings, tmp_path: Path
) -> None:
    with FakeLLMServer(findings) as server:
        async with priced_app(
            settings, server, tmp_path, extra=MYSTERY, model="fakeai:mystery-9"
        ) as (app, client):
            run = await run_steps(client, [summarize("text")], budget_usd="1")
            (row,) = await ledger_rows(app.state.engine, run["id"])
            cost = (await client.get(f"/v1/agent-runs/{run['id']}/cost")).json()

    assert run["status"] == "completed"  # a budget no longer shuts an unpriced model out
    assert row.model == "mystery-9"
    assert row.priced is False
    assert row.price_source == "assumed: most expensive small model fakeai:mini-1"
    assert row.cost_usd == Decimal("0.000120000")  # never $0
    assert Decimal(str(run["total_cost_usd"])) == row.cost_usd
    assert cost["totals"]["unpriced_calls"] == 1 and cost["has_unpriced_calls"] is True
    assert cost["consistent"] is True


async def test_usage_a_provider_omits_is_estimated_flagged_and_counted(
    settings: Settings, tmp_path: Path
) -> None:
    omitted = openai_completion("a summary of it", usage=False)
    with FakeLLMServer(lambda received: omitted) as server:
        async with priced_app(settings, server, tmp_path) as (app, client):
            run = await run_steps(client, [summarize("text")])
            (row,) = await ledger_rows(app.state.engine, run["id"])
            cost = (await client.get(f"/v1/agent-runs/{run['id']}/cost")).json()

    assert row.usage_estimated is True
    assert row.input_tokens > 0 and row.output_tokens > 0
    assert row.cost_usd is not None and row.cost_usd > 0
    assert Decimal(str(run["total_cost_usd"])) == row.cost_usd
    assert cost["has_estimated_usage"] is True
    assert cost["by_usage_source"]["estimated"]["calls"] == 1
