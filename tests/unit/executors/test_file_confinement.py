"""Files (F5): hard links to files outside, a parent of the workspace swapped for a symlink after
the run was created, and writes into .git are refused unless the server allows them."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from agent_engine.errors import WorkspaceViolationError
from agent_engine.executors.base import ExecutionLimits, ExecutorContext
from agent_engine.executors.edit_file import EDIT_FILE
from agent_engine.executors.list_files import LIST_FILES
from agent_engine.executors.read_file import READ_FILE
from tests.unit.executors.conftest import NoLLM


@pytest.fixture
def linked(root: Path, outside: Path) -> Path:
    """``root/alias.txt``: a hard link to the outside secret."""
    alias = root / "alias.txt"
    os.link(outside / "secret.txt", alias)
    return alias


async def read(context: ExecutorContext, path: str) -> str:
    output = await READ_FILE.execute(READ_FILE.validate_input({"path": path}), context)
    return output.content


async def test_a_hard_link_to_an_outside_file_is_not_read(
    context: ExecutorContext, linked: Path
) -> None:
    with pytest.raises(WorkspaceViolationError, match="hard links"):
        await read(context, "alias.txt")


async def test_a_hard_link_is_left_out_of_listings_and_never_hashed(
    context: ExecutorContext, root: Path, linked: Path
) -> None:
    (root / "plain.txt").write_text("mine\n")
    output = await LIST_FILES.execute(LIST_FILES.validate_input({}), context)
    assert [f.path for f in output.files] == ["plain.txt"]


async def test_a_hard_link_is_not_edited(
    context: ExecutorContext, linked: Path, outside: Path
) -> None:
    for data in (
        {"path": "alias.txt", "operation": "write", "content": "x\n"},
        {"path": "alias.txt", "operation": "replace", "old": "TOP", "new": "NO"},
    ):
        edit = EDIT_FILE.validate_input(data)
        with pytest.raises(WorkspaceViolationError, match="hard links"):
            await EDIT_FILE.preview(edit, context)
        with pytest.raises(WorkspaceViolationError, match="hard links"):
            await EDIT_FILE.execute(edit, context)
    assert (outside / "secret.txt").read_text() == "TOP SECRET\n"


async def test_hard_links_work_when_the_server_allows_them(
    make_context: Callable[..., ExecutorContext], linked: Path
) -> None:
    context = make_context(allow_hard_links=True)
    assert await read(context, "alias.txt") == "TOP SECRET\n"
    output = await LIST_FILES.execute(LIST_FILES.validate_input({}), context)
    assert [f.path for f in output.files] == ["alias.txt"]


def _context(workspace: Path, allowed_root: Path) -> ExecutorContext:
    return ExecutorContext(
        run_id="run-test",
        step_number=1,
        workspace_root=workspace,
        llm=NoLLM(),
        logger=logging.getLogger("tests.executors"),
        limits=ExecutionLimits(workspace_roots=(allowed_root,)),
    )


@pytest.fixture
def swapped(tmp_path: Path) -> tuple[ExecutorContext, Path]:
    """A workspace ``roots/team/ws`` whose parent ``team`` became a symlink to a folder outside
    holding a ``ws`` of its own, after the run was created (its workspace path was resolved)."""
    allowed = (tmp_path / "roots").resolve()
    workspace = allowed / "team" / "ws"
    workspace.mkdir(parents=True)
    (workspace / "notes.txt").write_text("inside\n")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "ws").mkdir(parents=True)
    (elsewhere / "ws" / "notes.txt").write_text("OUTSIDE\n")
    (allowed / "team").rename(tmp_path / "team-old")
    (allowed / "team").symlink_to(elsewhere)
    return _context(workspace, allowed), elsewhere


async def test_the_workspace_is_reached_from_its_root_at_every_step(tmp_path: Path) -> None:
    allowed = (tmp_path / "roots").resolve()
    workspace = allowed / "team" / "ws"
    workspace.mkdir(parents=True)
    (workspace / "notes.txt").write_text("inside\n")
    assert await read(_context(workspace, allowed), "notes.txt") == "inside\n"


async def test_a_parent_swapped_for_a_symlink_is_refused_by_read_file(
    swapped: tuple[ExecutorContext, Path],
) -> None:
    context, _ = swapped
    with pytest.raises(WorkspaceViolationError, match="no longer a directory"):
        await read(context, "notes.txt")


async def test_a_parent_swapped_for_a_symlink_is_refused_by_edit_file(
    swapped: tuple[ExecutorContext, Path],
) -> None:
    context, elsewhere = swapped
    edit = EDIT_FILE.validate_input({"path": "notes.txt", "operation": "write", "content": "x"})
    with pytest.raises(WorkspaceViolationError):
        await EDIT_FILE.execute(edit, context)
    assert (elsewhere / "ws" / "notes.txt").read_text() == "OUTSIDE\n"


async def test_a_workspace_no_configured_root_holds_is_refused(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "a").write_text("a")
    with pytest.raises(WorkspaceViolationError, match="outside every configured"):
        await read(_context(workspace, tmp_path / "other-root"), "a")


@pytest.mark.parametrize(
    "path", [".git/hooks/pre-commit", ".git/config", "sub/.GIT/config", ".git"]
)
async def test_edit_file_does_not_write_into_git(
    context: ExecutorContext, root: Path, path: str
) -> None:
    edit = EDIT_FILE.validate_input({"path": path, "operation": "write", "content": "x\n"})
    with pytest.raises(WorkspaceViolationError, match=r"inside \.git"):
        await EDIT_FILE.execute(edit, context)
    assert not (root / path).exists()
    problems = EDIT_FILE.check_plan_input(edit.model_dump(), ExecutionLimits())
    assert [p.field for p in problems] == ["path"]


async def test_a_symlink_to_git_does_not_get_around_the_refusal(
    context: ExecutorContext, root: Path
) -> None:
    (root / ".git").mkdir()
    (root / "innocent").symlink_to(".git")
    edit = EDIT_FILE.validate_input(
        {"path": "innocent/config", "operation": "write", "content": "x"}
    )
    with pytest.raises(WorkspaceViolationError, match=r"inside \.git"):
        await EDIT_FILE.execute(edit, context)
    assert not (root / ".git" / "config").exists()


async def test_git_writes_work_when_the_server_allows_them(
    make_context: Callable[..., ExecutorContext], root: Path
) -> None:
    context = make_context(allow_git_writes=True)
    edit = EDIT_FILE.validate_input(
        {"path": ".git/info/exclude", "operation": "write", "content": "x"}
    )
    await EDIT_FILE.execute(edit, context)
    assert (root / ".git" / "info" / "exclude").read_text() == "x"
    assert not EDIT_FILE.check_plan_input(edit.model_dump(), ExecutionLimits(allow_git_writes=True))
