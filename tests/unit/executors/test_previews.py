"""A preview of a step that cannot work raises an EngineError naming why; it never returns one.

The engine fails such a step at once instead of asking a human to approve something that cannot
run, so the failure must surface as an exception with a stable code, and touch nothing.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from agent_engine.errors import (
    EngineError,
    ExecutorError,
    StaleEditError,
    WorkspaceViolationError,
)
from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.edit_file import EDIT_FILE
from agent_engine.executors.run_command import RUN_COMMAND

ORIGINAL = "alpha\nbeta\n"


@pytest.fixture
def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    (root / "notes.txt").write_text(ORIGINAL)
    (root / "sub").mkdir()
    return snapshot(root)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    found: dict[str, tuple[bytes, int]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            found[str(path.relative_to(root))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return found


@pytest.mark.parametrize(
    ("data", "error", "fragment"),
    [
        (
            {"path": "notes.txt", "operation": "replace", "old": "gamma", "new": "x"},
            ExecutorError,
            "'old' must match exactly once in 'notes.txt', but it matches 0 times",
        ),
        (
            {"path": "notes.txt", "operation": "replace", "old": "a", "new": "x"},
            ExecutorError,
            "matches 3 times",
        ),
        (
            {"path": "missing.txt", "operation": "replace", "old": "a", "new": "b"},
            ExecutorError,
            "the file does not exist",
        ),
        (
            {"path": "notes.txt", "operation": "patch", "diff": "not a diff\n"},
            ExecutorError,
            "unexpected line in diff",
        ),
        (
            {"path": "notes.txt", "operation": "patch", "diff": "@@ -1 +1 @@\n-omega\n+x\n"},
            ExecutorError,
            "does not apply at line 1",
        ),
        (
            {"path": "../outside.txt", "operation": "write", "content": "x"},
            WorkspaceViolationError,
            "'..' components are not allowed",
        ),
        (
            {"path": "sub", "operation": "write", "content": "x"},
            ExecutorError,
            "is a directory",
        ),
        (
            {
                "path": "notes.txt",
                "operation": "write",
                "content": "x",
                "expected_sha256": "0" * 64,
            },
            StaleEditError,
            "precondition failed",
        ),
    ],
)
async def test_edit_file_preview_of_an_edit_that_cannot_apply_raises(
    context: ExecutorContext,
    root: Path,
    tree: dict[str, tuple[bytes, int]],
    data: dict[str, Any],
    error: type[EngineError],
    fragment: str,
) -> None:
    with pytest.raises(error) as caught:
        await EDIT_FILE.preview(EDIT_FILE.validate_input(data), context)
    assert fragment in caught.value.detail
    assert type(caught.value) is error and caught.value.http_status == 422
    assert snapshot(root) == tree


@pytest.mark.parametrize(
    ("data", "error", "fragment"),
    [
        ({"argv": ["rm", "-rf", "."]}, ExecutorError, "'rm' is not on the allowlist"),
        ({"argv": ["/bin/rm", "x"]}, ExecutorError, "'/bin/rm' is not on the allowlist"),
        ({"argv": ["true"], "cwd": "nowhere"}, ExecutorError, "no such directory: 'nowhere'"),
        ({"argv": ["true"], "cwd": "notes.txt"}, ExecutorError, "is not a directory"),
        ({"argv": ["true"], "cwd": "../.."}, WorkspaceViolationError, "'..' components"),
        ({"argv": ["true"], "cwd": "/etc"}, WorkspaceViolationError, "outside the workspace"),
    ],
)
async def test_run_command_preview_of_a_command_that_cannot_run_raises(
    context: ExecutorContext,
    root: Path,
    tree: dict[str, tuple[bytes, int]],
    data: dict[str, Any],
    error: type[EngineError],
    fragment: str,
) -> None:
    with pytest.raises(error) as caught:
        await RUN_COMMAND.preview(RUN_COMMAND.validate_input(data), context)
    assert fragment in caught.value.detail
    assert type(caught.value) is error
    assert snapshot(root) == tree


async def test_run_command_preview_of_an_allowlisted_program_that_is_missing_raises(
    make_context: Any,
) -> None:
    context = make_context(command_allowlist=("no-such-program-anywhere",))
    with pytest.raises(ExecutorError, match="allowlisted but not found on PATH"):
        await RUN_COMMAND.preview(
            RUN_COMMAND.validate_input({"argv": ["no-such-program-anywhere"]}), context
        )


async def test_a_preview_without_a_workspace_raises(context: ExecutorContext) -> None:
    bare = dataclasses.replace(context, workspace_root=None)
    with pytest.raises(ExecutorError, match="needs a workspace"):
        await RUN_COMMAND.preview(RUN_COMMAND.validate_input({"argv": ["true"]}), bare)
    with pytest.raises(ExecutorError, match="needs a workspace"):
        await EDIT_FILE.preview(
            EDIT_FILE.validate_input({"path": "a", "operation": "write", "content": "x"}), bare
        )


async def test_previews_that_can_work_return_their_effect(
    context: ExecutorContext, root: Path, tree: dict[str, tuple[bytes, int]]
) -> None:
    edit = {"path": "notes.txt", "operation": "replace", "old": "beta", "new": "gamma"}
    shown = await EDIT_FILE.preview(EDIT_FILE.validate_input(edit), context)
    assert "+gamma" in shown["diff"] and "-beta" in shown["diff"]
    command = await RUN_COMMAND.preview(
        RUN_COMMAND.validate_input({"argv": ["true"], "cwd": "sub"}), context
    )
    assert command["cwd"] == "sub" and os.path.isabs(command["executable"])
    assert snapshot(root) == tree
