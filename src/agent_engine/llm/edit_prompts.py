"""The propose_edit conversation: the files the model may change (their exact content), the
instruction and inputs, the answer's JSON schema, the follow-up that feeds validation errors
back, and the parser that recovers all of it (the offline model reads prompts through it).

A file's content is shown whole, fenced so that nothing inside can close the fence; its heading
says when it is empty or has no final newline (a fence always ends its block with one), so the
parsed content is exactly the text the model was shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from agent_engine.llm.base import ChatMessage
from agent_engine.llm.prompt_sections import Section, fenced, parse_sections, render_input

TASK_PROPOSE_EDIT = "propose_edit"
_MARKER = f"<!-- agent-engine task: {TASK_PROPOSE_EDIT} -->"
_NO_FINAL_NEWLINE = " (no final newline)"
_EMPTY = " (empty)"
_LANGUAGES = {".py": "python", ".md": "markdown", ".toml": "toml", ".json": "json", ".yaml": "yaml"}

# Every property is required and the operation's unused fields are null: the shape strict
# structured-output modes (and grammar-constrained local models) accept as it is.
EDIT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "description": "One of the editable files, as named."},
        "operation": {"type": "string", "enum": ["replace", "write", "patch"]},
        "old": {
            "type": ["string", "null"],
            "description": "replace: text that occurs exactly once in the file; else null.",
        },
        "new": {"type": ["string", "null"], "description": "replace: its replacement; else null."},
        "content": {
            "type": ["string", "null"],
            "description": "write: the whole new content of the file; else null.",
        },
        "diff": {
            "type": ["string", "null"],
            "description": "patch: a unified diff against the content shown; else null.",
        },
        "rationale": {"type": "string", "description": "Why this change does what is asked."},
    },
    "required": ["path", "operation", "old", "new", "content", "diff", "rationale"],
    "additionalProperties": False,
}

_SYSTEM = f"""\
{_MARKER}
You are the propose_edit step of a deterministic agent execution engine. Propose ONE change to
one of the files under the "Editable file" headings that carries out the instruction; use the
inputs as context. Each editable file's exact current content is fenced under its heading; an
"Absent file" does not exist yet (only "write" can create it).
Answer with one JSON object only, every key present:
{{"path": "<one of the editable files, exactly as named>",
 "operation": "replace" | "write" | "patch",
 "old": "<replace: text that occurs exactly once in the file, copied exactly>" or null,
 "new": "<replace: the text that takes its place>" or null,
 "content": "<write: the whole new content of the file>" or null,
 "diff": "<patch: a unified diff of the file against the content shown, no fuzz>" or null,
 "rationale": "<why this change does what the instruction asks>"}}
Prefer "replace" for a small change and "write" for a new file. The engine checks the edit
against the content shown and tells you what is wrong if it does not apply."""


@dataclass(frozen=True)
class EditableFile:
    """A file the model may change, as shown: ``content`` None when it does not exist."""

    path: str
    content: str | None


@dataclass(frozen=True)
class EditPrompt:
    """What a propose_edit conversation asks, recovered from its messages."""

    instruction: str
    files: list[EditableFile]
    inputs: list[Section]
    previous_errors: list[str] = field(default_factory=list)


def build_propose_edit_messages(
    instruction: str, files: Sequence[EditableFile], inputs: Sequence[Any]
) -> list[ChatMessage]:
    """The conversation asking for one edit of ``files`` (content shown whole) for
    ``instruction``, with ``inputs`` (resolved step outputs or text) as context."""
    parts = ["### Instruction", fenced(instruction)]
    for shown in files:
        parts.append(_render_file(shown))
    for number, value in enumerate(inputs, start=1):
        parts.append(render_input(number, value))
    return [
        ChatMessage(role="system", content=_SYSTEM),
        ChatMessage(role="user", content="\n".join(parts)),
    ]


def build_edit_retry_messages(answer: str | None, errors: Sequence[str]) -> list[ChatMessage]:
    """The model's refused answer (when its text is known) and the user message listing why it
    was refused."""
    text = "\n".join(f"- {error}" for error in errors)
    refusal = ChatMessage(
        role="user",
        content="The previous edit was refused. Correct these errors and answer with the whole "
        f"edit again.\n### Validation errors\n{fenced(text)}",
    )
    if answer is None or not answer.strip():
        return [refusal]
    return [ChatMessage(role="assistant", content=answer), refusal]


def parse_propose_edit_prompt(messages: Sequence[ChatMessage]) -> EditPrompt:
    """The instruction, the editable files (exact content) and the inputs of a conversation
    built by :func:`build_propose_edit_messages`, and the errors of any follow-ups."""
    instruction = ""
    files: list[EditableFile] = []
    inputs: list[Section] = []
    errors: list[str] = []
    for message in messages:
        if message.role != "user":
            continue
        for section in parse_sections(message.content):
            if section.kind == "instruction":
                instruction = section.content
            elif section.kind == "editable_file":
                files.append(_parsed_file(section))
            elif section.kind == "absent_file":
                files.append(EditableFile(section.title, None))
            elif section.kind == "validation_errors":
                errors += [line[2:] for line in section.content.split("\n") if line[:2] == "- "]
            else:
                inputs.append(section)
    return EditPrompt(instruction, files, inputs, errors)


def _render_file(shown: EditableFile) -> str:
    path = shown.path.replace("\r", " ").replace("\n", " ")
    if shown.content is None:
        return f"### Absent file: {path}\n{fenced('')}"
    suffix = ""
    if shown.content == "":
        suffix = _EMPTY
    elif not shown.content.endswith("\n"):
        suffix = _NO_FINAL_NEWLINE
    language = _LANGUAGES.get(PurePosixPath(path).suffix, "")
    return f"### Editable file: {path}{suffix}\n{fenced(shown.content, language)}"


def _parsed_file(section: Section) -> EditableFile:
    if section.title.endswith(_EMPTY):
        return EditableFile(section.title.removesuffix(_EMPTY), "")
    if section.title.endswith(_NO_FINAL_NEWLINE):
        return EditableFile(section.title.removesuffix(_NO_FINAL_NEWLINE), section.content)
    # The fence put a newline after the content, and the file ended with one too.
    return EditableFile(section.title, section.content + "\n")
