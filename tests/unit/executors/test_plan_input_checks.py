"""check_plan_input: what each executor refuses in a step's literal input before anything runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agent_engine.errors import ExecutorError
from agent_engine.executors.base import ExecutionLimits, ExecutorContext, InputProblem
from agent_engine.executors.command_allowlist import allowlist_refusal
from agent_engine.executors.edit_file import EDIT_FILE
from agent_engine.executors.list_files import LIST_FILES
from agent_engine.executors.noop import NOOP
from agent_engine.executors.read_file import READ_FILE
from agent_engine.executors.run_command import RUN_COMMAND

LIMITS = ExecutionLimits(command_allowlist=("python", "/usr/bin/env", "git"))
REF = {"$ref": "steps.1.output.path"}
DIFF = "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-old\n+new\n"


def fields(problems: list[InputProblem]) -> list[str]:
    return [problem.field for problem in problems]


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/etc/passwd", "is absolute"),
        ("../secret.txt", "'..' component"),
        ("src/../../secret.txt", "'..' component"),
        ("a/..", "'..' component"),
        ("", "empty"),
        ("a\x00b", "NUL"),
    ],
)
@pytest.mark.parametrize("executor", [READ_FILE, EDIT_FILE])
def test_file_paths_leaving_the_workspace_are_refused(
    executor: Any, path: str, fragment: str
) -> None:
    problems = executor.check_plan_input({"path": path, "operation": "write"}, LIMITS)
    assert fields(problems) == ["path"]
    assert fragment in problems[0].message


@pytest.mark.parametrize("path", ["src/app.py", "./notes.txt", "a..b/c", "..hidden", "dir/"])
@pytest.mark.parametrize("executor", [READ_FILE, EDIT_FILE])
def test_relative_paths_inside_the_workspace_pass(executor: Any, path: str) -> None:
    assert executor.check_plan_input({"path": path, "operation": "write"}, LIMITS) == []


def test_references_are_left_for_run_time() -> None:
    assert READ_FILE.check_plan_input({"path": REF}, LIMITS) == []
    assert EDIT_FILE.check_plan_input({"path": REF, "operation": "patch", "diff": REF}, None) == []
    assert RUN_COMMAND.check_plan_input({"argv": [REF, "x"], "cwd": REF}, LIMITS) == []
    assert RUN_COMMAND.check_plan_input({"argv": REF}, LIMITS) == []
    assert LIST_FILES.check_plan_input({"patterns": REF}, LIMITS) == []
    assert LIST_FILES.check_plan_input({"patterns": [REF, "*.py"]}, LIMITS) == []


def test_a_patch_that_does_not_parse_is_refused_one_that_parses_passes() -> None:
    data = {"path": "f", "operation": "patch", "diff": "this is not a diff\n"}
    problems = EDIT_FILE.check_plan_input(data, LIMITS)
    assert fields(problems) == ["diff"]
    assert "unexpected line in diff" in problems[0].message
    assert EDIT_FILE.check_plan_input({**data, "diff": DIFF}, LIMITS) == []
    both = EDIT_FILE.check_plan_input({**data, "path": "/abs"}, LIMITS)
    assert fields(both) == ["path", "diff"]


def test_listing_patterns_with_dot_dot_are_refused() -> None:
    data = {"patterns": ["**/*.py", "../*", "!../x", "/src/*.py", "a..b"]}
    problems = LIST_FILES.check_plan_input(data, LIMITS)
    assert fields(problems) == ["patterns.1", "patterns.2"]
    assert LIST_FILES.check_plan_input({}, LIMITS) == []  # the default pattern


@pytest.mark.parametrize(
    ("argv0", "refused"),
    [
        ("python", False),
        ("env", False),  # the basename of an absolute entry
        ("/usr/bin/env", False),
        ("/usr/bin//env", False),
        ("rm", True),
        ("/bin/rm", True),
        ("./python", True),
        ("bin/git", True),
        ("/usr/local/bin/python", True),  # a bare entry permits a name on PATH, not any path
    ],
)
def test_run_command_refuses_programs_off_the_allowlist(argv0: str, refused: bool) -> None:
    problems = RUN_COMMAND.check_plan_input({"argv": [argv0, "-c", "pass"]}, LIMITS)
    assert fields(problems) == (["argv.0"] if refused else [])
    if refused:
        assert problems[0].message == f"{argv0!r} is not on the allowlist"


def test_run_command_without_known_limits_leaves_the_allowlist_to_run_time() -> None:
    assert RUN_COMMAND.check_plan_input({"argv": ["rm", "-rf", "."]}, None) == []
    problems = RUN_COMMAND.check_plan_input({"argv": ["rm"], "cwd": "../.."}, None)
    assert fields(problems) == ["cwd"]


@pytest.mark.parametrize(("cwd", "refused"), [("sub", False), ("", False), ("/tmp", True)])
def test_run_command_cwd_must_stay_inside(cwd: str, refused: bool) -> None:
    problems = RUN_COMMAND.check_plan_input({"argv": ["git"], "cwd": cwd}, LIMITS)
    assert fields(problems) == (["cwd"] if refused else [])


def test_the_default_hook_finds_nothing() -> None:
    assert NOOP.check_plan_input({"value": "/etc/passwd"}, LIMITS) == []


async def test_the_plan_time_allowlist_agrees_with_the_one_at_run_time(
    make_context: Any, root: Path, python_exe: str
) -> None:
    # The same decision as run time: whatever the check lets through, execution does not refuse
    # for the allowlist, and whatever it refuses, execution refuses too.
    allowlist = (python_exe, "true", "/usr/bin/env")
    context: ExecutorContext = make_context(command_allowlist=allowlist)
    for program in ["true", os.path.basename(python_exe), python_exe, "rm", "/bin/true", "sh"]:
        refusal = allowlist_refusal(program, allowlist)
        input = RUN_COMMAND.validate_input({"argv": [program, "-c", "pass"]})
        if refusal is None:
            assert (await RUN_COMMAND.preview(input, context))["executable"]
        else:
            with pytest.raises(ExecutorError, match="not on the allowlist"):
                await RUN_COMMAND.preview(input, context)
