"""The propose_edit step: ask the model for one change to named files, and check it.

The step reads each file through the workspace (the refusals are read_file's), shows the model
its exact content, and asks for one edit as JSON. An answer that does not apply to the content
shown is refused and the reasons are sent back, for at most ``max_attempts`` answers; one that
never validates fails the step (``invalid_edit``) with every answer's errors. The output's
``edit`` is an edit_file input, pinned by ``expected_sha256`` to the content the model saw:
``{"step_type": "edit_file", "input_data": {"$ref": "steps.N.output.edit"}}``.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from agent_engine.errors import (
    CancelledError,
    ExecutorError,
    InvalidEditError,
    ProviderError,
    WorkspaceViolationError,
)
from agent_engine.executors.base import ExecutionLimits, Executor, ExecutorContext, InputProblem
from agent_engine.executors.edit_answers import CheckedEdit, ShownFile, check_answer
from agent_engine.executors.edit_file import EMPTY_SHA256, Operation, in_git
from agent_engine.executors.input_checks import workspace_path_problem
from agent_engine.executors.llm_steps import MAX_INPUTS, InputValue, Instruction
from agent_engine.executors.workspace import Workspace, run_blocking
from agent_engine.executors.workspace_roots import workspace_of
from agent_engine.llm.base import CompletionRequest, CompletionResponse, Usage
from agent_engine.llm.edit_prompts import (
    EDIT_SCHEMA,
    EditableFile,
    build_edit_retry_messages,
    build_propose_edit_messages,
)

PROPOSE_EDIT_MAX_OUTPUT_TOKENS = 4096
MAX_FILES = 20
MAX_ATTEMPTS_CAP = 10


def _path_of(value: Any) -> Any:
    # A read_file output or a listing entry names its file in "path": either may be passed.
    if isinstance(value, dict) and isinstance(value.get("path"), str) and "$ref" not in value:
        return value["path"]
    return value


FileName = Annotated[str, BeforeValidator(_path_of), Field(min_length=1, max_length=4096)]


class ProposeEditInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instruction: Instruction = Field(description="What the edit must do.")
    files: list[FileName] = Field(
        min_length=1,
        max_length=MAX_FILES,
        description="Workspace paths the model may change (one edit, to one of them); each a "
        'literal path or {"$ref": …} to a path, or to a read_file output.',
    )
    inputs: list[InputValue] = Field(
        default_factory=list,
        max_length=MAX_INPUTS,
        description='Context: literal strings or {"$ref": "steps.2.output"} to earlier outputs.',
    )
    max_attempts: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ATTEMPTS_CAP,
        description="Answers to ask for before the step fails (default: the server's setting).",
    )


class ProposedEdit(BaseModel):
    """The edit exactly as edit_file takes it, pinned to the content the model saw."""

    path: str
    operation: Operation
    old: str | None = None
    new: str | None = None
    content: str | None = None
    diff: str | None = None
    expected_sha256: str


class ProposeEditOutput(BaseModel):
    path: str
    operation: Operation
    base_sha256: str = Field(
        description="SHA-256 of the bytes the model was shown; for a file that did not exist, "
        "the hash of empty content (edit_file reads it as 'absent or empty')."
    )
    base_exists: bool = Field(description="Whether the file existed when the model saw it.")
    rationale: str
    edit: ProposedEdit = Field(description="edit_file's input: pass it whole by $ref.")
    preview_diff: str = Field(description="The unified diff the edit makes to the content shown.")
    attempts: int = Field(description="Model answers it took; each is in the step's LLM calls.")
    model: str
    provider: str
    usage: dict[str, Any]


def _file_problems(files: Any, limits: ExecutionLimits | None) -> list[InputProblem]:
    problems: list[InputProblem] = []
    for index, path in enumerate(files if isinstance(files, list) else []):
        if not isinstance(path, str):
            continue  # a $ref: checked when it resolves
        where = f"files.{index}"
        problem = workspace_path_problem(where, path)
        if problem is not None:
            problems.append(problem)
        elif in_git(path) and not (limits and limits.allow_git_writes):
            message = f"{path!r} is inside .git, which edits may not write"
            problems.append(InputProblem(where, message))
    return problems


def _read_shown(workspace: Workspace, paths: list[str], max_bytes: int) -> list[ShownFile]:
    """Each file's canonical path and exact bytes (None: absent), refused as read_file would."""
    shown: dict[str, ShownFile] = {}
    for path in paths:
        problem = workspace_path_problem("files", path)
        if problem is not None:
            raise WorkspaceViolationError(f"files: {problem.message}", path=path)
        canonical = "/".join(workspace.split(path))
        if not canonical:
            raise ExecutorError(f"{path!r} names the workspace itself, not a file", path=path)
        if in_git(canonical) and not workspace.allow_git_writes:
            raise WorkspaceViolationError(
                f"{path!r} is inside .git, which edits may not write", path=path
            )
        if canonical not in shown:
            data = workspace.read_bytes_if_exists(canonical, max_bytes)
            shown[canonical] = ShownFile(canonical, data)
    return list(shown.values())


