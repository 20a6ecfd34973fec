"""run_command: real subprocesses with the allowlist, scrubbed env, limits, timeouts and cancels."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent_engine.errors import CancelledError as StepCancelledError
from agent_engine.errors import (
    CommandTimedOutError,
    ExecutorError,
    SandboxUnavailableError,
    WorkspaceViolationError,
)
from agent_engine.executors import sandbox
from agent_engine.executors.base import ExecutionLimits, ExecutorContext
from agent_engine.executors.run_command import RUN_COMMAND, RunCommandOutput
from agent_engine.executors.sandbox import HOME
from tests.sandboxing import INTERPRETER_PATHS, require_sandbox

# A grandchild that holds an exclusive lock on the file named by argv[1] while it lives (pids
# inside the sandbox are not the host's, so the lock is how a test sees it die), then says so in
# gc.started. The lock file lies outside the workspace, in a folder the sandbox sees read-only:
# what a command writes in the workspace reaches the host only when the command has ended.
HOLD_LOCK = (
    "import fcntl, os, sys, time\n"
    "if 'setsid' in sys.argv: os.setsid()\n"
    "lock = open(sys.argv[1])\n"
    "fcntl.flock(lock, fcntl.LOCK_EX)\n"
    "open('gc.started', 'w').close()\n"
    "time.sleep(60)\n"
)
# Starts that grandchild, waits until it holds its lock, says so, then sleeps (or, with 'exit',
# exits).
SPAWN_GRANDCHILD = (
    "import os, subprocess, sys, time\n"
    f"subprocess.Popen([sys.executable, '-c', {HOLD_LOCK!r}, *sys.argv[1:]])\n"
    "while not os.path.exists('gc.started'): time.sleep(0.01)\n"
    "print('grandchild started', flush=True)\n"
    "if 'exit' in sys.argv: sys.exit(0)\n"
    "time.sleep(60)\n"
)


async def run(context: ExecutorContext, *argv: str, **data: Any) -> RunCommandOutput:
    return await RUN_COMMAND.execute(
        RUN_COMMAND.validate_input({"argv": list(argv), **data}), context
    )


def read_text(path: Path) -> str:
    return path.read_text()


def lock_is_free(path: Path) -> bool:
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


async def grandchild_gone(lock: Path, seconds: float = 5.0) -> bool:
    """Whether the grandchild of SPAWN_GRANDCHILD has died (its lock is free) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if lock_is_free(lock):
            return True
        await asyncio.sleep(0.05)
    return lock_is_free(lock)


async def grandchild_started(lock: Path) -> None:
    for _ in range(200):
        if not lock_is_free(lock):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the grandchild never started")


@pytest.fixture
def lock(tmp_path: Path) -> Path:
    """The grandchild's lock file, outside the workspace."""
    folder = tmp_path / "locks"
    folder.mkdir()
    (folder / "alive.lock").touch()
    return folder / "alive.lock"


@pytest.fixture
def watched(make_context: Callable[..., ExecutorContext], lock: Path) -> ExecutorContext:
    """A context whose sandbox sees the lock's folder (read-only: flock needs no write)."""
    return make_context(sandbox_read_only_paths=(*INTERPRETER_PATHS, str(lock.parent)))


def test_run_command_declares_an_approved_non_idempotent_side_effect() -> None:
    assert RUN_COMMAND.name == "run_command"
    assert RUN_COMMAND.side_effects is True
    assert RUN_COMMAND.idempotent is False
    assert RUN_COMMAND.requires_approval is True
    assert RUN_COMMAND.needs_workspace is True


async def test_runs_and_captures_output_and_exit_code(
    context: ExecutorContext, python_exe: str
) -> None:
    script = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    out = await run(context, python_exe, "-c", script)
    assert (out.exit_code, out.stdout, out.stderr) == (3, "out\n", "err\n")
    assert (out.killed, out.timed_out, out.stdout_truncated, out.stderr_truncated) == (
        False,
        False,
        False,
        False,
    )
    assert out.cwd == "."
    assert out.duration_ms >= 0


