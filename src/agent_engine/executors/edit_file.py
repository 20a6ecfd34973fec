"""The edit_file step: replace a unique snippet, write a whole file, or apply a strict patch.

Edits work on UTF-8 text only. ``expected_sha256`` is a precondition on the file's current bytes;
a file that does not exist has no hash, so any ``expected_sha256`` fails for it except
:data:`EMPTY_SHA256`, which means "absent or empty". A failed precondition touches nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from agent_engine.errors import ExecutorError, StaleEditError
from agent_engine.executors.base import (
    ExecutionLimits,
    Executor,
    ExecutorContext,
    InputProblem,
    Reconciliation,
)
from agent_engine.executors.input_checks import literal_string, workspace_path_problem
from agent_engine.executors.unified_diff import apply_diff, make_diff, parse_diff
from agent_engine.executors.workspace import Workspace, run_blocking
from agent_engine.executors.workspace_roots import workspace_of

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
Operation = Literal["replace", "write", "patch"]
_FIELDS_BY_OPERATION: dict[str, tuple[str, ...]] = {
    "replace": ("old", "new"),
    "write": ("content",),
    "patch": ("diff",),
}


class EditFileInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="File path relative to the workspace root.")
    operation: Operation
    old: str | None = Field(default=None, description="replace: text that must occur once.")
    new: str | None = Field(default=None, description="replace: its replacement.")
    content: str | None = Field(default=None, description="write: the whole new content.")
    diff: str | None = Field(default=None, description="patch: a unified diff of this file.")
    expected_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="Precondition on the current bytes; the empty-file hash also allows absence.",
    )

    @field_validator("expected_sha256")
    @classmethod
    def _lower_case(cls, value: str | None) -> str | None:
        return value.lower() if value is not None else None

    @model_validator(mode="after")
    def _fields_match_operation(self) -> EditFileInput:
        needed = _FIELDS_BY_OPERATION[self.operation]
        errors: list[InitErrorDetails] = []

        def refuse(name: str, kind: str, message: str) -> None:
            error = PydanticCustomError(kind, message, {"operation": self.operation})
            errors.append(InitErrorDetails(type=error, loc=(name,), input=getattr(self, name)))

        for name in ("old", "new", "content", "diff"):
            present = getattr(self, name) is not None
            if name in needed and not present:
                refuse(name, "missing", "Field required when operation is '{operation}'")
            elif present and name not in needed:
                refuse(name, "extra_forbidden", "Not allowed when operation is '{operation}'")
        if self.operation == "replace" and self.old == "":
            refuse("old", "string_too_short", "Must not be empty")
        if errors:
            # Raised as a ValidationError so each error carries its field's location.
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


class EditFileOutput(BaseModel):
    path: str
    before_sha256: str | None = Field(description="None when the file was created.")
    after_sha256: str
    diff: str
    bytes_written: int


class ComputedEdit(NamedTuple):
    new_bytes: bytes
    diff: str


def sha256_of(data: bytes | None) -> str | None:
    """The hex SHA-256 of ``data``; ``None`` for a file that does not exist."""
    return hashlib.sha256(data).hexdigest() if data is not None else None


def verify_precondition(current: bytes | None, expected_sha256: str | None, path: str) -> None:
    """Refuse with StaleEditError unless the current bytes match ``expected_sha256``: the edit
    was made against (or approved on) other content than the file now has."""
    if expected_sha256 is None:
        return
    actual = sha256_of(current)
    if actual == expected_sha256 or (current is None and expected_sha256 == EMPTY_SHA256):
        return
    found = "the file does not exist" if actual is None else f"its sha256 is {actual}"
    raise StaleEditError(
        f"precondition failed for {path!r}: expected sha256 {expected_sha256}, but {found}; "
        "the file changed since the edit was made",
        path=path,
        expected_sha256=expected_sha256,
        actual_sha256=actual,
        file_exists=actual is not None,
    )


def _count_occurrences(text: str, needle: str) -> int:
    # Overlapping matches count too: 'aa' in 'aaa' is ambiguous, so it must not look unique.
    count, start = 0, text.find(needle)
    while start != -1:
        count += 1
        start = text.find(needle, start + 1)
    return count


def compute_edit(current: bytes | None, edit: EditFileInput) -> ComputedEdit:
    """The file's new bytes and the unified diff from ``current`` (``None``: absent). Pure."""
    try:
        before = current.decode("utf-8") if current is not None else ""
    except UnicodeDecodeError:
        raise ExecutorError(
            f"{edit.path!r} is not UTF-8 text; edit_file edits UTF-8 only"
        ) from None
    # The input model guarantees the fields; the checks also cover model_construct() callers.
    if edit.operation == "write" and edit.content is not None:
        after = edit.content
    elif edit.operation == "replace" and edit.old and edit.new is not None:
        if current is None:
            raise ExecutorError(f"cannot replace in {edit.path!r}: the file does not exist")
        matches = _count_occurrences(before, edit.old)
        if matches != 1:
            raise ExecutorError(
                f"'old' must match exactly once in {edit.path!r}, but it matches {matches} times",
                path=edit.path,
                matches=matches,
            )
        after = before.replace(edit.old, edit.new, 1)
    elif edit.operation == "patch" and edit.diff is not None:
        after = apply_diff(before, edit.diff)
    else:
        raise ExecutorError(f"operation {edit.operation!r} is missing its fields")
    diff = make_diff(before, after, edit.path, new_file=current is None)
    return ComputedEdit(after.encode("utf-8"), diff)


