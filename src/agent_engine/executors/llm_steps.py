"""The ``analyze`` and ``summarize`` step types: one LLM call each, through the run's LLM client.

Their inputs arrive resolved (the engine replaces ``{"$ref": …}`` by the referenced value), so an
input may be a read_file or list_files output, a command result, an earlier analysis, or text.
A summary always sees the edits the run applied (so it neither misses them nor recommends again
what they did) and says when the goal asked for changes that the run did not make.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agent_engine.executors.base import Executor, ExecutorContext
from agent_engine.llm.base import CompletionRequest, CompletionResponse
from agent_engine.llm.change_intent import asks_for_changes
from agent_engine.llm.prompts import (
    ANALYSIS_SCHEMA,
    build_analyze_messages,
    build_summarize_messages,
    is_edit_output,
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
    goal: str | None = Field(
        default=None,
        max_length=20_000,
        description="The run's goal; when it asks for changes and no edit was applied, the "
        "summary says so (and its output's unmet_goal carries the sentence).",
    )


class LLMStepOutput(BaseModel):
    """The model's text, its JSON answer when it gave one, and who answered at what usage."""

    text: str
    structured: dict[str, Any] = Field(default_factory=dict)
    model: str
    provider: str
    usage: dict[str, Any]


class SummarizeOutput(LLMStepOutput):
    """A summary; ``unmet_goal`` is the sentence saying that the goal asked for changes the run
    did not make (None when it made some, or the goal asked for none, or is not known)."""

    unmet_goal: str | None = None


class AnalyzeExecutor(Executor[AnalyzeInput, LLMStepOutput]):
    """Analyze the inputs for the instruction: a Markdown report plus structured findings."""

    name = "analyze"
    observes = True
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


class SummarizeExecutor(Executor[SummarizeInput, SummarizeOutput]):
    """Summarize the inputs, or every earlier step's output when no input is given."""

    name = "summarize"
    input_model = SummarizeInput
    output_model = SummarizeOutput
    needs_prior_outputs = True

    async def execute(self, input: SummarizeInput, context: ExecutorContext) -> SummarizeOutput:
        """Ask the run's LLM for a Markdown summary of the inputs and of the edits applied."""
        earlier = [context.prior_outputs[number] for number in sorted(context.prior_outputs)]
        inputs: list[Any] = list(input.inputs) or list(earlier)
        # Edits the chosen inputs leave out still change what the summary may recommend.
        inputs += [out for out in earlier if is_edit_output(out) and out not in inputs]
        goal = input.goal or context.goal
        unmet_goal = unmet_goal_note(goal, earlier)
        request = CompletionRequest(
            messages=build_summarize_messages(
                input.instruction, inputs, goal=goal, unmet_goal=unmet_goal
            ),
            step_type="summarize",
            max_output_tokens=SUMMARIZE_MAX_OUTPUT_TOKENS,
        )
        output = step_output(await context.llm.complete(request))
        return SummarizeOutput(**output.model_dump(), unmet_goal=unmet_goal)


def unmet_goal_note(goal: str | None, earlier_outputs: list[Any]) -> str | None:
    """The sentence for a goal that asks for changes when no earlier step applied an edit."""
    if goal is None or not asks_for_changes(goal):
        return None
    if any(is_edit_output(out) and out["diff"].strip() for out in earlier_outputs):
        return None
    first_line = goal.strip().split("\n")[0][:200]
    return (
        "The goal asked for changes, but this run made none: no edit_file step applied a change "
        f"(none was planned, or the edit was rejected or failed). The goal: {first_line}"
    )


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
    except (json.JSONDecodeError, RecursionError):  # not JSON, or nested past the parser
        return {}
    return value if isinstance(value, dict) else {}


ANALYZE = AnalyzeExecutor()
SUMMARIZE = SummarizeExecutor()
