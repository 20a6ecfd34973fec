"""Providers keep one HTTP client per base URL: calls and providers reuse its connections."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent_engine.llm.anthropic import AnthropicProvider
from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.llm.catalog import ModelCatalog
from agent_engine.llm.openai_compat import OpenAICompatProvider
from agent_engine.llm.providers import build_provider
from agent_engine.llm.transport import ProviderTimeouts, close_provider_clients
from tests.fakes.llm_servers import FakeLLMServer, openai_stream


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-connections-test-0123456789")


def _request() -> CompletionRequest:
    return CompletionRequest(messages=[ChatMessage(role="user", content="hi")], max_output_tokens=8)


def _openai(server: FakeLLMServer, **kwargs: object) -> OpenAICompatProvider:
    return OpenAICompatProvider(base_url=server.openai_base_url, api_key_env=None, **kwargs)  # type: ignore[arg-type]


async def test_two_calls_through_one_provider_use_one_connection(server: FakeLLMServer) -> None:
    provider = _openai(server)
    await provider.complete(_request(), "m")
    await provider.complete(_request(), "m")
    assert len(server.requests) == 2
    assert server.connections == 1


async def test_providers_built_apart_share_the_connection_of_their_base_url(
    server: FakeLLMServer,
) -> None:
    # As each step's router builds its own provider instances.
    await _openai(server).complete(_request(), "m")
    await _openai(server).complete(_request(), "m")
    server.script(openai_stream(["streamed"]))
    await _openai(server, stream=True).complete(_request(), "m")
    assert server.connections == 1


async def test_anthropic_calls_reuse_their_connection_too(server: FakeLLMServer) -> None:
    provider = AnthropicProvider(base_url=server.anthropic_base_url)
    await provider.complete(_request(), "claude")
    await AnthropicProvider(base_url=server.anthropic_base_url).complete(_request(), "claude")
    assert server.connections == 1


async def test_closing_the_shared_clients_drops_their_connections(server: FakeLLMServer) -> None:
    provider = _openai(server)
    await provider.complete(_request(), "m")
    await close_provider_clients()
    await provider.complete(_request(), "m")
    assert server.connections == 2


async def test_other_timeouts_get_a_client_of_their_own(server: FakeLLMServer) -> None:
    await _openai(server, timeout_s=30.0).complete(_request(), "m")
    await _openai(server, timeout_s=31.0).complete(_request(), "m")
    assert server.connections == 2


def _catalog(server: FakeLLMServer, **provider: object) -> ModelCatalog:
    limits = {"tier": "small", "context_window": 10_000, "max_output_tokens": 1_000}
    return ModelCatalog.model_validate(
        {
            "providers": {
                "fakeai": {
                    "kind": "openai",
                    "base_url": server.openai_base_url,
                    "api_key_env": None,
                    **provider,
                }
            },
            "models": [
                {"provider": "fakeai", "model": "plain", **limits},
                {
                    "provider": "fakeai",
                    "model": "reasoner",
                    "max_tokens_field": "max_completion_tokens",
                    **limits,
                },
            ],
        }
    )


async def test_the_output_limit_goes_where_the_catalog_says_per_model(
    server: FakeLLMServer,
) -> None:
    provider = build_provider("fakeai", _catalog(server))
    await provider.complete(_request(), "plain")
    await provider.complete(_request(), "reasoner")
    plain, reasoner = (r.body for r in server.requests)
    assert plain["max_tokens"] == 8
    assert "max_completion_tokens" not in plain
    assert reasoner["max_completion_tokens"] == 8
    assert "max_tokens" not in reasoner


async def test_a_provider_level_field_applies_to_its_models_without_one(
    server: FakeLLMServer,
) -> None:
    provider = build_provider("fakeai", _catalog(server, max_tokens_field="max_completion_tokens"))
    await provider.complete(_request(), "plain")
    assert server.requests[-1].body["max_completion_tokens"] == 8


def test_the_catalog_timeout_wins_over_the_process_setting(server: FakeLLMServer) -> None:
    setting = ProviderTimeouts(read_s=7.0, connect_s=3.0)
    unset = build_provider("fakeai", _catalog(server), timeouts=setting)
    pinned = build_provider("fakeai", _catalog(server, timeout_s=2.5), timeouts=setting)
    assert isinstance(unset, OpenAICompatProvider)
    assert isinstance(pinned, OpenAICompatProvider)
    assert unset.timeouts == setting
    assert pinned.timeouts == ProviderTimeouts(read_s=2.5, connect_s=3.0)
