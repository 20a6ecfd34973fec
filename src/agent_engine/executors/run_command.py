"""The run_command step: an allowlisted program run from an argv list, never through a shell.

By default the command runs in a bubblewrap sandbox (see ``sandbox``): its own namespaces, the
system read-only, a scrubbed environment, and everything it writes (the workspace, seen through
an overlay, ``HOME`` and ``TMPDIR``) on one tmpfs of ``max_write_bytes``; when it ends, its
changes are applied to the real workspace all or nothing (see ``overlay_apply``). Its limits
(see ``command_limits``) are the step's, never above the server's caps. Output is capped per
stream; a timeout or a cancellation kills everything it started, and a timeout fails the step.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent_engine.domain.clock import utcnow
from agent_engine.errors import CancelledError as StepCancelledError
from agent_engine.errors import (
    CommandTimedOutError,
    ExecutorError,
    SandboxUnavailableError,
    WorkspaceViolationError,
)
from agent_engine.executors.base import ExecutionLimits, Executor, ExecutorContext, InputProblem
from agent_engine.executors.command_allowlist import (
    allowlist_refusal,
    network_allowed,
    resolve_executable,
    scrubbed_env,
    search_path,
)
from agent_engine.executors.command_analysis import analyze_command
from agent_engine.executors.command_hashes import with_record_hashes
from agent_engine.executors.command_limits import (
    SANDBOX_OVERHEAD_PROCESSES,
    CommandLimits,
    PidsCgroup,
    cap_problems,
    effective_limit,
    pids_cgroup_parent,
    processes_refusal,
    rlimit_pairs,
)
from agent_engine.executors.command_process import (
    ProcessOutcome,
    ProcessSpec,
    child_setup,
    run_process,
)
from agent_engine.executors.input_checks import literal_string, workspace_path_problem
from agent_engine.executors.overlay_layer import WriteLayer
from agent_engine.executors.sandbox import (
    SandboxPolicy,
    bwrap_argv,
    outside_refusal,
    probe,
    sandbox_env,
    sandbox_refusal,
)
from agent_engine.executors.workspace import Workspace, run_blocking
from agent_engine.executors.workspace_roots import workspace_of

GIB = 1 << 30


class RunCommandInput(BaseModel):
    """A command and the limits it runs under; an unset limit is the server's cap."""

    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1, description="Program and arguments; no shell.")
    cwd: str | None = Field(default=None, description="Directory relative to the workspace root.")
    timeout_s: float | None = Field(default=None, gt=0, le=3600, description="Capped by config.")
    cpu_seconds: int | None = Field(default=None, ge=1, le=86_400, description="RLIMIT_CPU.")
    memory_bytes: int | None = Field(
        default=None, ge=64 << 20, le=1 << 40, description="RLIMIT_AS (per process)."
    )
    max_processes: int | None = Field(
        default=None, ge=1, le=65_536, description="Processes the command may run at once."
    )
    max_file_bytes: int | None = Field(default=None, ge=1, le=1 << 40, description="RLIMIT_FSIZE.")
    max_write_bytes: int | None = Field(
        default=None,
        ge=1 << 20,
        le=1 << 40,
        description="Bytes the command may write in all: workspace changes, HOME and TMPDIR.",
    )

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
    exit_code: int | None = Field(
        description="Negative: killed by that signal number; in the sandbox a command killed "
        "by a signal exits 128 + the signal number."
    )
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    stdout_bytes: int = Field(description="Bytes the command wrote, kept or not.")
    stderr_bytes: int
    duration_ms: int
    killed: bool
    timed_out: bool
    sandbox: str = "bwrap"
    write_limit_reached: bool = Field(
        default=False, description="It filled max_write_bytes; nothing it wrote was applied."
    )
    # What the run's record needs to be recomputed: the environment's names (never its values)
    # and the clock reading the command started at are where nondeterminism enters.
    env_keys: list[str] = Field(default_factory=list, description="Variable names it received.")
    started_at: str | None = Field(default=None, description="UTC clock reading at its start.")
    command_hash: str | None = Field(
        default=None, description="content hash of {argv, cwd, env_keys, stdin}"
    )
    result_hash: str | None = Field(
        default=None, description="content hash of the exit code, the streams and their flags"
    )


@dataclass
class _Prepared:
    executable: str
    cwd: str
    cwd_fd: int
    env: dict[str, str]
    timeout_s: float
    limits: CommandLimits
    write_bytes: int
    network: bool


