"""request_plan: builds the planning request, parses the answer, refuses malformed plans."""

from __future__ import annotations

from typing import Any

import pytest

from agent_engine.errors import ProviderError
from agent_engine.llm.base import (
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMClient,
    LLMProvider,
    Usage,
)
from agent_engine.llm.offline import OfflineProvider
from agent_engine.llm.planning import request_plan
from agent_engine.llm.prompts import PLAN_SCHEMA, parse_plan_prompt

CATALOG = [{"step_type": name} for name in ("list_files", "read_file", "analyze", "summarize")]


class CannedProvider(LLMProvider):
    """Answers every request with the same text (and optional JSON value)."""

    name = "canned"

    def __init__(self, text: str, json_value: Any = None) -> None:
        self.text = text
        self.json_value = json_value

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        return CompletionResponse(
            text=self.text,
            json_value=self.json_value,
            usage=Usage(),
            provider=self.name,
            model=model,
        )


class RecordingClient(LLMClient):
    """Sends every request to one provider and keeps the requests it saw."""

    def __init__(self, provider: LLMProvider) -> None:
        self.provider = provider
        self.requests: list[CompletionRequest] = []

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        self.requests.append(request)
        return await self.provider.complete(request, "m1")

    @property
    def calls(self) -> list[LLMCallRecord]:
        return []


async def test_request_plan_asks_for_json_and_returns_the_plan() -> None:
    client = RecordingClient(OfflineProvider())
    plan = await request_plan(client, "Explain the engine", None, CATALOG)
    assert [step["step_type"] for step in plan["steps"]] == ["analyze", "summarize"]
    assert plan["rationale"]
    assert plan["source"] == "offline"
    (request,) = client.requests
    assert request.step_type == "plan"
    assert request.json_schema == PLAN_SCHEMA


async def test_previous_errors_are_sent_back_to_the_planner() -> None:
    client = RecordingClient(OfflineProvider())
    await request_plan(client, "goal", [{"path": "a.py", "size": 3}], CATALOG, ["step 2: bad"])
    (request,) = client.requests
    assert request.messages[-1].role == "user"
    assert parse_plan_prompt(request.messages).previous_errors == ["step 2: bad"]


async def test_fenced_json_text_is_accepted_and_unknown_keys_dropped() -> None:
    text = (
        'Here:\n```json\n{"steps": [{"step_type": "summarize", "input_data": {}, '
        '"requires_approval": false, "note": "x"}], "rationale": "r"}\n```'
    )
    plan = await request_plan(RecordingClient(CannedProvider(text)), "g", None, CATALOG)
    assert plan == {"steps": [{"step_type": "summarize", "input_data": {}}], "rationale": "r"}


async def test_invalid_json_is_a_non_retryable_provider_error() -> None:
    client = RecordingClient(CannedProvider("I would list the files first."))
    with pytest.raises(ProviderError, match="not valid JSON") as caught:
        await request_plan(client, "g", None, CATALOG)
    assert caught.value.is_retryable is False


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"rationale": "no steps"}, "steps"),
        ({"steps": [], "rationale": "r"}, "steps"),
        ({"steps": [{"input_data": {}}], "rationale": "r"}, "steps.0.step_type"),
        ({"steps": [{"step_type": "x", "input_data": "y"}], "rationale": "r"}, "input_data"),
    ],
)
async def test_wrong_shape_names_the_field(value: dict[str, Any], field: str) -> None:
    client = RecordingClient(CannedProvider("{}", json_value=value))
    with pytest.raises(ProviderError, match=field) as caught:
        await request_plan(client, "g", None, CATALOG)
    assert caught.value.is_retryable is False
