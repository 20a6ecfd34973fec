"""The run_command step: an allowlisted program run from an argv list, never through a shell.

The child gets a scrubbed environment (only the configured names, plus ``HOME`` = the workspace),
resource limits, its own process group and a cwd entered through a directory fd inside the
workspace. Output is capped per stream; a timeout or a cancellation kills the whole group.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent_engine.errors import CancelledError as StepCancelledError
from agent_engine.errors import ExecutorError, WorkspaceViolationError
from agent_engine.executors.base import ExecutionLimits, Executor, ExecutorContext, InputProblem
from agent_engine.executors.command_analysis import analyze_command
from agent_engine.executors.input_checks import literal_string, workspace_path_problem
from agent_engine.executors.workspace import Workspace, run_blocking, workspace_of

GIB = 1 << 30
# After the leader exits and its group is killed, wait this long for pipes held by processes that
# left the group (setsid) before giving up on the rest of their output.
PIPE_GRACE_S = 2.0


class RunCommandInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1, description="Program and arguments; no shell.")
    cwd: str | None = Field(default=None, description="Directory relative to the workspace root.")
    timeout_s: float | None = Field(default=None, gt=0, le=3600, description="Capped by config.")
    cpu_seconds: int = Field(default=300, ge=1, le=3600, description="RLIMIT_CPU.")
    memory_bytes: int = Field(default=4 * GIB, ge=64 << 20, le=64 * GIB, description="RLIMIT_AS.")
    max_processes: int = Field(default=512, ge=1, le=16_384, description="RLIMIT_NPROC (per user).")
    max_file_bytes: int = Field(default=GIB, ge=1, le=64 * GIB, description="RLIMIT_FSIZE.")

    @field_validator("argv")
    @classmethod
    def _argv_is_usable(cls, argv: list[str]) -> list[str]:
        if not argv[0]:
            raise ValueError("argv[0] must name a program")
        if any("\x00" in arg for arg in argv):
            raise ValueError("arguments must not contain NUL bytes")
        return argv


class RunCommandOutput(BaseModel):
    argv: list[str]
    cwd: str
    exit_code: int | None = Field(description="Negative: killed by that signal number.")
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    stdout_bytes: int = Field(description="Bytes the command wrote, kept or not.")
    stderr_bytes: int
    duration_ms: int
    killed: bool
    timed_out: bool


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


def rlimits(input: RunCommandInput) -> list[tuple[int, tuple[int, int]]]:
    """The (resource, (soft, hard)) pairs for the child, never above the current hard limits."""
    wanted = {
        resource.RLIMIT_CPU: input.cpu_seconds,
        resource.RLIMIT_AS: input.memory_bytes,
        resource.RLIMIT_NPROC: input.max_processes,
        resource.RLIMIT_FSIZE: input.max_file_bytes,
    }
    pairs = []
    for which, value in wanted.items():
        _soft, hard = resource.getrlimit(which)
        capped = value if hard == resource.RLIM_INFINITY else min(value, hard)
        pairs.append((which, (capped, capped)))
    return pairs


# prctl(PR_SET_PDEATHSIG): the command dies with the worker that started it, even by kill -9, so
# a crashed worker never leaves an orphan running whose outcome nobody will record.
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _child_setup(cwd_fd: int, limits: list[tuple[int, tuple[int, int]]]) -> Callable[[], None]:
    # Runs in the forked child before exec: keep it to plain syscalls (no imports, no locks).
    def setup() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        os.fchdir(cwd_fd)
        for which, pair in limits:
            resource.setrlimit(which, pair)

    return setup


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class _Capture:
    """One output stream: the first ``cap`` bytes kept, everything counted."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        # Bytes past the cap are counted and dropped; reading never pauses, so a chatty child
        # never blocks on a full pipe and memory stays bounded.
        self.total += len(data)
        room = self.cap - len(self.kept)
        if room > 0:
            self.kept += data[:room]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.kept)

    def text(self) -> str:
        text = self.kept.decode("utf-8", errors="replace")
        if self.truncated:
            text += f"\n[… truncated {self.total - len(self.kept)} bytes]"
        return text


class _CommandProtocol(asyncio.SubprocessProtocol):
    """Collects capped output and tells apart "the leader exited" from "everything closed".

    ``asyncio.subprocess.Process.wait()`` only returns once the pipes close too, which a
    background grandchild can postpone forever; ``process_exited`` fires when the leader is reaped.
    """

    def __init__(self, cap: int) -> None:
        loop = asyncio.get_running_loop()
        self.streams = {1: _Capture(cap), 2: _Capture(cap)}
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.streams[fd].add(data.encode() if isinstance(data, str) else data)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass
class _Prepared:
    executable: str
    cwd: str
    cwd_fd: int
    env: dict[str, str]
    timeout_s: float


def _prepare(workspace: Workspace, input: RunCommandInput, context: ExecutorContext) -> _Prepared:
    limits = context.limits
    path = search_path(limits.command_env_passthrough)
    executable = resolve_executable(input.argv[0], limits.command_allowlist, path, workspace)
    env = scrubbed_env(limits.command_env_passthrough, str(workspace.root))
    timeout = min(input.timeout_s or limits.command_timeout_s, limits.command_timeout_s)
    cwd_fd, cwd = workspace.open_dir_with_path(input.cwd or ".")
    return _Prepared(executable, cwd or ".", cwd_fd, env, timeout)


