"""The read_file step: a text file (or a range of its lines) from the workspace."""

from __future__ import annotations

import codecs
import hashlib
from typing import Any

from charset_normalizer import from_bytes
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent_engine.errors import ExecutorError
from agent_engine.executors.base import ExecutionLimits, Executor, ExecutorContext, InputProblem
from agent_engine.executors.input_checks import literal_string, workspace_path_problem
from agent_engine.executors.unified_diff import split_lines
from agent_engine.executors.workspace import Workspace, run_blocking
from agent_engine.executors.workspace_roots import workspace_of


class ReadFileInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="File path relative to the workspace root.")
    start_line: int | None = Field(default=None, ge=1, description="First line, 1-based.")
    end_line: int | None = Field(default=None, ge=1, description="Last line, 1-based, inclusive.")

    @model_validator(mode="after")
    def _range_is_ordered(self) -> ReadFileInput:
        start, end = self.start_line, self.end_line
        if start is not None and end is not None and start > end:
            raise ValueError(f"start_line ({start}) must not be after end_line ({end})")
        return self


class ReadFileOutput(BaseModel):
    path: str
    content: str
    sha256: str = Field(description="SHA-256 of the whole file's bytes.")
    size: int = Field(description="Size of the whole file in bytes.")
    line_count: int = Field(description="Lines in the whole file.")
    encoding: str
    start_line: int
    end_line: int


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: its BOM starts with UTF-16 LE's
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
    (codecs.BOM_UTF8, "utf-8-sig"),
)


def decode_text(data: bytes, path: str) -> tuple[str, str]:
    """Decode file bytes as text and name the encoding; binary content is an ExecutorError."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                break
    if b"\x00" in data:
        raise ExecutorError(f"{path!r} looks binary (contains NUL bytes)", path=path)
    try:
        # UTF-8 first: it is by far the most common and detection can mislabel short files.
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    best = from_bytes(data).best()
    if best is None:
        raise ExecutorError(f"{path!r} is not decodable as text", path=path)
    return str(best), best.encoding


def _read_text(workspace: Workspace, path: str, max_bytes: int) -> tuple[bytes, str, str]:
    data = workspace.read_bytes(path, max_bytes)
    return (data, *decode_text(data, path))


class ReadFileExecutor(Executor[ReadFileInput, ReadFileOutput]):
    name = "read_file"
    observes = True
    input_model = ReadFileInput
    output_model = ReadFileOutput
    side_effects = False
    may_start_early = True  # reads only: starting before the claim commits risks nothing
    idempotent = True
    needs_workspace = True

    def check_plan_input(
        self, input_data: dict[str, Any], limits: ExecutionLimits | None
    ) -> list[InputProblem]:
        """A literal path that would leave the workspace is refused when the plan is made."""
        path = literal_string(input_data, "path")
        problem = workspace_path_problem("path", path) if path is not None else None
        return [problem] if problem is not None else []

    async def execute(self, input: ReadFileInput, context: ExecutorContext) -> ReadFileOutput:
        workspace = workspace_of(context)
        # Decoding runs in the thread too: charset detection on a megabyte is CPU-bound.
        data, text, encoding = await run_blocking(
            _read_text, workspace, input.path, context.limits.read_file_max_bytes
        )
        lines = split_lines(text)
        start = input.start_line or 1
        end = min(input.end_line or len(lines), len(lines))
        if input.start_line is not None and start > len(lines):
            raise ExecutorError(
                f"start_line {start} is past the end of {input.path!r} ({len(lines)} lines)",
                path=input.path,
            )
        return ReadFileOutput(
            path=input.path,
            content="".join(lines[start - 1 : end]),
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            line_count=len(lines),
            encoding=encoding,
            start_line=start if lines else 0,
            end_line=end,
        )


READ_FILE = ReadFileExecutor()
