"""Fixtures for executor unit tests: a real workspace in tmp_path and an ExecutorContext for it."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent_engine.executors.base import ExecutionLimits, ExecutorContext
from agent_engine.executors.workspace import Workspace
from agent_engine.llm.base import CompletionRequest, CompletionResponse, LLMCallRecord, LLMClient
from tests.sandboxing import INTERPRETER_PATHS, TEST_SANDBOX


class NoLLM(LLMClient):
    """Executors under test here never call a model; reaching this is a test failure."""

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        raise AssertionError("file and command executors must not call the LLM")

    @property
    def calls(self) -> list[LLMCallRecord]:
        return []


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the workspace holding a sentinel file nothing may read or change."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.txt").write_text("TOP SECRET\n")
    return directory


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The workspace root: a real, resolved directory."""
    directory = tmp_path / "ws"
    directory.mkdir()
    return directory.resolve()


@pytest.fixture
def workspace(root: Path) -> Workspace:
    return Workspace(root)


@pytest.fixture
def python_exe() -> str:
    """The interpreter running the tests, allowlisted by absolute path for run_command tests."""
    return os.path.realpath(sys.executable)


@pytest.fixture
def make_context(root: Path, python_exe: str) -> Callable[..., ExecutorContext]:
    """Build an ExecutorContext for the workspace; keyword arguments override ExecutionLimits."""

    def build(**limits: object) -> ExecutorContext:
        defaults: dict[str, object] = {
            "command_allowlist": (python_exe, "echo", "sh", "true"),
            "command_timeout_s": 10.0,
            "command_output_cap_bytes": 4096,
            "sandbox_read_only_paths": INTERPRETER_PATHS,
            "sandbox": TEST_SANDBOX,
        }
        defaults.update(limits)
        return ExecutorContext(
            run_id="run-test",
            step_number=1,
            workspace_root=root,
            llm=NoLLM(),
            logger=logging.getLogger("tests.executors"),
            limits=ExecutionLimits(**defaults),  # type: ignore[arg-type]
        )

    return build


@pytest.fixture
def context(make_context: Callable[..., ExecutorContext]) -> ExecutorContext:
    return make_context()
