"""JSON schemas on the Chat Completions wire, against a loopback server that checks each body the
way the API does (tests/fakes/wire_rules.py): each mode's fields, strict only where allowed, the
answer read from the content or the tool call, and the failures that must never half-parse."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agent_engine.errors import ProviderError
from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.llm.openai_compat import OpenAICompatProvider
from agent_engine.llm.prompts import PLAN_SCHEMA
from agent_engine.llm.structured_output import StructuredOutput
from tests.fakes.llm_servers import FakeLLMServer, openai_completion, openai_stream

STRICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "score": {"type": ["integer", "null"]}},
    "required": ["answer", "score"],
    "additionalProperties": False,
}
LIST_SCHEMA: dict[str, Any] = {"type": "array", "items": {"type": "integer"}}
PLAN = {"steps": [{"step_type": "list_files", "input_data": {}}], "rationale": "look first"}


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture(autouse=True)
def openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-structured-0123456789")


def _provider(
    server: FakeLLMServer, mode: StructuredOutput = "json_schema", **kwargs: Any
) -> OpenAICompatProvider:
    return OpenAICompatProvider(
        base_url=server.openai_base_url, timeout_s=5.0, structured_output=mode, **kwargs
    )


def _request(schema: dict[str, Any], max_output_tokens: int = 256) -> CompletionRequest:
    messages = [
        ChatMessage(role="system", content="You plan."),
        ChatMessage(role="user", content="Plan the goal."),
    ]
    return CompletionRequest(
        messages=messages, json_schema=schema, max_output_tokens=max_output_tokens
    )


async def test_plan_schema_goes_as_json_schema_without_strict_and_the_content_is_the_value(
    server: FakeLLMServer,
) -> None:
    server.script(openai_completion(json.dumps(PLAN)))
    response = await _provider(server).complete(_request(PLAN_SCHEMA), "gpt-4o-mini")
    assert response.json_value == PLAN
    body = server.requests[-1].body
    # The plan schema has optional fields and free-form objects: strict mode would refuse it.
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": PLAN_SCHEMA, "strict": False},
    }
    assert "tools" not in body
    assert server.refused == []


async def test_a_schema_that_qualifies_is_sent_strict(server: FakeLLMServer) -> None:
    server.script(openai_completion('{"answer": "42", "score": null}'))
    response = await _provider(server).complete(_request(STRICT_SCHEMA), "gpt-4o")
    assert response.json_value == {"answer": "42", "score": None}
    assert server.requests[-1].body["response_format"]["json_schema"]["strict"] is True
    assert server.refused == []


async def test_tools_mode_forces_one_function_and_reads_its_arguments(
    server: FakeLLMServer,
) -> None:
    server.script(openai_completion(tool_arguments=json.dumps(PLAN)))
    response = await _provider(server, "tools").complete(_request(PLAN_SCHEMA), "gpt-4o-mini")
    assert response.json_value == PLAN
    assert json.loads(response.text) == PLAN
    body = server.requests[-1].body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "emit_json",
                "description": "Return the answer as JSON that matches the input schema exactly.",
                "parameters": PLAN_SCHEMA,
                "strict": False,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "emit_json"}}
    assert "response_format" not in body


@pytest.mark.parametrize("mode", ["json_schema", "tools"])
async def test_a_non_object_schema_is_wrapped_strict_and_unwrapped(
    server: FakeLLMServer, mode: StructuredOutput
) -> None:
    wrapped = json.dumps({"value": [1, 2, 3]})
    reply = (
        openai_completion(tool_arguments=wrapped) if mode == "tools" else openai_completion(wrapped)
    )
    server.script(reply)
    response = await _provider(server, mode).complete(_request(LIST_SCHEMA), "gpt-4o")
    assert response.json_value == [1, 2, 3]
    assert json.loads(response.text) == [1, 2, 3]
    body = server.requests[-1].body
    sent = (
        body["tools"][0]["function"] if mode == "tools" else body["response_format"]["json_schema"]
    )
    schema = sent["parameters"] if mode == "tools" else sent["schema"]
    assert schema["properties"]["value"] == LIST_SCHEMA
    assert sent["strict"] is True  # the wrapper closes the object and requires "value"
    assert server.refused == []


async def test_json_object_mode_puts_the_schema_in_the_system_prompt(
    server: FakeLLMServer,
) -> None:
    server.script(openai_completion(json.dumps(PLAN)))
    response = await _provider(server, "json_object").complete(_request(PLAN_SCHEMA), "m")
    assert response.json_value == PLAN
    body = server.requests[-1].body
    assert body["response_format"] == {"type": "json_object"}
    system = body["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("You plan.\n\n")
    assert json.dumps(PLAN_SCHEMA, indent=2, sort_keys=True) in system["content"]
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert server.refused == []  # the instruction carries the word JSON that JSON mode needs


async def test_a_model_without_the_feature_gets_the_schema_in_the_prompt_and_its_text_parsed(
    server: FakeLLMServer,
) -> None:
    fenced = f"Here is the plan:\n```json\n{json.dumps(PLAN, indent=2)}\n```\nGood luck."
    server.script(openai_completion(fenced))
    provider = _provider(server, structured_outputs={"small-model": "none"})
    response = await provider.complete(_request(PLAN_SCHEMA), "small-model")
    assert response.json_value == PLAN
    body = server.requests[-1].body
    assert "response_format" not in body
    assert "tools" not in body
    assert "valid for this JSON schema" in body["messages"][0]["content"]


async def test_without_a_system_message_the_instruction_becomes_the_first(
    server: FakeLLMServer,
) -> None:
    server.script(openai_completion(json.dumps(PLAN)))
    request = CompletionRequest(
        messages=[ChatMessage(role="user", content="Plan.")], json_schema=PLAN_SCHEMA
    )
    await _provider(server, "none").complete(request, "m")
    messages = server.requests[-1].body["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1] == {"role": "user", "content": "Plan."}


async def test_a_refusal_is_a_clear_error_never_a_value(server: FakeLLMServer) -> None:
    server.script(openai_completion(refusal="I can't help with that request."))
    with pytest.raises(ProviderError) as caught:
        await _provider(server).complete(_request(PLAN_SCHEMA), "gpt-4o")
    error = caught.value
    assert error.data["kind"] == "refused"
    assert not error.is_retryable
    assert "refused to answer: I can't help with that request." in error.detail


@pytest.mark.parametrize("mode", ["json_schema", "tools", "none"])
async def test_an_answer_cut_off_at_the_output_limit_is_truncated_not_parsed(
    server: FakeLLMServer, mode: StructuredOutput
) -> None:
    cut = '{"steps": [{"step_type": "list_fi'
    reply = (
        openai_completion(tool_arguments=cut, finish_reason="length")
        if mode == "tools"
        else openai_completion(cut, finish_reason="length")
    )
    server.script(reply)
    with pytest.raises(ProviderError) as caught:
        await _provider(server, mode).complete(_request(PLAN_SCHEMA, 32), "gpt-4o")
    error = caught.value
    assert error.data["kind"] == "truncated"
    assert not error.is_retryable
    assert "output limit (32 tokens)" in error.detail
    # The error keeps the exchange, so the failed call's record shows what came back.
    assert error.data["wire"]["request_body"] == server.requests[-1].text
    assert '"finish_reason":"length"' in error.data["wire"]["response_body"].replace(" ", "")


async def test_tool_arguments_that_are_not_json_are_a_clear_malformed_error(
    server: FakeLLMServer,
) -> None:
    server.script(openai_completion(tool_arguments='{"steps": [oops]}'))
    with pytest.raises(ProviderError) as caught:
        await _provider(server, "tools").complete(_request(PLAN_SCHEMA), "gpt-4o")
    error = caught.value
    assert error.data["kind"] == "malformed"
    assert not error.is_retryable
    assert "arguments that are not valid JSON" in error.detail
    assert '{"steps": [oops]}' in error.detail


async def test_a_text_request_cut_off_at_the_limit_still_returns_its_text(
    server: FakeLLMServer,
) -> None:
    server.script(openai_completion("a partial summ", finish_reason="length"))
    request = CompletionRequest(messages=[ChatMessage(role="user", content="Summarize.")])
    response = await _provider(server).complete(request, "gpt-4o")
    assert response.text == "a partial summ"


async def test_a_json_request_is_not_streamed_even_by_a_streaming_provider(
    server: FakeLLMServer,
) -> None:
    server.script(openai_completion(json.dumps(PLAN)), openai_stream(["plain ", "text"]))
    provider = _provider(server, stream=True)
    response = await provider.complete(_request(PLAN_SCHEMA), "gpt-4o")
    assert response.json_value == PLAN
    assert "stream" not in server.requests[-1].body
    text = await provider.complete(
        CompletionRequest(messages=[ChatMessage(role="user", content="hi")]), "gpt-4o"
    )
    assert text.text == "plain text"
    assert server.requests[-1].body["stream"] is True


async def test_the_exchange_keeps_the_bodies_exactly_as_they_went(server: FakeLLMServer) -> None:
    reply = openai_completion(tool_arguments=json.dumps(PLAN))
    server.script(reply)
    response = await _provider(server, "tools").complete(_request(PLAN_SCHEMA), "gpt-4o")
    wire = response.wire
    assert wire is not None
    assert wire.format == "openai.chat_completions"
    assert wire.path == "/v1/chat/completions"
    assert wire.request_body == server.requests[-1].text
    assert wire.status == 200
    assert wire.response_body == json.dumps(reply.body)
    assert response.raw == reply.body


async def test_the_fake_refuses_strict_on_a_schema_strict_mode_rejects(
    server: FakeLLMServer,
) -> None:
    # The server's check is what the assertions above rest on: it must catch a wrong strict flag.
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "plan", "schema": PLAN_SCHEMA, "strict": True},
        },
    }
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{server.openai_base_url}/chat/completions", json=body)
    assert answer.status_code == 400
    assert "additionalProperties must be false" in answer.json()["error"]["message"]


@pytest.mark.parametrize("mode", ["json_schema", "tools"])
async def test_a_recorded_body_reads_back_into_the_same_answer_without_a_call(
    server: FakeLLMServer, mode: StructuredOutput
) -> None:
    text = json.dumps(PLAN)
    reply = openai_completion(tool_arguments=text) if mode == "tools" else openai_completion(text)
    server.script(reply)
    provider = _provider(server, mode)
    request = _request(PLAN_SCHEMA)
    live = await provider.complete(request, "gpt-4o")
    assert live.wire is not None and live.wire.response_body is not None
    replayed = provider.read_body(request, "gpt-4o", json.loads(live.wire.response_body))
    assert len(server.requests) == 1
    assert (replayed.text, replayed.json_value, replayed.usage, replayed.raw) == (
        live.text,
        live.json_value,
        live.usage,
        live.raw,
    )


async def test_a_streamed_text_answer_keeps_its_sse_lines(server: FakeLLMServer) -> None:
    server.script(openai_stream(["Hel", "lo"]))
    request = CompletionRequest(messages=[ChatMessage(role="user", content="hi")])
    response = await _provider(server, stream=True).complete(request, "gpt-4o")
    assert response.wire is not None
    assert response.wire.format == "openai.chat_completions.stream"
    assert response.wire.request_body == server.requests[-1].text
    assert response.wire.response_body is not None
    assert response.wire.response_body.splitlines()[-1] == "data: [DONE]"
