"""JSON schemas on the Messages wire, against a loopback server that checks each body the way the
API does: one forced tool whose input_schema is the schema, its tool_use input as the value, the
schema in the system prompt for a model without tools, and refusals and cut-off answers as
errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from agent_engine.errors import ProviderError
from agent_engine.llm.anthropic import AnthropicProvider
from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.llm.prompts import ANALYSIS_SCHEMA, PLAN_SCHEMA
from tests.fakes.llm_servers import FakeLLMServer, anthropic_message

PLAN = {"steps": [{"step_type": "read_file", "input_data": {"path": "a.py"}}], "rationale": "r"}


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture(autouse=True)
def anthropic_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-structured-0123456789")


def _provider(server: FakeLLMServer, **kwargs: Any) -> AnthropicProvider:
    return AnthropicProvider(base_url=server.anthropic_base_url, timeout_s=5.0, **kwargs)


def _request(schema: dict[str, Any] = PLAN_SCHEMA, max_tokens: int = 512) -> CompletionRequest:
    messages = [
        ChatMessage(role="system", content="You plan."),
        ChatMessage(role="user", content="Plan the goal."),
    ]
    return CompletionRequest(messages=messages, json_schema=schema, max_output_tokens=max_tokens)


async def test_the_schema_is_the_input_schema_of_one_forced_tool(server: FakeLLMServer) -> None:
    server.script(anthropic_message(None, tool_input=PLAN))
    response = await _provider(server).complete(_request(), "claude-sonnet-4-0")
    assert response.json_value == PLAN
    body = server.requests[-1].body
    assert body["tools"] == [
        {
            "name": "emit_json",
            "description": "Return the answer as JSON that matches the input schema exactly.",
            "input_schema": PLAN_SCHEMA,
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "emit_json"}
    assert body["system"] == "You plan."
    assert server.refused == []


async def test_analysis_findings_come_from_the_tool_use_block(server: FakeLLMServer) -> None:
    findings = {"report": "# Report", "findings": [], "summary": "fine"}
    server.script(anthropic_message("Let me look.", tool_input=findings))
    response = await _provider(server).complete(_request(ANALYSIS_SCHEMA), "m")
    assert response.json_value == findings
    assert json.loads(response.text) == findings  # the value's text, not the preamble


async def test_a_model_marked_without_tools_gets_the_schema_in_the_system_prompt(
    server: FakeLLMServer,
) -> None:
    fenced = f"```json\n{json.dumps(PLAN)}\n```"
    server.script(anthropic_message(fenced))
    provider = _provider(server, structured_outputs={"claude-old": "none"})
    response = await provider.complete(_request(), "claude-old")
    assert response.json_value == PLAN
    body = server.requests[-1].body
    assert "tools" not in body
    assert "tool_choice" not in body
    assert body["system"].startswith("You plan.\n\nAnswer with one JSON value")
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert server.refused == []


@pytest.mark.parametrize("stop_reason", ["max_tokens", "model_context_window_exceeded"])
async def test_a_tool_call_cut_off_at_the_limit_is_truncated(
    server: FakeLLMServer, stop_reason: str
) -> None:
    server.script(anthropic_message(None, tool_input={"steps": []}, stop_reason=stop_reason))
    with pytest.raises(ProviderError) as caught:
        await _provider(server).complete(_request(max_tokens=16), "m")
    error = caught.value
    assert error.data["kind"] == "truncated"
    assert not error.is_retryable
    assert "output limit (16 tokens)" in error.detail


async def test_a_refusal_is_a_clear_error(server: FakeLLMServer) -> None:
    server.script(anthropic_message("I won't do that.", stop_reason="refusal"))
    with pytest.raises(ProviderError) as caught:
        await _provider(server).complete(_request(), "m")
    error = caught.value
    assert error.data["kind"] == "refused"
    assert not error.is_retryable
    assert "refused to answer: I won't do that." in error.detail
    assert error.data["wire"]["path"] == "/v1/messages"


async def test_a_tool_input_that_is_not_an_object_is_malformed(server: FakeLLMServer) -> None:
    server.script(anthropic_message(None, tool_input=["not", "an", "object"]))
    with pytest.raises(ProviderError) as caught:
        await _provider(server).complete(_request(), "m")
    assert caught.value.data["kind"] == "malformed"
    assert "without the JSON value" in caught.value.detail


async def test_the_exchange_keeps_the_bodies_exactly_as_they_went(server: FakeLLMServer) -> None:
    reply = anthropic_message(None, tool_input=PLAN)
    server.script(reply)
    response = await _provider(server).complete(_request(), "m")
    assert response.wire is not None
    assert response.wire.format == "anthropic.messages"
    assert response.wire.request_body == server.requests[-1].text
    assert json.loads(response.wire.request_body) == server.requests[-1].body
    assert response.wire.response_body == json.dumps(reply.body)


async def test_a_recorded_body_reads_back_into_the_same_answer_or_error(
    server: FakeLLMServer,
) -> None:
    server.script(anthropic_message(None, tool_input=PLAN))
    provider = _provider(server)
    live = await provider.complete(_request(), "m")
    assert live.wire is not None and live.wire.response_body is not None
    replayed = provider.read_body(_request(), "m", json.loads(live.wire.response_body))
    assert (replayed.json_value, replayed.text, replayed.usage) == (
        live.json_value,
        live.text,
        live.usage,
    )
    cut = anthropic_message(None, tool_input={}, stop_reason="max_tokens").body
    with pytest.raises(ProviderError) as caught:
        provider.read_body(_request(), "m", cut)
    assert caught.value.data["kind"] == "truncated"
