"""The ``analyze`` and ``summarize`` step types: one LLM call each, through the run's LLM client.

Their inputs arrive resolved (the engine replaces ``{"$ref": …}`` by the referenced value), so an
input may be a read_file or list_files output, a command result, an earlier analysis, or text.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agent_engine.executors.base import Executor, ExecutorContext
from agent_engine.llm.base import CompletionRequest, CompletionResponse
from agent_engine.llm.prompts import (
    ANALYSIS_SCHEMA,
    build_analyze_messages,
    build_summarize_messages,
)

ANALYZE_MAX_OUTPUT_TOKENS = 4096
SUMMARIZE_MAX_OUTPUT_TOKENS = 2048
MAX_INPUTS = 200
DEFAULT_SUMMARY_INSTRUCTION = "Summarize the results"

InputValue = str | dict[str, Any] | list[Any]
_INPUTS_DESCRIPTION = (
    'Literal strings or references to earlier outputs, e.g. {"$ref": "steps.2.output"}; '
    "references are resolved before the step runs."
)


def _strip_required(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("must not be empty or blank")
    return stripped


Instruction = Annotated[
    str, Field(min_length=1, max_length=20_000), AfterValidator(_strip_required)
]


class AnalyzeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instruction: Instruction = Field(description="What to analyze the inputs for.")
    inputs: list[InputValue] = Field(
        default_factory=list, max_length=MAX_INPUTS, description=_INPUTS_DESCRIPTION
    )


class SummarizeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instruction: Instruction = DEFAULT_SUMMARY_INSTRUCTION
    inputs: list[InputValue] = Field(
        default_factory=list,
        max_length=MAX_INPUTS,
        description=_INPUTS_DESCRIPTION + " When empty, every earlier step's output is used.",
    )


class LLMStepOutput(BaseModel):
    """The model's text, its JSON answer when it gave one, and who answered at what usage."""

    text: str
    structured: dict[str, Any] = Field(default_factory=dict)
    model: str
    provider: str
    usage: dict[str, Any]


class AnalyzeExecutor(Executor[AnalyzeInput, LLMStepOutput]):
    """Analyze the inputs for the instruction: a Markdown report plus structured findings."""

    name = "analyze"
    input_model = AnalyzeInput
    output_model = LLMStepOutput

    async def execute(self, input: AnalyzeInput, context: ExecutorContext) -> LLMStepOutput:
        """Ask the run's LLM for the analysis as JSON (report, findings, metrics)."""
        request = CompletionRequest(
            messages=build_analyze_messages(input.instruction, input.inputs),
            step_type="analyze",
            json_schema=ANALYSIS_SCHEMA,
            max_output_tokens=ANALYZE_MAX_OUTPUT_TOKENS,
        )
        return step_output(await context.llm.complete(request))


class SummarizeExecutor(Executor[SummarizeInput, LLMStepOutput]):
    """Summarize the inputs, or every earlier step's output when no input is given."""

    name = "summarize"
    input_model = SummarizeInput
    output_model = LLMStepOutput
    needs_prior_outputs = True

    async def execute(self, input: SummarizeInput, context: ExecutorContext) -> LLMStepOutput:
        """Ask the run's LLM for a Markdown summary."""
        inputs: list[Any] = list(input.inputs)
        if not inputs:
            inputs = [context.prior_outputs[number] for number in sorted(context.prior_outputs)]
        request = CompletionRequest(
            messages=build_summarize_messages(input.instruction, inputs),
            step_type="summarize",
            max_output_tokens=SUMMARIZE_MAX_OUTPUT_TOKENS,
        )
        return step_output(await context.llm.complete(request))


def step_output(response: CompletionResponse) -> LLMStepOutput:
    """The step output for a response; a JSON answer's ``report`` becomes the readable text."""
    structured = _structured(response)
    report = structured.get("report")
    text = report if isinstance(report, str) and report.strip() else response.text
    return LLMStepOutput(
        text=text,
        structured=structured,
        model=response.model,
        provider=response.provider,
        usage=response.usage.model_dump(mode="json"),
    )


def _structured(response: CompletionResponse) -> dict[str, Any]:
    if isinstance(response.json_value, dict):
        return response.json_value
    text = response.text.strip()
    if not text.startswith("{"):
        return {}
    try:
        # Providers without a JSON mode return the document as text.
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


ANALYZE = AnalyzeExecutor()
SUMMARIZE = SummarizeExecutor()
