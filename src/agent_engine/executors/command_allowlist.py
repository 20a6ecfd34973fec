"""Which programs a command step may run, and where they are: the allowlist decided on names,
the executable resolved on a scrubbed PATH, and the environment the program starts with."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

from agent_engine.errors import ExecutorError
from agent_engine.executors.workspace import Workspace


def search_path(passthrough: Sequence[str]) -> str:
    """The PATH the child sees: the caller's, if passed through, minus relative entries."""
    if "PATH" not in passthrough or "PATH" not in os.environ:
        return os.defpath
    # A relative entry ('.', '') would resolve against the workspace, which the agent controls.
    return os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if os.path.isabs(d))


def scrubbed_env(passthrough: Sequence[str], home: str) -> dict[str, str]:
    """Only the passthrough variables, PATH without relative entries, and HOME."""
    env = {name: os.environ[name] for name in passthrough if name in os.environ}
    if "PATH" in env:
        env["PATH"] = search_path(passthrough)
    env["HOME"] = home
    return env


def _absolute_entries(allowlist: Sequence[str]) -> list[str]:
    return sorted({os.path.normpath(e) for e in allowlist if os.path.isabs(e)})


def allowlist_refusal(program: str, allowlist: Sequence[str]) -> str | None:
    """Why the allowlist does not permit ``program`` (``None``: it does), decided on names alone.

    A bare allowlist entry permits that name; an absolute entry permits exactly that file, by
    full path or by its basename. Any other path (relative, or absolute but not listed) is refused.
    """
    absolute = _absolute_entries(allowlist)
    if "/" in program:
        if os.path.isabs(program) and os.path.normpath(program) in absolute:
            return None
    elif program in allowlist or any(os.path.basename(e) == program for e in absolute):
        return None
    return f"{program!r} is not on the allowlist"


def resolve_executable(
    program: str, allowlist: Sequence[str], path: str, workspace: Workspace
) -> str:
    """The absolute executable for ``program`` if the allowlist permits it, else ExecutorError.

    A bare name is looked up on ``path`` when a bare entry permits it, else it is the absolute
    entry of that basename (see :func:`allowlist_refusal`). Executables inside the workspace are
    refused: a step could have written them.
    """
    refusal = allowlist_refusal(program, allowlist)
    if refusal is not None:
        raise ExecutorError(refusal, program=program)
    candidate: str | None
    if "/" in program:
        candidate = os.path.normpath(program)
    elif program in allowlist:
        candidate = shutil.which(program, path=path)
        if candidate is None:
            raise ExecutorError(f"{program!r} is allowlisted but not found on PATH")
    else:
        candidate = next(e for e in _absolute_entries(allowlist) if os.path.basename(e) == program)
    if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
        raise ExecutorError(f"{program!r} resolves to {candidate!r}, which is not executable")
    real = os.path.realpath(candidate)
    if real == str(workspace.root) or real.startswith(str(workspace.root).rstrip("/") + "/"):
        raise ExecutorError(f"{program!r} resolves inside the workspace; refusing to run it")
    return candidate


def network_allowed(program: str, executable: str, allowlist: Sequence[str]) -> bool:
    """Whether the server lets ``program`` (by name or resolved path) use the network."""
    return any(entry in (program, executable, os.path.basename(executable)) for entry in allowlist)