def _plan(
    workspace: Workspace, edit: EditFileInput, max_bytes: int
) -> tuple[bytes | None, ComputedEdit]:
    current = workspace.read_bytes_if_exists(edit.path, max_bytes)
    verify_precondition(current, edit.expected_sha256, edit.path)
    return current, compute_edit(current, edit)


def _apply(workspace: Workspace, edit: EditFileInput, max_bytes: int) -> EditFileOutput:
    current, computed = _plan(workspace, edit, max_bytes)
    # Parent directories are made only for a new file: if an existing file's directory vanished
    # since it was read, something else is changing the tree and the edit must not recreate it.
    workspace.write_atomic(edit.path, computed.new_bytes, create_parents=current is None)
    return EditFileOutput(
        path=edit.path,
        before_sha256=sha256_of(current),
        after_sha256=hashlib.sha256(computed.new_bytes).hexdigest(),
        diff=computed.diff,
        bytes_written=len(computed.new_bytes),
    )


def in_git(path: str) -> bool:
    """Whether ``path`` names something inside a ``.git`` folder (any case)."""
    return any(part.casefold() == ".git" for part in path.split("/"))


class EditFileExecutor(Executor[EditFileInput, EditFileOutput]):
    name = "edit_file"
    input_model = EditFileInput
    output_model = EditFileOutput
    side_effects = True
    idempotent = False
    requires_approval = True
    needs_workspace = True

    def check_plan_input(
        self, input_data: dict[str, Any], limits: ExecutionLimits | None
    ) -> list[InputProblem]:
        """A literal path that would leave the workspace or lies in ``.git``, or a literal diff
        that does not parse, is refused when the plan is made (whether the diff applies depends
        on the file then)."""
        problems: list[InputProblem] = []
        path = literal_string(input_data, "path")
        problem = workspace_path_problem("path", path) if path is not None else None
        if problem is not None:
            problems.append(problem)
        elif path is not None and in_git(path) and not (limits and limits.allow_git_writes):
            problems.append(
                InputProblem("path", f"{path!r} is inside .git, which edit_file may not write")
            )
        diff = literal_string(input_data, "diff")
        if input_data.get("operation") == "patch" and diff is not None:
            try:
                parse_diff(diff)
            except ExecutorError as exc:
                problems.append(InputProblem("diff", exc.detail))
        return problems

    async def execute(self, input: EditFileInput, context: ExecutorContext) -> EditFileOutput:
        workspace = workspace_of(context)
        output = await run_blocking(_apply, workspace, input, context.limits.read_file_max_bytes)
        context.logger.info(
            "%s %s: %d bytes, sha256 %s",
            input.operation,
            input.path,
            output.bytes_written,
            output.after_sha256,
        )
        return output

    async def preview(self, input: EditFileInput, context: ExecutorContext) -> dict[str, Any]:
        """The exact diff the step will apply and the file's hash before and after."""
        workspace = workspace_of(context)
        current, computed = await run_blocking(
            _plan, workspace, input, context.limits.read_file_max_bytes
        )
        return {
            "path": input.path,
            "operation": input.operation,
            "diff": computed.diff,
            "before_sha256": sha256_of(current),
            "after_sha256": hashlib.sha256(computed.new_bytes).hexdigest(),
            "creates_file": current is None,
        }

    def bind_preview(self, input_data: dict[str, Any], preview: dict[str, Any]) -> dict[str, Any]:
        """Pin the edit to the file the approver saw: if it changed since, the step fails."""
        if input_data.get("expected_sha256") or "before_sha256" not in preview:
            return input_data
        seen = preview["before_sha256"]
        return {**input_data, "expected_sha256": seen if seen is not None else EMPTY_SHA256}

    async def reconcile(
        self, input: EditFileInput, intent: dict[str, Any], context: ExecutorContext
    ) -> Reconciliation:
        """After a crash: the post-hash on disk means applied; the pre-hash means not applied."""
        workspace = workspace_of(context)
        current = await run_blocking(
            workspace.read_bytes_if_exists, input.path, context.limits.read_file_max_bytes
        )
        actual = sha256_of(current)
        if actual is not None and actual == intent.get("after_sha256"):
            return Reconciliation(
                "applied",
                EditFileOutput(
                    path=input.path,
                    before_sha256=intent.get("before_sha256"),
                    after_sha256=actual,
                    diff=str(intent.get("diff", "")),
                    bytes_written=len(current or b""),
                ).model_dump(mode="json"),
                detail="the file already has the edit's post-hash",
            )
        if actual == intent.get("before_sha256"):
            return Reconciliation("not_applied", detail="the file still has the pre-hash")
        return Reconciliation("unknown", detail=f"the file's hash {actual} matches neither")


EDIT_FILE = EditFileExecutor()
