"""What ``llm_calls`` keeps of a structured call: the normalised request and response plus the
bodies exactly as they went on the wire, for failed attempts too, secrets masked; and the callers
that only set ``json_schema`` (the planner here) get the value through the native feature."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.llm.catalog import ModelCatalog
from agent_engine.llm.planning import request_plan
from agent_engine.llm.prompts import PLAN_SCHEMA
from agent_engine.router.client import RoutedLLMClient
from agent_engine.router.service import RetryPolicy, RouterService, request_hash
from tests.fakes.llm_servers import (
    FakeLLMServer,
    anthropic_message,
    error_reply,
    openai_completion,
)

SECRET = "sk-proj-wire-records-0123456789"
PLAN = {"steps": [{"step_type": "list_files", "input_data": {}}], "rationale": "look first"}


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)


def _service(server: FakeLLMServer, first_mode: str = "tools") -> RouterService:
    limits = {"tier": "small", "context_window": 100_000, "max_output_tokens": 4_096}
    catalog = ModelCatalog.model_validate(
        {
            "providers": {
                "fakeai": {"kind": "openai", "base_url": server.openai_base_url},
                "fakeant": {"kind": "anthropic", "base_url": server.anthropic_base_url},
            },
            "models": [
                {
                    "provider": "fakeai",
                    "model": "first",
                    "prices": {"input": 1, "output": 2},
                    "capabilities": {"structured_output": first_mode},
                    **limits,
                },
                {"provider": "fakeant", "model": "second", "prices": {"input": 3, "output": 4}}
                | limits,
            ],
        }
    )
    return RouterService(catalog, retry=RetryPolicy(attempts_per_model=1))


def _request() -> CompletionRequest:
    return CompletionRequest(
        messages=[ChatMessage(role="user", content="Plan.")],
        json_schema=PLAN_SCHEMA,
        max_output_tokens=64,
        step_type="plan",
    )


async def test_each_attempt_records_the_bodies_sent_and_received(server: FakeLLMServer) -> None:
    cut = openai_completion(tool_arguments='{"steps": [', finish_reason="length")
    answer = anthropic_message(None, tool_input=PLAN)
    server.script(cut, answer)
    request = _request()
    response, records, _ = await _service(server).complete(request)
    assert response.json_value == PLAN
    failed, succeeded = records
    assert failed.error is not None and failed.error.startswith("truncated: ")
    assert failed.request["wire"] == {
        "format": "openai.chat_completions",
        "path": "/v1/chat/completions",
        "body": server.requests[0].text,
    }
    assert failed.response == {"wire": {"status": 200, "body": json.dumps(cut.body)}}
    assert succeeded.error is None
    assert succeeded.request["wire"]["format"] == "anthropic.messages"
    assert succeeded.request["wire"]["body"] == server.requests[1].text
    assert succeeded.response is not None
    assert succeeded.response["wire"] == {"status": 200, "body": json.dumps(answer.body)}
    assert succeeded.response["json_value"] == PLAN
    # The normalised request beside the wire form is unchanged, and so is its hash.
    normalised = {k: v for k, v in succeeded.request.items() if k != "wire"}
    assert normalised == request.model_dump(mode="json")
    assert succeeded.request_hash == failed.request_hash == request_hash(request)


async def test_a_secret_echoed_in_a_body_is_masked_in_the_record(server: FakeLLMServer) -> None:
    server.script(openai_completion(tool_arguments=json.dumps({**PLAN, "rationale": SECRET})))
    _, records, _ = await _service(server).complete(_request())
    [record] = records
    assert SECRET not in json.dumps(record.request)
    assert SECRET not in json.dumps(record.response)
    assert record.response is not None
    assert "[REDACTED]" in record.response["wire"]["body"]


@pytest.mark.parametrize("mode", ["json_schema", "tools", "json_object", "none"])
async def test_the_planner_gets_its_plan_through_every_mode(
    server: FakeLLMServer, mode: str
) -> None:
    text = json.dumps(PLAN)
    reply = openai_completion(tool_arguments=text) if mode == "tools" else openai_completion(text)
    server.script(reply)
    client = RoutedLLMClient(_service(server, mode))
    catalog: list[dict[str, Any]] = [{"step_type": "list_files", "input_schema": {}}]
    plan = await request_plan(client, "Look around", [], catalog)
    assert plan == {"steps": PLAN["steps"], "rationale": "look first"}
    assert server.refused == []
    [record] = client.calls
    assert record.request["wire"]["body"] == server.requests[-1].text


async def test_an_http_error_keeps_the_body_it_came_with(server: FakeLLMServer) -> None:
    server.script(error_reply(500, "upstream broke"), anthropic_message(None, tool_input=PLAN))
    _, records, _ = await _service(server).complete(_request())
    failed = records[0]
    assert failed.error is not None and failed.error.startswith("server_error: ")
    assert failed.response is not None
    assert failed.response["wire"]["status"] == 500
    assert "upstream broke" in failed.response["wire"]["body"]
    assert failed.request["wire"]["body"] == server.requests[0].text
