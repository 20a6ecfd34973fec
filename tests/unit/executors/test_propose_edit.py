"""propose_edit against scripted model answers on real files: valid edits, refused answers whose
errors go back to the model, and a step that fails with every error when none validates."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent_engine.domain.plan import Plan
from agent_engine.engine.plans import validate_plan
from agent_engine.errors import (
    CancelledError,
    ExecutorError,
    InvalidEditError,
    PlanValidationError,
    ProviderError,
    WorkspaceViolationError,
)
from agent_engine.executors.base import ExecutionLimits, ExecutorContext
from agent_engine.executors.edit_file import EDIT_FILE, EMPTY_SHA256
from agent_engine.executors.propose_edit import PROPOSE_EDIT, ProposeEditOutput
from agent_engine.executors.registry import load_registry
from agent_engine.executors.unified_diff import make_diff
from agent_engine.llm.base import (
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMClient,
    Usage,
)
from agent_engine.llm.edit_prompts import EDIT_SCHEMA

SOURCE = "def add(a, b):\n    return a - b\n"


class ScriptedModel(LLMClient):
    """Answers each request with the next scripted text and records every call, as a real
    client does."""

    def __init__(self, *answers: str | dict[str, Any] | ProviderError) -> None:
        self.answers = list(answers)
        self.requests: list[CompletionRequest] = []
        self._calls: list[LLMCallRecord] = []

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, ProviderError):
            raise answer
        text = answer if isinstance(answer, str) else json.dumps(answer)
        usage = Usage(input_tokens=10, output_tokens=5)
        self._calls.append(
            LLMCallRecord(
                provider="script",
                model="m",
                request=request.model_dump(mode="json"),
                request_hash=str(len(self.requests)),
                response={"text": text},
                usage=usage,
                cost_usd=None,
                latency_ms=0.0,
                attempt=len(self.requests),
            )
        )
        return CompletionResponse(text=text, usage=usage, provider="script", model="m")

    @property
    def calls(self) -> list[LLMCallRecord]:
        return list(self._calls)


def edit(path: str = "calc.py", operation: str = "replace", **fields: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {"path": path, "operation": operation, "rationale": "because"}
    answer.update({name: fields.get(name) for name in ("old", "new", "content", "diff")})
    return answer


GOOD = edit(old="return a - b", new="return a + b")


@pytest.fixture
def calc(root: Path) -> Path:
    path = root / "calc.py"
    path.write_text(SOURCE)
    return path


@pytest.fixture
def propose(
    root: Path,
) -> Callable[..., Any]:
    async def run(
        model: ScriptedModel, files: list[Any] | None = None, **extra: Any
    ) -> ProposeEditOutput:
        limits = extra.pop("limits", ExecutionLimits())
        cancelled = extra.pop("cancelled", False)
        context = ExecutorContext(
            run_id="run-test",
            step_number=2,
            workspace_root=root,
            llm=model,
            logger=logging.getLogger("tests.propose_edit"),
            limits=limits,
        )
        if cancelled:
            context.cancel_event.set()
        data = {"instruction": "Make add add", "files": files or ["calc.py"], **extra}
        return await PROPOSE_EDIT.execute(PROPOSE_EDIT.validate_input(data), context)

    return run


async def apply_output(root: Path, output: ProposeEditOutput) -> None:
    context = ExecutorContext(
        run_id="run-test",
        step_number=3,
        workspace_root=root,
        llm=ScriptedModel(),
        logger=logging.getLogger("tests.propose_edit"),
    )
    data = output.model_dump(mode="json")["edit"]
    await EDIT_FILE.execute(EDIT_FILE.validate_input(data), context)


async def test_valid_replace_is_pinned_to_the_content_shown_and_applies(
    calc: Path, root: Path, propose: Callable[..., Any]
) -> None:
    model = ScriptedModel(GOOD)
    output = await propose(model, inputs=["the test says add(1, 2) == 3"])
    assert output.base_sha256 == hashlib.sha256(SOURCE.encode()).hexdigest()
    assert output.base_exists is True and output.attempts == 1
    assert output.edit.model_dump() == {
        "path": "calc.py",
        "operation": "replace",
        "old": "return a - b",
        "new": "return a + b",
        "content": None,
        "diff": None,
        "expected_sha256": output.base_sha256,
    }
    assert "+    return a + b" in output.preview_diff
    (request,) = model.requests
    assert request.step_type == "propose_edit" and request.json_schema == EDIT_SCHEMA
    prompt = request.messages[-1].content
    assert SOURCE.rstrip("\n") in prompt and "add(1, 2) == 3" in prompt
    assert calc.read_text() == SOURCE  # proposing changes nothing
    await apply_output(root, output)
    assert calc.read_text() == "def add(a, b):\n    return a + b\n"


async def test_write_to_a_file_that_does_not_exist_uses_the_empty_hash(
    root: Path, propose: Callable[..., Any]
) -> None:
    model = ScriptedModel(edit("notes/todo.md", "write", content="# Todo\n"))
    output = await propose(model, files=["notes/todo.md"])
    assert output.base_exists is False and output.base_sha256 == EMPTY_SHA256
    assert output.edit.expected_sha256 == EMPTY_SHA256
    assert "Absent file: notes/todo.md" in model.requests[0].messages[-1].content
    await apply_output(root, output)
    assert (root / "notes" / "todo.md").read_text() == "# Todo\n"


async def test_patch_against_the_content_shown_applies(
    calc: Path, root: Path, propose: Callable[..., Any]
) -> None:
    diff = make_diff(SOURCE, SOURCE.replace("a - b", "a + b"), "calc.py")
    output = await propose(ScriptedModel(edit(operation="patch", diff=diff)))
    assert output.operation == "patch" and output.edit.diff == diff
    await apply_output(root, output)
    assert calc.read_text() == "def add(a, b):\n    return a + b\n"


async def test_answer_in_a_json_fence_with_prose_is_read(
    calc: Path, propose: Callable[..., Any]
) -> None:
    text = f"Here is the edit:\n```json\n{json.dumps(GOOD)}\n```\n"
    output = await propose(ScriptedModel(text))
    assert output.edit.new == "return a + b"


BAD_ANSWERS = [
    pytest.param("this is not JSON", "the answer is not valid JSON", id="not-json"),
    pytest.param("[1, 2]", "must be a JSON object", id="not-an-object"),
    pytest.param(
        {"rationale": "I cannot"}, "proposes no edit (it has no 'path'", id="no-edit-at-all"
    ),
    pytest.param(
        edit(path="other.py", old="a", new="b"),
        "'other.py' is not one of the files this step may change ('calc.py')",
        id="path-not-in-files",
    ),
    pytest.param(
        edit(path="../calc.py", old="a", new="b"), "'..' component", id="path-leaves-workspace"
    ),
    pytest.param(edit(path="/etc/passwd", old="a", new="b"), "is absolute", id="absolute-path"),
    pytest.param(edit(path="x" * 300, old="a", new="b"), "NAME_MAX", id="name-too-long"),
    pytest.param(
        edit(old="return a * b", new="x"), "must match exactly once", id="old-does-not-occur"
    ),
    pytest.param(edit(old="a", new="x"), "matches 3 times", id="old-not-unique"),
    pytest.param(
        edit(operation="patch", diff="@@ -1 +1 @@\n-def sub(a, b):\n+def add(a, b):\n"),
        "hunk 1",
        id="patch-does-not-apply",
    ),
    pytest.param(edit(old="return a - b"), "new: Field required", id="replace-without-new"),
    pytest.param(
        edit(operation="write", content=SOURCE), "the edit changes nothing", id="no-change"
    ),
    pytest.param(edit(operation="rewrite"), "operation: Input should be", id="bad-operation"),
]


@pytest.mark.parametrize(("bad", "fragment"), BAD_ANSWERS)
async def test_refused_answer_goes_back_with_its_errors_and_a_later_valid_one_is_accepted(
    calc: Path, propose: Callable[..., Any], bad: str | dict[str, Any], fragment: str
) -> None:
    model = ScriptedModel(bad, GOOD)
    output = await propose(model)
    assert output.attempts == 2 and output.edit.new == "return a + b"
    retry = model.requests[1].messages
    assert retry[:2] == model.requests[0].messages  # the same conversation, continued
    assert retry[-2].role == "assistant"
    assert retry[-2].content == (bad if isinstance(bad, str) else json.dumps(bad))
    assert retry[-1].role == "user" and "Validation errors" in retry[-1].content
    assert fragment in retry[-1].content
    assert len(model.calls) == 2
    assert output.usage["input_tokens"] == 20  # both calls count


async def test_answer_the_provider_could_not_parse_as_json_is_refused_and_asked_again(
    calc: Path, propose: Callable[..., Any]
) -> None:
    unparsable = ProviderError(
        "all candidate models failed: a:m: malformed: not valid JSON",
        kind="exhausted",
        calls=[{"error": "malformed: a model m returned output that is not valid JSON"}],
    )
    model = ScriptedModel(unparsable, GOOD)
    output = await propose(model)
    assert output.attempts == 2
    retry = model.requests[1].messages
    assert [m.role for m in retry] == ["system", "user", "user"]  # no answer text to show
    assert "not valid JSON" in retry[-1].content


async def test_provider_failure_that_is_not_about_the_answer_fails_the_step_as_it_is(
    calc: Path, propose: Callable[..., Any]
) -> None:
    down = ProviderError("all candidate models failed: a:m: auth: 401", kind="exhausted")
    model = ScriptedModel(down)
    with pytest.raises(ProviderError) as failed:
        await propose(model)
    assert failed.value is down and len(model.requests) == 1


async def test_answer_that_never_validates_fails_with_every_error_and_every_call_recorded(
    calc: Path, propose: Callable[..., Any]
) -> None:
    model = ScriptedModel("nope", edit(path="x.py", old="a", new="b"), edit(old="zzz", new="y"))
    with pytest.raises(InvalidEditError) as failed:
        await propose(model)
    error = failed.value
    assert error.code == "invalid_edit"
    assert "no valid edit in 3 attempts" in error.detail and "matches 0 times" in error.detail
    attempts = error.data["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert "not valid JSON" in attempts[0]["errors"][0]
    assert "'x.py' is not one of the files" in attempts[1]["errors"][0]
    assert "matches 0 times" in attempts[2]["errors"][0]
    assert error.data["files"] == ["calc.py"]
    assert len(model.calls) == 3 and len(model.requests) == 3
    assert calc.read_text() == SOURCE


async def test_max_attempts_comes_from_the_input_else_the_setting(
    calc: Path, propose: Callable[..., Any]
) -> None:
    with pytest.raises(InvalidEditError, match="in 1 attempt;"):
        await propose(ScriptedModel("nope"), max_attempts=1)
    model = ScriptedModel("nope", "nope")
    with pytest.raises(InvalidEditError, match="in 2 attempts"):
        await propose(model, limits=ExecutionLimits(propose_edit_max_attempts=2))
    assert len(model.requests) == 2


async def test_files_may_name_a_read_file_output_and_duplicates_are_shown_once(
    calc: Path, propose: Callable[..., Any]
) -> None:
    model = ScriptedModel(GOOD)
    await propose(model, files=[{"path": "calc.py", "content": SOURCE}, "./calc.py"])
    assert model.requests[0].messages[-1].content.count("### Editable file: calc.py") == 1


@pytest.mark.parametrize(
    ("files", "error", "fragment"),
    [
        (["../outside.py"], WorkspaceViolationError, "'..' component"),
        (["/etc/passwd"], WorkspaceViolationError, "is absolute"),
        (["link.py"], WorkspaceViolationError, "symlink"),
        (["sub"], ExecutorError, "is a directory"),
        (["latin.txt"], ExecutorError, "not UTF-8"),
        ([".git/config"], WorkspaceViolationError, "inside .git"),
    ],
)
async def test_files_the_step_may_not_read_are_refused_before_the_model_is_asked(
    root: Path,
    outside: Path,
    propose: Callable[..., Any],
    files: list[str],
    error: type[Exception],
    fragment: str,
) -> None:
    (root / "link.py").symlink_to(outside / "secret.txt")
    (root / "sub").mkdir()
    (root / "latin.txt").write_bytes("café".encode("latin-1"))
    model = ScriptedModel()
    with pytest.raises(error) as refused:
        await propose(model, files=files)
    assert fragment in str(refused.value)
    assert model.requests == []


def test_plan_checks_literal_files_and_the_ref_from_edit_file() -> None:
    registry = load_registry()
    propose = {"instruction": "fix", "files": ["calc.py"]}
    good = Plan.model_validate(
        {
            "steps": [
                {"step_type": "propose_edit", "input_data": propose},
                {"step_type": "edit_file", "input_data": {"$ref": "steps.1.output.edit"}},
            ]
        }
    )
    validate_plan(good, registry, has_workspace=True)
    outside = {**propose, "files": ["../x", ".git/a"]}
    bad = Plan.model_validate(
        {
            "steps": [
                {"step_type": "propose_edit", "input_data": outside},
                {"step_type": "edit_file", "input_data": {"$ref": "steps.1.output.edits"}},
            ]
        }
    )
    with pytest.raises(PlanValidationError) as refused:
        validate_plan(bad, registry, has_workspace=True)
    fields = {(e["step_number"], e["field"]) for e in refused.value.data["errors"]}
    assert fields == {(1, "files.0"), (1, "files.1"), (2, "")}
    assert "has no 'edits'" in str(refused.value.data["errors"])
    with pytest.raises(PlanValidationError, match="needs the run's workspace"):
        validate_plan(good, registry, has_workspace=False)


async def test_cancelled_step_asks_the_model_nothing_more(
    calc: Path, propose: Callable[..., Any]
) -> None:
    model = ScriptedModel(GOOD)
    with pytest.raises(CancelledError):
        await propose(model, cancelled=True)
    assert model.requests == []
