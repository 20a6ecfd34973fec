"""The router service's OpenAI-compatible endpoint, driven by the official ``openai`` client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest

from agent_engine.llm.catalog import ModelCatalog, load_catalog
from agent_engine.router.app import create_router_app
from agent_engine.router.service import RouterService
from tests.fakes.llm_servers import FakeLLMServer, openai_completion


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


def _service(server: FakeLLMServer) -> RouterService:
    offline = load_catalog().find("offline:offline-1")
    assert offline is not None
    catalog = ModelCatalog.model_validate(
        {
            "providers": {
                "fakeai": {"kind": "openai", "base_url": server.openai_base_url, "timeout_s": 2}
            },
            "models": [
                offline.model_dump(mode="json", by_alias=True),
                {
                    "provider": "fakeai",
                    "model": "paid",
                    "tier": "medium",
                    "context_window": 100_000,
                    "max_output_tokens": 4_096,
                    "prices": {"input": 1, "output": 1},
                },
            ],
        }
    )
    return RouterService(catalog, env={})


@pytest.fixture
async def client(server: FakeLLMServer) -> AsyncIterator[openai.AsyncOpenAI]:
    app = create_router_app(service=_service(server))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    async with openai.AsyncOpenAI(
        base_url="http://router.test/v1", api_key="unused", http_client=http, max_retries=0
    ) as sdk:
        yield sdk


async def test_the_official_client_gets_a_routed_answer_with_the_model_used(
    client: openai.AsyncOpenAI, server: FakeLLMServer
) -> None:
    server.script(openai_completion("routed!", prompt_tokens=7, completion_tokens=3))
    pinned = await client.chat.completions.create(
        model="fakeai:paid", messages=[{"role": "user", "content": "hi"}], max_tokens=20
    )
    assert pinned.model == "fakeai:paid"
    assert pinned.choices[0].message.content == "routed!"
    assert pinned.usage is not None and pinned.usage.total_tokens == 10
    assert server.requests[-1].body["max_tokens"] == 20
    tier = await client.chat.completions.create(
        model="medium", messages=[{"role": "user", "content": "hi"}]
    )
    assert tier.model == "fakeai:paid"  # the one medium model
    assert len(server.requests) == 2
    assert server.requests[-1].body["max_tokens"] == 1024  # the default output limit


async def test_a_stream_from_the_router_reassembles_and_an_unknown_model_is_a_400(
    client: openai.AsyncOpenAI, server: FakeLLMServer
) -> None:
    server.script(openai_completion("streamed " * 20))
    stream = await client.chat.completions.create(
        model="fakeai:paid",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed " * 20
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 12
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
