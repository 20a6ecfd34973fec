"""list_files: globs, .gitignore, truncation and symlink handling on real directory trees."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.list_files import LIST_FILES, ListFilesOutput


async def listing(context: ExecutorContext, **data: Any) -> ListFilesOutput:
    return await LIST_FILES.execute(LIST_FILES.validate_input(data), context)


def paths(out: ListFilesOutput) -> list[str]:
    return [f.path for f in out.files]


def make_tree(root: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def test_list_files_declares_a_side_effect_free_workspace_step() -> None:
    assert LIST_FILES.name == "list_files"
    assert LIST_FILES.side_effects is False
    assert LIST_FILES.needs_workspace is True


async def test_default_lists_every_file_sorted_with_hashes(
    root: Path, context: ExecutorContext
) -> None:
    make_tree(root, {"b.txt": "b", "a/z.py": "z", "a/b/c.md": "c", "a.txt": "hello"})
    out = await listing(context)
    assert paths(out) == ["a.txt", "a/b/c.md", "a/z.py", "b.txt"]
    first = out.files[0]
    assert (first.size, first.sha256) == (5, hashlib.sha256(b"hello").hexdigest())
    assert (out.truncated, out.total_matched) == (False, 4)


async def test_gitignore_is_honoured_with_negation_and_directories(
    root: Path, context: ExecutorContext
) -> None:
    make_tree(
        root,
        {
            ".gitignore": "*.log\n!keep.log\nbuild/\n/top-only.txt\n",
            "app.py": "",
            "debug.log": "",
            "keep.log": "",
            "build/out.js": "",
            "src/build/gen.py": "",
            "top-only.txt": "",
            "src/top-only.txt": "",
            "src/trace.log": "",
        },
    )
    out = await listing(context)
    assert paths(out) == [".gitignore", "app.py", "keep.log", "src/top-only.txt"]


async def test_nested_gitignore_applies_below_its_directory(
    root: Path, context: ExecutorContext
) -> None:
    make_tree(
        root,
        {
            "pkg/.gitignore": "*.tmp\n",
            "pkg/a.tmp": "",
            "pkg/deep/b.tmp": "",
            "c.tmp": "",
            "pkg/keep.py": "",
        },
    )
    assert paths(await listing(context)) == ["c.tmp", "pkg/.gitignore", "pkg/keep.py"]


async def test_git_directory_is_always_ignored(root: Path, context: ExecutorContext) -> None:
    make_tree(root, {".git/HEAD": "ref", ".git/objects/ab/cd": "x", "sub/.git/config": "", "a": ""})
    assert paths(await listing(context)) == ["a"]


async def test_patterns_are_gitignore_style_globs(root: Path, context: ExecutorContext) -> None:
    make_tree(root, {"a.py": "", "src/b.py": "", "src/c.txt": "", "src/deep/d.py": ""})
    assert paths(await listing(context, patterns=["*.py"])) == ["a.py", "src/b.py", "src/deep/d.py"]
    assert paths(await listing(context, patterns=["src/*.py"])) == ["src/b.py"]
    assert paths(await listing(context, patterns=["src/**/*.py"])) == ["src/b.py", "src/deep/d.py"]
    assert paths(await listing(context, patterns=["**/*", "!*.py"])) == ["src/c.txt"]


async def test_max_files_truncates_in_sorted_order(
    root: Path, make_context: Callable[..., ExecutorContext]
) -> None:
    make_tree(root, {f"f{i:02}.txt": str(i) for i in range(12)})
    out = await listing(make_context(), max_files=5)
    assert paths(out) == [f"f{i:02}.txt" for i in range(5)]
    assert (out.truncated, out.total_matched) == (True, 12)
    capped = await listing(make_context(list_files_max=3), max_files=10)
    assert paths(capped) == ["f00.txt", "f01.txt", "f02.txt"]
    assert capped.truncated


async def test_symlinks_and_special_files_are_not_listed_or_followed(
    root: Path, outside: Path, context: ExecutorContext
) -> None:
    make_tree(root, {"real/file.txt": "x"})
    (root / "out").symlink_to(outside)
    (root / "secret-link").symlink_to(outside / "secret.txt")
    (root / "inside-dir-link").symlink_to("real")
    (root / "loop").symlink_to(".")
    os.mkfifo(root / "pipe")
    assert paths(await listing(context)) == ["real/file.txt"]


@pytest.mark.parametrize(
    "data",
    [{"patterns": []}, {"patterns": [""]}, {"patterns": ["a\x00"]}, {"max_files": 0}, {"x": 1}],
)
def test_bad_input_is_a_validation_error(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        LIST_FILES.validate_input(data)
