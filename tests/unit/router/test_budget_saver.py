"""The budget saver: below the threshold of budget left the router goes a tier down to the
cheapest eligible model, says so and records what it would have chosen; never above it, never
to a model that lacks what the request needs, never over a model asked for by name."""

from __future__ import annotations

from typing import Any

import pytest

from agent_engine.llm.base import ChatMessage, CompletionRequest, canonical_request_hash
from agent_engine.llm.catalog import ModelCatalog
from agent_engine.router.policy import decide_route

KEYS = {"OPENAI_API_KEY": "k"}


def _catalog() -> ModelCatalog:
    base = {"provider": "openai", "context_window": 100_000, "max_output_tokens": 8_192}
    models = [
        {**base, "model": "mid", "tier": "medium", "prices": {"input": 1, "output": 2}},
        {**base, "model": "mini", "tier": "small", "prices": {"input": 0.2, "output": 0.4}},
        {**base, "model": "nano", "tier": "small", "prices": {"input": 0.1, "output": 0.2}},
        {
            **base,
            "model": "nano-text",
            "tier": "small",
            "prices": {"input": 0.01, "output": 0.01},
            "capabilities": {"json": False},
        },
    ]
    return ModelCatalog.model_validate({"models": models})


def _request(fraction: float | None, **extra: Any) -> CompletionRequest:
    hints: dict[str, Any] = {} if fraction is None else {"budget_fraction_left": fraction}
    return CompletionRequest(
        messages=[ChatMessage(role="user", content="analyze this")],
        step_type="analyze",  # a medium-tier request
        json_schema={"type": "object"},
        hints={**hints, **extra},
    )


def test_below_the_threshold_the_cheapest_capable_model_of_the_tier_below_is_chosen() -> None:
    decision = decide_route(_request(0.12), _catalog(), env=KEYS, saver_below=0.2)
    assert decision.model == "openai:nano"  # nano-text is cheaper but cannot answer in JSON
    assert decision.downgraded_from is not None
    assert decision.downgraded_from.model == "openai:mid"
    assert decision.downgraded_from.tier == "medium"
    mid = next(c for c in decision.candidates if c.model == "openai:mid")
    assert decision.downgraded_from.estimated_cost_usd == mid.estimated_cost_usd
    assert "budget saver: 12% of the budget left (< 20%): tier small instead of medium" in (
        decision.reason
    )
    assert decision.inputs.budget_fraction_left == 0.12
    assert "openai:mid" in decision.fallbacks


@pytest.mark.parametrize("fraction", [0.2, 0.5, None])
def test_at_or_above_the_threshold_or_without_the_hint_nothing_changes(
    fraction: float | None,
) -> None:
    decision = decide_route(_request(fraction), _catalog(), env=KEYS, saver_below=0.2)
    assert decision.model == "openai:mid"
    assert decision.downgraded_from is None
    assert "budget saver" not in decision.reason


def test_a_threshold_of_zero_turns_the_saver_off() -> None:
    decision = decide_route(_request(0.01), _catalog(), env=KEYS, saver_below=0.0)
    assert decision.model == "openai:mid" and decision.downgraded_from is None


def test_a_model_asked_for_by_name_is_not_downgraded() -> None:
    request = _request(0.05, model="openai:mid")
    decision = decide_route(request, _catalog(), env=KEYS, saver_below=0.2)
    assert decision.model == "openai:mid" and decision.downgraded_from is None


def test_the_budget_hint_is_not_part_of_the_request_hash() -> None:
    assert canonical_request_hash(_request(0.05)) == canonical_request_hash(_request(None))
    assert canonical_request_hash(_request(None)) != canonical_request_hash(
        _request(None).model_copy(update={"temperature": 0.5})
    )