async def test_arguments_never_reach_a_shell(context: ExecutorContext, python_exe: str) -> None:
    out = await run(
        context, python_exe, "-c", "import sys; print(sys.argv[1])", "$HOME; echo x`id`"
    )
    assert out.stdout == "$HOME; echo x`id`\n"


async def test_stdin_is_empty(context: ExecutorContext, python_exe: str) -> None:
    out = await run(context, python_exe, "-c", "import sys; print(repr(sys.stdin.read()))")
    assert out.stdout == "''\n"


@pytest.mark.parametrize("argv0", ["rm", "bash", "./python", "bin/sh", "/usr/bin/sh", "/bin/rm"])
async def test_programs_off_the_allowlist_are_refused(context: ExecutorContext, argv0: str) -> None:
    with pytest.raises(ExecutorError, match="not on the allowlist"):
        await run(context, argv0, "-c", "true")


async def test_bare_names_resolve_on_the_scrubbed_path(context: ExecutorContext) -> None:
    preview = await RUN_COMMAND.preview(RUN_COMMAND.validate_input({"argv": ["true"]}), context)
    assert preview["executable"] == shutil.which("true")
    assert (await run(context, "true")).exit_code == 0


async def test_an_absolute_entry_also_allows_its_basename(
    context: ExecutorContext, python_exe: str
) -> None:
    out = await run(context, os.path.basename(python_exe), "-c", "print('ok')")
    assert out.stdout == "ok\n"


async def test_allowlisted_but_missing_program_fails(
    make_context: Callable[..., ExecutorContext],
) -> None:
    context = make_context(command_allowlist=("no-such-program-anywhere",))
    with pytest.raises(ExecutorError, match="not found on PATH"):
        await run(context, "no-such-program-anywhere")


async def test_executables_inside_the_workspace_are_refused(
    root: Path, make_context: Callable[..., ExecutorContext]
) -> None:
    tool = root / "tool"
    tool.write_text("#!/bin/sh\necho pwned\n")
    tool.chmod(0o755)
    context = make_context(command_allowlist=(str(tool),))
    with pytest.raises(ExecutorError, match="inside the workspace"):
        await run(context, str(tool))