def _text_of(shown: ShownFile) -> str | None:
    if shown.data is None:
        return None
    try:
        return shown.data.decode("utf-8")
    except UnicodeDecodeError:
        raise ExecutorError(
            f"{shown.path!r} is not UTF-8 text; edits apply to UTF-8 text only", path=shown.path
        ) from None


class ProposeEditExecutor(Executor[ProposeEditInput, ProposeEditOutput]):
    """One model-written edit of files; apply it by edit_file {"$ref": "steps.N.output.edit"}.

    The first line is the planner's description of the step: the edit_file step's whole
    input_data is that reference, and it waits for approval showing the exact diff.
    """

    name = "propose_edit"
    input_model = ProposeEditInput
    output_model = ProposeEditOutput
    needs_workspace = True

    def check_plan_input(
        self, input_data: dict[str, Any], limits: ExecutionLimits | None
    ) -> list[InputProblem]:
        """Literal file paths that would leave the workspace or lie in ``.git`` are refused."""
        return _file_problems(input_data.get("files"), limits)

    async def execute(self, input: ProposeEditInput, context: ExecutorContext) -> ProposeEditOutput:
        """Read the files, ask for an edit until one validates (or the attempts run out)."""
        workspace = workspace_of(context)
        shown = await run_blocking(
            _read_shown, workspace, input.files, context.limits.read_file_max_bytes
        )
        texts = [EditableFile(file.path, _text_of(file)) for file in shown]
        by_path = {file.path: file for file in shown}
        base = build_propose_edit_messages(input.instruction, texts, input.inputs)
        attempts = input.max_attempts or context.limits.propose_edit_max_attempts
        messages = base
        refused: list[dict[str, Any]] = []
        usage = Usage()
        for attempt in range(1, attempts + 1):
            if context.cancelled:  # the run was cancelled while the model was answering
                raise CancelledError(f"propose_edit cancelled after {attempt - 1} answers")
            request = CompletionRequest(
                messages=messages,
                step_type="propose_edit",
                json_schema=EDIT_SCHEMA,
                max_output_tokens=PROPOSE_EDIT_MAX_OUTPUT_TOKENS,
            )
            try:
                response = await context.llm.complete(request)
            except ProviderError as exc:
                if not _is_unparsable_answer(exc):
                    raise
                # The provider read no JSON in the answer: a refused answer like any other.
                errors = ["the answer is not valid JSON: it must be one JSON object, nothing else"]
                refused.append({"attempt": attempt, "errors": errors})
                context.logger.info("attempt %d refused: the answer is not JSON", attempt)
                retry = build_edit_retry_messages(_last_answer_text(context), errors)
                messages = base + retry
                continue
            usage = usage + response.usage
            checked = check_answer(response, by_path, lambda p: "/".join(workspace.split(p)))
            if isinstance(checked, CheckedEdit):
                context.logger.info(
                    "proposed %s of %s (attempt %d)",
                    checked.edit.operation,
                    checked.edit.path,
                    attempt,
                )
                return _output(checked, by_path[checked.edit.path], attempt, response, usage)
            refused.append({"attempt": attempt, "errors": checked})
            context.logger.info("attempt %d refused: %s", attempt, "; ".join(checked))
            messages = base + build_edit_retry_messages(response.text, checked)
        last = "; ".join(refused[-1]["errors"])
        raise InvalidEditError(
            f"the model proposed no valid edit in {attempts} "
            f"{'attempt' if attempts == 1 else 'attempts'}; the last answer: {last}",
            attempts=refused,
            files=[file.path for file in shown],
        )


def _is_unparsable_answer(exc: ProviderError) -> bool:
    """Whether the provider failed only because the answer was not the JSON asked for (every
    model the router tried answered, none in JSON); any other failure is the step's failure."""
    kind = exc.data.get("kind")
    if kind == "malformed":
        return True
    calls = exc.data.get("calls")
    if kind != "exhausted" or not isinstance(calls, list) or not calls:
        return False
    return all(
        isinstance(call, dict) and str(call.get("error") or "").startswith("malformed:")
        for call in calls
    )


def _last_answer_text(context: ExecutorContext) -> str | None:
    """The text of the last answer the client recorded, when its record kept one."""
    calls = context.llm.calls
    response = calls[-1].response if calls else None
    text = response.get("text") if isinstance(response, dict) else None
    return text if isinstance(text, str) else None


def _output(
    checked: CheckedEdit,
    shown: ShownFile,
    attempt: int,
    response: CompletionResponse,
    usage: Usage,
) -> ProposeEditOutput:
    edit = checked.edit
    base_sha256 = hashlib.sha256(shown.data).hexdigest() if shown.data is not None else EMPTY_SHA256
    return ProposeEditOutput(
        path=edit.path,
        operation=edit.operation,
        base_sha256=base_sha256,
        base_exists=shown.data is not None,
        rationale=checked.rationale,
        edit=ProposedEdit(
            path=edit.path,
            operation=edit.operation,
            old=edit.old,
            new=edit.new,
            content=edit.content,
            diff=edit.diff,
            expected_sha256=base_sha256,
        ),
        preview_diff=checked.diff,
        attempts=attempt,
        model=response.model,
        provider=response.provider,
        usage=usage.model_dump(mode="json"),
    )


PROPOSE_EDIT = ProposeEditExecutor()
