"""Prompt conventions shared by the prompt builders and the offline model.

Each task's system message starts with a task marker, and every piece of data sits in a
``### Heading`` section followed by a fenced block whose fence is longer than any backtick run in
the data, so :func:`parse_sections` recovers the data exactly, whatever it contains.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent_engine.llm.base import ChatMessage
from agent_engine.llm.prompt_sections import (
    FileEntry,
    Section,
    fenced,
    is_edit_output,
    listing_line,
    parse_listing,
    parse_sections,
    render_input,
)

__all__ = [
    "ANALYSIS_SCHEMA",
    "MAX_PLAN_FILES",
    "PLAN_SCHEMA",
    "TASK_ANALYZE",
    "TASK_PLAN",
    "TASK_SUMMARIZE",
    "FileEntry",
    "PlanPrompt",
    "Section",
    "TaskPrompt",
    "build_analyze_messages",
    "build_plan_messages",
    "build_plan_retry_message",
    "build_summarize_messages",
    "detect_task",
    "is_edit_output",
    "parse_listing",
    "parse_plan_prompt",
    "parse_sections",
    "parse_task_prompt",
]

TASK_PLAN = "plan"
TASK_ANALYZE = "analyze"
TASK_SUMMARIZE = "summarize"
# A listing longer than this is cut in the planning prompt: the planner needs the shape of the
# workspace, not every path, and the prompt must fit small context windows.
MAX_PLAN_FILES = 2_000

_TASK_MARKER = "<!-- agent-engine task: {task} -->"
_TASK_RE = re.compile(r"^<!-- agent-engine task: ([a-z_]+) -->$", re.MULTILINE)

_FINDING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "kind": {"type": "string"},
        "path": {"type": ["string", "null"]},
        "line": {"type": ["integer", "null"]},
        "message": {"type": "string"},
        "severity": {"type": "string", "enum": ["error", "warning", "info"]},
        "suggestion": {"type": "string", "description": "What to do about it, concretely."},
        "count": {"type": "integer", "minimum": 1, "description": "Occurrences it stands for."},
    },
    "required": ["kind", "path", "line", "message", "severity"],
    "additionalProperties": False,
}

ANALYSIS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "report": {"type": "string", "description": "The analysis as a Markdown report."},
        "summary": {"type": "string", "description": "One paragraph: the main result."},
        "findings": {"type": "array", "items": _FINDING_SCHEMA},
        "metrics": {"type": "object"},
        "source": {"type": "string"},
    },
    "required": ["report", "findings"],
    "additionalProperties": False,
}

PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "step_type": {"type": "string", "minLength": 1},
                    "input_data": {"type": "object"},
                    "depends_on": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                    "optional": {"type": "boolean"},
                },
                "required": ["step_type", "input_data"],
                "additionalProperties": False,
            },
        },
        "rationale": {"type": "string"},
        "source": {"type": "string"},
    },
    "required": ["steps", "rationale"],
    "additionalProperties": False,
}

_PLAN_SYSTEM = """\
{marker}
You are the planner of a deterministic agent execution engine. Turn the goal into a short plan of
atomic steps, using only the step types listed under "Step types" with inputs that match their
JSON input schemas.
Rules:
- Steps are numbered from 1 in the order you list them. "depends_on" lists earlier step numbers;
  when omitted, a step depends on the one before it.
- An input may use the output of an earlier step with {{"$ref": "steps.<n>.output"}} or a field of
  it, e.g. {{"$ref": "steps.2.output.content"}}.
- Read only the files that matter for the goal (at most about six), then analyze, then summarize.
- Never plan edits or commands the goal does not ask for; they wait for a human approver.
- To change a file, plan propose_edit (the files it may change, and inputs with what it must
  know) and then edit_file with "input_data": {{"$ref": "steps.<n>.output.edit"}}, n being the
  propose_edit step; never write an edit's text for a file you have not seen.
