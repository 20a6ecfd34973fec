"""What allowlisted tools can be told to do (F3): a known tool pointed outside the workspace, or
given an option that runs configured programs, is refused; what widens its reach is named in the
approval preview and never approved without a person."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from agent_engine.config import DEFAULT_COMMAND_ALLOWLIST
from agent_engine.errors import WorkspaceViolationError
from agent_engine.executors.base import ExecutionLimits, ExecutorContext
from agent_engine.executors.command_analysis import analyze_command, leaves_workspace
from agent_engine.executors.run_command import RUN_COMMAND

LIMITS = ExecutionLimits(command_allowlist=DEFAULT_COMMAND_ALLOWLIST)

# Refused when the plan is made, naming the argument (argv index) at fault.
REFUSED = [
    (["cat", "/etc/passwd"], "argv.1", "/etc/passwd"),
    (["ls", "/"], "argv.1", "'/'"),
    (["grep", "-r", "x", "/tmp"], "argv.3", "/tmp"),
    (["git", "-C", "/elsewhere", "init"], "argv.1", "/elsewhere"),
    (["git", "-c", "alias.x=!id", "x"], "argv.1", "git configuration"),
    (["git", "--config-env=core.pager=X", "status"], "argv.1", "git configuration"),
    (["pytest", "/elsewhere/test_evil.py"], "argv.1", "/elsewhere/test_evil.py"),
    (["pytest", "--junitxml=/tmp/x"], "argv.1", "writes '/tmp/x'"),
    (["pytest", "--debug=/tmp/x"], "argv.1", "writes '/tmp/x'"),
    (["pytest", "-o", "cache_dir=/tmp/x"], "argv.1", "writes '/tmp/x'"),
    (["python3", "-m", "pytest", "--basetemp", "/tmp/x"], "argv.3", "writes '/tmp/x'"),
    (["cat", "../../etc/passwd"], "argv.1", "climbs out"),
    (["ruff", "check", "--cache-dir", "/tmp/c", "."], "argv.2", "/tmp/c"),
    (["git", "ls-remote", "--upload-pack=sh -c id", "."], "argv.2", "runs a program"),
    (["git", "rebase", "-x", "id", "HEAD~1"], "argv.2", "runs a program"),
    (["git", "clone", "ext::sh -c id", "x"], "argv.2", "ext::"),
    (["git", "clone", "file:///etc/x"], "argv.2", "/etc/x"),
    (["git", "submodule", "foreach", "id"], "argv.2", "runs a program"),
    (["python3", "-X", "pycache_prefix=/tmp/x", "-m", "pytest"], "argv.1", "writes '/tmp/x'"),
]


@pytest.mark.parametrize(("argv", "field", "words"), REFUSED)
def test_known_tools_pointed_outside_are_refused_at_plan_time(
    argv: list[str], field: str, words: str
) -> None:
    problems = RUN_COMMAND.check_plan_input({"argv": argv}, LIMITS)
    assert [p.field for p in problems][:1] == [field]
    assert words in problems[0].message


@pytest.mark.parametrize(("argv", "field", "words"), REFUSED)
async def test_the_same_arguments_are_refused_by_the_preview(
    make_context: Callable[..., ExecutorContext], argv: list[str], field: str, words: str
) -> None:
    # E.g. arguments that came from an earlier step's output: refused before anything runs.
    context = make_context(command_allowlist=DEFAULT_COMMAND_ALLOWLIST)
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    with pytest.raises(WorkspaceViolationError) as caught:
        await RUN_COMMAND.preview(RUN_COMMAND.validate_input({"argv": argv}), context)
    assert caught.value.data["argv_index"] == int(field.split(".")[1])


@pytest.mark.parametrize(
    ("argv", "warning"),
    [
        (["pytest", "-p", "evil_plugin"], "-p loads a plugin module"),
        (["pytest", "--pyargs", "pkg"], "--pyargs imports test modules"),
        (["git", "config", "core.fsmonitor", "x"], "git config sets git configuration"),
        (["git", "x"], "not a known subcommand"),
        (["pytest", "-o", "addopts=-q"], "-o overrides configuration"),
    ],
)
async def test_what_widens_a_tools_reach_is_named_and_never_confined(
    make_context: Callable[..., ExecutorContext], argv: list[str], warning: str
) -> None:
    analysis = analyze_command(list(argv))
    assert not analysis.confined and analysis.runs_arbitrary_code
    assert not RUN_COMMAND.check_plan_input({"argv": argv}, LIMITS)  # a person may approve it
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    context = make_context(command_allowlist=DEFAULT_COMMAND_ALLOWLIST)
    preview = await RUN_COMMAND.preview(RUN_COMMAND.validate_input({"argv": argv}), context)
    assert any(warning in line for line in preview["warnings"])
    assert preview["capabilities"]["runs_arbitrary_code"] is True


@pytest.mark.parametrize(
    "argv",
    [
        ["pytest", "-q", "tests/test_a.py::test_b"],
        ["pytest", "-p", "no:cacheprovider", "tests"],
        ["python3", "-m", "pytest", "-q"],
        ["git", "status", "--short"],
        ["git", "log", "main..feature"],
        ["git", "commit", "-m", "/ not a path"],
        ["grep", "-rn", "TODO", "src"],
        ["grep", "-e", "..", "src"],
        ["ruff", "check", "src"],
        ["ls", "-la", "src"],
    ],
)
def test_ordinary_commands_inside_the_workspace_are_confined(argv: list[str]) -> None:
    analysis = analyze_command(list(argv), "/ws")
    assert analysis.confined, analysis.warnings
    assert not RUN_COMMAND.check_plan_input({"argv": argv}, LIMITS)


def test_capabilities_of_the_known_tools() -> None:
    def caps(*argv: str) -> tuple[bool, bool, bool]:
        found = analyze_command(list(argv), "/ws")
        return found.runs_arbitrary_code, found.writes_files, found.uses_network

    assert caps("cat", "a") == (False, False, False)
    assert caps("ruff", "check", "src") == (False, False, False)
    assert caps("ruff", "format", "src") == (False, True, False)
    assert caps("python3", "-c", "pass") == (True, True, True)
    assert caps("git", "status")[1:] == (False, False)
    assert caps("git", "push")[1:] == (True, True)
    assert caps("pytest", "--pastebin=all")[2] is True


def test_absolute_paths_inside_the_workspace_are_fine_once_it_is_known() -> None:
    assert leaves_workspace("/ws/a", "/ws") is None
    assert leaves_workspace("/ws/a", None) is not None  # at plan time: paths are relative
    assert leaves_workspace("/wsx/a", "/ws") is not None
    assert leaves_workspace("../x", "/ws", cwd="sub") is None
    assert leaves_workspace("../../x", "/ws", cwd="sub") is not None


def test_an_argument_not_known_yet_is_not_confined() -> None:
    analysis = analyze_command(["pytest", None])
    assert not analysis.confined and analysis.unknown_arguments == (1,)


async def test_preview_names_what_the_command_can_do(
    make_context: Callable[..., ExecutorContext], root: Path
) -> None:
    context = make_context(command_allowlist=DEFAULT_COMMAND_ALLOWLIST)
    preview = await RUN_COMMAND.preview(
        RUN_COMMAND.validate_input({"argv": ["cat", str(root / "a.txt")]}), context
    )
    assert preview["capabilities"]["tool"] == "cat"
    assert preview["capabilities"]["path_arguments"] == [str(root / "a.txt")]
    assert preview["capabilities"]["reads_outside_workspace"] == []
