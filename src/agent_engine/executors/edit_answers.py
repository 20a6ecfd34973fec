"""Checking a model's proposed edit against the exact content it was shown.

An answer is refused with every reason that can be told at once: it is not a JSON object, it
lacks or mistypes a field, its path is not one of the files it may change (or would leave the
workspace), its operation's fields are missing or extra, its ``old`` does not occur exactly
once, its patch does not apply, or it changes nothing. The reasons go back to the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from agent_engine.errors import ExecutorError, WorkspaceViolationError
from agent_engine.executors.edit_file import EditFileInput, compute_edit
from agent_engine.executors.input_checks import workspace_path_problem
from agent_engine.llm.base import CompletionResponse

_FENCED_JSON_RE = re.compile(r"```(?:json)?\s*\n(.*?)\n\s*```", re.DOTALL)
_OPERATION_FIELDS = ("old", "new", "content", "diff")
_NEEDED = {"replace": ("old", "new"), "write": ("content",), "patch": ("diff",)}
# How much of a refused answer's value an error message quotes.
_QUOTED_CHARS = 120

# Turns a path as a model wrote it into the workspace-relative form the step uses (or raises
# an ExecutorError or WorkspaceViolationError saying why it cannot be one).
CanonicalPath = Callable[[str], str]


@dataclass(frozen=True)
class ShownFile:
    """A file as the model saw it: ``path`` canonical, ``data`` None when it does not exist."""

    path: str
    data: bytes | None


@dataclass(frozen=True)
class CheckedEdit:
    """An edit that applies to the content shown: edit_file's input, the diff it makes, why."""

    edit: EditFileInput
    diff: str
    rationale: str


class _Answer(BaseModel):
    # Extra keys are ignored: commentary must not fail a sound edit, and a key such as
    # expected_sha256 is the engine's to set, never the model's.
    model_config = ConfigDict(extra="ignore")

    path: str
    operation: Literal["replace", "write", "patch"]
    old: str | None = None
    new: str | None = None
    content: str | None = None
    diff: str | None = None
    rationale: str = ""


def answer_value(response: CompletionResponse) -> tuple[Any, str | None]:
    """The JSON value of an answer (its JSON, else its text, else a ```json fence in it), or
    ``None`` and why it is not JSON."""
    if response.json_value is not None:
        return response.json_value, None
    text = response.text.strip()
    fenced = _FENCED_JSON_RE.search(text)
    if fenced and not text.startswith("{"):
        text = fenced.group(1)  # models without a JSON mode often wrap the object in a fence
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"the answer is not valid JSON: {exc.msg} (line {exc.lineno})"
    except RecursionError:
        return None, "the answer nests too deep to parse"


def check_answer(
    response: CompletionResponse, files: dict[str, ShownFile], canonical: CanonicalPath
) -> CheckedEdit | list[str]:
    """The edit ``response`` proposes if it applies to ``files`` as shown, else every reason
    it does not (``canonical`` turns a path into its workspace-relative form, or raises)."""
    value, problem = answer_value(response)
    if problem is not None:
        return [problem]
    if not isinstance(value, dict):
        return [f"the answer must be a JSON object, not {type(value).__name__}"]
    if "operation" not in value and "path" not in value:
        reason = value.get("rationale") or value.get("reason") or value.get("error")
        said = f": {_quoted(reason)}" if isinstance(reason, str) and reason.strip() else ""
        return [f"the answer proposes no edit (it has no 'path' and no 'operation'){said}"]
    try:
        answer = _Answer.model_validate(value)
    except ValidationError as exc:
        return [_field_error(error) for error in exc.errors()]
    errors: list[str] = []
    path = _checked_path(answer.path, files, canonical, errors)
    edit = _edit_input(answer, path, errors)
    if errors or edit is None or path is None:
        return errors
    shown = files[path]
    try:
        computed = compute_edit(shown.data, edit)
    except ExecutorError as exc:
        return [f"{answer.operation}: {exc.detail}"]
    if computed.new_bytes == shown.data:
        return [f"the edit changes nothing: {path!r} would keep exactly the content shown"]
    return CheckedEdit(edit, computed.diff, answer.rationale.strip())


def _checked_path(
    path: str, files: dict[str, ShownFile], canonical: CanonicalPath, errors: list[str]
) -> str | None:
    problem = workspace_path_problem("path", path)
    if problem is not None:
        errors.append(f"path: {problem.message}")
        return None
    try:
        found = canonical(path)
    except (ExecutorError, WorkspaceViolationError) as exc:
        errors.append(f"path: {exc.detail}")
        return None
    if found not in files:
        allowed = ", ".join(repr(name) for name in files)
        errors.append(f"path: {path!r} is not one of the files this step may change ({allowed})")
        return None
    return found


def _edit_input(answer: _Answer, path: str | None, errors: list[str]) -> EditFileInput | None:
    needed = _NEEDED[answer.operation]
    fields: dict[str, Any] = {}
    for name in _OPERATION_FIELDS:
        given = getattr(answer, name)
        # An empty string in a field the operation does not use is how many models say "unused".
        if given is None or (given == "" and name not in needed):
            continue
        fields[name] = given
    try:
        return EditFileInput(path=path or "-", operation=answer.operation, **fields)
    except ValidationError as exc:
        errors.extend(_field_error(error) for error in exc.errors())
        return None


def _field_error(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "answer"
    return f"{where}: {error['msg']}"


def _quoted(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _QUOTED_CHARS else flat[: _QUOTED_CHARS - 1] + "…"
