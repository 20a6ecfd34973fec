"""What tests need to run commands in the sandbox: the interpreter's folders made visible, and a
skip (a failure under CI=true) where bubblewrap cannot run."""

from __future__ import annotations

import os
import sys

import pytest

from agent_engine.executors.command_limits import processes_refusal
from agent_engine.executors.sandbox import sandbox_refusal


def _interpreter_paths() -> tuple[str, ...]:
    # The interpreter running the tests (often a virtualenv over pyenv) lies outside /usr; pyenv's
    # shims, which a bare "python3" may resolve to, need the whole of PYENV_ROOT.
    paths = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
    if os.environ.get("PYENV_ROOT"):
        paths.add(os.path.realpath(os.environ["PYENV_ROOT"]))
    return tuple(sorted(p for p in paths if not p.startswith("/usr/")))


INTERPRETER_PATHS = _interpreter_paths()


def sandbox_problem() -> str | None:
    """Why commands cannot run in the sandbox on this machine (``None``: they can)."""
    return sandbox_refusal("bwrap") or processes_refusal("bwrap")


def _test_sandbox() -> str:
    # Without bubblewrap (and outside CI) the other command tests still run, unsandboxed; the
    # tests of the sandbox itself skip, visibly.
    if os.environ.get("CI") == "true" or sandbox_problem() is None:
        return "bwrap"
    return "none"


TEST_SANDBOX = _test_sandbox()
# For engine processes that tests start: the same read-only paths and sandbox mode.
SANDBOX_ENV = {
    "AGENT_ENGINE_SANDBOX_READ_ONLY_PATHS": ",".join(INTERPRETER_PATHS),
    "AGENT_ENGINE_SANDBOX": TEST_SANDBOX,
}


def require_sandbox() -> None:
    """Skip the calling test when bubblewrap cannot run here; fail instead under CI=true."""
    problem = sandbox_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs the command sandbox: {problem}")
    pytest.skip(f"bubblewrap sandbox not usable here: {problem}")
