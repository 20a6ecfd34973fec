"""read_file: text from real files in a temporary workspace, and its refusals."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent_engine.errors import ExecutorError
from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.read_file import READ_FILE, ReadFileOutput


async def read(context: ExecutorContext, **data: Any) -> ReadFileOutput:
    return await READ_FILE.execute(READ_FILE.validate_input(data), context)


def test_read_file_declares_a_side_effect_free_workspace_step() -> None:
    assert READ_FILE.name == "read_file"
    assert READ_FILE.side_effects is False
    assert READ_FILE.needs_workspace is True
    assert READ_FILE.requires_approval is False


async def test_read_whole_file_reports_hash_size_and_lines(
    root: Path, context: ExecutorContext
) -> None:
    data = b"alpha\nbeta\ngamma\n"
    (root / "f.txt").write_bytes(data)
    out = await read(context, path="f.txt")
    assert out.content == "alpha\nbeta\ngamma\n"
    assert out.sha256 == hashlib.sha256(data).hexdigest()
    assert out.size == len(data)
    assert out.line_count == 3
    assert out.encoding == "utf-8"
    assert (out.start_line, out.end_line) == (1, 3)


async def test_line_range_is_one_based_and_inclusive(root: Path, context: ExecutorContext) -> None:
    (root / "f.txt").write_text("1\n2\n3\n4\n5\n")
    out = await read(context, path="f.txt", start_line=2, end_line=4)
    assert out.content == "2\n3\n4\n"
    assert out.line_count == 5
    assert out.sha256 == hashlib.sha256(b"1\n2\n3\n4\n5\n").hexdigest()  # of the whole file


async def test_end_line_past_the_end_is_clamped(root: Path, context: ExecutorContext) -> None:
    (root / "f.txt").write_text("1\n2\n3")
    out = await read(context, path="f.txt", start_line=3, end_line=99)
    assert out.content == "3"
    assert (out.start_line, out.end_line, out.line_count) == (3, 3, 3)


async def test_start_line_past_the_end_fails(root: Path, context: ExecutorContext) -> None:
    (root / "f.txt").write_text("1\n2\n")
    with pytest.raises(ExecutorError, match="past the end"):
        await read(context, path="f.txt", start_line=3)


@pytest.mark.parametrize(
    "data",
    [
        {"path": "f.txt", "start_line": 5, "end_line": 2},
        {"path": "f.txt", "start_line": 0},
        {"path": "f.txt", "end_line": -1},
        {"path": "f.txt", "unexpected": True},
        {"start_line": 1},
        {"path": 7},
    ],
)
def test_bad_input_is_a_validation_error(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        READ_FILE.validate_input(data)


async def test_crlf_and_missing_final_newline_are_kept(
    root: Path, context: ExecutorContext
) -> None:
    (root / "f.txt").write_bytes(b"a\r\nb\r\nc")
    out = await read(context, path="f.txt", start_line=2)
    assert out.content == "b\r\nc"
    assert out.line_count == 3


async def test_empty_file_has_no_lines(root: Path, context: ExecutorContext) -> None:
    (root / "empty.txt").write_bytes(b"")
    out = await read(context, path="empty.txt")
    assert (out.content, out.line_count, out.size) == ("", 0, 0)


async def test_binary_file_with_nul_bytes_is_refused(root: Path, context: ExecutorContext) -> None:
    (root / "blob.bin").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00")
    with pytest.raises(ExecutorError, match="binary"):
        await read(context, path="blob.bin")


async def test_undecodable_bytes_are_refused(root: Path, context: ExecutorContext) -> None:
    noise = random.Random(7)
    (root / "noise.dat").write_bytes(bytes(noise.randrange(1, 256) for _ in range(4000)))
    with pytest.raises(ExecutorError, match="not decodable"):
        await read(context, path="noise.dat")


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("cp1251", "Привет, мир! Это пример текста на русском языке для проверки. " * 4),
        ("shift_jis", "これは日本語のテキストです。文字コードの判定を確認します。" * 4),
    ],
)
async def test_legacy_encoding_is_detected(
    encoding: str, text: str, root: Path, context: ExecutorContext
) -> None:
    (root / "legacy.txt").write_bytes(text.encode(encoding))
    out = await read(context, path="legacy.txt")
    assert out.content == text
    assert out.content == (root / "legacy.txt").read_bytes().decode(out.encoding)
    assert out.encoding != "utf-8"


async def test_byte_order_marks_pick_the_encoding(root: Path, context: ExecutorContext) -> None:
    (root / "bom8.txt").write_bytes(b"\xef\xbb\xbfhello\n")
    (root / "bom16.txt").write_bytes("hi\nthere\n".encode("utf-16"))
    utf8 = await read(context, path="bom8.txt")
    assert (utf8.content, utf8.encoding) == ("hello\n", "utf-8-sig")
    utf16 = await read(context, path="bom16.txt")
    assert (utf16.content, utf16.encoding, utf16.line_count) == ("hi\nthere\n", "utf-16", 2)


async def test_size_cap_comes_from_the_limits(
    root: Path, make_context: Callable[..., ExecutorContext]
) -> None:
    (root / "exact.txt").write_bytes(b"x" * 100)
    (root / "big.txt").write_bytes(b"x" * 101)
    context = make_context(read_file_max_bytes=100)
    assert (await read(context, path="exact.txt")).size == 100
    with pytest.raises(ExecutorError, match="over the 100-byte cap"):
        await read(context, path="big.txt")


async def test_missing_file_and_directory_are_executor_errors(
    root: Path, context: ExecutorContext
) -> None:
    (root / "dir").mkdir()
    with pytest.raises(ExecutorError, match="no such file"):
        await read(context, path="nope.txt")
    with pytest.raises(ExecutorError, match="no such directory"):
        await read(context, path="nodir/nope.txt")
    with pytest.raises(ExecutorError, match="is a directory"):
        await read(context, path="dir")


async def test_nested_absolute_and_inside_symlink_paths_work(
    root: Path, context: ExecutorContext
) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "c.txt").write_text("deep\n")
    (root / "shortcut").symlink_to("a/b")
    assert (await read(context, path="a/b/c.txt")).content == "deep\n"
    assert (await read(context, path="./a//b/./c.txt")).content == "deep\n"
    assert (await read(context, path=str(root / "a/b/c.txt"))).content == "deep\n"
    assert (await read(context, path="shortcut/c.txt")).content == "deep\n"


async def test_a_run_without_workspace_cannot_read(root: Path, context: ExecutorContext) -> None:
    (root / "f.txt").write_text("x")
    with pytest.raises(ExecutorError, match="needs a workspace"):
        await read(replace(context, workspace_root=None), path="f.txt")
