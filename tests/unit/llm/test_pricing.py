"""Pricing: genai-prices offline, catalog overrides, free local models, unpriced never 0."""

from __future__ import annotations

import itertools
import socket
from decimal import Decimal

import genai_prices
import pytest
from genai_prices import data_snapshot

from agent_engine.llm.base import Usage
from agent_engine.llm.catalog import PriceOverride, load_catalog
from agent_engine.llm.pricing import (
    FREE_SOURCE,
    LIBRARY_SOURCE,
    OVERRIDE_SOURCE,
    _flat_total,
    library_price,
    library_rates,
    price_entry,
    price_usage,
    quantize_usd,
)


def test_library_prices_openai_usage_with_cached_input() -> None:
    usage = Usage(input_tokens=1000, cached_input_tokens=200, output_tokens=500)
    quote = price_usage("openai", "gpt-4o-mini", usage)
    # 800 x $0.15/M + 200 x $0.075/M + 500 x $0.60/M
    assert quote.cost_usd == Decimal("0.000435000")
    assert quote.price_source == LIBRARY_SOURCE == f"genai-prices {genai_prices.__version__}"
    assert quote.breakdown == {
        "input": Decimal("0.000120000"),
        "cached_input": Decimal("0.000015000"),
        "cache_write": Decimal("0E-9"),
        "output": Decimal("0.000300000"),
    }


def test_library_prices_anthropic_cache_writes_and_breakdown_sums_to_total() -> None:
    usage = Usage(
        input_tokens=1000, cached_input_tokens=200, cache_write_tokens=100, output_tokens=500
    )
    quote = price_usage("anthropic", "claude-3-5-haiku-latest", usage)
    assert quote.cost_usd == Decimal("0.002676000")
    assert sum(quote.breakdown.values()) == quote.cost_usd
    assert quote.breakdown["cache_write"] == Decimal("0.000100000")
    assert quote.rates is not None
    assert quote.rates.input == Decimal("0.8")


def test_override_wins_and_cache_rates_default_to_input() -> None:
    override = PriceOverride(input=Decimal("2"), output=Decimal("8"), cached_input=Decimal("0.5"))
    usage = Usage(
        input_tokens=1_000_000,
        cached_input_tokens=400_000,
        cache_write_tokens=100_000,
        output_tokens=250_000,
    )
    quote = price_usage("openai", "gpt-4o-mini", usage, override=override)
    assert quote.price_source == OVERRIDE_SOURCE
    assert quote.breakdown == {
        "input": Decimal("1.000000000"),
        "cached_input": Decimal("0.200000000"),
        "cache_write": Decimal("0.200000000"),
        "output": Decimal("2.000000000"),
    }
    assert quote.cost_usd == Decimal("3.400000000")


def test_local_and_offline_models_cost_explicit_zero() -> None:
    quote = price_usage(
        "offline", "offline-1", Usage(input_tokens=10**6, output_tokens=10**6), local=True
    )
    assert quote.cost_usd == Decimal(0)
    assert quote.cost_usd is not None
    assert quote.price_source == FREE_SOURCE
    catalog = load_catalog()
    entry = catalog.find("offline:offline-1")
    assert entry is not None
    assert price_entry(catalog, entry, Usage(input_tokens=5)).price_source == FREE_SOURCE


def test_unknown_model_is_unpriced_not_zero() -> None:
    quote = price_usage("openai", "no-such-model-xyz", Usage(input_tokens=100, output_tokens=10))
    assert quote.cost_usd is None
    assert not quote.priced
    assert quote.price_source.startswith("unpriced")
    assert price_usage("nosuchvendor", "m", Usage(input_tokens=1)).cost_usd is None


def test_money_is_quantized_to_nine_places() -> None:
    quote = price_usage("openai", "gpt-4o", Usage(input_tokens=1, output_tokens=1))
    assert quote.cost_usd is not None
    assert quote.cost_usd.as_tuple().exponent == -9
    assert quantize_usd(Decimal("0.0000000014")) == Decimal("0.000000001")


def test_estimated_usage_is_flagged_on_the_quote() -> None:
    quote = price_usage("openai", "gpt-4o", Usage(input_tokens=10, estimated=True))
    assert quote.usage_estimated


def test_pricing_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pricing tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    quote = price_usage("anthropic", "claude-sonnet-4-0", Usage(input_tokens=10, output_tokens=10))
    assert quote.cost_usd is not None
    assert library_rates("openai", "gpt-4o") is not None
    # Only the bundled snapshot is in use: nothing started the remote price updater.
    assert data_snapshot.get_snapshot().from_auto_update is False


def test_a_model_is_looked_up_once_and_its_table_reused_for_every_usage() -> None:
    library_price.cache_clear()
    first = price_usage("openai", "gpt-4o-mini", Usage(input_tokens=1000, output_tokens=10))
    second = price_usage("openai", "gpt-4o-mini", Usage(input_tokens=10, output_tokens=1000))
    lookups = library_price.cache_info()
    assert (lookups.misses, lookups.hits) == (1, 1)
    assert library_price("openai", "gpt-4o-mini") is library_price("openai", "gpt-4o-mini")
    # The one table still prices each usage on its own.
    assert first.cost_usd == Decimal("0.000156000")
    assert second.cost_usd == Decimal("0.000601500")


def test_an_unknown_model_is_looked_up_once_too() -> None:
    library_price.cache_clear()
    for _ in range(3):
        assert price_usage("openai", "no-such-model-xyz", Usage(input_tokens=1)).cost_usd is None
    assert library_price.cache_info().misses == 1


def test_a_catalog_override_wins_without_a_library_lookup() -> None:
    library_price.cache_clear()
    override = PriceOverride(input=Decimal("1"), output=Decimal("1"))
    quote = price_usage("openai", "gpt-4o-mini", Usage(input_tokens=10**6), override=override)
    assert (quote.cost_usd, quote.price_source) == (Decimal("1.000000000"), OVERRIDE_SOURCE)
    assert library_price.cache_info().currsize == 0


@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "gpt-4o-mini"), ("openai", "gpt-4.1"), ("anthropic", "claude-3-5-haiku-latest")],
)
def test_pricing_from_the_table_matches_the_library_to_the_last_digit(
    provider: str, model: str
) -> None:
    """Flat-rate models are priced from the library's table without calling into it: the same
    cost as the library's own calculation, cache classes included."""
    found = library_price(provider, model)
    assert found is not None
    compared = 0
    for inp, cached, written, out in itertools.product(
        [0, 7, 1234, 250_000], [0, 5, 1000], [0, 3], [0, 9, 4321]
    ):
        if cached + written > inp:
            continue
        usage = Usage(
            input_tokens=inp,
            output_tokens=out,
            cached_input_tokens=cached,
            cache_write_tokens=written,
        )
        library = found.model_price.calc_price(
            genai_prices.Usage(
                input_tokens=inp,
                cache_read_tokens=cached,
                cache_write_tokens=written,
                output_tokens=out,
            )
        )["total_price"]
        if _flat_total(usage, found.rates) is None:
            continue
        compared += 1
        assert price_usage(provider, model, usage).cost_usd == quantize_usd(library)
    assert compared > 20
