"""Routing prices each candidate with its own prompt count and records how it was counted."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from agent_engine.domain.money import quantize_money
from agent_engine.errors import BudgetExceededError
from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.llm.catalog import ModelCatalog
from agent_engine.llm.openai_structured import sent_messages
from agent_engine.llm.tokens import count_prompt_tokens, count_text_tokens
from agent_engine.router.policy import CandidateReport, RoutingDecision, decide_route, pin_decision
from agent_engine.router.prompt_counts import schema_fields_text

ALL_KEYS = {"OPENAI_API_KEY": "k1", "ANTHROPIC_API_KEY": "k2"}
# Repeated English words: OpenAI's tokenizer needs far fewer tokens than ~4 characters each.
PROSE = "Please review the following module for bugs and style problems. " * 40
MAX_OUTPUT = 1_000
SCHEMA = {
    "title": "Findings",
    "type": "object",
    "properties": {"findings": {"type": "array", "items": {"type": "string"}}},
    "required": ["findings"],
    "additionalProperties": False,
}


def _request(**extra: Any) -> CompletionRequest:
    messages = [
        ChatMessage(role="system", content="You review code."),
        ChatMessage(role="user", content=PROSE),
    ]
    return CompletionRequest(messages=messages, max_output_tokens=MAX_OUTPUT, **extra)


def _catalog(*models: dict[str, Any], providers: dict[str, Any] | None = None) -> ModelCatalog:
    return ModelCatalog.model_validate({"models": list(models), "providers": providers or {}})


def _model(provider: str, model: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": provider,
        "model": model,
        "tier": extra.pop("tier", "small"),
        "context_window": extra.pop("context_window", 100_000),
        "max_output_tokens": 8_192,
        "prices": extra.pop("prices", {"input": 2, "output": 8}),
        **extra,
    }


def _candidate(decision: RoutingDecision, model_id: str) -> CandidateReport:
    return next(c for c in decision.candidates if c.model == model_id)


def _worst_case(prompt_tokens: int, input_rate: int = 2, output_rate: int = 8) -> Decimal:
    per_token = Decimal(1) / Decimal(1_000_000)
    return quantize_money((prompt_tokens * input_rate + MAX_OUTPUT * output_rate) * per_token)


def test_each_candidate_is_priced_with_its_own_count_and_records_the_method() -> None:
    catalog = _catalog(
        _model("openai", "gpt-4o-mini"),
        _model("anthropic", "claude-3-5-haiku-latest", prices={"input": 3, "output": 9}),
    )
    request = _request()
    decision = decide_route(request, catalog, env=ALL_KEYS)
    exact = count_prompt_tokens(request.messages, provider_kind="openai", model="gpt-4o-mini")
    openai = _candidate(decision, "openai:gpt-4o-mini")
    assert (openai.prompt_tokens, openai.prompt_count_method) == (exact.tokens, exact.method)
    assert openai.prompt_count_method == "tiktoken:o200k_base"
    assert openai.estimated_cost_usd == _worst_case(exact.tokens)
    anthropic = _candidate(decision, "anthropic:claude-3-5-haiku-latest")
    assert anthropic.prompt_count_method == "heuristic"
    assert anthropic.prompt_tokens == decision.inputs.prompt_tokens
    assert anthropic.estimated_cost_usd == _worst_case(decision.inputs.prompt_tokens, 3, 9)
    # The tier was sized by the heuristic, which differs from the tokenizer on this prompt.
    assert decision.inputs.prompt_tokens_estimated
    assert exact.tokens < decision.inputs.prompt_tokens


def test_the_decision_quotes_the_chosen_openai_models_exact_worst_case() -> None:
    catalog = _catalog(_model("openai", "gpt-4o-mini"), _model("openai", "gpt-4", tier="large"))
    request = _request()
    decision = decide_route(request, catalog, env=ALL_KEYS)
    assert decision.model == "openai:gpt-4o-mini"
    exact = count_prompt_tokens(request.messages, provider_kind="openai", model="gpt-4o-mini")
    assert decision.estimated_cost_usd == _worst_case(exact.tokens)
    gpt4 = _candidate(decision, "openai:gpt-4")
    assert gpt4.prompt_count_method == "tiktoken:cl100k_base"


def test_a_model_fits_its_context_window_by_the_exact_count() -> None:
    request = _request()
    exact = count_prompt_tokens(request.messages, provider_kind="openai", model="gpt-4o")
    window = exact.tokens + MAX_OUTPUT  # the heuristic's count would not fit
    catalog = _catalog(
        _model("openai", "gpt-4o", context_window=window),
        _model("openai", "my-model", context_window=window),
    )
    decision = decide_route(request, catalog, env=ALL_KEYS)
    assert decision.model == "openai:gpt-4o"
    unknown = _candidate(decision, "openai:my-model")
    assert unknown.prompt_count_method == "heuristic"
    assert unknown.excluded is not None
    assert unknown.excluded.startswith("~")
    assert "context window" in unknown.excluded


def test_the_budget_is_checked_against_the_exact_worst_case() -> None:
    request = _request()
    exact = count_prompt_tokens(request.messages, provider_kind="openai", model="gpt-4o-mini")
    catalog = _catalog(_model("openai", "gpt-4o-mini"))
    budget = _worst_case(exact.tokens)
    # Exactly the worst case fits (the heuristic's larger count would have refused it) ...
    fits = decide_route(request, catalog, remaining_budget_usd=budget, env=ALL_KEYS)
    assert fits.estimated_cost_usd == budget
    # ... and the smallest amount less does not.
    with pytest.raises(BudgetExceededError):
        decide_route(request, catalog, remaining_budget_usd=budget - Decimal("1e-9"), env=ALL_KEYS)


def test_a_natively_sent_schema_adds_its_json_and_is_marked_estimated() -> None:
    catalog = _catalog(_model("openai", "gpt-4o-mini"))
    request = _request(json_schema=SCHEMA)
    candidate = decide_route(request, catalog, env=ALL_KEYS).candidates[0]
    assert candidate.prompt_count_method == "tiktoken:o200k_base+schema"
    messages = count_prompt_tokens(request.messages, provider_kind="openai", model="gpt-4o-mini")
    schema_text = schema_fields_text(request, "json_schema")
    assert schema_text is not None
    assert candidate.prompt_tokens == messages.tokens + count_text_tokens(schema_text, "o200k_base")


def test_a_schema_sent_in_the_prompt_is_counted_exactly_as_sent() -> None:
    catalog = _catalog(
        _model("openai", "gpt-4o-mini"),
        providers={
            "openai": {
                "kind": "openai",
                "api_key_env": "OPENAI_API_KEY",
                "structured_output": "json_object",
            }
        },
    )
    request = _request(json_schema=SCHEMA)
    candidate = decide_route(request, catalog, env=ALL_KEYS).candidates[0]
    assert candidate.prompt_count_method == "tiktoken:o200k_base"
    as_sent = sent_messages(request, "json_object")
    exact = count_prompt_tokens(as_sent, provider_kind="openai", model="gpt-4o-mini")
    assert candidate.prompt_tokens == exact.tokens
    plain = count_prompt_tokens(request.messages, provider_kind="openai", model="gpt-4o-mini")
    assert exact.tokens > plain.tokens  # the schema instruction is part of the prompt


def test_a_pinned_model_is_quoted_with_its_own_count() -> None:
    catalog = _catalog(_model("openai", "gpt-4o-mini"))
    request = _request()
    decision = pin_decision(request, catalog, "openai:gpt-4o", reason="pinned")
    exact = count_prompt_tokens(request.messages, provider_kind="openai", model="gpt-4o")
    report = decision.candidates[0]
    assert (report.prompt_tokens, report.prompt_count_method) == (exact.tokens, exact.method)


def test_decisions_recorded_before_per_model_counts_still_load() -> None:
    decision = decide_route(_request(), _catalog(_model("openai", "gpt-4o-mini")), env=ALL_KEYS)
    recorded = decision.model_dump(mode="json")
    for candidate in recorded["candidates"]:
        del candidate["prompt_tokens"], candidate["prompt_count_method"]
    old = RoutingDecision.model_validate(recorded)
    assert old.candidates[0].prompt_count_method is None


def test_a_model_that_cannot_be_called_is_not_tokenized() -> None:
    catalog = _catalog(_model("openai", "gpt-4o-mini"), _model("anthropic", "claude-3-5-haiku"))
    decision = decide_route(_request(), catalog, env={"ANTHROPIC_API_KEY": "k2"})
    openai = _candidate(decision, "openai:gpt-4o-mini")
    assert openai.excluded is not None
    assert "OPENAI_API_KEY" in openai.excluded
    assert openai.prompt_count_method == "heuristic"
