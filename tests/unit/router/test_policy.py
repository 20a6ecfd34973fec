"""Routing policy: tiers from complexity, cheapest eligible model, budgets, pins and replays."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from agent_engine.errors import BudgetExceededError, ProviderError
from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.llm.catalog import CatalogError, ModelCatalog, load_catalog
from agent_engine.router.complexity import estimate_complexity, raise_tier
from agent_engine.router.policy import PINNED_REASON, RoutingDecision, decide_route, pin_decision

ALL_KEYS = {"OPENAI_API_KEY": "k1", "ANTHROPIC_API_KEY": "k2"}


def _request(text: str = "hello", **extra: Any) -> CompletionRequest:
    return CompletionRequest(messages=[ChatMessage(role="user", content=text)], **extra)


def _catalog(*models: dict[str, Any], providers: dict[str, Any] | None = None) -> ModelCatalog:
    return ModelCatalog.model_validate({"models": list(models), "providers": providers or {}})


def _model(provider: str, model: str, tier: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": provider,
        "model": model,
        "tier": tier,
        "context_window": extra.pop("context_window", 100_000),
        "max_output_tokens": extra.pop("max_output_tokens", 8_192),
        **extra,
    }


@pytest.mark.parametrize(
    ("step_type", "tier"),
    [("summarize", "small"), ("plan", "medium"), ("analyze", "medium"), (None, "small")],
)
def test_step_type_sets_the_base_tier(step_type: str | None, tier: str) -> None:
    assert estimate_complexity(_request(step_type=step_type)).tier == tier


def test_keywords_prompt_size_and_output_size_raise_the_tier() -> None:
    assert (
        estimate_complexity(_request("Refactor the auth module", step_type="summarize")).tier
        == "medium"
    )
    assert estimate_complexity(_request("x" * 70_000, step_type="summarize")).tier == "medium"
    assert estimate_complexity(_request("x" * 300_000)).tier == "large"
    big_output = estimate_complexity(_request(step_type="plan", max_output_tokens=8_000))
    assert big_output.tier == "large"
    assert raise_tier("large") == "large"


def test_hinted_tier_overrides_the_estimate() -> None:
    estimate = estimate_complexity(_request("security proof", hints={"tier": "small"}))
    assert estimate.tier == "small"
    assert estimate.reasons == ["hints.tier"]
    assert estimate.keywords == ["proof", "security"]


def test_without_keys_everything_goes_to_the_offline_model() -> None:
    decision = decide_route(_request(step_type="plan"), load_catalog(), env={})
    assert decision.model == "offline:offline-1"
    assert decision.tier == "medium"
    assert decision.fallbacks == []
    assert "fell back to tier small" in decision.reason
    excluded = {c.model: c.excluded for c in decision.candidates}
    assert excluded["openai:gpt-4o"] == "not configured: OPENAI_API_KEY is not set"


def test_small_request_picks_the_cheapest_small_remote_model_and_skips_offline() -> None:
    decision = decide_route(_request(step_type="summarize"), load_catalog(), env=ALL_KEYS)
    assert decision.model == "openai:gpt-4o-mini"
    assert decision.chain == [
        "openai:gpt-4o-mini",
        "anthropic:claude-3-5-haiku-latest",
        "openai:gpt-4o",
        "anthropic:claude-sonnet-4-0",
    ]
    offline = next(c for c in decision.candidates if c.model == "offline:offline-1")
    assert offline.excluded == "last resort: another model is eligible"
    assert decision.estimated_cost_usd is not None
    assert decision.estimated_cost_usd > 0
    assert decision.price_snapshot["openai:gpt-4o-mini"].rates is not None


def test_medium_request_prefers_a_larger_tier_when_medium_is_empty() -> None:
    decision = decide_route(_request(step_type="plan"), load_catalog(), env=ALL_KEYS)
    assert decision.model == "openai:gpt-4o"
    assert decision.fallbacks[0] == "anthropic:claude-sonnet-4-0"


def test_budget_excludes_models_it_cannot_afford() -> None:
    catalog = _catalog(
        _model("openai", "cheap", "small", prices={"input": 1, "output": 1}),
        _model("openai", "dear", "small", prices={"input": 100, "output": 100}),
    )
    request = _request(max_output_tokens=1000)
    decision = decide_route(request, catalog, remaining_budget_usd=Decimal("0.01"), env=ALL_KEYS)
    assert decision.model == "openai:cheap"
    dear = next(c for c in decision.candidates if c.model == "openai:dear")
    assert dear.excluded is not None
    assert dear.excluded.startswith("over budget")
    with pytest.raises(BudgetExceededError) as caught:
        decide_route(request, catalog, remaining_budget_usd=Decimal("0.000001"), env=ALL_KEYS)
    assert len(caught.value.data["candidates"]) == 2


def test_free_offline_model_fits_a_zero_budget() -> None:
    decision = decide_route(_request(), load_catalog(), remaining_budget_usd=Decimal(0), env={})
    assert decision.model == "offline:offline-1"
    assert decision.estimated_cost_usd == Decimal(0)


def test_unknown_price_models_come_last_and_count_at_their_tiers_dearest_price() -> None:
    catalog = _catalog(
        _model("openai", "mystery-model", "small"),
        _model("openai", "known", "small", prices={"input": 5, "output": 5}),
        _model("openai", "cheap", "small", prices={"input": 1, "output": 1}),
        _model("openai", "big", "large", prices={"input": 50, "output": 50}),
    )
    decision = decide_route(_request(), catalog, env=ALL_KEYS)
    assert decision.chain[-2:] == ["openai:mystery-model", "openai:big"]
    mystery = next(c for c in decision.candidates if c.model == "openai:mystery-model")
    known = next(c for c in decision.candidates if c.model == "openai:known")
    assert mystery.estimated_cost_usd == known.estimated_cost_usd  # the small tier's dearest
    assert mystery.price_source == "assumed: most expensive small model openai:known"
    # Counted at that price, it is checked against a budget like any other model.
    budgeted = decide_route(_request(), catalog, remaining_budget_usd=Decimal(10), env=ALL_KEYS)
    assert "openai:mystery-model" in budgeted.chain


def test_context_window_output_limit_and_json_capability_exclude_models() -> None:
    catalog = _catalog(
        _model("openai", "tiny", "small", context_window=100, prices={"input": 1, "output": 1}),
        _model("openai", "short", "small", max_output_tokens=10, prices={"input": 1, "output": 1}),
        _model(
            "openai",
            "textonly",
            "small",
            capabilities={"json": False},
            prices={"input": 1, "output": 1},
        ),
        _model("openai", "roomy", "small", prices={"input": 9, "output": 9}),
    )
    request = _request("x" * 1000, json_schema={"type": "object"})
    decision = decide_route(request, catalog, env=ALL_KEYS)
    assert decision.model == "openai:roomy"
    reasons = {c.model: c.excluded for c in decision.candidates}
    assert "context window" in (reasons["openai:tiny"] or "")
    assert "limit 10" in (reasons["openai:short"] or "")
    assert reasons["openai:textonly"] == "no JSON output capability"


def test_no_eligible_model_is_a_provider_error_naming_the_reasons() -> None:
    catalog = _catalog(_model("openai", "m", "small"))
    with pytest.raises(ProviderError, match="OPENAI_API_KEY is not set") as caught:
        decide_route(_request(), catalog, env={})
    assert caught.value.data["kind"] == "no_model"


def test_hints_model_is_preferred_when_eligible() -> None:
    request = _request(step_type="summarize", hints={"model": "anthropic:claude-sonnet-4-0"})
    decision = decide_route(request, load_catalog(), env=ALL_KEYS)
    assert decision.model == "anthropic:claude-sonnet-4-0"
    assert "requested by hints.model" in decision.reason
    ignored = decide_route(request, load_catalog(), env={"OPENAI_API_KEY": "k"})
    assert ignored.model == "openai:gpt-4o-mini"
    assert "not eligible, ignored" in ignored.reason


def test_pinned_model_wins_and_says_why() -> None:
    decision = decide_route(
        _request(step_type="plan"), load_catalog(), pinned_model="openai:gpt-4o-mini", env={}
    )
    assert decision.model == "openai:gpt-4o-mini"
    assert decision.reason == PINNED_REASON == "pinned by AGENT_ENGINE_MODEL"
    assert decision.pinned
    assert decision.fallbacks == []


def test_pin_outside_the_catalog_and_over_budget() -> None:
    catalog = load_catalog()
    decision = decide_route(_request(), catalog, pinned_model="openai:gpt-4.1-mini")
    assert decision.model == "openai:gpt-4.1-mini"
    with pytest.raises(BudgetExceededError):
        decide_route(
            _request(max_output_tokens=10_000),
            catalog,
            pinned_model="openai:gpt-4o",
            remaining_budget_usd=Decimal("0.00001"),
        )
    with pytest.raises(CatalogError):
        decide_route(_request(), catalog, pinned_model="nosuch:model")
    with pytest.raises(ProviderError, match="provider:model"):
        decide_route(_request(), catalog, pinned_model="justamodel")


def test_recorded_decision_replays_pinned_and_round_trips_as_json() -> None:
    catalog = load_catalog()
    original = decide_route(_request(step_type="summarize"), catalog, env=ALL_KEYS)
    restored = RoutingDecision.model_validate(original.model_dump(mode="json"))
    assert restored == original
    replay = pin_decision(
        _request(step_type="summarize"), catalog, restored.model, reason="replay of run 1"
    )
    assert replay.model == original.model
    assert replay.reason == "replay of run 1"
    assert replay.pinned


def test_a_last_resort_model_asked_for_by_name_is_chosen_although_others_are_eligible() -> None:
    asked = _request(step_type="summarize").model_copy(
        update={"hints": {"model": "offline:offline-1"}}
    )
    decision = decide_route(asked, load_catalog(), env=ALL_KEYS)
    assert decision.model == "offline:offline-1"
    assert "offline:offline-1 requested by hints.model" in decision.reason
    unasked = decide_route(_request(step_type="summarize"), load_catalog(), env=ALL_KEYS)
    assert unasked.model == "openai:gpt-4o-mini"