class RunCommandExecutor(Executor[RunCommandInput, RunCommandOutput]):
    name = "run_command"
    input_model = RunCommandInput
    output_model = RunCommandOutput
    side_effects = True
    idempotent = False
    requires_approval = True
    needs_workspace = True

    def check_plan_input(
        self, input_data: dict[str, Any], limits: ExecutionLimits | None
    ) -> list[InputProblem]:
        """A literal program off the allowlist (when the limits are known) or a literal ``cwd``
        that would leave the workspace is refused when the plan is made."""
        problems: list[InputProblem] = []
        argv = input_data.get("argv")
        if limits is not None and isinstance(argv, list) and argv and isinstance(argv[0], str):
            refusal = allowlist_refusal(argv[0], limits.command_allowlist)
            if refusal is not None:
                problems.append(InputProblem("argv.0", refusal))
        cwd = literal_string(input_data, "cwd")
        problem = workspace_path_problem("cwd", cwd) if cwd else None  # "" means the root
        if problem is not None:
            problems.append(problem)
        elif isinstance(argv, list) and argv and not problems:
            # What a known tool is told to reach outside the workspace, or a refused option.
            literal = [arg if isinstance(arg, str) else None for arg in argv]
            for found in analyze_command(literal, None, cwd).blocking:
                problems.append(InputProblem(f"argv.{found.index}", found.message))
        return problems

    async def preview(self, input: RunCommandInput, context: ExecutorContext) -> dict[str, Any]:
        """What will run: argv, resolved executable, cwd, environment names, timeout, limits and
        what the command can do; a known tool told to reach outside the workspace is refused."""
        workspace = workspace_of(context)
        analysis = analyze_command(list(input.argv), str(workspace.root), input.cwd)
        if analysis.blocking:
            found = analysis.blocking[0]
            raise WorkspaceViolationError(
                f"argv[{found.index}] {found.argument!r} refused: {found.message}",
                argument=found.argument,
                argv_index=found.index,
            )
        prepared = await run_blocking(_prepare, workspace, input, context)
        os.close(prepared.cwd_fd)
        return {
            "capabilities": analysis.capabilities(),
            "warnings": list(analysis.warnings),
            "argv": input.argv,
            "executable": prepared.executable,
            "cwd": prepared.cwd,
            "env_keys": sorted(prepared.env),
            "timeout_s": prepared.timeout_s,
            "limits": {
                "cpu_seconds": input.cpu_seconds,
                "memory_bytes": input.memory_bytes,
                "max_processes": input.max_processes,
                "max_file_bytes": input.max_file_bytes,
                "output_cap_bytes": context.limits.command_output_cap_bytes,
            },
        }

    async def execute(self, input: RunCommandInput, context: ExecutorContext) -> RunCommandOutput:
        if context.cancelled:  # never start a process for a step that is already cancelled
            raise StepCancelledError(
                f"run_command {input.argv[0]!r} cancelled before it started",
                run_id=context.run_id,
                step_number=context.step_number,
            )
        prepared = await run_blocking(_prepare, workspace_of(context), input, context)
        context.logger.info("running %s in %s", input.argv, input.cwd or ".")
        try:
            output = await _run(input, prepared, context)
        finally:
            os.close(prepared.cwd_fd)
        context.logger.info(
            "exit code %s after %.0f ms%s",
            output.exit_code,
            output.duration_ms,
            " (killed)" if output.killed else "",
        )
        return output


async def _run(
    input: RunCommandInput, prepared: _Prepared, context: ExecutorContext
) -> RunCommandOutput:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _CommandProtocol(context.limits.command_output_cap_bytes),
            *input.argv,
            executable=prepared.executable,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=prepared.env,
            start_new_session=True,  # the child leads its own group, so killpg reaches all of it
            preexec_fn=_child_setup(prepared.cwd_fd, rlimits(input)),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ExecutorError(f"could not start {input.argv[0]!r}: {exc}") from exc
    pid = transport.get_pid()
    cancelled: asyncio.Future[Any] = asyncio.ensure_future(context.cancel_event.wait())
    timed_out = killed_for_cancel = False
    try:
        done, _ = await asyncio.wait(
            {protocol.exited, cancelled},
            timeout=prepared.timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if protocol.exited not in done:
            # A command that finished is reported even if a cancel arrived at the same moment.
            killed_for_cancel = cancelled in done
            timed_out = not killed_for_cancel
            _kill_group(pid)
            await _bounded(protocol.exited)
        # Whatever the leader left behind in its group dies with it: nothing outlives the step,
        # and the pipes those processes hold get closed.
        _kill_group(pid)
        # A process that left the group (setsid) may still hold a pipe; close() below drops it.
        await _bounded(protocol.closed)
        if killed_for_cancel:
            raise StepCancelledError(
                f"run_command {input.argv[0]!r} cancelled; its process group was killed",
                run_id=context.run_id,
                step_number=context.step_number,
            )
    finally:
        cancelled.cancel()
        if transport.get_returncode() is None:  # e.g. this task itself was cancelled
            _kill_group(pid)
        transport.close()
    out, err = protocol.streams[1], protocol.streams[2]
    return RunCommandOutput(
        argv=input.argv,
        cwd=prepared.cwd,
        exit_code=transport.get_returncode(),
        stdout=out.text(),
        stderr=err.text(),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        stdout_bytes=out.total,
        stderr_bytes=err.total,
        duration_ms=int((time.monotonic() - started) * 1000),
        killed=timed_out,
        timed_out=timed_out,
    )


async def _bounded(future: asyncio.Future[None]) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(future), timeout=PIPE_GRACE_S)


RUN_COMMAND = RunCommandExecutor()
