"""AnthropicProvider against a real loopback server speaking the Messages API."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from agent_engine.errors import ProviderError
from agent_engine.llm.anthropic import ANTHROPIC_VERSION, AnthropicProvider
from agent_engine.llm.base import ChatMessage, CompletionRequest
from tests.fakes.llm_servers import (
    FakeLLMServer,
    anthropic_message,
    error_reply,
    hang_reply,
    malformed_reply,
)

SECRET = "sk-ant-test-secret-abcdef012345"
OBJECT_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}}


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture(autouse=True)
def anthropic_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


def _request(**extra: object) -> CompletionRequest:
    messages = [
        ChatMessage(role="system", content="rule one"),
        ChatMessage(role="system", content="rule two"),
        ChatMessage(role="user", content="question"),
    ]
    return CompletionRequest(messages=messages, max_output_tokens=128, **extra)  # type: ignore[arg-type]


def _provider(server: FakeLLMServer, timeout_s: float = 2.0) -> AnthropicProvider:
    return AnthropicProvider(base_url=server.anthropic_base_url, timeout_s=timeout_s)


async def test_system_messages_go_to_system_and_headers_carry_key_and_version(
    server: FakeLLMServer,
) -> None:
    response = await _provider(server).complete(_request(), "claude-3-5-haiku-latest")
    assert response.text == "ok"
    received = server.requests[-1]
    assert received.path == "/v1/messages"
    assert received.headers["x-api-key"] == SECRET
    assert received.headers["anthropic-version"] == ANTHROPIC_VERSION == "2023-06-01"
    assert received.body["system"] == "rule one\n\nrule two"
    assert received.body["messages"] == [{"role": "user", "content": "question"}]
    assert received.body["max_tokens"] == 128
    assert "tools" not in received.body


async def test_usage_counts_cache_reads_and_writes_as_input(server: FakeLLMServer) -> None:
    server.script(
        anthropic_message("hi", input_tokens=50, output_tokens=9, cache_read=200, cache_write=30)
    )
    usage = (await _provider(server).complete(_request(), "claude-sonnet-4-0")).usage
    assert usage.input_tokens == 280
    assert usage.cached_input_tokens == 200
    assert usage.cache_write_tokens == 30
    assert usage.output_tokens == 9
    assert not usage.estimated


async def test_json_output_uses_forced_tool_and_returns_its_input(server: FakeLLMServer) -> None:
    server.script(anthropic_message(None, tool_input={"answer": "yes"}))
    response = await _provider(server).complete(_request(json_schema=OBJECT_SCHEMA), "m")
    assert response.json_value == {"answer": "yes"}
    assert json.loads(response.text) == {"answer": "yes"}
    body = server.requests[-1].body
    assert body["tools"][0]["input_schema"] == OBJECT_SCHEMA
    assert body["tool_choice"] == {"type": "tool", "name": "emit_json"}


async def test_non_object_schema_is_wrapped_and_unwrapped(server: FakeLLMServer) -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    server.script(anthropic_message(None, tool_input={"value": [1, 2, 3]}))
    response = await _provider(server).complete(_request(json_schema=schema), "m")
    assert response.json_value == [1, 2, 3]
    input_schema = server.requests[-1].body["tools"][0]["input_schema"]
    assert input_schema["properties"]["value"] == schema


async def test_json_falls_back_to_parsing_text_and_flags_malformed(server: FakeLLMServer) -> None:
    server.script(anthropic_message('{"answer": "from text"}'), anthropic_message("not json"))
    response = await _provider(server).complete(_request(json_schema=OBJECT_SCHEMA), "m")
    assert response.json_value == {"answer": "from text"}
    with pytest.raises(ProviderError) as caught:
        await _provider(server).complete(_request(json_schema=OBJECT_SCHEMA), "m")
    assert caught.value.data["kind"] == "malformed"
    assert not caught.value.is_retryable


async def test_missing_usage_is_estimated(server: FakeLLMServer) -> None:
    server.script(anthropic_message("y" * 8, usage=False))
    usage = (await _provider(server).complete(_request(), "m")).usage
    assert usage.estimated
    assert usage.output_tokens == 2


@pytest.mark.parametrize(
    ("reply", "kind", "retryable", "retry_after"),
    [
        (error_reply(429, retry_after="7"), "rate_limited", True, 7.0),
        (error_reply(529, "Overloaded"), "server_error", True, None),
        (error_reply(400, "bad request"), "client_error", False, None),
        (malformed_reply(), "malformed", False, None),
    ],
)
async def test_errors_are_classified(
    server: FakeLLMServer, reply: object, kind: str, retryable: bool, retry_after: float | None
) -> None:
    server.script(reply)  # type: ignore[arg-type]
    with pytest.raises(ProviderError) as caught:
        await _provider(server).complete(_request(), "m")
    assert caught.value.data["kind"] == kind
    assert caught.value.is_retryable is retryable
    assert caught.value.data.get("retry_after_s") == retry_after


async def test_timeout_is_retryable(server: FakeLLMServer) -> None:
    server.script(hang_reply(1.0))
    with pytest.raises(ProviderError) as caught:
        await _provider(server, timeout_s=0.2).complete(_request(), "m")
    assert caught.value.data["kind"] == "timeout"
    assert caught.value.is_retryable


async def test_key_never_in_errors_or_raw(server: FakeLLMServer) -> None:
    server.script(error_reply(401, f"invalid x-api-key {SECRET}"), anthropic_message(SECRET))
    with pytest.raises(ProviderError) as caught:
        await _provider(server).complete(_request(), "m")
    assert SECRET not in json.dumps(caught.value.problem())
    response = await _provider(server).complete(_request(), "m")
    assert SECRET not in json.dumps(response.raw)


async def test_base_url_from_environment(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_base_url)
    response = await AnthropicProvider(timeout_s=2.0).complete(_request(), "m")
    assert response.provider == "anthropic"
    assert len(server.requests) == 1
