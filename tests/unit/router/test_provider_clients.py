"""The router over shared provider clients: per-step clients reuse connections, settings set the
timeouts, and the router app closes the clients when it shuts down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.config import Settings
from agent_engine.errors import ProviderError
from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.llm.catalog import load_catalog
from agent_engine.router.app import create_router_app
from agent_engine.router.client import RouterClient, build_llm_client
from agent_engine.router.service import RetryPolicy, RouterService
from tests.fakes.llm_servers import FakeLLMServer, Reply, openai_completion
from tests.fakes.loopback import LoopbackServer


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


def _catalog_file(tmp_path: Path, server: FakeLLMServer, provider_extra: str = "") -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(
        "providers:\n"
        f"  fakeai: {{kind: openai, base_url: '{server.openai_base_url}', api_key_env: null"
        f"{provider_extra}}}\n"
        "models:\n"
        "  - {provider: fakeai, model: m, tier: small, context_window: 100000,"
        " max_output_tokens: 4096, prices: {input: 1, output: 1}}\n",
        encoding="utf-8",
    )
    return path


def _settings(models_file: Path, **extra: Any) -> Settings:
    return Settings(models_file=models_file, model="fakeai:m", _env_file=None, **extra)  # type: ignore[call-arg]


def _request() -> CompletionRequest:
    return CompletionRequest(messages=[ChatMessage(role="user", content="hi")], max_output_tokens=8)


async def test_each_steps_client_reuses_the_one_connection(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    settings = _settings(_catalog_file(tmp_path, server))
    for _ in range(3):  # one LLM client per step, as the engine builds them
        await build_llm_client(settings).complete(_request())
    assert len(server.requests) == 3
    assert server.connections == 1


async def test_the_timeout_setting_bounds_each_provider_call(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    settings = _settings(_catalog_file(tmp_path, server), llm_timeout_s=0.2)
    service = RouterService.from_settings(settings)
    service.retry = RetryPolicy(attempts_per_model=1)
    server.script(Reply(delay_s=1.5, body=openai_completion().body))
    with pytest.raises(ProviderError) as caught:
        await service.complete(_request())
    assert [c["error"].split(":")[0] for c in caught.value.data["calls"]] == ["timeout"]


async def test_a_catalog_timeout_outlasts_a_shorter_setting(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    models_file = _catalog_file(tmp_path, server, provider_extra=", timeout_s: 10")
    service = RouterService.from_settings(_settings(models_file, llm_timeout_s=0.2))
    server.script(Reply(delay_s=0.6, body=openai_completion("late but in time").body))
    response, records, _ = await service.complete(_request())
    assert response.text == "late but in time"
    assert [r.attempt for r in records] == [1]


async def test_router_app_shutdown_closes_the_provider_clients(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    service = RouterService.from_settings(_settings(_catalog_file(tmp_path, server)))
    app = create_router_app(service=service)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_output_tokens": 8}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as http,
    ):
        for _ in range(2):
            assert (await http.post("/v1/complete", json=body)).status_code == 200
        assert server.connections == 1
    # Shut down: the kept connection is gone, so the next call opens a new one.
    await service.complete(_request())
    assert server.connections == 2


class PeerCount:
    """ASGI middleware that remembers the peer address of every HTTP request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.peers: set[Any] = set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.peers.add(tuple(scope["client"]))
        await self.app(scope, receive, send)


async def test_router_clients_share_one_connection_to_the_router() -> None:
    counted = PeerCount(create_router_app(service=RouterService(load_catalog(), env={})))
    with LoopbackServer(counted, lifespan="on") as router:
        for _ in range(2):
            decision = await RouterClient(router.base_url).route(_request())
            assert decision.model == "offline:offline-1"
        await RouterClient(router.base_url).complete(_request())
    assert len(counted.peers) == 1
