"""An OpenAI call's worst-case quote is what it costs when it uses all it may, to the digit.

The loopback server reports usage as OpenAI would charge it at most (``exact_usage``): the
prompt by OpenAI's counting rule, every requested output token used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.llm.catalog import ModelCatalog
from agent_engine.router.service import RouterService
from tests.fakes.llm_servers import FakeLLMServer, openai_completion

SCHEMA = {
    "title": "Findings",
    "type": "object",
    "properties": {"findings": {"type": "array", "items": {"type": "string"}}},
    "required": ["findings"],
    "additionalProperties": False,
}


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(exact_usage=True) as fake:
        yield fake


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-exact-0123456789")


def _service(server: FakeLLMServer, model: str = "gpt-4o-mini") -> RouterService:
    catalog = ModelCatalog.model_validate(
        {
            "providers": {
                "openai": {
                    "kind": "openai",
                    "base_url": server.openai_base_url,
                    "api_key_env": "OPENAI_API_KEY",
                }
            },
            "models": [
                {
                    "provider": "openai",
                    "model": model,
                    "tier": "small",
                    "context_window": 128_000,
                    "max_output_tokens": 16_384,
                    "prices": {"input": "0.15", "output": "0.6"},
                }
            ],
        }
    )
    return RouterService(catalog)


def _request(**extra: Any) -> CompletionRequest:
    messages = [
        ChatMessage(role="system", content="You are a meticulous reviewer of Python code."),
        ChatMessage(role="user", content="Review:\n\ndef add(a, b):\n    return a - b  # 🙃\n"),
    ]
    return CompletionRequest(messages=messages, max_output_tokens=700, **extra)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4"])
async def test_a_calls_actual_cost_equals_its_worst_case_quote(
    server: FakeLLMServer, model: str
) -> None:
    response, [record], decision = await _service(server, model).complete(_request())
    [candidate] = decision.candidates
    assert candidate.prompt_count_method is not None
    assert candidate.prompt_count_method.startswith("tiktoken:")
    assert response.usage.input_tokens == candidate.prompt_tokens
    assert response.usage.output_tokens == 700
    assert not response.usage.estimated
    assert record.cost_usd is not None
    assert record.cost_usd == decision.estimated_cost_usd


async def test_a_natively_sent_schema_is_in_the_worst_case_too(server: FakeLLMServer) -> None:
    server.script(openai_completion('{"findings": ["subtracts instead of adding"]}'))
    response, [record], decision = await _service(server).complete(_request(json_schema=SCHEMA))
    assert response.json_value == {"findings": ["subtracts instead of adding"]}
    assert decision.candidates[0].prompt_count_method == "tiktoken:o200k_base+schema"
    assert "response_format" in server.requests[0].body
    assert record.cost_usd == decision.estimated_cost_usd


async def test_without_exact_usage_the_scripted_usage_is_reported() -> None:
    with FakeLLMServer() as plain:
        plain.script(openai_completion("ok", prompt_tokens=12, completion_tokens=5))
        response, _, _ = await _service(plain).complete(_request())
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 5)
