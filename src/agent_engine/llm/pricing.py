"""Exact USD prices for a Usage: catalog override, else bundled genai-prices data, else unpriced.

Only the price data bundled with the installed genai-prices is used: ``calc_price`` reads the
bundled snapshot and we never start its ``UpdatePrices`` fetcher, so pricing needs no network. Each
model's entry is looked up once per process (:func:`library_price`) and reused for every usage.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Annotated, Any, NamedTuple

import genai_prices
from genai_prices.types import ModelPrice
from pydantic import BaseModel, ConfigDict, PlainSerializer

from agent_engine.llm.base import Usage
from agent_engine.llm.catalog import ModelCatalog, ModelEntry, PriceOverride

MONEY_QUANTUM = Decimal("0.000000001")
PER_MILLION = Decimal(1_000_000)
LIBRARY_SOURCE = f"genai-prices {genai_prices.__version__}"
OVERRIDE_SOURCE = "catalog override"
FREE_SOURCE = "free (offline/local)"


# In JSON, money is fixed-point text ("0.000000000", never "0E-9"): exact, and readable.
Usd = Annotated[
    Decimal, PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json")
]


def quantize_usd(value: Decimal) -> Decimal:
    """Money is kept to 9 decimal places everywhere."""
    return value.quantize(MONEY_QUANTUM)


class PriceRates(BaseModel):
    """USD per million tokens for each token class (None: the source gives no flat rate)."""

    model_config = ConfigDict(frozen=True)

    input: Usd | None = None
    cached_input: Usd | None = None
    cache_write: Usd | None = None
    output: Usd | None = None


class PriceQuote(BaseModel):
    """The price of one usage. ``cost_usd`` None means unpriced (flagged), never a silent 0;
    ``assumed``: the model has no known price and is counted at another model's (flagged)."""

    model_config = ConfigDict(frozen=True)

    cost_usd: Usd | None
    price_source: str
    breakdown: dict[str, Usd]
    rates: PriceRates | None = None
    usage_estimated: bool = False
    assumed: bool = False

    @property
    def priced(self) -> bool:
        """Whether the cost comes from the model's own known price."""
        return self.cost_usd is not None and not self.assumed


def _token_classes(usage: Usage) -> dict[str, int]:
    # Usage.input_tokens counts every input token; cached and written tokens are a share of it.
    uncached = max(0, usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens)
    return {
        "input": uncached,
        "cached_input": usage.cached_input_tokens,
        "cache_write": usage.cache_write_tokens,
        "output": usage.output_tokens,
    }


def _breakdown(usage: Usage, rates: PriceRates) -> dict[str, Decimal] | None:
    """Per-class cost from flat rates (cache classes default to the input rate); None if no rate."""
    if rates.input is None or rates.output is None:
        return None
    per_class = {
        "input": rates.input,
        "cached_input": rates.cached_input if rates.cached_input is not None else rates.input,
        "cache_write": rates.cache_write if rates.cache_write is not None else rates.input,
        "output": rates.output,
    }
    counts = _token_classes(usage)
    return {k: quantize_usd(Decimal(counts[k]) * per_class[k] / PER_MILLION) for k in per_class}


def _flat_total(usage: Usage, rates: PriceRates) -> Decimal | None:
    """The exact cost from the model's flat per-million rates, as the library's own price table
    computes it (None when a rate is tiered or missing for a token class the usage has, which
    the library then prices): pricing from the table costs no call into it."""
    if rates.input is None or rates.output is None:
        return None
    if (usage.cached_input_tokens and rates.cached_input is None) or (
        usage.cache_write_tokens and rates.cache_write is None
    ):
        return None
    counts = _token_classes(usage)
    total = Decimal(counts["input"]) * rates.input + Decimal(counts["output"]) * rates.output
    if counts["cached_input"]:
        total += Decimal(counts["cached_input"]) * (rates.cached_input or Decimal(0))
    if counts["cache_write"]:
        total += Decimal(counts["cache_write"]) * (rates.cache_write or Decimal(0))
    return total / PER_MILLION


def _flat(value: Any) -> Decimal | None:
    return value if isinstance(value, Decimal) else None  # tiered prices have no single rate


class LibraryPrice(NamedTuple):
    """A model's genai-prices entry as found once: its price table and its flat rates."""

    model_price: ModelPrice
    rates: PriceRates


@functools.cache
def library_price(provider: str, model: str) -> LibraryPrice | None:
    """The genai-prices entry for ``provider``/``model`` (None: unknown), looked up once per
    process: the bundled snapshot's matching of a model name is the costly part of pricing."""
    try:
        calc = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=0, output_tokens=0), model, provider_id=provider
        )
    except (LookupError, ValueError):
        return None
    return LibraryPrice(calc.model_price, _rates_of(calc.model_price))


def library_rates(provider: str, model: str) -> PriceRates | None:
    """The genai-prices per-million rates for ``provider``/``model``, or None if unknown."""
    found = library_price(provider, model)
    return found.rates if found is not None else None


