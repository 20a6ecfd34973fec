"""The revision conversation of adaptive planning: the goal, the run so far (its steps, their
states and bounded outputs), what a revision may add, and the answer's schema.

Outputs are bounded before they reach the prompt: each one to ``per_output`` characters of
JSON (long strings lose their middle, so a command's first and last lines stay: pytest names
what failed at the end), and all of them to ``total`` characters (the oldest are left out first,
the step just finished never).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent_engine.llm.base import ChatMessage
from agent_engine.llm.prompt_sections import fenced, parse_sections
from agent_engine.llm.prompts import PLAN_SCHEMA

TASK_REVISE = "revise"
DECISIONS = ("continue", "revise", "done")
_MARKER = f"<!-- agent-engine task: {TASK_REVISE} -->"

REVISION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "decision": {"type": "string", "enum": list(DECISIONS)},
        "steps": {**PLAN_SCHEMA["properties"]["steps"], "minItems": 0},
        "rationale": {"type": "string"},
    },
    "required": ["decision", "steps", "rationale"],
    "additionalProperties": False,
}

_SYSTEM = """\
{marker}
You are the planner of a deterministic agent execution engine, revising the plan of a run that
is under way. A step that observes the world just finished. Decide, from the goal, the run so far
and the outputs, one of:
- "continue": the rest of the plan stands (give no steps);
- "revise": every step that has not started is replaced by your steps (at least one), appended
  after the existing steps and numbered from the "next_step_number" under "Revision";
- "done": the goal is met; the steps that have not started are skipped (summarize steps whose
  inputs need none of the skipped steps still run) and the run ends (give no steps).
Rules for new steps:
- Use only the step types under "Step types", with inputs matching their input schemas.
- "depends_on" lists step numbers: earlier new steps, or existing steps that are not
  "cancelled", "failed" or "rejected" and not among those being replaced. When omitted, the first
  new step depends on the step that just finished ("after_step") and each other on the one before.
- An input may use an earlier step's output: {{"$ref": "steps.<n>.output"}} or a field of it,
  e.g. {{"$ref": "steps.2.output.stdout"}}; the step must depend on step n (directly or not).
- At most "new_steps_allowed" new steps (the run's max_steps); completed steps never change.
Answer with one JSON object only: {{"decision": "continue" | "revise" | "done",
"steps": [{{"step_type": …, "input_data": {{…}}, "depends_on": [..]}}], "rationale": "why"}}."""


@dataclass(frozen=True)
class RevisionPrompt:
    """What a revision conversation asks (as the offline model reads it back)."""

    goal: str
    steps: list[dict[str, Any]]
    revision: dict[str, Any]
    step_types: list[str]
    previous_errors: list[str] = field(default_factory=list)


def bound_output(output: Any, limit: int) -> tuple[Any, bool]:
    """``output`` cut to about ``limit`` characters of JSON, and whether anything was cut."""
    if len(_compact(output)) <= limit:
        return output, False
    cut = _cut_strings(output, max(limit // 2, 100))
    if len(_compact(cut)) <= limit:
        return cut, True
    text = _compact(cut)
    return {"truncated_json": _middle_cut(text, limit)}, True


def bounded_steps(steps: Sequence[dict[str, Any]], per_output: int, total: int) -> list[Any]:
    """The run's steps for the prompt, each ``output`` bounded, newest outputs kept first."""
    shown: list[dict[str, Any]] = [dict(step) for step in steps]
    used = 0
    for entry in reversed(shown):
        if "output" not in entry:
            continue
        bounded, cut = bound_output(entry["output"], per_output)
        size = len(_compact(bounded))
        if used + size > total and used > 0:
            entry["output"] = {"omitted": f"{size} characters not shown (prompt size limit)"}
            entry["output_truncated"] = True
            continue
        used += size
        entry["output"] = bounded
        if cut:
            entry["output_truncated"] = True
    return shown


def build_revision_messages(
    goal: str,
    steps: Sequence[dict[str, Any]],
    revision: dict[str, Any],
    step_catalog: list[dict[str, Any]],
    previous_errors: Sequence[str] | None = None,
) -> list[ChatMessage]:
    """The revision conversation; ``steps`` are already bounded (:func:`bounded_steps`)."""
    parts = [
        "### Goal",
        fenced(goal),
        "### Run so far",
        fenced(_pretty(list(steps)), "json"),
        "### Revision",
        fenced(_pretty(revision), "json"),
        "### Step types",
        fenced(_pretty(step_catalog), "json"),
    ]
    messages = [
        ChatMessage(role="system", content=_SYSTEM.format(marker=_MARKER)),
        ChatMessage(role="user", content="\n".join(parts)),
    ]
    if previous_errors:
        text = "\n".join(f"- {error}" for error in previous_errors)
        messages.append(
            ChatMessage(
                role="user",
                content="The previous answer was refused. Correct these errors and answer "
                f"again.\n### Validation errors\n{fenced(text)}",
            )
        )
    return messages


def parse_revision_prompt(messages: Sequence[ChatMessage]) -> RevisionPrompt:
    """Recover what :func:`build_revision_messages` wrote."""
    goal = ""
    steps: list[dict[str, Any]] = []
    revision: dict[str, Any] = {}
    step_types: list[str] = []
    errors: list[str] = []
    for message in messages:
        if message.role != "user":
            continue
        for section in parse_sections(message.content):
            if section.kind == "goal":
                goal = section.content
            elif section.kind == "run_so_far":
                steps = _loads(section.content, [])
            elif section.kind == "revision":
                revision = _loads(section.content, {})
            elif section.kind == "step_types":
                step_types = [
                    str(entry.get("step_type"))
                    for entry in _loads(section.content, [])
                    if isinstance(entry, dict) and entry.get("step_type")
                ]
            elif section.kind == "validation_errors":
                errors += [line[2:] for line in section.content.split("\n") if line[:2] == "- "]
    return RevisionPrompt(goal, steps, revision, step_types, errors)


def _loads(text: str, default: Any) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return default
    return value if isinstance(value, type(default)) else default


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _middle_cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    keep = max(limit - 40, 20)
    head, tail = text[: keep // 2], text[len(text) - keep // 2 :]
    return f"{head}\n[… {len(text) - 2 * (keep // 2)} characters cut …]\n{tail}"


def _cut_strings(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return _middle_cut(value, limit)
    if isinstance(value, dict):
        return {key: _cut_strings(item, limit) for key, item in value.items()}
    if isinstance(value, list):
        return [_cut_strings(item, limit) for item in value]
    return value
