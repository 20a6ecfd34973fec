"""edit_file: replace, write and strict patch on real files; preconditions, preview, atomicity."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent_engine.errors import ExecutorError, PlanValidationError, StaleEditError
from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.edit_file import (
    EDIT_FILE,
    EMPTY_SHA256,
    EditFileInput,
    EditFileOutput,
    compute_edit,
)
from agent_engine.executors.registry import ExecutorRegistry
from agent_engine.executors.unified_diff import apply_diff, make_diff

ORIGINAL = "def greet(name):\n    return 'hi ' + name\n\n\nprint(greet('you'))\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def edit(**data: Any) -> EditFileInput:
    return EDIT_FILE.validate_input(data)


async def apply(context: ExecutorContext, **data: Any) -> EditFileOutput:
    return await EDIT_FILE.execute(edit(**data), context)


@pytest.fixture
def source(root: Path) -> Path:
    path = root / "greet.py"
    path.write_text(ORIGINAL)
    return path


def state(path: Path) -> tuple[str, int]:
    """A file's text and mtime, to show a failed edit left it alone."""
    return path.read_text(), path.stat().st_mtime_ns


def text(path: Path) -> str:
    return path.read_text()


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_edit_file_declares_an_approved_side_effect() -> None:
    assert EDIT_FILE.name == "edit_file"
    assert EDIT_FILE.side_effects is True
    assert EDIT_FILE.idempotent is False
    assert EDIT_FILE.requires_approval is True
    assert EDIT_FILE.needs_workspace is True


async def test_replace_changes_the_single_match(source: Path, context: ExecutorContext) -> None:
    out = await apply(context, path="greet.py", operation="replace", old="'hi '", new="'hello '")
    after = ORIGINAL.replace("'hi '", "'hello '")
    assert text(source) == after
    assert out.before_sha256 == sha(ORIGINAL.encode())
    assert out.after_sha256 == sha(after.encode())
    assert out.bytes_written == len(after.encode())
    assert "-    return 'hi ' + name\n+    return 'hello ' + name\n" in out.diff
    assert out.diff.startswith("--- a/greet.py\n+++ b/greet.py\n@@ -1,5 +1,5 @@\n")


@pytest.mark.parametrize(("old", "matches"), [("missing", 0), ("greet", 2), ("\n\n", 2), ("e", 8)])
async def test_replace_needs_exactly_one_match(
    source: Path, context: ExecutorContext, old: str, matches: int
) -> None:
    before = state(source)
    with pytest.raises(ExecutorError, match=f"matches {matches} times"):
        await apply(context, path="greet.py", operation="replace", old=old, new="x")
    assert state(source) == before


async def test_overlapping_matches_are_not_unique(root: Path, context: ExecutorContext) -> None:
    (root / "a.txt").write_text("aaa")
    with pytest.raises(ExecutorError, match="matches 2 times"):
        await apply(context, path="a.txt", operation="replace", old="aa", new="b")


async def test_replace_in_a_missing_file_fails(root: Path, context: ExecutorContext) -> None:
    with pytest.raises(ExecutorError, match="does not exist"):
        await apply(context, path="nope.py", operation="replace", old="a", new="b")
    assert not (root / "nope.py").exists()


async def test_write_creates_file_and_parents(root: Path, context: ExecutorContext) -> None:
    out = await apply(context, path="pkg/sub/new.py", operation="write", content="x = 1\n")
    assert (root / "pkg/sub/new.py").read_text() == "x = 1\n"
    assert out.before_sha256 is None
    assert out.diff == "--- /dev/null\n+++ b/pkg/sub/new.py\n@@ -0,0 +1 @@\n+x = 1\n"


async def test_write_overwrites_and_keeps_mode_without_temp_leftovers(
    source: Path, context: ExecutorContext
) -> None:
    os.chmod(source, 0o750)
    await apply(context, path="greet.py", operation="write", content="print('new')")
    assert text(source) == "print('new')"
    assert os.stat(source).st_mode & 0o777 == 0o750
    assert names(source.parent) == ["greet.py"]


