"""OpenAICompatProvider against a real loopback server speaking Chat Completions."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from agent_engine.errors import ProviderError
from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.llm.openai_compat import OpenAICompatProvider
from tests.fakes.llm_servers import (
    FakeLLMServer,
    error_reply,
    hang_reply,
    malformed_reply,
    openai_completion,
    openai_stream,
)

SECRET = "sk-test-openai-secret-0123456789"
SCHEMA = {
    "title": "Answer Schema!",
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture(autouse=True)
def openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def _request(**extra: object) -> CompletionRequest:
    messages = [
        ChatMessage(role="system", content="be brief"),
        ChatMessage(role="user", content="hi"),
    ]
    return CompletionRequest(messages=messages, max_output_tokens=64, **extra)  # type: ignore[arg-type]


def _provider(server: FakeLLMServer, **kwargs: object) -> OpenAICompatProvider:
    return OpenAICompatProvider(base_url=server.openai_base_url, timeout_s=2.0, **kwargs)  # type: ignore[arg-type]


async def test_complete_maps_text_and_usage_including_cached_and_reasoning_tokens(
    server: FakeLLMServer,
) -> None:
    server.script(
        openai_completion(
            "hello", prompt_tokens=100, completion_tokens=20, cached_tokens=40, reasoning_tokens=7
        )
    )
    response = await _provider(server).complete(_request(), "gpt-4o-mini")
    assert response.text == "hello"
    assert response.provider == "openai"
    assert response.model == "gpt-4o-mini"
    assert response.json_value is None
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens) == (100, 20)
    assert (usage.cached_input_tokens, usage.reasoning_tokens, usage.estimated) == (40, 7, False)
    assert response.raw["id"] == "chatcmpl-fake"


async def test_request_carries_bearer_key_messages_and_token_limit(server: FakeLLMServer) -> None:
    await _provider(server).complete(_request(temperature=0.5), "gpt-4o-mini")
    received = server.requests[-1]
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {SECRET}"
    assert received.body["model"] == "gpt-4o-mini"
    assert received.body["messages"][0] == {"role": "system", "content": "be brief"}
    # max_tokens is the field every compatible server reads (many ignore max_completion_tokens).
    assert received.body["max_tokens"] == 64
    assert "max_completion_tokens" not in received.body
    assert received.body["temperature"] == 0.5
    assert "stream" not in received.body


async def test_json_schema_is_sent_strict_and_output_parsed(server: FakeLLMServer) -> None:
    server.script(openai_completion('{"answer": "42"}'))
    response = await _provider(server).complete(_request(json_schema=SCHEMA), "gpt-4o-mini")
    assert response.json_value == {"answer": "42"}
    response_format = server.requests[-1].body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"] == {
        "name": "Answer_Schema_",
        "schema": SCHEMA,
        "strict": True,
    }


async def test_json_output_that_does_not_parse_is_malformed_and_keeps_usage(
    server: FakeLLMServer,
) -> None:
    server.script(openai_completion("sorry, no JSON today", prompt_tokens=30, completion_tokens=8))
    with pytest.raises(ProviderError) as caught:
        await _provider(server).complete(_request(json_schema=SCHEMA), "gpt-4o-mini")
    assert caught.value.data["kind"] == "malformed"
    assert not caught.value.is_retryable
    assert caught.value.data["usage"]["input_tokens"] == 30


async def test_streaming_assembles_text_and_takes_usage_from_final_chunk(
    server: FakeLLMServer,
) -> None:
    server.script(openai_stream(["Hel", "lo", " world"], prompt_tokens=9, completion_tokens=4))
    response = await _provider(server, stream=True).complete(_request(), "gpt-4o-mini")
    assert response.text == "Hello world"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (9, 4)
    assert not response.usage.estimated
    body = server.requests[-1].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert response.raw["streamed"] is True


async def test_stream_without_usage_is_estimated(server: FakeLLMServer) -> None:
    server.script(openai_stream(["abcd" * 5], usage=False))
    response = await _provider(server).complete_stream(_request(), "gpt-4o-mini")
    assert response.usage.estimated
    assert response.usage.output_tokens == 5


async def test_missing_usage_is_estimated_from_text_and_marked(server: FakeLLMServer) -> None:
    server.script(openai_completion("x" * 40, usage=False))
    response = await _provider(server).complete(_request(), "gpt-4o-mini")
    assert response.usage.estimated
    assert response.usage.output_tokens == 10
    assert response.usage.input_tokens > 0


async def test_rate_limit_is_retryable_and_carries_retry_after(server: FakeLLMServer) -> None:
    server.script(error_reply(429, "slow down", retry_after="3"))
    with pytest.raises(ProviderError) as caught:
        await _provider(server).complete(_request(), "gpt-4o-mini")
    error = caught.value
    assert error.is_retryable
    assert error.data["kind"] == "rate_limited"
    assert error.data["retry_after_s"] == 3.0
    assert error.data["status_code"] == 429
    assert "slow down" in error.detail


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (500, "server_error", True),
        (503, "server_error", True),
        (400, "client_error", False),
        (401, "client_error", False),
        (404, "client_error", False),
    ],
)
async def test_http_errors_are_classified(
    server: FakeLLMServer, status: int, kind: str, retryable: bool
) -> None:
    server.script(error_reply(status))
    with pytest.raises(ProviderError) as caught:
        await _provider(server).complete(_request(), "gpt-4o-mini")
    assert caught.value.data["kind"] == kind
    assert caught.value.is_retryable is retryable


async def test_timeout_is_retryable(server: FakeLLMServer) -> None:
    server.script(hang_reply(1.0))
    provider = OpenAICompatProvider(base_url=server.openai_base_url, timeout_s=0.2)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(_request(), "gpt-4o-mini")
    assert caught.value.data["kind"] == "timeout"
    assert caught.value.is_retryable


async def test_refused_connection_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = OpenAICompatProvider(base_url=f"http://127.0.0.1:{port}/v1", timeout_s=1.0)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(_request(), "gpt-4o-mini")
    assert caught.value.data["kind"] == "connection"
    assert caught.value.is_retryable


async def test_malformed_body_is_not_retryable(server: FakeLLMServer) -> None:
    server.script(malformed_reply())
    with pytest.raises(ProviderError) as caught:
        await _provider(server).complete(_request(), "gpt-4o-mini")
    assert caught.value.data["kind"] == "malformed"
    assert not caught.value.is_retryable


async def test_missing_key_fails_before_any_request(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ProviderError, match="OPENAI_API_KEY is not set") as caught:
        await _provider(server).complete(_request(), "gpt-4o-mini")
    assert caught.value.data["kind"] == "client_error"
    assert server.requests == []


async def test_key_echoed_by_server_never_reaches_error_or_raw(server: FakeLLMServer) -> None:
    server.script(error_reply(401, f"Incorrect API key provided: {SECRET}"))
    with pytest.raises(ProviderError) as caught:
        await _provider(server).complete(_request(), "gpt-4o-mini")
    assert SECRET not in str(caught.value)
    assert SECRET not in json.dumps(caught.value.problem())
    server.script(openai_completion(f"your key is {SECRET}"))
    response = await _provider(server).complete(_request(), "gpt-4o-mini")
    assert SECRET not in json.dumps(response.raw)


async def test_base_url_from_environment_and_keyless_local_server(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
    provider = OpenAICompatProvider(name="ollama", api_key_env=None, max_tokens_field="max_tokens")
    response = await provider.complete(_request(), "llama3:8b")
    assert response.provider == "ollama"
    received = server.requests[-1]
    assert "authorization" not in received.headers
    assert received.body["max_tokens"] == 64
