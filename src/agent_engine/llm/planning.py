"""Ask a model for a plan and check that the answer has the plan's shape.

Only the shape is checked here; whether each step's type and input suit an executor is the
engine's check, whose errors come back through ``previous_errors`` on the next attempt.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_engine.errors import ProviderError
from agent_engine.llm.base import CompletionRequest, CompletionResponse, LLMClient
from agent_engine.llm.prompts import PLAN_SCHEMA, build_plan_messages, build_plan_retry_message
from agent_engine.llm.revision_prompts import DECISIONS, REVISION_SCHEMA, build_revision_messages

PLAN_MAX_OUTPUT_TOKENS = 4096
_FENCED_JSON_RE = re.compile(r"```(?:json)?\s*\n(.*?)\n\s*```", re.DOTALL)


class _AnswerStep(BaseModel):
    # Unknown keys are dropped: a model's extra commentary must not fail an otherwise sound plan,
    # and a key such as requires_approval must never let a model lower the approval policy.
    model_config = ConfigDict(extra="ignore")

    step_type: str = Field(min_length=1)
    input_data: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[int] | None = None
    optional: bool = False


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    steps: list[_AnswerStep] = Field(min_length=1)
    rationale: str = ""
    source: str | None = None


class _RevisionAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    decision: str
    steps: list[_AnswerStep] = Field(default_factory=list)
    rationale: str = ""


async def request_plan(
    llm: LLMClient,
    goal: str,
    files: list[dict[str, Any]] | None,
    step_catalog: list[dict[str, Any]],
    previous_errors: list[str] | None = None,
    *,
    adaptive: bool = False,
) -> dict[str, Any]:
    """Ask ``llm`` for a plan: ``{"steps": [...], "rationale": str}`` (plus ``source`` if given).
    ``adaptive``: the planner is told it will revise the plan after steps that observe.

    Raises ``ProviderError`` (not retryable) when the answer is not JSON of the plan's shape.
    """
    messages = build_plan_messages(goal, files, step_catalog, adaptive=adaptive)
    if previous_errors:
        messages.append(build_plan_retry_message(previous_errors))
    request = CompletionRequest(
        messages=messages,
        json_schema=PLAN_SCHEMA,
        step_type="plan",
        max_output_tokens=PLAN_MAX_OUTPUT_TOKENS,
    )
    response = await llm.complete(request)
    return parse_plan_answer(response)


def parse_plan_answer(response: CompletionResponse) -> dict[str, Any]:
    """The plan in ``response`` (its JSON value, else its text), normalised to the plan's keys."""
    value = response.json_value if response.json_value is not None else _loads(response)
    try:
        answer = _Answer.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "answer"
        detail = f"the plan answer does not have the plan's shape: {where}: {first['msg']}"
        raise _error(response, detail) from exc
    steps = [_step_entry(step) for step in answer.steps]
    plan: dict[str, Any] = {"steps": steps, "rationale": answer.rationale}
    if answer.source is not None:
        plan["source"] = answer.source
    return plan


async def request_revision(
    llm: LLMClient,
    goal: str,
    steps: list[dict[str, Any]],
    revision: dict[str, Any],
    step_catalog: list[dict[str, Any]],
    previous_errors: list[str] | None = None,
) -> dict[str, Any]:
    """Ask ``llm`` whether the rest of a running plan stands: ``{"decision": "continue" |
    "revise" | "done", "steps": [...], "rationale": str}`` (steps only with ``revise``).

    Raises ``ProviderError`` (not retryable) when the answer does not have that shape.
    """
    request = CompletionRequest(
        messages=build_revision_messages(goal, steps, revision, step_catalog, previous_errors),
        json_schema=REVISION_SCHEMA,
        step_type="plan",
        max_output_tokens=PLAN_MAX_OUTPUT_TOKENS,
    )
    return parse_revision_answer(await llm.complete(request))


def parse_revision_answer(response: CompletionResponse) -> dict[str, Any]:
    """The revision decision in ``response``, normalised; a shape error names what is wrong."""
    value = response.json_value if response.json_value is not None else _loads(response)
    try:
        answer = _RevisionAnswer.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "answer"
        raise _error(
            response, f"the revision answer is malformed: {where}: {first['msg']}"
        ) from exc
    if answer.decision not in DECISIONS:
        raise _error(
            response,
            f"the revision answer's decision {answer.decision!r} is not one of "
            + ", ".join(repr(d) for d in DECISIONS),
        )
    if answer.decision == "revise" and not answer.steps:
        raise _error(response, "a 'revise' answer must give at least one step")
    if answer.decision != "revise" and answer.steps:
        raise _error(response, f"a {answer.decision!r} answer gives no steps (only 'revise' does)")
    steps = [_step_entry(step) for step in answer.steps]
    return {"decision": answer.decision, "steps": steps, "rationale": answer.rationale}


def _step_entry(step: _AnswerStep) -> dict[str, Any]:
    entry: dict[str, Any] = {"step_type": step.step_type, "input_data": step.input_data}
    if step.depends_on is not None:
        entry["depends_on"] = step.depends_on
    if step.optional:
        entry["optional"] = True
    return entry


def _loads(response: CompletionResponse) -> Any:
    text = response.text.strip()
    fenced = _FENCED_JSON_RE.search(text)
    if fenced:
        # Models without a native JSON mode often wrap the object in a ```json fence.
        text = fenced.group(1)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        detail = f"the plan answer is not valid JSON: {exc.msg} (line {exc.lineno})"
        raise _error(response, detail) from exc
    except RecursionError as exc:
        raise _error(response, "the plan answer nests too deep to parse") from exc


def _error(response: CompletionResponse, detail: str) -> ProviderError:
    return ProviderError(
        f"{response.provider}:{response.model}: {detail}",
        retryable=False,
        provider=response.provider,
        model=response.model,
    )