@pytest.mark.usefixtures("sandboxed")
async def test_environment_is_scrubbed_and_home_is_not_the_workspace(
    root: Path, context: ExecutorContext, python_exe: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_ENGINE_FAKE_SECRET", "s3cret")
    monkeypatch.setenv("PATH", f".:relative/bin:{os.environ.get('PATH', os.defpath)}")
    out = await run(
        context, python_exe, "-c", "import json, os; print(json.dumps(dict(os.environ)))"
    )
    env = json.loads(out.stdout)
    assert "AGENT_ENGINE_FAKE_SECRET" not in env
    # LC_CTYPE may be added by the child Python itself (PEP 538 locale coercion); bubblewrap
    # sets PWD when it enters the cwd.
    allowed = {*context.limits.command_env_passthrough, "HOME", "TMPDIR", "PWD", "LC_CTYPE"}
    assert set(env) <= allowed
    # A fresh folder of the sandbox's own: a .gitconfig written into the workspace is not read.
    assert env["HOME"] == HOME
    assert not env["HOME"].startswith(str(root))
    assert all(os.path.isabs(entry) for entry in env["PATH"].split(os.pathsep))


@pytest.mark.usefixtures("sandboxed")
async def test_f5_configuration_planted_in_the_workspace_runs_nothing_later(
    root: Path, make_context: Callable[..., ExecutorContext], python_exe: str
) -> None:
    """F5: with HOME the workspace, an edited .gitconfig (``core.fsmonitor``) ran code in the
    next ``git status``, and a user-site .pth file in the next ``python``; HOME is now the
    sandbox's own, so neither is read."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    subprocess.run([git, "init", "-q", str(root)], check=True)
    (root / ".gitconfig").write_text(f'[core]\n\tfsmonitor = "touch {root}/ran-fsmonitor; false"\n')
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = root / ".local" / "lib" / version / "site-packages"
    site_packages.mkdir(parents=True)
    (site_packages / "planted.pth").write_text(f"import os; open({str(root / 'ran-pth')!r}, 'w')\n")
    context = make_context(command_allowlist=(git, python_exe))
    status = await run(context, git, "status", "--short")
    python = await run(context, python_exe, "-c", "pass")
    assert (status.exit_code, python.exit_code) == (0, 0), (status.stderr, python.stderr)
    assert not (root / "ran-fsmonitor").exists()
    assert not (root / "ran-pth").exists()


async def test_cwd_is_a_directory_inside_the_workspace(
    root: Path, context: ExecutorContext, python_exe: str
) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    out = await run(context, python_exe, "-c", "import os; print(os.getcwd())", cwd="sub/deeper")
    assert out.stdout == f"{root / 'sub' / 'deeper'}\n"
    assert out.cwd == "sub/deeper"


async def test_bad_cwd_is_refused(root: Path, outside: Path, context: ExecutorContext) -> None:
    (root / "file").write_text("x")
    (root / "out").symlink_to(outside)
    for cwd in ["..", "../outside", str(outside), "out"]:
        with pytest.raises(WorkspaceViolationError):
            await run(context, "true", cwd=cwd)
    for cwd, message in [("file", "not a directory"), ("missing", "no such")]:
        with pytest.raises(ExecutorError, match=message):
            await run(context, "true", cwd=cwd)


async def test_timeout_kills_the_command_and_fails_with_its_output(
    context: ExecutorContext, python_exe: str
) -> None:
    started = time.monotonic()
    script = "import time; print('before', flush=True); time.sleep(30)"
    with pytest.raises(CommandTimedOutError) as caught:
        await run(context, python_exe, "-c", script, timeout_s=0.5)
    out = caught.value.data["output"]
    assert caught.value.code == "command_timed_out"
    assert (out["timed_out"], out["killed"], out["exit_code"]) == (True, True, -signal.SIGKILL)
    assert out["stdout"] == "before\n"
    assert time.monotonic() - started < 5


async def test_timeout_is_capped_by_the_configuration(
    make_context: Callable[..., ExecutorContext], python_exe: str
) -> None:
    context = make_context(command_timeout_s=0.5)
    data = {"argv": [python_exe, "-c", "import time; time.sleep(30)"], "timeout_s": 100}
    preview = await RUN_COMMAND.preview(RUN_COMMAND.validate_input(data), context)
    assert preview["timeout_s"] == 0.5
    with pytest.raises(CommandTimedOutError) as caught:
        await RUN_COMMAND.execute(RUN_COMMAND.validate_input(data), context)
    assert caught.value.data["timeout_s"] == 0.5


async def test_timeout_kills_the_whole_process_group(
    lock: Path, watched: ExecutorContext, python_exe: str
) -> None:
    with pytest.raises(CommandTimedOutError) as caught:
        await run(watched, python_exe, "-c", SPAWN_GRANDCHILD, str(lock), timeout_s=1.5)
    assert caught.value.data["output"]["stdout"] == "grandchild started\n"
    assert await grandchild_gone(lock)


@pytest.mark.usefixtures("sandboxed")
async def test_a_setsid_grandchild_dies_with_the_timed_out_step(
    root: Path, lock: Path, watched: ExecutorContext, python_exe: str
) -> None:
    """F4: a process that double-forks into a session of its own dies with its step; what a
    timed-out command wrote is not applied to the workspace."""
    with pytest.raises(CommandTimedOutError) as caught:
        await run(watched, python_exe, "-c", SPAWN_GRANDCHILD, str(lock), "setsid", timeout_s=1.5)
    assert caught.value.data["output"]["stdout"] == "grandchild started\n"
    assert await grandchild_gone(lock)
    assert not (root / "gc.started").exists()


async def test_background_processes_do_not_outlive_a_finished_command(
    lock: Path, watched: ExecutorContext, python_exe: str
) -> None:
    started = time.monotonic()
    out = await run(watched, python_exe, "-c", SPAWN_GRANDCHILD, str(lock), "exit")
    assert out.exit_code == 0
    assert out.stdout == "grandchild started\n"
    assert not out.timed_out
    assert time.monotonic() - started < 5  # not held up by the sleeper's copy of the pipes
    assert await grandchild_gone(lock)


async def test_output_is_capped_per_stream_with_a_marker(
    context: ExecutorContext, python_exe: str
) -> None:
    script = "import sys; sys.stdout.write('x' * 3_000_000); sys.stderr.write('e' * 10)"
    out = await run(context, python_exe, "-c", script)
    assert out.exit_code == 0
    assert out.stdout_truncated
    assert out.stdout_bytes == 3_000_000
    assert out.stdout.startswith("x" * 4096)
    assert out.stdout.endswith(f"[… truncated {3_000_000 - 4096} bytes]")
    assert len(out.stdout) < 4200
    assert (out.stderr, out.stderr_truncated, out.stderr_bytes) == ("e" * 10, False, 10)


async def test_file_size_limit_applies(
    root: Path, context: ExecutorContext, python_exe: str
) -> None:
    script = "with open('big.bin', 'wb') as f: f.write(b'x' * 5000)"
    out = await run(context, python_exe, "-c", script, max_file_bytes=1000)
    assert out.exit_code != 0
    assert "File too large" in out.stderr
    assert len(read_text(root / "big.bin")) <= 1000


async def test_memory_limit_applies(context: ExecutorContext, python_exe: str) -> None:
    script = "b = bytearray(2 << 30)"
    out = await run(context, python_exe, "-c", script, memory_bytes=256 << 20)
    assert out.exit_code != 0
    assert "MemoryError" in out.stderr


async def test_cpu_limit_applies(context: ExecutorContext, python_exe: str) -> None:
    out = await run(context, python_exe, "-c", "while True: pass", cpu_seconds=1, timeout_s=10)
    assert not out.timed_out
    # In the sandbox a command killed by a signal exits 128 + its number (bubblewrap reports so).
    killed_by = {-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL}
    assert out.exit_code in killed_by


async def test_cancel_event_kills_the_group_and_raises(
    lock: Path, watched: ExecutorContext, python_exe: str
) -> None:
    async def cancel_soon() -> None:
        await grandchild_started(lock)
        watched.cancel_event.set()

    canceller = asyncio.create_task(cancel_soon())
    started = time.monotonic()
    with pytest.raises(StepCancelledError, match="cancelled"):
        await run(watched, python_exe, "-c", SPAWN_GRANDCHILD, str(lock))
    await canceller
    assert time.monotonic() - started < 5
    assert await grandchild_gone(lock)


async def test_preview_describes_the_command_without_running_it(
    root: Path, make_context: Callable[..., ExecutorContext], python_exe: str
) -> None:
    (root / "sub").mkdir()
    context = make_context(command_timeout_s=30.0)
    data = {
        "argv": [python_exe, "-c", "open('marker', 'w')"],
        "cwd": "sub",
        "timeout_s": 5,
        "cpu_seconds": 7,
    }
    preview = await RUN_COMMAND.preview(RUN_COMMAND.validate_input(data), context)
    assert preview["argv"] == data["argv"]
    assert preview["executable"] == python_exe
    assert preview["cwd"] == "sub"
    assert "HOME" in preview["env_keys"]
    assert all(isinstance(key, str) and "=" not in key for key in preview["env_keys"])
    assert preview["timeout_s"] == 5
    assert preview["limits"]["cpu_seconds"] == 7
    assert preview["limits"]["output_cap_bytes"] == 4096
    assert sorted(os.listdir(root / "sub")) == []


@pytest.mark.parametrize(
    "data",
    [
        {"argv": []},
        {"argv": [""]},
        {"argv": ["true", "a\x00b"]},
        {"argv": "true"},
        {"argv": ["true"], "shell": True},
        {"argv": ["true"], "timeout_s": 0},
        {"argv": ["true"], "timeout_s": 99999},
        {"argv": ["true"], "cpu_seconds": 0},
        {"argv": ["true"], "memory_bytes": 1 << 50},
        {"argv": ["true"], "max_processes": 0},
    ],
)
def test_bad_input_is_a_validation_error(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RUN_COMMAND.validate_input(data)


async def test_sample_workspace_tests_pass_under_run_command(
    tmp_path: Path, make_context: Callable[..., ExecutorContext]
) -> None:
    """The shipped sample project is real: its own test suite passes inside the sandbox."""
    sample = Path(__file__).parents[3] / "examples" / "sample_workspace"
    workspace = tmp_path / "sample"
    shutil.copytree(sample, workspace, ignore=shutil.ignore_patterns("__pycache__"))
    context = make_context(command_allowlist=(sys.executable,), command_timeout_s=60.0)
    context = replace(context, workspace_root=workspace.resolve())
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore"]
    out = await run(context, *argv)
    assert out.exit_code == 0, out.stdout + out.stderr
    assert " passed" in out.stdout


async def test_a_cancelled_step_never_starts_its_command(
    root: Path, context: ExecutorContext, python_exe: str
) -> None:
    context.cancel_event.set()
    with pytest.raises(StepCancelledError, match="before it started"):
        await run(context, python_exe, "-c", "open('marker', 'w')")
    assert os.listdir(root) == []


async def test_cancelling_the_task_kills_the_group(
    lock: Path, watched: ExecutorContext, python_exe: str
) -> None:
    task = asyncio.create_task(run(watched, python_exe, "-c", SPAWN_GRANDCHILD, str(lock)))
    await grandchild_started(lock)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await grandchild_gone(lock)


# --- the sandbox and the limits that hold for every uid (F2, F4) ------------------------------

FORK_BOMB = (
    "import os, time\n"
    "started = 0\n"
    "for _ in range(50):\n"
    "    try:\n"
    "        pid = os.fork()\n"
    "    except OSError as exc:\n"
    "        print('fork refused:', exc.strerror)\n"
    "        break\n"
    "    if pid == 0:\n"
    "        time.sleep(5)\n"
    "        os._exit(0)\n"
    "    started += 1\n"
    "print('started', started)\n"
)


@pytest.fixture
def sandboxed() -> None:
    require_sandbox()


@pytest.mark.usefixtures("sandboxed")
async def test_max_processes_holds_even_for_a_server_running_as_root(
    context: ExecutorContext, python_exe: str
) -> None:
    """F4: with max_processes 3 the command and two children run; every further fork fails,
    whoever the server runs as (these tests run as root here)."""
    out = await run(context, python_exe, "-c", FORK_BOMB, max_processes=3)
    assert out.exit_code == 0, out.stderr
    assert "fork refused:" in out.stdout
    started = int(out.stdout.rsplit("started", 1)[1])
    assert started <= 2


@pytest.mark.usefixtures("sandboxed")
async def test_the_sandbox_sees_only_the_system_and_its_workspace(
    root: Path, outside: Path, context: ExecutorContext, python_exe: str
) -> None:
    script = (
        "import json, os\n"
        "def writable(path):\n"
        "    try:\n"
        "        open(path, 'w').close()\n"
        "        return True\n"
        "    except OSError:\n"
        "        return False\n"
        "print(json.dumps({\n"
        "    'uid': os.getuid(),\n"
        "    'outside': os.path.exists(OUTSIDE),\n"
        "    'workspace': writable('made-here'),\n"
        "    'home': writable(os.path.join(os.environ['HOME'], 'h')),\n"
        "    'usr': writable('/usr/x'), 'etc': writable('/etc/x'), 'root': writable('/x'),\n"
        "    'shadow': os.path.exists('/etc/shadow'),\n"
        "    'interfaces': [n.split(':')[0].strip() for n in open('/proc/net/dev')][2:],\n"
        "    'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit()),\n"
        "    'nested_userns': __import__('ctypes').CDLL(None).unshare(0x10000000) == 0,\n"
        "}))\n"
    )
    script = script.replace("OUTSIDE", repr(str(outside / "secret.txt")))
    out = await run(context, python_exe, "-c", script)
    seen = json.loads(out.stdout)
    assert seen["uid"] != 0
    assert seen["outside"] is False  # another folder next to the workspace
    assert (seen["workspace"], seen["home"]) == (True, True)
    assert (seen["usr"], seen["etc"], seen["root"], seen["shadow"]) == (False, False, False, False)
    assert seen["interfaces"] == ["lo"]  # no network unless the server allows it
    assert max(seen["pids"]) < 10  # a PID namespace of its own: bubblewrap's init and the command
    if sandbox.probe().disables_userns:
        assert seen["nested_userns"] is False  # no user namespaces inside (bubblewrap >= 0.8)
    assert (root / "made-here").exists()
    assert not (Path(HOME) / "h").exists()  # HOME was the sandbox's own tmpfs


async def test_a_limit_above_the_servers_cap_is_refused_when_the_step_runs(
    make_context: Callable[..., ExecutorContext], python_exe: str
) -> None:
    """Resolved inputs ($ref) are checked at execution too, not only when the plan is made."""
    context = make_context(command_max_processes=8)
    with pytest.raises(ExecutorError, match="AGENT_ENGINE_COMMAND_MAX_PROCESSES"):
        await run(context, python_exe, "-c", "pass", max_processes=9)


def test_plan_check_names_the_cap_a_literal_limit_exceeds() -> None:
    limits = ExecutionLimits(command_allowlist=("python3",), command_max_memory_bytes=1 << 30)
    problems = RUN_COMMAND.check_plan_input(
        {"argv": ["python3"], "memory_bytes": 2 << 30, "max_processes": 4}, limits
    )
    assert [(p.field, "AGENT_ENGINE_COMMAND_MAX_MEMORY_BYTES" in p.message) for p in problems] == [
        ("memory_bytes", True)
    ]


@pytest.fixture
def no_bubblewrap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A host where bubblewrap is not installed (its fixed path points nowhere)."""
    monkeypatch.setattr(sandbox, "BWRAP", "/nonexistent/bwrap")
    sandbox.probe.cache_clear()
    yield
    sandbox.probe.cache_clear()


@pytest.mark.usefixtures("no_bubblewrap")
async def test_without_bubblewrap_a_command_fails_naming_the_fix(
    root: Path, make_context: Callable[..., ExecutorContext], python_exe: str
) -> None:
    context = make_context(sandbox="bwrap")
    with pytest.raises(SandboxUnavailableError) as caught:
        await run(context, python_exe, "-c", "open('marker', 'w')")
    assert caught.value.code == "sandbox_unavailable"
    assert "apt-get install bubblewrap" in caught.value.detail
    assert "AGENT_ENGINE_SANDBOX=none" in caught.value.detail
    assert not (root / "marker").exists()


@pytest.mark.usefixtures("no_bubblewrap")
async def test_with_the_sandbox_off_a_command_runs_without_bubblewrap(
    root: Path, make_context: Callable[..., ExecutorContext], python_exe: str
) -> None:
    out = await run(make_context(sandbox="none"), python_exe, "-c", "open('marker', 'w')")
    assert (out.exit_code, out.sandbox) == (0, "none")
    assert (root / "marker").exists()
