"""The analyze and summarize executors, run against the offline model."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.llm_steps import (
    ANALYZE,
    SUMMARIZE,
    AnalyzeInput,
    SummarizeInput,
)
from agent_engine.executors.registry import ExecutorRegistry
from agent_engine.llm.base import (
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMClient,
    LLMProvider,
    Usage,
)
from agent_engine.llm.offline import OfflineProvider
from agent_engine.llm.prompts import ANALYSIS_SCHEMA, parse_task_prompt

NOTICE = "_Produced by the offline model (deterministic, no LLM)._"
SOURCE = '"""Tool."""\nimport os\n\n\ndef run():\n    """Run."""\n    return 1  # TODO: more\n'


class PlainTextProvider(LLMProvider):
    """A model that ignores the JSON schema and answers prose."""

    name = "plain"

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        usage = Usage(input_tokens=3, output_tokens=2)
        return CompletionResponse(text="All good.", usage=usage, provider=self.name, model=model)


class RecordingClient(LLMClient):
    """Sends every request to one provider and keeps the requests it saw."""

    def __init__(self, provider: LLMProvider) -> None:
        self.provider = provider
        self.requests: list[CompletionRequest] = []

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        self.requests.append(request)
        return await self.provider.complete(request, "offline-1")

    @property
    def calls(self) -> list[LLMCallRecord]:
        return []


@pytest.fixture
def client() -> RecordingClient:
    return RecordingClient(OfflineProvider())


def make_context(
    client: LLMClient, prior: dict[int, dict[str, object]] | None = None
) -> ExecutorContext:
    return ExecutorContext(
        run_id="run-1",
        step_number=5,
        workspace_root=None,
        llm=client,
        logger=logging.getLogger("test_llm_steps"),
        prior_outputs=prior or {},
    )


def test_flags_match_the_design() -> None:
    for executor, name in ((ANALYZE, "analyze"), (SUMMARIZE, "summarize")):
        assert executor.name == name
        assert executor.side_effects is False
        assert executor.idempotent is True
        assert executor.requires_approval is False
        assert executor.needs_workspace is False


def test_analyze_needs_a_non_blank_instruction() -> None:
    with pytest.raises(ValidationError):
        ANALYZE.validate_input({"instruction": "   "})
    with pytest.raises(ValidationError):
        ANALYZE.validate_input({"inputs": []})
    with pytest.raises(ValidationError):
        ANALYZE.validate_input({"instruction": "x", "extra": 1})
    assert SummarizeInput().instruction == "Summarize the results"


def test_plan_validation_accepts_references_in_inputs() -> None:
    registry = ExecutorRegistry([ANALYZE, SUMMARIZE])
    data = {"instruction": "Review", "inputs": [{"$ref": "steps.2.output"}, "note"]}
    registry.validate_step(3, "analyze", data)
    registry.validate_step(4, "summarize", {"inputs": [{"$ref": "steps.3.output.text"}]})


async def test_analyze_reports_findings_on_resolved_inputs(client: RecordingClient) -> None:
    inputs = [
        {"path": "tool.py", "content": SOURCE, "sha256": "ab", "start_line": 1, "end_line": 7},
        {"files": [{"path": "tool.py", "size": 60}, {"path": "tests/test_other.py", "size": 9}]},
    ]
    output = await ANALYZE.execute(
        AnalyzeInput(instruction="Find problems", inputs=inputs), make_context(client)
    )
    assert output.text.startswith(NOTICE)
    assert output.provider == "offline"
    assert output.model == "offline-1"
    kinds = sorted(f["kind"] for f in output.structured["findings"])
    assert kinds == ["missing_test", "todo", "unused_import"]
    assert output.usage["estimated"] is False
    assert output.usage["input_tokens"] > 0
    (request,) = client.requests
    assert (request.step_type, request.json_schema) == ("analyze", ANALYSIS_SCHEMA)
    prompt = parse_task_prompt(request.messages)
    assert [s.kind for s in prompt.sections] == ["file", "listing"]


async def test_analyze_keeps_plain_text_when_the_model_gives_no_json() -> None:
    context = make_context(RecordingClient(PlainTextProvider()))
    output = await ANALYZE.execute(AnalyzeInput(instruction="Review"), context)
    assert (output.text, output.structured, output.provider) == ("All good.", {}, "plain")


async def test_summarize_quotes_its_inputs(client: RecordingClient) -> None:
    inputs = [
        "The run completed in 4 steps. Costs were zero.",
        {"text": "- **error** `a.py:3` bad"},
    ]
    output = await SUMMARIZE.execute(SummarizeInput(inputs=inputs), make_context(client))
    assert output.text.startswith(NOTICE)
    assert "- **error** `a.py:3` bad" in output.text
    assert "The run completed in 4 steps." in output.text
    assert output.structured == {}
    assert client.requests[0].step_type == "summarize"
    assert client.requests[0].json_schema is None


async def test_bare_summarize_uses_every_earlier_output_in_step_order(
    client: RecordingClient,
) -> None:
    prior: dict[int, dict[str, object]] = {
        2: {"path": "README.md", "content": "A tool that counts words.\n", "sha256": "x"},
        1: {"files": [{"path": "README.md", "size": 26}], "truncated": False},
    }
    output = await SUMMARIZE.execute(SummarizeInput(), make_context(client, prior))
    prompt = parse_task_prompt(client.requests[0].messages)
    assert [s.kind for s in prompt.sections] == ["listing", "file"]
    assert prompt.instruction == "Summarize the results"
    assert "`README.md` (1 lines): A tool that counts words." in output.text