async def test_patch_applies_a_unified_diff(source: Path, context: ExecutorContext) -> None:
    diff = (
        "--- a/greet.py\n+++ b/greet.py\n@@ -1,2 +1,3 @@\n"
        " def greet(name):\n+    '''Say hi.'''\n     return 'hi ' + name\n"
    )
    out = await apply(context, path="greet.py", operation="patch", diff=diff)
    patched = ORIGINAL.replace("(name):\n", "(name):\n    '''Say hi.'''\n")
    assert text(source) == patched
    assert apply_diff(ORIGINAL, out.diff) == patched  # the canonical diff: 3 lines of context


@pytest.mark.parametrize(
    ("diff", "message"),
    [
        ("@@ -1,2 +1,2 @@\n def greet(NAME):\n-    return 'hi ' + name\n+    pass\n", "does not"),
        ("@@ -2,2 +2,2 @@\n def greet(name):\n-    return 'hi ' + name\n+    pass\n", "does not"),
        ("@@ -1,2 +1,2 @@\n def greet(name):\n-    return 'hi ' + name\n", "ends before"),
        ("@@ -1 +1 @@\n-def greet(name):\n+def g(n):\n extra\n", "unexpected line"),
        ("@@ -1 +1 @@\n-def greet(name):\n+x\n@@ -1 +1 @@\n-def greet(name):\n+y\n", "overlaps"),
        ("@@ -1 +5 @@\n-def greet(name):\n+x\n", "header says"),
        ("@@ -1 +1 @@\n-def greet(name):\n+x\n--- a/other\n+++ b/other\n", "more than one"),
        ("--- a/greet.py\n+++ b/greet.py\n", "no hunks"),
        ("not a diff at all\n", "unexpected line"),
        ("@@ -x +1 @@\n", "malformed hunk header"),
    ],
)
async def test_patch_is_strict_and_fails_without_touching(
    source: Path, context: ExecutorContext, diff: str, message: str
) -> None:
    before = state(source)
    with pytest.raises(ExecutorError, match=message):
        await apply(context, path="greet.py", operation="patch", diff=diff)
    assert state(source) == before


async def test_patch_can_create_a_file_from_dev_null(root: Path, context: ExecutorContext) -> None:
    diff = (
        "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1,2 @@\n+one\n+two\n\\ No newline at end of file\n"
    )
    out = await apply(context, path="new.txt", operation="patch", diff=diff)
    assert (root / "new.txt").read_text() == "one\ntwo"
    assert out.diff == diff


async def test_matching_precondition_applies(source: Path, context: ExecutorContext) -> None:
    expected = sha(ORIGINAL.encode()).upper()  # case does not matter
    await apply(context, path="greet.py", operation="write", content="", expected_sha256=expected)
    assert text(source) == ""


async def test_failing_precondition_touches_nothing(source: Path, context: ExecutorContext) -> None:
    before = state(source)
    with pytest.raises(StaleEditError, match="precondition failed") as failed:
        await apply(
            context, path="greet.py", operation="write", content="x", expected_sha256="0" * 64
        )
    assert failed.value.code == "stale_edit"
    assert failed.value.data["expected_sha256"] == "0" * 64
    assert failed.value.data["actual_sha256"] == sha(ORIGINAL.encode())
    assert state(source) == before


async def test_precondition_on_a_missing_file(root: Path, context: ExecutorContext) -> None:
    with pytest.raises(StaleEditError, match="does not exist") as failed:
        await apply(context, path="n.txt", operation="write", content="x", expected_sha256="1" * 64)
    assert failed.value.data["actual_sha256"] is None
    assert not (root / "n.txt").exists()
    # The hash of empty content means "absent or empty".
    await apply(context, path="n.txt", operation="write", content="x", expected_sha256=EMPTY_SHA256)
    assert (root / "n.txt").read_text() == "x"