def _prepare(workspace: Workspace, input: RunCommandInput, context: ExecutorContext) -> _Prepared:
    """Everything checked before anything runs: the sandbox, the caps, the executable, the cwd."""
    limits = context.limits
    refusal = sandbox_refusal(limits.sandbox) or processes_refusal(limits.sandbox)
    if refusal is not None:
        raise SandboxUnavailableError(refusal, program=input.argv[0])
    over = cap_problems(input.model_dump(), limits)
    if over:
        raise ExecutorError("; ".join(p.message for p in over), field=over[0].field)
    path = search_path(limits.command_env_passthrough)
    executable = resolve_executable(input.argv[0], limits.command_allowlist, path, workspace)
    env = scrubbed_env(limits.command_env_passthrough, str(workspace.root))
    if limits.sandbox != "none":
        refusal = outside_refusal(executable, limits.sandbox_read_only_paths)
        if refusal is not None:
            raise ExecutorError(refusal, program=input.argv[0])
        env = sandbox_env(env)
    timeout = min(input.timeout_s or limits.command_timeout_s, limits.command_timeout_s)
    command_limits = CommandLimits(
        cpu_seconds=effective_limit(input, limits, "cpu_seconds"),
        memory_bytes=effective_limit(input, limits, "memory_bytes"),
        max_processes=effective_limit(input, limits, "max_processes"),
        max_file_bytes=effective_limit(input, limits, "max_file_bytes"),
    )
    network = network_allowed(input.argv[0], executable, limits.command_network_allowlist)
    cwd_fd, cwd = workspace.open_dir_with_path(input.cwd or ".")
    write_bytes = effective_limit(input, limits, "max_write_bytes")
    return _Prepared(
        executable, cwd or ".", cwd_fd, env, timeout, command_limits, write_bytes, network
    )


def _process_spec(
    workspace: Workspace, input: RunCommandInput, prepared: _Prepared, limits: ExecutionLimits
) -> tuple[ProcessSpec, PidsCgroup | None, WriteLayer | None]:
    """How to start the command (in bubblewrap unless the sandbox is off), its pids cgroup if
    this host offers one, and its write layer (closed by the caller)."""
    write_layer = None
    if limits.sandbox != "none":
        write_layer = WriteLayer(workspace.open_dir("."))
    parent = pids_cgroup_parent()
    processes = prepared.limits.max_processes + (
        SANDBOX_OVERHEAD_PROCESSES if write_layer is not None else 0
    )
    try:
        cgroup = PidsCgroup(parent, processes) if parent else None
    except OSError as exc:
        if write_layer is not None:
            write_layer.close()
        raise SandboxUnavailableError(f"could not create the command's pids cgroup: {exc}") from exc
    pairs = rlimit_pairs(prepared.limits, nproc=cgroup is None)
    kill_rest = cgroup.kill_all if cgroup is not None else None
    if write_layer is None:  # no sandbox
        preexec = child_setup(prepared.cwd_fd, pairs, cgroup)
        spec = ProcessSpec(input.argv, prepared.executable, prepared.env, preexec, (), kill_rest)
        return spec, cgroup, None
    inside_cwd = os.path.normpath(os.path.join(str(workspace.root), prepared.cwd))
    policy = SandboxPolicy(
        workspace=str(workspace.root),
        workspace_fd=write_layer.workspace_fd,
        scratch_fd=write_layer.child_fd,
        cwd=inside_cwd,
        env=prepared.env,
        read_only_paths=limits.sandbox_read_only_paths,
        network=prepared.network,
        scratch_bytes=prepared.write_bytes,
        disable_userns=probe().disables_userns,
    )
    argv = bwrap_argv(policy, prepared.executable, input.argv[1:])
    build_layer = write_layer.child_setup(
        policy.workspace, policy.workspace_fd, prepared.write_bytes
    )
    preexec = child_setup(None, pairs, cgroup, build_layer)
    # bubblewrap clears the command's environment itself; it gets only the scrubbed one too.
    fds = (policy.workspace_fd, policy.scratch_fd)
    spec = ProcessSpec(argv, argv[0], prepared.env, preexec, fds, kill_rest)
    return spec, cgroup, write_layer


