"""The router HTTP app, RouterClient over it, RoutedLLMClient and build_llm_client."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from agent_engine.config import Settings
from agent_engine.errors import BudgetExceededError, ProviderError
from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.llm.catalog import ModelCatalog, load_catalog
from agent_engine.router.app import create_router_app
from agent_engine.router.client import RoutedLLMClient, RouterClient, build_llm_client
from agent_engine.router.service import RetryPolicy, RouterService
from tests.fakes.llm_servers import FakeLLMServer, error_reply, openai_completion


class NoSleep:
    async def __call__(self, seconds: float) -> None:
        return None


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


def _paid_service(server: FakeLLMServer) -> RouterService:
    catalog = ModelCatalog.model_validate(
        {
            "providers": {
                "fakeai": {"kind": "openai", "base_url": server.openai_base_url, "timeout_s": 2}
            },
            "models": [
                {
                    "provider": "fakeai",
                    "model": "paid",
                    "tier": "small",
                    "context_window": 100_000,
                    "max_output_tokens": 4_096,
                    "prices": {"input": 1, "output": 1},
                }
            ],
        }
    )
    return RouterService(catalog, sleep=NoSleep(), retry=RetryPolicy(attempts_per_model=2))


def _offline_service() -> RouterService:
    return RouterService(load_catalog(), env={})


def _http_client(service: RouterService) -> RouterClient:
    app = create_router_app(service=service)
    return RouterClient("http://router.test", transport=httpx.ASGITransport(app=app))


def _request(text: str = "hello", **extra: Any) -> CompletionRequest:
    return CompletionRequest(
        messages=[ChatMessage(role="user", content=text)], max_output_tokens=100, **extra
    )


async def _raw(service: RouterService, method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_router_app(service=service))
    async with httpx.AsyncClient(transport=transport, base_url="http://router.test") as http:
        return await http.request(method, path, **kwargs)


async def test_health_models_and_route_endpoints() -> None:
    service = _offline_service()
    health = await _raw(service, "GET", "/healthz")
    assert health.json() == {"status": "ok", "eligible_models": ["offline:offline-1"]}
    models = (await _raw(service, "GET", "/v1/models")).json()["models"]
    assert len(models) == 6
    body = {"messages": [{"role": "user", "content": "x"}], "step_type": "plan"}
    routed = (await _raw(service, "POST", "/v1/route", json=body)).json()
    assert routed["model"] == "offline:offline-1"
    assert routed["estimated_cost_usd"] == "0.000000000"
    assert {"candidates", "reason", "decision"} <= routed.keys()


async def test_invalid_body_is_problem_json() -> None:
    response = await _raw(_offline_service(), "POST", "/v1/route", json={"messages": "nope"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert {"type", "title", "status", "detail"} <= problem.keys()
    missing = await _raw(_offline_service(), "GET", "/v1/nothing")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_router_client_matches_the_in_process_service(server: FakeLLMServer) -> None:
    server.script(openai_completion("over http", prompt_tokens=1000, completion_tokens=1000))
    response, records, decision = await _http_client(_paid_service(server)).complete(_request())
    assert response.text == "over http"
    assert decision.model == "fakeai:paid"
    assert records[0].cost_usd == Decimal("0.002000000")
    routed = await _http_client(_offline_service()).route(_request())
    assert routed.model == "offline:offline-1"


async def test_router_client_rebuilds_errors_with_their_records(server: FakeLLMServer) -> None:
    server.script(error_reply(500), error_reply(500))
    client = _http_client(_paid_service(server))
    with pytest.raises(ProviderError) as caught:
        await client.complete(_request())
    assert caught.value.is_retryable
    assert caught.value.data["kind"] == "exhausted"
    assert len(caught.value.data["calls"]) == 2
    with pytest.raises(BudgetExceededError):
        await client.route(_request(), Decimal("0"))


async def test_unreachable_router_is_a_retryable_provider_error() -> None:
    client = RouterClient("http://127.0.0.1:9", timeout_s=1.0)
    with pytest.raises(ProviderError) as caught:
        await client.route(_request())
    assert caught.value.is_retryable


@pytest.mark.parametrize("over_http", [False, True])
async def test_routed_client_keeps_calls_and_spends_the_budget(
    server: FakeLLMServer, over_http: bool
) -> None:
    service = _paid_service(server)
    backend = _http_client(service) if over_http else service
    llm = RoutedLLMClient(backend, remaining_budget_usd=Decimal("1"))
    server.script(openai_completion("a", prompt_tokens=1000, completion_tokens=0))
    assert (await llm.complete(_request())).text == "a"
    assert llm.remaining_budget_usd == Decimal("0.999000000")
    server.script(error_reply(500), error_reply(500))
    with pytest.raises(ProviderError):
        await llm.complete(_request())
    assert [c.error is None for c in llm.calls] == [True, False, False]
    assert len(llm.decisions) == 1
    assert (await llm.route(_request())).model == "fakeai:paid"


def test_build_llm_client_picks_in_process_or_http(monkeypatch: pytest.MonkeyPatch) -> None:
    in_process = build_llm_client(Settings(_env_file=None), Decimal("2"))  # type: ignore[call-arg]
    assert isinstance(in_process.backend, RouterService)
    assert in_process.remaining_budget_usd == Decimal("2")
    remote = build_llm_client(Settings(router_url="http://127.0.0.1:8100", _env_file=None))  # type: ignore[call-arg]
    assert isinstance(remote.backend, RouterClient)
    assert remote.backend.base_url == "http://127.0.0.1:8100"
    assert remote.remaining_budget_usd is None


async def test_pinned_model_setting_pins_every_call() -> None:
    settings = Settings(model="offline:offline-1", _env_file=None)  # type: ignore[call-arg]
    llm = build_llm_client(settings)
    await llm.complete(_request(step_type="plan"))
    assert llm.decisions[0].reason == "pinned by AGENT_ENGINE_MODEL"


async def test_the_budget_saver_works_over_http_and_the_record_says_what_it_saved(
    server: FakeLLMServer,
) -> None:
    limits = {"context_window": 100_000, "max_output_tokens": 4_096}
    catalog = ModelCatalog.model_validate(
        {
            "providers": {
                "fakeai": {"kind": "openai", "base_url": server.openai_base_url, "timeout_s": 2}
            },
            "models": [
                {"provider": "fakeai", "model": "big", "tier": "medium", **limits,
                 "prices": {"input": 10, "output": 10}},
                {"provider": "fakeai", "model": "small", "tier": "small", **limits,
                 "prices": {"input": 1, "output": 1}},
            ],
        }
    )  # fmt: skip
    service = RouterService(catalog, sleep=NoSleep(), saver_below=0.25)
    server.script(openai_completion("ok", prompt_tokens=1000, completion_tokens=0))
    request = CompletionRequest(
        messages=[ChatMessage(role="user", content="analyze")],
        step_type="analyze",
        hints={"budget_fraction_left": 0.1},
    )
    client = RoutedLLMClient(_http_client(service))
    await client.complete(request)
    (record,) = client.calls
    assert record.model == "small"
    assert record.routing is not None
    assert record.routing["downgraded_from"]["model"] == "fakeai:big"
    # The same 1000 tokens on "big" would have cost $0.01; they cost $0.001.
    assert (record.saving, record.saved_usd) == ("routing", Decimal("0.009000000"))
    assert "budget_fraction_left" not in record.request["hints"]  # not part of the request