- Answer with one JSON object only: {{"steps": [{{"step_type": …, "input_data": {{…}},
  "depends_on": [..], "optional": false}}], "rationale": "why this plan"}}."""

# Told to the planner of an adaptive run (the offline planner looks for the section).
ADAPTIVE_NOTE = (
    "adaptive: after each step that observes (read_file, list_files, run_command, analyze, ...) "
    "you will see its output and may revise the steps that have not started. Plan the first "
    "observations the goal needs; later steps can follow from what they show."
)

_TASK_SYSTEM = """\
{marker}
You are the {task} step of a deterministic agent execution engine. The instruction and the inputs
are in the user message, each under a "### " heading with its content fenced. Quote file paths
and line numbers exactly as given. {answer}"""

_ANALYZE_ANSWER = (
    "Answer with one JSON object: a Markdown report, a one-paragraph summary, and findings "
    "(kind, path, line, message, severity error|warning|info)."
)
_SUMMARIZE_ANSWER = (
    "Answer in Markdown: a heading, then the most important points first: what the run changed "
    "and what its commands returned, then what remains to do. Do not recommend again what a "
    'later edit already did. If there is an "Unmet goal" section, say so plainly first.'
)


def build_plan_messages(
    goal: str,
    files: list[dict[str, Any]] | None,
    step_catalog: list[dict[str, Any]],
    *,
    adaptive: bool = False,
) -> list[ChatMessage]:
    """The planning conversation; ``files`` is the workspace listing, or None without a workspace.

    ``step_catalog`` entries name a step type (``step_type`` or ``name``) and its ``input_schema``.
    ``adaptive``: the plan will be revised after steps that observe, so it may stop at them.
    """
    parts = ["### Goal", fenced(goal)]
    if adaptive:
        parts += ["### Planning", fenced(ADAPTIVE_NOTE)]
    if files is None:
        parts.append("The run has no workspace: plan only steps that need no files.")
    else:
        entries = [listing_line(entry) for entry in files[:MAX_PLAN_FILES]]
        parts += [f"### Workspace files: {len(files)}", fenced("\n".join(entries))]
        if len(files) > MAX_PLAN_FILES:
            parts.append(f"({len(files) - MAX_PLAN_FILES} more files not shown.)")
    catalog = json.dumps(step_catalog, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    parts += ["### Step types", fenced(catalog, "json")]
    return [
        ChatMessage(role="system", content=_PLAN_SYSTEM.format(marker=_marker(TASK_PLAN))),
        ChatMessage(role="user", content="\n".join(parts)),
    ]


def build_plan_retry_message(errors: Sequence[str]) -> ChatMessage:
    """The user message that asks the planner to correct a plan the engine refused."""
    text = "\n".join(f"- {error}" for error in errors)
    return ChatMessage(
        role="user",
        content="The previous plan was refused. Correct these errors and answer with the "
        f"whole plan again.\n### Validation errors\n{fenced(text)}",
    )


def build_analyze_messages(instruction: str, inputs: Sequence[Any]) -> list[ChatMessage]:
    """The analysis conversation: the instruction, then one delimited section per input."""
    return _task_messages(TASK_ANALYZE, _ANALYZE_ANSWER, instruction, inputs)


def build_summarize_messages(
    instruction: str,
    inputs: Sequence[Any],
    *,
    goal: str | None = None,
    unmet_goal: str | None = None,
) -> list[ChatMessage]:
    """The summarization conversation: the instruction, the run's goal and a note that it asked
    for changes the run did not make (when known), then one delimited section per input."""
    context = []
    if goal is not None:
        context += ["### Goal", fenced(goal)]
    if unmet_goal is not None:
        context += ["### Unmet goal", fenced(unmet_goal)]
    return _task_messages(TASK_SUMMARIZE, _SUMMARIZE_ANSWER, instruction, inputs, context)


def detect_task(messages: Sequence[ChatMessage]) -> str | None:
    """The task named by the marker of the first system message that has one, if any."""
    for message in messages:
        if message.role == "system" and (match := _TASK_RE.search(message.content)):
            return match.group(1)
    return None


@dataclass(frozen=True)
class PlanPrompt:
    """What a planning conversation asks: the goal, the listing (None: no workspace), step types."""

    goal: str
    files: list[FileEntry] | None
    step_types: list[str]
    previous_errors: list[str] = field(default_factory=list)
    adaptive: bool = False


@dataclass(frozen=True)
class TaskPrompt:
    """What an analyze or summarize conversation asks: the instruction and the input sections;
    a summary may also know the run's goal and that the goal asked for changes not made."""

    instruction: str
    sections: list[Section]
    goal: str | None = None
    unmet_goal: str | None = None


def parse_plan_prompt(messages: Sequence[ChatMessage]) -> PlanPrompt:
    """Recover the goal, the listing and the step types from messages built here."""
    goal = ""
    files: list[FileEntry] | None = None
    step_types: list[str] = []
    errors: list[str] = []
    adaptive = False
    for section in _user_sections(messages):
        if section.kind == "goal":
            goal = section.content
        elif section.kind == "workspace_files":
            files = parse_listing(section.content)
        elif section.kind == "step_types":
            step_types = _catalog_names(section.content)
        elif section.kind == "validation_errors":
            errors += [line[2:] for line in section.content.split("\n") if line.startswith("- ")]
        elif section.kind == "planning":
            adaptive = section.content.startswith("adaptive")
    return PlanPrompt(goal, files, step_types, errors, adaptive)


def parse_task_prompt(messages: Sequence[ChatMessage]) -> TaskPrompt:
    """Recover the instruction and the input sections from analyze/summarize messages."""
    instruction = ""
    goal: str | None = None
    unmet_goal: str | None = None
    sections: list[Section] = []
    for section in _user_sections(messages):
        if section.kind == "instruction":
            instruction = section.content
        elif section.kind == "goal":
            goal = section.content
        elif section.kind == "unmet_goal":
            unmet_goal = section.content
        else:
            sections.append(section)
    return TaskPrompt(instruction, sections, goal, unmet_goal)


def _task_messages(
    task: str, answer: str, instruction: str, inputs: Sequence[Any], context: Sequence[str] = ()
) -> list[ChatMessage]:
    parts = ["### Instruction", fenced(instruction), *context]
    for number, value in enumerate(inputs, start=1):
        parts.append(render_input(number, value))
    if not inputs:
        parts.append("(No inputs were given.)")
    system = _TASK_SYSTEM.format(marker=_marker(task), task=task, answer=answer)
    return [
        ChatMessage(role="system", content=system),
        ChatMessage(role="user", content="\n".join(parts)),
    ]


def _marker(task: str) -> str:
    return _TASK_MARKER.format(task=task)


def _user_sections(messages: Sequence[ChatMessage]) -> list[Section]:
    sections: list[Section] = []
    for message in messages:
        if message.role == "user":
            sections += parse_sections(message.content)
    return sections


def _catalog_names(text: str) -> list[str]:
    try:
        catalog = json.loads(text)
    except json.JSONDecodeError:
        return []
    names: list[str] = []
    for entry in catalog if isinstance(catalog, list) else []:
        if isinstance(entry, dict):
            name = entry.get("step_type", entry.get("name"))
            if isinstance(name, str) and name:
                names.append(name)
    return names
