"""The router as a separate process (``python -m agent_engine.router``), called over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from agent_engine.config import Settings
from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.router.client import RouterClient, build_llm_client
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