def _rates_of(model_price: Any) -> PriceRates:
    return PriceRates(
        input=_flat(getattr(model_price, "input_mtok", None)),
        cached_input=_flat(getattr(model_price, "cache_read_mtok", None)),
        cache_write=_flat(getattr(model_price, "cache_write_mtok", None)),
        output=_flat(getattr(model_price, "output_mtok", None)),
    )


def _unpriced(provider: str, model: str, usage: Usage) -> PriceQuote:
    return PriceQuote(
        cost_usd=None,
        price_source=f"unpriced: {provider}:{model} unknown to {LIBRARY_SOURCE}",
        breakdown={},
        usage_estimated=usage.estimated,
    )


def _library_quote(provider: str, model: str, usage: Usage) -> PriceQuote:
    found = library_price(provider, model)
    if found is None:
        return _unpriced(provider, model, usage)
    fast = _flat_total(usage, found.rates)
    if fast is not None:
        return PriceQuote(
            cost_usd=quantize_usd(fast),
            price_source=LIBRARY_SOURCE,
            breakdown=_breakdown(usage, found.rates) or {},
            rates=found.rates,
            usage_estimated=usage.estimated,
        )
    counts = _token_classes(usage)
    library_usage = genai_prices.Usage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=counts["cached_input"],
        cache_write_tokens=counts["cache_write"],
        output_tokens=usage.output_tokens,
    )
    try:
        calc = found.model_price.calc_price(library_usage)
    except (LookupError, ValueError):
        return _unpriced(provider, model, usage)
    breakdown = _breakdown(usage, found.rates) or {
        "input": quantize_usd(calc["input_price"]),
        "output": quantize_usd(calc["output_price"]),
    }
    return PriceQuote(
        cost_usd=quantize_usd(calc["total_price"]),
        price_source=LIBRARY_SOURCE,
        breakdown=breakdown,
        rates=found.rates,
        usage_estimated=usage.estimated,
    )


def price_usage(
    provider: str,
    model: str,
    usage: Usage,
    *,
    override: PriceOverride | None = None,
    local: bool = False,
) -> PriceQuote:
    """Price ``usage`` for a model: local runs are $0, else the override, else genai-prices."""
    if local:
        zero = Decimal(0)
        return PriceQuote(
            cost_usd=quantize_usd(zero),
            price_source=FREE_SOURCE,
            breakdown={k: quantize_usd(zero) for k in _token_classes(usage)},
            rates=PriceRates(input=zero, cached_input=zero, cache_write=zero, output=zero),
            usage_estimated=usage.estimated,
        )
    if override is not None:
        rates = PriceRates(
            input=override.input,
            cached_input=override.cached_input,
            cache_write=override.cache_write,
            output=override.output,
        )
        breakdown = _breakdown(usage, rates) or {}
        return PriceQuote(
            cost_usd=quantize_usd(sum(breakdown.values(), Decimal(0))),
            price_source=OVERRIDE_SOURCE,
            breakdown=breakdown,
            rates=rates,
            usage_estimated=usage.estimated,
        )
    return _library_quote(provider, model, usage)


def own_price(catalog: ModelCatalog, entry: ModelEntry, usage: Usage) -> PriceQuote:
    """Price ``usage`` on a catalog entry by its own price: its override, else genai-prices
    (local runs are $0); unpriced when neither knows the model."""
    return price_usage(
        entry.provider,
        entry.model,
        usage,
        override=entry.prices,
        local=catalog.is_local(entry.provider),
    )


def price_entry(catalog: ModelCatalog, entry: ModelEntry, usage: Usage) -> PriceQuote:
    """Price ``usage`` on a catalog entry; a model with no known price is counted at the
    catalog's most expensive price for it (:func:`assumed_price`), and only a catalog with no
    priced model at all leaves it unpriced."""
    quote = own_price(catalog, entry, usage)
    if quote.cost_usd is not None:
        return quote
    return assumed_price(catalog, entry, usage) or quote


def assumed_price(catalog: ModelCatalog, entry: ModelEntry, usage: Usage) -> PriceQuote | None:
    """``usage`` priced at the most expensive remote catalog model of the entry's tier that has
    a known price (of any tier when its tier has none): never less than the model could cost
    if it is like its peers, so a budget is not overspent by a model whose price is unknown."""
    remote = [
        other
        for other in catalog.models
        if other.id != entry.id and not catalog.is_local(other.provider)
    ]
    same_tier = [other for other in remote if other.tier == entry.tier]
    for pool, where in ((same_tier, f"{entry.tier} model"), (remote, "model")):
        quotes = [(other, own_price(catalog, other, usage)) for other in pool]
        priced = [(other, q) for other, q in quotes if q.cost_usd is not None]
        if not priced:
            continue
        other, dearest = max(priced, key=lambda item: item[1].cost_usd or Decimal(0))
        note = "" if pool is same_tier else f" (no priced {entry.tier} model)"
        return dearest.model_copy(
            update={
                "price_source": f"assumed: most expensive {where} {other.id}{note}",
                "assumed": True,
            }
        )
    return None
