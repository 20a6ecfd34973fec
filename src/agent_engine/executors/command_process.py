"""Running one child process: capped output capture, a timeout, a cancel, and a kill of
everything the child started.

The child leads its own process group; a timeout or a cancel kills the group (and, when given,
the command's cgroup). Under bubblewrap the command also lives in its own PID namespace, which
the kernel empties when bubblewrap dies, so a ``setsid`` grandchild dies with the step.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent_engine.executors.command_limits import PidsCgroup

# After the leader exits and its group is killed, wait this long for pipes held by processes that
# left the group (setsid) before giving up on the rest of their output.
PIPE_GRACE_S = 2.0


class Capture:
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
        self.streams = {1: Capture(cap), 2: Capture(cap)}
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


@dataclass(frozen=True)
class ProcessSpec:
    """How to start the child: the argv to exec, its environment and what runs before exec."""

    argv: Sequence[str]
    executable: str
    env: Mapping[str, str]
    preexec: Callable[[], None]
    pass_fds: tuple[int, ...] = ()
    kill_rest: Callable[[], None] | None = None  # e.g. kill every process left in its cgroup


@dataclass(frozen=True)
class ProcessOutcome:
    exit_code: int | None
    stdout: Capture
    stderr: Capture
    duration_ms: int
    timed_out: bool
    cancelled: bool


# prctl(PR_SET_PDEATHSIG): the command dies with the worker that started it, even by kill -9, so
# a crashed worker never leaves an orphan running whose outcome nobody will record.
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def child_setup(
    cwd_fd: int | None,
    limits: list[tuple[int, tuple[int, int]]],
    cgroup: PidsCgroup | None,
    prepare: Callable[[], None] | None = None,
) -> Callable[[], None]:
    """What the forked child does before exec: die with its parent, join its pids cgroup, run
    ``prepare`` (the sandbox's write layer), enter its cwd (without a sandbox, which enters it
    itself) and set its rlimits (last: they may be below what the forked server uses)."""

    # Runs in the forked child before exec: keep it to plain syscalls (no imports, no locks).
    def setup() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if cgroup is not None:
            cgroup.join()
        if prepare is not None:
            prepare()
        if cwd_fd is not None:
            os.fchdir(cwd_fd)
        for which, pair in limits:
            resource.setrlimit(which, pair)

    return setup


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def run_process(
    spec: ProcessSpec, *, timeout_s: float, cancel: asyncio.Event, output_cap: int
) -> ProcessOutcome:
    """Run the child to its end, its timeout or ``cancel``; whatever it started dies with it.
    Raises OSError or SubprocessError when it cannot start."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    transport, protocol = await loop.subprocess_exec(
        lambda: _CommandProtocol(output_cap),
        *spec.argv,
        executable=spec.executable,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(spec.env),
        start_new_session=True,  # the child leads its own group, so killpg reaches all of it
        preexec_fn=spec.preexec,
        pass_fds=spec.pass_fds,
    )
    pid = transport.get_pid()
    cancelled: asyncio.Future[Any] = asyncio.ensure_future(cancel.wait())
    timed_out = killed_for_cancel = False

    def kill_everything() -> None:
        kill_group(pid)
        if spec.kill_rest is not None:
            spec.kill_rest()

    try:
        done, _ = await asyncio.wait(
            {protocol.exited, cancelled}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if protocol.exited not in done:
            # A command that finished is reported even if a cancel arrived at the same moment.
            killed_for_cancel = cancelled in done
            timed_out = not killed_for_cancel
            kill_everything()
            await _bounded(protocol.exited)
        # Whatever the leader left behind dies with it: nothing outlives the step, and the pipes
        # those processes hold get closed.
        kill_everything()
        # A process that left the group (setsid) may still hold a pipe; close() below drops it.
        await _bounded(protocol.closed)
    finally:
        cancelled.cancel()
        if transport.get_returncode() is None:  # e.g. this task itself was cancelled
            kill_everything()
        transport.close()
    return ProcessOutcome(
        exit_code=transport.get_returncode(),
        stdout=protocol.streams[1],
        stderr=protocol.streams[2],
        duration_ms=int((time.monotonic() - started) * 1000),
        timed_out=timed_out,
        cancelled=killed_for_cancel,
    )


async def _bounded(future: asyncio.Future[None]) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(future), timeout=PIPE_GRACE_S)
