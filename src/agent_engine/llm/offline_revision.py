"""The offline model's adaptive planning: a first plan that only observes, and deterministic
revisions from what the steps observed.

For a goal that asks to fix failing tests: list the workspace and run the tests; when they
fail, read the files the failure names (and the modules those tests cover, found in the
listing); then propose an edit (``propose_edit``, applied by ``edit_file`` through ``$ref``) and
run the tests again, then summarize; when they pass, the goal is met. Without ``propose_edit``
in the catalog, or when the offline model has no edit it is sure of for the files read, the
reads are analyzed and summarized instead. Any other goal keeps its plan.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from agent_engine.llm.change_intent import asks_for_changes
from agent_engine.llm.edit_prompts import EditableFile, EditPrompt
from agent_engine.llm.offline_proposals import propose_edit_answer
from agent_engine.llm.prompts import PlanPrompt
from agent_engine.llm.revision_prompts import RevisionPrompt

TEST_COMMAND = ["python3", "-m", "pytest", "-q"]
MAX_FAILURE_READS = 6
_TEST_GOAL_RE = re.compile(r"\b(tests?|pytest|test suite)\b", re.IGNORECASE)
_FAILURE_PATH_RE = re.compile(r"(?<![\w/.-])([\w][\w./-]*\.py)(?=(?:::|:\d+| |$))", re.MULTILINE)
_OPEN = ("pending", "running", "awaiting_approval", "approved")


def is_fix_tests_goal(goal: str) -> bool:
    """Whether ``goal`` asks to make failing tests pass."""
    return bool(_TEST_GOAL_RE.search(goal)) and asks_for_changes(goal)


def adaptive_first_plan(prompt: PlanPrompt) -> dict[str, Any] | None:
    """The first plan of an adaptive run whose goal is to fix tests (None: plan as usual)."""
    available = set(prompt.step_types)
    if not prompt.adaptive or prompt.files is None or not is_fix_tests_goal(prompt.goal):
        return None
    if not {"list_files", "run_command"} <= available:
        return None
    return {
        "rationale": "Adaptive: list the workspace and run the tests first; what to read and "
        "change follows from what fails.",
        "source": "offline",
        "steps": [
            {"step_type": "list_files", "input_data": {}, "depends_on": []},
            {"step_type": "run_command", "input_data": {"argv": list(TEST_COMMAND)}},
        ],
    }


def revise_from_prompt(prompt: RevisionPrompt) -> dict[str, Any]:
    """The decision ``{"decision", "steps", "rationale"}`` for a parsed revision prompt."""
    if prompt.previous_errors:
        return _answer("continue", "The revision was refused; the plan stands as it is.")
    steps = prompt.steps
    if not is_fix_tests_goal(prompt.goal):
        return _answer("continue", "The plan still fits the goal.")
    after = _step(steps, prompt.revision.get("after_step"))
    tests = [s for s in steps if _is_test_run(s) and s.get("status") == "completed"]
    waiting = [s for s in steps if s.get("status") in _OPEN]
    if after is not None and tests and after is tests[-1]:
        return _after_tests(prompt, steps, tests, waiting)
    reads = _reads_after(steps, tests[-1]) if tests else []
    if after is not None and after.get("step_type") == "read_file" and not waiting and reads:
        return _propose(prompt, tests[-1], reads)
    return _answer("continue", "The steps planned still follow from what was observed.")


def _after_tests(
    prompt: RevisionPrompt,
    steps: list[dict[str, Any]],
    tests: list[dict[str, Any]],
    waiting: list[dict[str, Any]],
) -> dict[str, Any]:
    latest = tests[-1]
    output = latest.get("output") or {}
    passed = output.get("exit_code") == 0
    edited = any(
        s.get("step_type") == "edit_file" and s.get("status") == "completed" for s in steps
    )
    summary_waits = any(s.get("step_type") == "summarize" for s in waiting)
    if passed and (edited or summary_waits):
        return _answer("done", "The tests pass: the goal is met.")
    if passed or edited:
        if summary_waits:
            return _answer("continue", "The tests still fail; the summary says so.")
        why = "The tests pass; nothing to fix." if passed else "The tests still fail."
        return _answer("revise", why, [_summary(prompt, latest["step_number"])])
    paths = _failure_paths(_text_of(output), _listing(steps))
    if not paths:
        return _answer("continue", "The tests fail but their output names no file to read.")
    # One after the other (the default dependencies): the revision after the last read then
    # sees every read finished, never one still running.
    reads = [{"step_type": "read_file", "input_data": {"path": path}} for path in paths]
    named = ", ".join(paths)
    return _answer("revise", f"The tests fail: read what the failure names ({named}).", reads)


def _propose(
    prompt: RevisionPrompt, test: dict[str, Any], reads: list[dict[str, Any]]
) -> dict[str, Any]:
    first = int(prompt.revision.get("next_step_number", 1))
    read_numbers = [int(s["step_number"]) for s in reads]
    inputs = [_ref(test["step_number"]), *(_ref(n) for n in read_numbers)]
    after = [int(test["step_number"]), *read_numbers]
    instruction = f"{prompt.goal}: make the failing tests pass with the smallest change."
    files = [str(s["input_data"]["path"]) for s in reads]
    can_edit = "propose_edit" in prompt.step_types and "edit_file" in prompt.step_types
    if can_edit and _has_edit_for(instruction, reads):
        steps: list[dict[str, Any]] = [
            {
                "step_type": "propose_edit",
                "input_data": {"instruction": instruction, "files": files, "inputs": inputs},
                "depends_on": after,
            },
            {"step_type": "edit_file", "input_data": {"$ref": f"steps.{first}.output.edit"}},
            {"step_type": "run_command", "input_data": {"argv": list(TEST_COMMAND)}},
            _summary(prompt, first + 2),
        ]
        why = "Propose an edit from the failure and the files read, apply it, test again."
        return _answer("revise", why, steps)
    steps = [
        {
            "step_type": "analyze",
            "input_data": {"instruction": instruction, "inputs": inputs},
            "depends_on": after,
        },
        _summary(prompt, first),
    ]
    why = (
        "The offline model has no edit it is sure of for these files: analyze the failure and "
        "the files read instead."
        if can_edit
        else "No step type proposes edits here: analyze the failure and the files read instead."
    )
    return _answer("revise", why, steps)


def _has_edit_for(instruction: str, reads: list[dict[str, Any]]) -> bool:
    """Whether the offline model's own propose_edit answer would be an edit for the files read:
    it plans a proposal only when it has one, never a step it knows will fail."""
    shown = [
        EditableFile(str(s["input_data"]["path"]), (s.get("output") or {}).get("content"))
        for s in reads
    ]
    answer = propose_edit_answer(EditPrompt(instruction=instruction, files=shown, inputs=[]))
    return answer.get("operation") is not None


def _summary(prompt: RevisionPrompt, after: int) -> dict[str, Any]:
    return {
        "step_type": "summarize",
        "input_data": {
            "instruction": f"Summarize what the run found and changed for: {prompt.goal}",
            "inputs": [],
            "goal": prompt.goal,
        },
        "depends_on": [after],
    }


def _answer(
    decision: str, rationale: str, steps: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"decision": decision, "steps": steps or [], "rationale": rationale}


def _step(steps: list[dict[str, Any]], number: Any) -> dict[str, Any] | None:
    return next((s for s in steps if s.get("step_number") == number), None)


def _is_test_run(step: dict[str, Any]) -> bool:
    argv = (step.get("input_data") or {}).get("argv")
    return step.get("step_type") == "run_command" and isinstance(argv, list) and "pytest" in argv


def _reads_after(steps: list[dict[str, Any]], test: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        s
        for s in steps
        if s.get("step_type") == "read_file"
        and s.get("status") == "completed"
        and int(s["step_number"]) > int(test["step_number"])
        and isinstance((s.get("input_data") or {}).get("path"), str)
    ]


def _text_of(output: dict[str, Any]) -> str:
    return "\n".join(str(output.get(k) or "") for k in ("stdout", "stderr"))


def _listing(steps: list[dict[str, Any]]) -> set[str] | None:
    for step in steps:
        files = (
            (step.get("output") or {}).get("files") if step.get("status") == "completed" else None
        )
        if step.get("step_type") == "list_files" and isinstance(files, list):
            return {str(f.get("path")) for f in files if isinstance(f, dict)}
    return None


def _failure_paths(text: str, listed: set[str] | None) -> list[str]:
    """Files the failure names (in order), then the modules those tests cover (from the
    listing: ``tests/test_models.py`` covers a listed ``models.py``)."""
    named: list[str] = []
    for match in _FAILURE_PATH_RE.finditer(text):
        path = match.group(1).removeprefix("./")
        if path.startswith("/") or ".." in PurePosixPath(path).parts or path in named:
            continue
        if listed is not None and path not in listed:
            continue
        named.append(path)
    covered: list[str] = []
    for path in named:
        stem = PurePosixPath(path).name.removeprefix("test_")
        for candidate in sorted(listed or ()):
            name = PurePosixPath(candidate).name
            if name == stem and candidate not in named and candidate not in covered:
                covered.append(candidate)
    return (named + covered)[:MAX_FAILURE_READS]


def _ref(number: Any) -> dict[str, str]:
    return {"$ref": f"steps.{number}.output"}
