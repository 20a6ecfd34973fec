"""The router as a separate process (``python -m agent_engine.router``), called over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import select

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.router.client import RouterClient, build_llm_client
from agent_engine.storage.tables import LLMCall
from tests.fakes.llm_servers import FakeLLMServer, error_reply, openai_completion
from tests.processes import clean_env, router_process

pytestmark = pytest.mark.slow

CATALOG = """
providers:
  fakeai: {{kind: openai, base_url: "{base_url}", api_key_env: null, timeout_s: 5}}
models:
  - {{provider: offline, model: offline-1, tier: small, context_window: 1000000,
      max_output_tokens: 200000}}
  - {{provider: fakeai, model: big-a, tier: large, context_window: 100000,
      max_output_tokens: 4096, prices: {{input: 1, output: 2}}}}
  - {{provider: fakeai, model: big-b, tier: large, context_window: 100000,
      max_output_tokens: 4096, prices: {{input: 3, output: 4}}}}
"""


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture(scope="module")
def router_url(tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLLMServer) -> Iterator[str]:
    """Start the router in its own process on a free port and wait for /healthz."""
    workdir = tmp_path_factory.mktemp("router-process")
    catalog = workdir / "models.yaml"
    catalog.write_text(CATALOG.format(base_url=fake_llm.openai_base_url), encoding="utf-8")
    env = clean_env(AGENT_ENGINE_MODELS_FILE=str(catalog))
    with router_process(workdir, env) as url:
        yield url


def _request(
    text: str = "Summarize: the engine records every call.", **extra: object
) -> CompletionRequest:
    return CompletionRequest(messages=[ChatMessage(role="user", content=text)], **extra)  # type: ignore[arg-type]


async def test_health_and_model_listing(router_url: str) -> None:
    async with httpx.AsyncClient(base_url=router_url) as http:
        health = (await http.get("/healthz")).json()
        models = (await http.get("/v1/models")).json()["models"]
    assert health["status"] == "ok"
    assert set(health["eligible_models"]) == {"offline:offline-1", "fakeai:big-a", "fakeai:big-b"}
    assert [m["id"] for m in models] == ["offline:offline-1", "fakeai:big-a", "fakeai:big-b"]


async def test_offline_completion_through_the_router_process(router_url: str) -> None:
    client = RouterClient(router_url)
    response, records, decision = await client.complete(_request(step_type="summarize"))
    assert decision.model == "offline:offline-1"
    assert response.provider == "offline"
    assert response.text
    [record] = records
    assert record.cost_usd == Decimal(0)
    assert record.routing is not None
    assert record.routing["model"] == "offline:offline-1"


async def test_fallback_happens_inside_the_router_process(
    router_url: str, fake_llm: FakeLLMServer
) -> None:
    fake_llm.script(
        error_reply(400, "bad"),
        openai_completion("from b", prompt_tokens=1000, completion_tokens=0),
    )
    response, records, decision = await RouterClient(router_url).complete(
        _request(hints={"tier": "large"})
    )
    assert decision.chain[:2] == ["fakeai:big-a", "fakeai:big-b"]
    assert response.text == "from b"
    assert [(r.model, r.attempt, r.error is None) for r in records] == [
        ("big-a", 1, False),
        ("big-b", 2, True),
    ]
    assert records[1].cost_usd == Decimal("0.003000000")


async def test_routed_llm_client_over_http_keeps_records_and_budget(
    router_url: str, fake_llm: FakeLLMServer
) -> None:
    settings = Settings(router_url=router_url, _env_file=None)  # type: ignore[call-arg]
    llm = build_llm_client(settings, remaining_budget_usd=Decimal("1"))
    fake_llm.script(openai_completion("paid", prompt_tokens=1000, completion_tokens=1000))
    response = await llm.complete(_request(hints={"model": "fakeai:big-a", "tier": "large"}))
    assert response.text == "paid"
    assert llm.remaining_budget_usd == Decimal("0.997000000")
    fake_llm.script(error_reply(404), error_reply(404))
    fallback = await llm.complete(_request(hints={"tier": "large"}))
    # Both large models failed; the chain ended on the free offline model of the small tier.
    assert fallback.provider == "offline"
    assert [(c.model, c.error is None) for c in llm.calls] == [
        ("big-a", True),
        ("big-a", False),
        ("big-b", False),
        ("offline-1", True),
    ]
    assert llm.remaining_budget_usd == Decimal("0.997000000")


async def test_invalid_request_is_problem_json_over_http(router_url: str) -> None:
    async with httpx.AsyncClient(base_url=router_url) as http:
        response = await http.post("/v1/complete", json={"messages": [{"role": "robot"}]})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "validation_error"


async def test_the_official_openai_client_streams_through_the_router_process(
    router_url: str, fake_llm: FakeLLMServer
) -> None:
    text = "an answer that travelled over real sockets " * 3
    fake_llm.script(openai_completion(text, prompt_tokens=11, completion_tokens=9))
    async with openai.AsyncOpenAI(
        base_url=f"{router_url}/v1", api_key="unused", max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model="fakeai:big-b",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hi"}], n=2
            )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert {c.model for c in chunks} == {"fakeai:big-b"}
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 20
    assert fake_llm.requests[-1].body["model"] == "big-b"
    assert refused.value.param == "n"


async def test_the_engine_endpoint_routes_through_a_router_process_and_records_the_call(
    router_url: str, fake_llm: FakeLLMServer, settings: Settings, tmp_path: Path
) -> None:
    catalog = tmp_path / "models.yaml"  # the engine reads model names from the same catalog
    catalog.write_text(CATALOG.format(base_url=fake_llm.openai_base_url), encoding="utf-8")
    app = create_app(settings.model_copy(update={"router_url": router_url, "models_file": catalog}))
    fake_llm.script(openai_completion("via the router", prompt_tokens=4, completion_tokens=2))
    async with (
        app.router.lifespan_context(app),
        openai.AsyncOpenAI(
            base_url="http://engine.test/v1",
            api_key="local",
            http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)),
            max_retries=0,
        ) as client,
    ):
        answer = await client.chat.completions.create(
            model="large", messages=[{"role": "user", "content": "hi"}]
        )
        async with app.state.engine.sessions() as session:
            (row,) = await session.scalars(select(LLMCall).where(LLMCall.purpose == "gateway"))
    assert answer.model == "fakeai:big-a"  # the cheaper large model, chosen by the router
    assert answer.choices[0].message.content == "via the router"
    assert (row.provider, row.model, row.input_tokens, row.run_id) == ("fakeai", "big-a", 4, None)
