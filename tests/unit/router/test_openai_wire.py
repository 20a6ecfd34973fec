"""Translating OpenAI chat completions requests to ours, and our answers back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent_engine.errors import BudgetExceededError, ProviderError
from agent_engine.llm.base import CompletionResponse, Usage
from agent_engine.llm.catalog import ModelCatalog, load_catalog
from agent_engine.router.openai_answers import (
    completion_object,
    error_answer,
    finish_reason,
    stream_events,
)
from agent_engine.router.openai_wire import ChatRequestError, parse_chat_request
from agent_engine.router.policy import decide_route

CATALOG = load_catalog()
NO_KEYS: dict[str, str] = {}
HELLO = [{"role": "user", "content": "hello"}]


def _parse(body: Any, catalog: ModelCatalog = CATALOG) -> Any:
    return parse_chat_request(body, catalog, NO_KEYS)


def test_a_full_request_maps_every_field() -> None:
    call = _parse(
        {
            "model": "auto",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}],
                },
                {"role": "assistant", "content": "hi"},
            ],
            "max_completion_tokens": 77,
            "max_tokens": 5,
            "temperature": 0.3,
            "top_p": 0.9,
            "seed": 11,
            "stop": "END",
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}},
            },
            "stream": True,
            "stream_options": {"include_usage": True},
            "n": 1,
            "user": "u-1",
            "metadata": {"team": "a"},
            "store": False,
        }
    )
    request = call.request
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "be brief"),
        ("user", "hello"),
        ("assistant", "hi"),
    ]
    assert request.max_output_tokens == 77  # max_completion_tokens wins over max_tokens
    assert (request.temperature, request.top_p, request.seed, request.stop) == (
        0.3,
        0.9,
        11,
        ["END"],
    )
    assert request.json_schema == {"type": "object"}
    assert request.hints == {}
    assert call.stream and call.include_usage
    assert (call.user, call.metadata, call.asked_model) == ("u-1", {"team": "a"}, "auto")


def test_an_unset_request_keeps_our_deterministic_defaults_and_its_old_hash_shape() -> None:
    request = _parse({"model": "auto", "messages": HELLO}).request
    assert request.temperature == 0.0
    assert request.max_output_tokens == 1024
    assert "seed" not in request.model_dump(mode="json")


def test_model_names_map_to_routing_hints() -> None:
    assert _parse({"model": "large", "messages": HELLO}).request.hints == {"tier": "large"}
    pinned = _parse({"model": "offline:offline-1", "messages": HELLO}).request.hints
    assert pinned == {"model": "offline:offline-1", "tier": "small"}
    json_mode = _parse(
        {"model": "auto", "messages": HELLO, "response_format": {"type": "json_object"}}
    )
    assert json_mode.request.json_schema == {"type": "object"}


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"model": "auto", "messages": HELLO, "n": 2}, "n", "n=1"),
        (
            {"model": "auto", "messages": HELLO, "tools": [{"type": "function"}]},
            "tools",
            "tool calling",
        ),
        ({"model": "auto", "messages": []}, "messages", "must not be empty"),
        ({"model": "auto"}, "messages", "Field required"),
        ({"model": "gpt-9", "messages": HELLO}, "model", "unknown model 'gpt-9'"),
        ({"model": "openai:gpt-4o", "messages": HELLO}, "model", "OPENAI_API_KEY"),
        (
            {"model": "auto", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].role",
            "tool",
        ),
        (
            {
                "model": "auto",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ],
            },
            "messages[0].content[0]",
            "image_url",
        ),
        (
            {"model": "auto", "messages": HELLO, "temperature": 3},
            "temperature",
            "less than or equal",
        ),
        (
            {"model": "auto", "messages": HELLO, "response_format": {"type": "xml"}},
            "response_format.type",
            "xml",
        ),
        (
            {"model": "auto", "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]},
            "stop",
            "at most 4",
        ),
        ([1, 2], None, "JSON object"),
    ],
)
def test_bad_or_unsupported_input_is_a_400_naming_the_field(
    body: Any, param: str | None, needle: str
) -> None:
    with pytest.raises(ChatRequestError) as caught:
        _parse(body)
    status, answer = error_answer(caught.value)
    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["param"] == param
    assert needle in answer["error"]["message"]


def _answer(text: str = "the answer", raw: dict[str, Any] | None = None) -> CompletionResponse:
    return CompletionResponse(
        text=text,
        usage=Usage(input_tokens=10, output_tokens=4, cached_input_tokens=3, reasoning_tokens=1),
        provider="fakeai",
        model="m-1",
        raw=raw or {},
    )


def test_a_completion_object_names_the_model_used_and_its_usage() -> None:
    body = completion_object(_answer(), id_="chatcmpl-1", created=5)
    assert body["model"] == "fakeai:m-1"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "the answer"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": {"reasoning_tokens": 1},
    }


def test_finish_reasons_come_from_either_vendors_body() -> None:
    assert finish_reason(_answer(raw={"choices": [{"finish_reason": "length"}]})) == "length"
    assert finish_reason(_answer(raw={"stop_reason": "max_tokens"})) == "length"
    assert finish_reason(_answer(raw={"stop_reason": "end_turn"})) == "stop"


def test_a_stream_reassembles_to_the_answer_and_ends_with_usage_then_done() -> None:
    text = "x" * 100 + " é and more"
    events = list(stream_events(_answer(text), id_="c", created=1, include_usage=True))
    assert events[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content == text
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 14
    without = list(stream_events(_answer(text), id_="c", created=1, include_usage=False))
    assert all('"usage"' not in e for e in without)


def test_budget_and_provider_errors_map_to_openai_statuses() -> None:
    status, body = error_answer(BudgetExceededError("over the budget"))
    assert (status, body["error"]["code"], body["error"]["type"]) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
    )
    status, body = error_answer(ProviderError("down", kind="timeout"))
    assert (status, body["error"]["code"]) == (502, "timeout")


def test_a_request_no_model_can_take_is_a_400_not_a_provider_failure() -> None:
    catalog = ModelCatalog.model_validate(
        {
            "models": [
                {
                    "provider": "offline",
                    "model": "offline-1",
                    "tier": "small",
                    "context_window": 1000,
                    "max_output_tokens": 100,
                }
            ]
        }
    )
    call = _parse({"model": "auto", "messages": HELLO, "max_tokens": 5000}, catalog)
    with pytest.raises(ProviderError) as caught:
        decide_route(call.request, catalog, env=NO_KEYS)
    status, body = error_answer(caught.value)
    assert (status, body["error"]["code"]) == (400, "no_model")
    assert "max_output_tokens 5000" in body["error"]["message"]
