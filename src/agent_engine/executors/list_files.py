"""The list_files step: files of the workspace matching globs, honouring ``.gitignore``."""

from __future__ import annotations

from typing import Any

from pathspec import GitIgnoreSpec
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent_engine.errors import ExecutorError
from agent_engine.executors.base import ExecutionLimits, Executor, ExecutorContext, InputProblem
from agent_engine.executors.workspace import Workspace, run_blocking
from agent_engine.executors.workspace_roots import workspace_of

GITIGNORE_MAX_BYTES = 1_048_576
ALWAYS_IGNORED = frozenset({".git"})


class ListFilesInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patterns: list[str] = Field(
        default_factory=lambda: ["**/*"],
        min_length=1,
        description=(
            "gitignore-style globs relative to the workspace root; a pattern without a slash "
            "matches at any depth (e.g. '*.py'), '!pattern' excludes."
        ),
    )
    max_files: int | None = Field(
        default=None, ge=1, description="At most this many files (also capped by the engine)."
    )

    @field_validator("patterns")
    @classmethod
    def _patterns_are_usable(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if not pattern.strip() or "\x00" in pattern:
                raise ValueError("patterns must be non-empty strings without NUL bytes")
        try:
            GitIgnoreSpec.from_lines(patterns)
        except ValueError as exc:  # GitIgnorePatternError is a ValueError
            raise ValueError(f"invalid pattern: {exc}") from exc
        return patterns


class ListedFile(BaseModel):
    path: str
    size: int
    sha256: str


class ListFilesOutput(BaseModel):
    files: list[ListedFile]
    truncated: bool
    total_matched: int


class _Ignores:
    """The ``.gitignore`` specs met so far, by directory; deeper files override shallower ones."""

    def __init__(self) -> None:
        self._by_dir: dict[str, GitIgnoreSpec] = {}

    def add(self, directory: str, content: bytes) -> None:
        lines = content.decode("utf-8", errors="replace").splitlines()
        self._by_dir[directory] = GitIgnoreSpec.from_lines(lines)

    def ignored(self, path: str, is_dir: bool) -> bool:
        parts = path.split("/")
        if ALWAYS_IGNORED.intersection(parts):
            return True
        for depth in range(len(parts) - 1, -1, -1):
            spec = self._by_dir.get("/".join(parts[:depth]))
            if spec is None:
                continue
            relative = "/".join(parts[depth:]) + ("/" if is_dir else "")
            verdict = spec.check_file(relative).include
            if verdict is not None:
                return verdict
        return False


def collect_files(workspace: Workspace, patterns: list[str]) -> list[tuple[str, int]]:
    """Every (path, size) of a regular file matching ``patterns`` and not ignored, sorted;
    files with more than one hard link are left out unless the workspace allows them."""
    wanted = GitIgnoreSpec.from_lines(patterns)
    ignores = _Ignores()
    matched: list[tuple[str, int]] = []
    for tree in workspace.iter_tree("."):
        if any(entry.name == ".gitignore" for entry in tree.files):
            content = tree.read_small(
                ".gitignore", GITIGNORE_MAX_BYTES, allow_hard_links=workspace.allow_hard_links
            )
            if content is not None:
                ignores.add(tree.path, content)
        prefix = f"{tree.path}/" if tree.path else ""
        tree.dirs[:] = [d for d in tree.dirs if not ignores.ignored(prefix + d, is_dir=True)]
        for entry in tree.files:
            if entry.links > 1 and not workspace.allow_hard_links:
                continue  # skipped like symlinks: another name of it may be a file outside
            path = prefix + entry.name
            if not ignores.ignored(path, is_dir=False) and wanted.match_file(path):
                matched.append((path, entry.size))
    return sorted(matched)


def list_files(workspace: Workspace, patterns: list[str], limit: int) -> ListFilesOutput:
    """The listing for one step: at most ``limit`` files in path order, each with its SHA-256."""
    matched = collect_files(workspace, patterns)
    files: list[ListedFile] = []
    for path, _size in matched[:limit]:
        try:
            size, sha256 = workspace.hash_file(path)
        except ExecutorError:
            continue  # removed or replaced since the walk; violations still propagate
        files.append(ListedFile(path=path, size=size, sha256=sha256))
    return ListFilesOutput(files=files, truncated=len(matched) > limit, total_matched=len(matched))


class ListFilesExecutor(Executor[ListFilesInput, ListFilesOutput]):
    name = "list_files"
    observes = True
    input_model = ListFilesInput
    output_model = ListFilesOutput
    side_effects = False
    may_start_early = True  # reads only: starting before the claim commits risks nothing
    idempotent = True
    needs_workspace = True

    def check_plan_input(
        self, input_data: dict[str, Any], limits: ExecutionLimits | None
    ) -> list[InputProblem]:
        """A literal pattern with a ``..`` component is refused: the listing never leaves the
        workspace, so such a pattern is a mistake that could only ever match nothing."""
        patterns = input_data.get("patterns")
        if not isinstance(patterns, list):
            return []
        return [
            InputProblem(
                f"patterns.{index}",
                f"{pattern!r} has a '..' component; patterns match inside the workspace only",
            )
            for index, pattern in enumerate(patterns)
            if isinstance(pattern, str) and ".." in pattern.removeprefix("!").split("/")
        ]

    async def execute(self, input: ListFilesInput, context: ExecutorContext) -> ListFilesOutput:
        workspace = workspace_of(context)
        limit = min(input.max_files or context.limits.list_files_max, context.limits.list_files_max)
        return await run_blocking(list_files, workspace, input.patterns, limit)


LIST_FILES = ListFilesExecutor()