async def test_non_utf8_files_are_refused(root: Path, context: ExecutorContext) -> None:
    (root / "latin.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(ExecutorError, match="not UTF-8"):
        await apply(context, path="latin.txt", operation="write", content="x")


async def test_preview_shows_the_exact_effect_and_changes_nothing(
    source: Path, context: ExecutorContext
) -> None:
    data = {"path": "greet.py", "operation": "replace", "old": "you", "new": "world"}
    before = state(source)
    preview = await EDIT_FILE.preview(edit(**data), context)
    assert state(source) == before
    assert preview["before_sha256"] == sha(ORIGINAL.encode())
    assert preview["creates_file"] is False
    out = await EDIT_FILE.execute(edit(**data), context)
    assert (preview["diff"], preview["after_sha256"]) == (out.diff, out.after_sha256)
    assert sha(text(source).encode()) == preview["after_sha256"]


async def test_preview_refuses_what_execute_would_refuse(
    source: Path, context: ExecutorContext
) -> None:
    with pytest.raises(ExecutorError, match="precondition failed"):
        await EDIT_FILE.preview(
            edit(path="greet.py", operation="write", content="", expected_sha256="a" * 64), context
        )


def test_compute_edit_is_pure_and_lets_the_engine_recompute_the_post_hash() -> None:
    data = edit(path="greet.py", operation="replace", old="hi", new="hey")
    first = compute_edit(ORIGINAL.encode(), data)
    assert first == compute_edit(ORIGINAL.encode(), data)
    new_bytes, diff = first
    assert new_bytes == ORIGINAL.replace("hi", "hey").encode()
    assert apply_diff(ORIGINAL, diff) == new_bytes.decode()
    assert compute_edit(None, edit(path="n", operation="write", content="a")).new_bytes == b"a"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"path": "a", "operation": "replace", "new": "x"}, "old"),
        ({"path": "a", "operation": "replace", "old": "x"}, "new"),
        ({"path": "a", "operation": "replace", "old": "", "new": "x"}, "old"),
        ({"path": "a", "operation": "write"}, "content"),
        ({"path": "a", "operation": "patch"}, "diff"),
        ({"path": "a", "operation": "write", "content": "x", "old": "y"}, "old"),
        ({"path": "a", "operation": "delete"}, "operation"),
        ({"path": "a", "operation": "write", "content": "x", "expected_sha256": "abc"}, "expected"),
        ({"path": "a", "operation": "write", "content": "x", "mode": "0777"}, "mode"),
        ({"operation": "write", "content": "x"}, "path"),
    ],
)
def test_invalid_input_names_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as invalid:
        EDIT_FILE.validate_input(data)
    assert any(str(error["loc"][0]).startswith(field) for error in invalid.value.errors())
    registry = ExecutorRegistry([EDIT_FILE])
    with pytest.raises(PlanValidationError, match=f"input_data.{field}"):
        registry.validate_step(1, "edit_file", data)


lines = st.sampled_from(["a\n", "b\n", "\n", " \n", "x\r\n", "a", "+p\n", "-m\n", "\\ n\n", "@@\n"])
texts = st.lists(lines, max_size=25).map("".join)


@settings(max_examples=300, deadline=None)
@given(before=texts, after=texts)
def test_generated_diffs_round_trip_through_the_strict_applier(before: str, after: str) -> None:
    diff = make_diff(before, after, "f.txt", new_file=not before)
    assert apply_diff(before, diff) == after if diff else before == after


async def test_writes_never_leave_partial_files(root: Path, context: ExecutorContext) -> None:
    big = "x" * 2_000_000
    await apply(context, path="big.txt", operation="write", content=big)
    assert len(text(root / "big.txt")) == 2_000_000
    assert names(root) == ["big.txt"]
