"""RouterService on real loopback servers: retries, Retry-After, fallbacks, records, redaction."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import rfc8785

from agent_engine.errors import ProviderError
from agent_engine.llm.anthropic import AnthropicProvider
from agent_engine.llm.base import ChatMessage, CompletionRequest, LLMCallRecord
from agent_engine.llm.catalog import CatalogError, ModelCatalog, load_catalog
from agent_engine.llm.openai_compat import OpenAICompatProvider
from agent_engine.llm.pricing import FREE_SOURCE, OVERRIDE_SOURCE
from agent_engine.router.service import (
    RetryPolicy,
    RouterService,
    build_provider,
    calls_from_error,
    request_hash,
)
from tests.fakes.llm_servers import (
    FakeLLMServer,
    anthropic_message,
    error_reply,
    hang_reply,
    openai_completion,
)

OPENAI_SECRET = "sk-proj-router-secret-9876543210"
ANTHROPIC_SECRET = "sk-ant-router-secret-1234567890"
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}}


class RecordingSleep:
    """Stands in for asyncio.sleep so backoff delays are observed, not waited."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_SECRET)


def _catalog(server: FakeLLMServer, first_timeout_s: float = 2.0) -> ModelCatalog:
    """Two small models on the fake server: ``fakeai:first`` (cheaper), ``fakeant:second``."""
    limits = {"tier": "small", "context_window": 100_000, "max_output_tokens": 4_096}
    return ModelCatalog.model_validate(
        {
            "providers": {
                "fakeai": {
                    "kind": "openai",
                    "base_url": server.openai_base_url,
                    "api_key_env": "OPENAI_API_KEY",
                    "timeout_s": first_timeout_s,
                },
                "fakeant": {
                    "kind": "anthropic",
                    "base_url": server.anthropic_base_url,
                    "api_key_env": "ANTHROPIC_API_KEY",
                    "timeout_s": 2.0,
                },
            },
            "models": [
                {
                    "provider": "fakeai",
                    "model": "first",
                    "prices": {"input": 1, "output": 2},
                    **limits,
                },
                {
                    "provider": "fakeant",
                    "model": "second",
                    "prices": {"input": 3, "output": 4},
                    **limits,
                },
            ],
        }
    )


def _service(server: FakeLLMServer, sleep: RecordingSleep, **kwargs: Any) -> RouterService:
    timeout = kwargs.pop("first_timeout_s", 2.0)
    return RouterService(_catalog(server, timeout), sleep=sleep, **kwargs)


def _request(text: str = "hello", **extra: Any) -> CompletionRequest:
    return CompletionRequest(
        messages=[ChatMessage(role="user", content=text)], max_output_tokens=50, **extra
    )


async def test_success_is_one_record_with_hash_cost_and_routing(server: FakeLLMServer) -> None:
    server.script(openai_completion("hi there", prompt_tokens=1000, completion_tokens=500))
    request = _request()
    response, records, decision = await _service(server, RecordingSleep()).complete(request)
    assert response.text == "hi there"
    assert decision.chain == ["fakeai:first", "fakeant:second"]
    [record] = records
    assert (record.provider, record.model, record.attempt, record.error) == (
        "fakeai",
        "first",
        1,
        None,
    )
    canonical = rfc8785.dumps(request.model_dump(mode="json"))
    assert record.request_hash == request_hash(request)
    assert record.request_hash == hashlib.sha256(canonical).hexdigest()
    assert record.cost_usd == Decimal("0.002000000")  # 1000 x $1/M + 500 x $2/M
    assert record.price_source == OVERRIDE_SOURCE
    assert record.routing is not None
    assert record.routing["model"] == "fakeai:first"
    assert record.response is not None
    assert record.response["text"] == "hi there"


async def test_retryable_errors_are_retried_with_bounded_backoff(server: FakeLLMServer) -> None:
    server.script(error_reply(500), error_reply(502), openai_completion("third time"))
    sleep = RecordingSleep()
    response, records, _ = await _service(server, sleep).complete(_request())
    assert response.text == "third time"
    assert [r.attempt for r in records] == [1, 2, 3]
    assert [r.provider for r in records] == ["fakeai"] * 3
    assert records[0].error is not None
    assert records[0].error.startswith("server_error:")
    assert records[2].error is None
    assert len(sleep.delays) == 2
    assert all(0 <= delay <= 2.25 for delay in sleep.delays)


async def test_retry_after_is_honoured_up_to_the_cap(server: FakeLLMServer) -> None:
    server.script(
        error_reply(429, retry_after="1.5"),
        error_reply(429, retry_after="999"),
        openai_completion("finally"),
    )
    sleep = RecordingSleep()
    service = _service(server, sleep, retry=RetryPolicy(retry_after_cap_s=5.0))
    response, records, _ = await service.complete(_request())
    assert response.text == "finally"
    assert sleep.delays == [1.5, 5.0]
    assert [r.error.split(":")[0] if r.error else None for r in records] == [
        "rate_limited",
        "rate_limited",
        None,
    ]


async def test_retry_after_really_waits(server: FakeLLMServer) -> None:
    server.script(error_reply(429, retry_after="0.3"), openai_completion("ok"))
    service = RouterService(_catalog(server))
    started = time.monotonic()
    await service.complete(_request())
    assert time.monotonic() - started >= 0.3


