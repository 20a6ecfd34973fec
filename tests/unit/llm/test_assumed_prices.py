"""Prices that never read $0 by accident: token classes priced apart, a model with no known price
counted at its tier's dearest catalog price (flagged), unpriced only with nothing to assume."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from agent_engine.llm.base import Usage
from agent_engine.llm.catalog import ModelCatalog
from agent_engine.llm.pricing import own_price, price_entry


def _catalog(*models: dict[str, Any]) -> ModelCatalog:
    base = {"context_window": 100_000, "max_output_tokens": 8_192}
    return ModelCatalog.model_validate({"models": [{**base, **m} for m in models]})


def _model(model: str, tier: str, prices: dict[str, float] | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"provider": "openai", "model": model, "tier": tier}
    if prices is not None:
        found["prices"] = prices
    return found


USAGE = Usage(input_tokens=1_000_000, output_tokens=1_000_000)


def test_cache_reads_cache_writes_and_output_are_priced_at_their_own_rates() -> None:
    catalog = _catalog(
        _model("m", "small", {"input": 2, "cached_input": 0.5, "cache_write": 2.5, "output": 8})
    )
    usage = Usage(
        input_tokens=1_000_000,
        cached_input_tokens=400_000,
        cache_write_tokens=100_000,
        output_tokens=1_000_000,
        reasoning_tokens=600_000,  # part of the output, billed at the output rate
    )
    quote = price_entry(catalog, catalog.models[0], usage)
    assert quote.breakdown == {
        "input": Decimal("1.000000000"),  # 500k uncached at $2
        "cached_input": Decimal("0.200000000"),  # 400k at $0.5
        "cache_write": Decimal("0.250000000"),  # 100k at $2.5
        "output": Decimal("8.000000000"),  # 1M (600k of them reasoning) at $8
    }
    assert quote.cost_usd == Decimal("9.450000000") and quote.priced


def test_a_model_without_a_price_counts_at_the_dearest_model_of_its_tier() -> None:
    catalog = _catalog(
        _model("no-such-model-xyz", "medium"),
        _model("mid-cheap", "medium", {"input": 1, "output": 1}),
        _model("mid-dear", "medium", {"input": 3, "output": 6}),
        _model("large-dearer", "large", {"input": 30, "output": 60}),
    )
    unknown = catalog.models[0]
    assert own_price(catalog, unknown, USAGE).cost_usd is None
    quote = price_entry(catalog, unknown, USAGE)
    assert quote.cost_usd == Decimal("9.000000000")  # never $0
    assert quote.price_source == "assumed: most expensive medium model openai:mid-dear"
    assert quote.assumed and not quote.priced


def test_with_no_priced_model_in_its_tier_the_dearest_of_any_tier_is_assumed() -> None:
    catalog = _catalog(
        _model("no-such-model-xyz", "small"),
        _model("large-one", "large", {"input": 30, "output": 60}),
        _model("medium-one", "medium", {"input": 3, "output": 6}),
    )
    quote = price_entry(catalog, catalog.models[0], USAGE)
    assert quote.cost_usd == Decimal("90.000000000")
    assert quote.price_source == (
        "assumed: most expensive model openai:large-one (no priced small model)"
    )


def test_only_a_catalog_without_any_priced_model_leaves_a_call_unpriced() -> None:
    catalog = _catalog(_model("no-such-model-xyz", "small"), _model("nor-this-one-xyz", "large"))
    quote = price_entry(catalog, catalog.models[0], USAGE)
    assert quote.cost_usd is None and not quote.priced
    assert quote.price_source.startswith("unpriced")