class RunCommandExecutor(Executor[RunCommandInput, RunCommandOutput]):
    name = "run_command"
    observes = True
    input_model = RunCommandInput
    output_model = RunCommandOutput
    side_effects = True
    idempotent = False
    requires_approval = True
    needs_workspace = True

    def tool_name(self, input: RunCommandInput) -> str | None:
        """Every command is one call of the ``run_command`` tool (its argv stays off spans)."""
        return self.name

    def check_plan_input(
        self, input_data: dict[str, Any], limits: ExecutionLimits | None
    ) -> list[InputProblem]:
        """A literal program off the allowlist or a limit above the server's cap (when the
        limits are known), or a literal ``cwd`` that would leave the workspace, is refused when
        the plan is made."""
        problems: list[InputProblem] = []
        argv = input_data.get("argv")
        if limits is not None and isinstance(argv, list) and argv and isinstance(argv[0], str):
            refusal = allowlist_refusal(argv[0], limits.command_allowlist)
            if refusal is not None:
                problems.append(InputProblem("argv.0", refusal))
        if limits is not None:
            problems += cap_problems(input_data, limits)
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
        what the command can do, and the sandbox (with or without network); a known tool told to
        reach outside the workspace is refused."""
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
            "sandbox": context.limits.sandbox,
            "network": prepared.network or context.limits.sandbox == "none",
            "limits": {
                "cpu_seconds": prepared.limits.cpu_seconds,
                "memory_bytes": prepared.limits.memory_bytes,
                "max_processes": prepared.limits.max_processes,
                "max_file_bytes": prepared.limits.max_file_bytes,
                "max_write_bytes": prepared.write_bytes,
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
        workspace = workspace_of(context)
        prepared = await run_blocking(_prepare, workspace, input, context)
        context.logger.info("running %s in %s", input.argv, input.cwd or ".")
        started_at = utcnow().isoformat()
        try:
            outcome, write_layer = await _run(workspace, input, prepared, context)
        finally:
            os.close(prepared.cwd_fd)
        output = with_record_hashes(
            _output(input, prepared, outcome, context.limits.sandbox), started_at
        )
        try:
            if write_layer is not None and not (outcome.cancelled or outcome.timed_out):
                changes = await run_blocking(
                    write_layer.apply,
                    input.argv[0],
                    output.model_dump(mode="json"),
                    prepared.write_bytes,
                    context.limits.command_max_write_bytes,
                )
                context.logger.info("applied to the workspace: %s", changes)
        finally:
            if write_layer is not None:
                write_layer.close()
        if outcome.cancelled:
            raise StepCancelledError(
                f"run_command {input.argv[0]!r} cancelled; everything it started was killed",
                run_id=context.run_id,
                step_number=context.step_number,
            )
        if outcome.timed_out:
            raise CommandTimedOutError(
                f"run_command {input.argv[0]!r} ran past its timeout of {prepared.timeout_s} s "
                "and was killed",
                timeout_s=prepared.timeout_s,
                output=output.model_dump(mode="json"),
            )
        context.logger.info("exit code %s after %.0f ms", output.exit_code, output.duration_ms)
        return output


async def _run(
    workspace: Workspace, input: RunCommandInput, prepared: _Prepared, context: ExecutorContext
) -> tuple[ProcessOutcome, WriteLayer | None]:
    spec, cgroup, write_layer = await run_blocking(
        _process_spec, workspace, input, prepared, context.limits
    )
    try:
        outcome = await run_process(
            spec,
            timeout_s=prepared.timeout_s,
            cancel=context.cancel_event,
            output_cap=context.limits.command_output_cap_bytes,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        if write_layer is not None:
            write_layer.close()
        raise ExecutorError(f"could not start {input.argv[0]!r}: {exc}") from exc
    except BaseException:
        if write_layer is not None:
            write_layer.close()
        raise
    finally:
        if cgroup is not None:
            await run_blocking(cgroup.remove)
    return outcome, write_layer


def _output(
    input: RunCommandInput, prepared: _Prepared, outcome: ProcessOutcome, sandbox: str
) -> RunCommandOutput:
    out, err = outcome.stdout, outcome.stderr
    return RunCommandOutput(
        argv=input.argv,
        cwd=prepared.cwd,
        exit_code=outcome.exit_code,
        stdout=out.text(),
        stderr=err.text(),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        stdout_bytes=out.total,
        stderr_bytes=err.total,
        duration_ms=outcome.duration_ms,
        killed=outcome.timed_out,
        timed_out=outcome.timed_out,
        sandbox=sandbox,
        env_keys=sorted(prepared.env),
    )


RUN_COMMAND = RunCommandExecutor()
