"""Routing policy: the cheapest eligible model of the needed tier that fits context and budget.

Candidates are ordered by tier distance (the needed tier, then larger tiers, then smaller ones),
then by estimated cost; the first viable one is chosen and the rest are its fallbacks.
``AGENT_ENGINE_MODEL`` or a replay pins the decision to one model instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from agent_engine.errors import BudgetExceededError, ProviderError
from agent_engine.llm.base import BUDGET_FRACTION_HINT, CompletionRequest, Usage
from agent_engine.llm.catalog import TIERS, ModelCatalog, ModelEntry, Tier
from agent_engine.llm.pricing import PriceQuote, PriceRates, Usd, price_entry
from agent_engine.llm.tokens import PromptCount
from agent_engine.router.complexity import estimate_complexity
from agent_engine.router.prompt_counts import PromptCounter

PINNED_REASON = "pinned by AGENT_ENGINE_MODEL"
# Below this fraction of its budget left a call goes a tier down (AGENT_ENGINE_ROUTING_SAVER_BELOW).
DEFAULT_SAVER_BELOW = 0.2


class RoutingInputs(BaseModel):
    model_config = ConfigDict(frozen=True)

    step_type: str | None
    # The heuristic count (~4 characters per token) that sizes the tier: the tier must not
    # depend on the model it selects. Each candidate's own count is in its CandidateReport.
    prompt_tokens: int
    prompt_tokens_estimated: bool = True
    max_output_tokens: int
    json_requested: bool
    hints: dict[str, Any]
    remaining_budget_usd: Usd | None
    keywords: list[str]
    complexity: list[str]
    # The share of the tightest budget still free (hints.budget_fraction_left): the budget saver.
    budget_fraction_left: float | None = None


class CandidateReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    tier: Tier
    estimated_cost_usd: Usd | None
    price_source: str
    excluded: str | None = None
    # The prompt tokens this model's worst case was priced with, and how they were counted:
    # "tiktoken:<encoding>" (OpenAI's tokenizer, "+schema" when a native schema's part is
    # estimated) or "heuristic". None in decisions recorded before counts were per model.
    prompt_tokens: int | None = None
    prompt_count_method: str | None = None


class PriceSnapshot(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: str
    rates: PriceRates | None


class Downgrade(BaseModel):
    """What the router would have chosen had the budget saver not stepped in."""

    model_config = ConfigDict(frozen=True)

    tier: Tier
    model: str
    estimated_cost_usd: Usd | None


class RoutingDecision(BaseModel):
    """Which model answers a request, the fallbacks, and why; recorded with every call."""

    model_config = ConfigDict(frozen=True)

    model: str
    tier: Tier
    fallbacks: list[str]
    candidates: list[CandidateReport]
    reason: str
    estimated_cost_usd: Usd | None
    price_snapshot: dict[str, PriceSnapshot]
    inputs: RoutingInputs
    pinned: bool = False
    downgraded_from: Downgrade | None = None

    @property
    def chain(self) -> list[str]:
        """The chosen model followed by its fallbacks, in call order."""
        return [self.model, *self.fallbacks]


def _tier_order(tier: Tier) -> list[Tier]:
    # Prefer a stronger model over a weaker one when the needed tier has nothing eligible.
    index = TIERS.index(tier)
    return [tier, *TIERS[index + 1 :], *reversed(TIERS[:index])]


def estimate_quote(
    catalog: ModelCatalog, entry: ModelEntry, prompt_tokens: int, output: int
) -> PriceQuote:
    """Worst-case price of a call: the whole prompt plus every requested output token."""
    usage = Usage(input_tokens=prompt_tokens, output_tokens=output, estimated=True)
    return price_entry(catalog, entry, usage)


def _exclusion(
    entry: ModelEntry,
    request: CompletionRequest,
    prompt: PromptCount,
    quote: PriceQuote,
    budget: Decimal | None,
    unavailable: str | None,
) -> str | None:
    if unavailable:
        return unavailable
    if request.json_schema is not None and not entry.capabilities.json_output:
        return "no JSON output capability"
    if request.max_output_tokens > entry.max_output_tokens:
        return (
            f"max_output_tokens {request.max_output_tokens} > model limit {entry.max_output_tokens}"
        )
    needed = prompt.tokens + request.max_output_tokens
    if needed > entry.context_window:
        about = "~" if prompt.estimated else ""
        return f"{about}{needed} tokens exceed the context window {entry.context_window}"
    return _budget_exclusion(quote, budget)


def _budget_exclusion(quote: PriceQuote, budget: Decimal | None) -> str | None:
    if budget is None:
        return None
    if quote.cost_usd is None:
        return "unpriced: cannot be checked against the budget"
    if quote.cost_usd > budget:
        return f"over budget: est. ${quote.cost_usd} > remaining ${budget}"
    return None


def _inputs(request: CompletionRequest, budget: Decimal | None) -> tuple[RoutingInputs, Tier]:
    estimate = estimate_complexity(request)
    inputs = RoutingInputs(
        step_type=request.step_type,
        prompt_tokens=estimate.prompt_tokens,
        max_output_tokens=request.max_output_tokens,
        json_requested=request.json_schema is not None,
        hints=dict(request.hints),
        remaining_budget_usd=budget,
        keywords=estimate.keywords,
        complexity=estimate.reasons,
        budget_fraction_left=_fraction_left(request.hints),
    )
    return inputs, estimate.tier


def _report(
    entry: ModelEntry, prompt: PromptCount, quote: PriceQuote, excluded: str | None
) -> CandidateReport:
    return CandidateReport(
        model=entry.id,
        tier=entry.tier,
        estimated_cost_usd=quote.cost_usd,
        price_source=quote.price_source,
        excluded=excluded,
        prompt_tokens=prompt.tokens,
        prompt_count_method=prompt.method,
    )


def _fraction_left(hints: dict[str, Any]) -> float | None:
    """``hints.budget_fraction_left`` as a fraction in [0, 1]; anything else is no hint."""
    value = hints.get(BUDGET_FRACTION_HINT)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return min(max(float(value), 0.0), 1.0)


def _budget_saver(
    viable: list[CandidateReport], chosen: CandidateReport, fraction: float | None, below: float
) -> CandidateReport | None:
    """The cheapest viable model of the tier below ``chosen``'s when less than ``below`` of
    the budget is left and it is estimated cheaper; None otherwise. Viable models all have the
    capabilities the request needs."""
    if fraction is None or below <= 0 or fraction >= below:
        return None
    index = TIERS.index(chosen.tier)
    if index == 0 or chosen.estimated_cost_usd is None:
        return None
    lower = [r for r in viable if r.tier == TIERS[index - 1] and r.estimated_cost_usd is not None]
    if not lower:
        return None
    cheapest = min(lower, key=lambda r: r.estimated_cost_usd or Decimal(0))
    estimate = cheapest.estimated_cost_usd
    return cheapest if estimate is not None and estimate < chosen.estimated_cost_usd else None


def _no_route(tier: Tier, reports: list[CandidateReport], budget: Decimal | None) -> Exception:
    summary = "; ".join(f"{r.model}: {r.excluded}" for r in reports) or "the catalog is empty"
    data: dict[str, Any] = {
        "candidates": [r.model_dump(mode="json") for r in reports],
        "tier": tier,
    }
    if any((r.excluded or "").startswith(("over budget", "unpriced")) for r in reports):
        return BudgetExceededError(
            f"no model fits the remaining budget ${budget}: {summary}",
            remaining_budget_usd=str(budget),
            **data,
        )
    return ProviderError(
        f"no eligible model for tier {tier}: {summary}", retryable=False, kind="no_model", **data
    )


def _apply_last_resort(
    catalog: ModelCatalog, reports: list[CandidateReport], asked: str | None = None
) -> list[CandidateReport]:
    """Exclude last-resort models whenever a regular model is viable, except the one
    ``hints.model`` asks for by name (last resort means "never chosen unasked")."""
    last_resort = {m.id for m in catalog.models if m.last_resort and m.id != asked}
    if not any(r.excluded is None and r.model not in last_resort for r in reports):
        return reports
    return [
        r.model_copy(update={"excluded": "last resort: another model is eligible"})
        if r.excluded is None and r.model in last_resort
        else r
        for r in reports
    ]


def decide_route(
    request: CompletionRequest,
    catalog: ModelCatalog,
    *,
    remaining_budget_usd: Decimal | None = None,
    pinned_model: str | None = None,
    env: Mapping[str, str] | None = None,
    saver_below: float = DEFAULT_SAVER_BELOW,
) -> RoutingDecision:
    """Choose a model for ``request``; raise BudgetExceededError/ProviderError if none fits.
    Below ``saver_below`` of the budget left (``hints.budget_fraction_left``) the cheapest
    eligible model of the tier below is chosen instead, and the decision says so."""
    if pinned_model:
        return pin_decision(
            request,
            catalog,
            pinned_model,
            reason=PINNED_REASON,
            remaining_budget_usd=remaining_budget_usd,
        )
    inputs, tier = _inputs(request, remaining_budget_usd)
    order = _tier_order(tier)
    counter = PromptCounter(request, catalog, inputs.prompt_tokens)
    scored: list[tuple[int, bool, Decimal, int, CandidateReport]] = []
    snapshot: dict[str, PriceSnapshot] = {}
    for index, entry in enumerate(catalog.models):
        unavailable = catalog.unavailable_reason(entry, env)
        # A model that cannot be called is not worth a tokenizer pass: the heuristic stands in.
        prompt = counter.heuristic if unavailable else counter.count(entry)
        quote = estimate_quote(catalog, entry, prompt.tokens, request.max_output_tokens)
        snapshot[entry.id] = PriceSnapshot(source=quote.price_source, rates=quote.rates)
        excluded = _exclusion(entry, request, prompt, quote, remaining_budget_usd, unavailable)
        report = _report(entry, prompt, quote, excluded)
        cost = quote.cost_usd if quote.cost_usd is not None else Decimal(0)
        # A model whose price is assumed (unknown) comes after those with a known price.
        scored.append((order.index(entry.tier), not quote.priced, cost, index, report))
    reports = [item[-1] for item in sorted(scored, key=lambda item: item[:4])]
    hinted = request.hints.get("model")
    hinted = hinted if isinstance(hinted, str) and hinted else None
    reports = _apply_last_resort(catalog, reports, hinted)
    viable = [r for r in reports if r.excluded is None]
    if not viable:
        raise _no_route(tier, reports, remaining_budget_usd)
    reason = f"tier {tier} ({'; '.join(inputs.complexity)})"
    match = None
    if hinted is not None:
        match = next((r for r in viable if r.model == hinted), None)
        if match is not None:
            viable = [match, *(r for r in viable if r is not match)]
            reason += f"; {hinted} requested by hints.model"
        else:
            reason += f"; hints.model {hinted} not eligible, ignored"
    chosen = viable[0]
    if chosen.tier != tier:
        reason += f"; no eligible {tier} model, fell back to tier {chosen.tier}"
    fraction = inputs.budget_fraction_left
    # A model asked for by name is the caller's choice: the saver does not override it.
    cheaper = None if match is not None else _budget_saver(viable, chosen, fraction, saver_below)
    downgraded = None
    if cheaper is not None and fraction is not None:
        downgraded = Downgrade(
            tier=chosen.tier, model=chosen.model, estimated_cost_usd=chosen.estimated_cost_usd
        )
        reason += (
            f"; budget saver: {fraction:.0%} of the budget left (< {saver_below:.0%}): "
            f"tier {cheaper.tier} instead of {chosen.tier} ({chosen.model}, "
            f"est. ${chosen.estimated_cost_usd})"
        )
        viable = [cheaper, *(r for r in viable if r is not cheaper)]
        chosen = cheaper
    reason += f"; chose {chosen.model} (cheapest eligible, est. ${chosen.estimated_cost_usd})"
    return RoutingDecision(
        model=chosen.model,
        tier=tier,
        fallbacks=[r.model for r in viable[1:]],
        candidates=reports,
        reason=reason,
        estimated_cost_usd=chosen.estimated_cost_usd,
        price_snapshot=snapshot,
        inputs=inputs,
        downgraded_from=downgraded,
    )


def entry_for(catalog: ModelCatalog, model_id: str, tier: Tier) -> ModelEntry:
    """The catalog entry for ``model_id``, or a stand-in for a pinned model not in the catalog."""
    entry = catalog.find(model_id)
    if entry is not None:
        return entry
    provider, sep, model = model_id.partition(":")
    if not sep or not provider or not model:
        raise ProviderError(f"model id '{model_id}' is not 'provider:model'", kind="no_model")
    catalog.provider(provider)  # an unknown provider is a configuration error, raised here
    # Not in the catalog: limits unknown, so only the request's own bounds apply.
    return ModelEntry(
        provider=provider, model=model, tier=tier, context_window=10**9, max_output_tokens=200_000
    )


def pin_decision(
    request: CompletionRequest,
    catalog: ModelCatalog,
    model_id: str,
    *,
    reason: str,
    remaining_budget_usd: Decimal | None = None,
) -> RoutingDecision:
    """A decision naming only ``model_id`` (pinning, or replaying a recorded decision).

    The budget is still enforced when given; availability is left to the provider call.
    """
    inputs, tier = _inputs(request, remaining_budget_usd)
    entry = entry_for(catalog, model_id, tier)
    prompt = PromptCounter(request, catalog, inputs.prompt_tokens).count(entry)
    quote = estimate_quote(catalog, entry, prompt.tokens, request.max_output_tokens)
    # Only the budget may veto a pin: availability and limits are the operator's call.
    report = _report(entry, prompt, quote, _budget_exclusion(quote, remaining_budget_usd))
    if report.excluded is not None:
        raise _no_route(tier, [report], remaining_budget_usd)
    return RoutingDecision(
        model=entry.id,
        tier=tier,
        fallbacks=[],
        candidates=[report],
        reason=reason,
        estimated_cost_usd=quote.cost_usd,
        price_snapshot={entry.id: PriceSnapshot(source=quote.price_source, rates=quote.rates)},
        inputs=inputs,
        pinned=True,
    )