async def test_falls_back_to_the_next_model_after_retries_run_out(server: FakeLLMServer) -> None:
    server.script(error_reply(500), error_reply(500), error_reply(500), anthropic_message("saved"))
    response, records, decision = await _service(server, RecordingSleep()).complete(_request())
    assert response.text == "saved"
    assert response.provider == "fakeant"
    assert [(r.provider, r.attempt) for r in records] == [
        ("fakeai", 1),
        ("fakeai", 2),
        ("fakeai", 3),
        ("fakeant", 4),
    ]
    assert all(r.routing == decision.model_dump(mode="json") for r in records)


async def test_client_error_falls_back_without_retrying(server: FakeLLMServer) -> None:
    server.script(error_reply(400, "bad param"), anthropic_message("ok"))
    sleep = RecordingSleep()
    _, records, _ = await _service(server, sleep).complete(_request())
    assert [r.provider for r in records] == ["fakeai", "fakeant"]
    assert sleep.delays == []


async def test_malformed_json_output_falls_back_and_is_still_costed(server: FakeLLMServer) -> None:
    server.script(
        openai_completion("not json at all", prompt_tokens=2000, completion_tokens=100),
        anthropic_message(None, tool_input={"answer": "42"}),
    )
    response, records, _ = await _service(server, RecordingSleep()).complete(
        _request(json_schema=SCHEMA)
    )
    assert response.json_value == {"answer": "42"}
    bad = records[0]
    assert bad.error is not None
    assert bad.error.startswith("malformed:")
    assert bad.usage.input_tokens == 2000
    assert bad.cost_usd == Decimal("0.002200000")
    assert len(records) == 2


async def test_timeouts_are_retried_then_fall_back(server: FakeLLMServer) -> None:
    server.script(hang_reply(0.6), hang_reply(0.6), anthropic_message("patient"))
    service = _service(
        server, RecordingSleep(), first_timeout_s=0.2, retry=RetryPolicy(attempts_per_model=2)
    )
    response, records, _ = await service.complete(_request())
    assert response.text == "patient"
    assert [r.error.split(":")[0] if r.error else None for r in records] == [
        "timeout",
        "timeout",
        None,
    ]


async def test_all_candidates_failing_raises_with_every_attempt_recorded(
    server: FakeLLMServer,
) -> None:
    server.script(*[error_reply(500)] * 3, *[error_reply(529, "Overloaded")] * 3)
    with pytest.raises(ProviderError) as caught:
        await _service(server, RecordingSleep()).complete(_request())
    error = caught.value
    assert error.data["kind"] == "exhausted"
    assert error.is_retryable
    records = calls_from_error(error)
    assert [r.attempt for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(r, LLMCallRecord) and r.error for r in records)
    assert error.data["routing"]["model"] == "fakeai:first"


async def test_fallback_is_skipped_once_the_budget_is_spent(server: FakeLLMServer) -> None:
    server.script(openai_completion("not json", prompt_tokens=100_000, completion_tokens=0))
    service = _service(server, RecordingSleep())
    with pytest.raises(ProviderError, match="skipped, over the remaining budget") as caught:
        await service.complete(_request(json_schema=SCHEMA), Decimal("0.05"))
    [record] = calls_from_error(caught.value)
    assert record.cost_usd == Decimal("0.100000000")


async def test_api_keys_never_reach_records_errors_or_logs(
    server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.script(
        error_reply(401, f"Incorrect API key provided: {OPENAI_SECRET}"),
        anthropic_message(f"I saw {OPENAI_SECRET} and {ANTHROPIC_SECRET}"),
    )
    service = _service(server, RecordingSleep())
    request = _request(f"my key is {OPENAI_SECRET}")
    response, records, _ = await service.complete(request)
    server.script(error_reply(401, f"bad key {ANTHROPIC_SECRET}"), *[error_reply(500)] * 3)
    with pytest.raises(ProviderError) as caught:
        await service.complete(request)
    recorded = json.dumps([r.model_dump(mode="json") for r in records])
    recorded += json.dumps([r.model_dump(mode="json") for r in calls_from_error(caught.value)])
    surfaces = [recorded, json.dumps(caught.value.problem()), str(caught.value), caplog.text]
    surfaces.append(json.dumps(response.raw))
    for secret in (OPENAI_SECRET, ANTHROPIC_SECRET):
        assert all(secret not in surface for surface in surfaces)
    assert "[REDACTED]" in recorded
    # The provider did authenticate with the real key; only our records are scrubbed.
    assert server.requests[0].headers["authorization"] == f"Bearer {OPENAI_SECRET}"


async def test_offline_model_answers_for_free_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    service = RouterService(load_catalog(), env={})
    response, records, decision = await service.complete(_request(step_type="summarize"))
    assert decision.model == "offline:offline-1"
    assert response.provider == "offline"
    [record] = records
    assert record.cost_usd == Decimal(0)
    assert record.price_source == FREE_SOURCE


def test_build_provider_uses_the_catalog_configuration(server: FakeLLMServer) -> None:
    catalog = _catalog(server)
    fake = build_provider("fakeai", catalog)
    assert isinstance(fake, OpenAICompatProvider)
    assert fake.name == "fakeai"
    assert fake.base_url == server.openai_base_url
    assert isinstance(build_provider("anthropic"), AnthropicProvider)
    assert build_provider("offline").name == "offline"
    with pytest.raises(CatalogError):
        build_provider("nosuch")


def test_models_listing_reports_eligibility(server: FakeLLMServer) -> None:
    listing = RouterService(load_catalog(), env={"OPENAI_API_KEY": "k"}).list_models()
    eligible = {item["id"]: item["eligible"] for item in listing}
    assert eligible["offline:offline-1"]
    assert eligible["openai:gpt-4o"]
    assert not eligible["anthropic:claude-sonnet-4-0"]
    assert listing[0]["capabilities"]["json"] is True
