"""Resource limits of one command that hold for every uid, root included.

CPU time, address space and file size are rlimits, which the kernel applies to root too. The
number of processes is not: RLIMIT_NPROC counts per real uid and exempts a process whose real
uid outside every namespace is root, so a server running as root (even with bubblewrap's
``--uid 1000``) is never held by it. Processes are therefore bounded by a ``pids`` cgroup of the
command's own when this host lets the server create one (cgroup v2, or v1's pids hierarchy);
RLIMIT_NPROC is the fallback, which holds only for a server that does not run as root.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import signal
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from agent_engine.executors.base import ExecutionLimits, InputProblem

# bubblewrap's own two processes (its monitor and the namespace's init) are in the cgroup too.
SANDBOX_OVERHEAD_PROCESSES = 2
_CGROUP_PREFIX = "agent-engine-cmd-"
LEFTOVER_AGE_S = 300.0
# A step's limit → the ExecutionLimits field holding the server's cap, and its setting.
CAPS = {
    "cpu_seconds": ("command_max_cpu_seconds", "AGENT_ENGINE_COMMAND_MAX_CPU_SECONDS"),
    "memory_bytes": ("command_max_memory_bytes", "AGENT_ENGINE_COMMAND_MAX_MEMORY_BYTES"),
    "max_processes": ("command_max_processes", "AGENT_ENGINE_COMMAND_MAX_PROCESSES"),
    "max_file_bytes": ("command_max_file_bytes", "AGENT_ENGINE_COMMAND_MAX_FILE_BYTES"),
    "max_write_bytes": ("command_max_write_bytes", "AGENT_ENGINE_COMMAND_MAX_WRITE_BYTES"),
}


@dataclass(frozen=True)
class CommandLimits:
    """The limits one command runs under (already checked against the server's caps)."""

    cpu_seconds: int
    memory_bytes: int
    max_processes: int
    max_file_bytes: int


def cap_problems(values: Mapping[str, Any], limits: ExecutionLimits) -> list[InputProblem]:
    """Each literal limit in ``values`` that is above the server's cap, naming the cap."""
    problems = []
    for name, (field, setting) in CAPS.items():
        value, cap = values.get(name), getattr(limits, field)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            problems.append(
                InputProblem(name, f"{name} {value} is above the server's cap {cap} ({setting})")
            )
    return problems


def effective_limit(input: BaseModel, limits: ExecutionLimits, name: str) -> int:
    """The step's value of limit ``name``, or the server's cap when the step leaves it unset."""
    value = getattr(input, name)
    cap: int = getattr(limits, CAPS[name][0])
    return cap if value is None else int(value)


def rlimit_pairs(limits: CommandLimits, *, nproc: bool) -> list[tuple[int, tuple[int, int]]]:
    """The (resource, (soft, hard)) pairs for the child, never above the current hard limits;
    RLIMIT_NPROC only with ``nproc`` (when no cgroup bounds the processes)."""
    wanted = {
        resource.RLIMIT_CPU: limits.cpu_seconds,
        resource.RLIMIT_AS: limits.memory_bytes,
        resource.RLIMIT_FSIZE: limits.max_file_bytes,
    }
    if nproc:
        wanted[resource.RLIMIT_NPROC] = limits.max_processes
    pairs = []
    for which, value in wanted.items():
        _soft, hard = resource.getrlimit(which)
        capped = value if hard == resource.RLIM_INFINITY else min(value, hard)
        pairs.append((which, (capped, capped)))
    return pairs


def _own_cgroup(controller: str) -> str | None:
    """This process's cgroup path in the v1 hierarchy of ``controller`` ("" for v2)."""
    with open("/proc/self/cgroup") as lines:
        for line in lines:
            _id, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return path
    return None


def _mounts() -> list[tuple[str, str, list[str]]]:
    with open("/proc/self/mounts") as lines:
        found = []
        for line in lines:
            _source, mountpoint, kind, options, *_rest = line.split()
            found.append((mountpoint, kind, options.split(",")))
        return found


def _writable_parent(candidate: str) -> str | None:
    probe = os.path.join(candidate, f"{_CGROUP_PREFIX}probe-{os.getpid()}")
    try:
        os.mkdir(probe)
    except OSError:
        return None
    os.rmdir(probe)
    _sweep_leftovers(candidate)
    return candidate


def _sweep_leftovers(parent: str) -> None:
    """Remove command cgroups left by a worker that died mid-command. Only empty ones can be
    removed at all, and only old ones are tried: a fresh one may be another server's, made an
    instant before its command joins it."""
    cutoff = time.time() - LEFTOVER_AGE_S
    for entry in os.scandir(parent):
        if entry.name.startswith(_CGROUP_PREFIX) and entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.rmdir(entry.path)


def _pids_delegated(folder: str) -> bool:
    try:
        with open(os.path.join(folder, "cgroup.subtree_control")) as control:
            return "pids" in control.read().split()
    except OSError:
        return False


@functools.cache
def pids_cgroup_parent() -> str | None:
    """A cgroup folder where this process may create children with a ``pids.max`` (found once),
    or ``None`` when the host allows none (then processes fall back to RLIMIT_NPROC)."""
    try:
        mounts = _mounts()
        for mountpoint, kind, _options in mounts:
            if kind != "cgroup2":
                continue
            # This process's own cgroup, else the hierarchy's root (root may create children
            # there, and the root cgroup may hold processes beside its children).
            own = _own_cgroup("") or "/"
            for parent in dict.fromkeys([os.path.join(mountpoint, own.lstrip("/")), mountpoint]):
                if _pids_delegated(parent):
                    found = _writable_parent(parent)
                    if found is not None:
                        return found
        for mountpoint, kind, options in mounts:
            if kind == "cgroup" and "pids" in options:
                own = _own_cgroup("pids") or "/"
                found = _writable_parent(os.path.join(mountpoint, own.lstrip("/")))
                if found is not None:
                    return found
    except OSError:
        return None
    return None


class PidsCgroup:
    """One command's own pids cgroup: its processes (bubblewrap's included) are counted, capped
    and, at the end, killed to the last one, wherever they moved in their sessions."""

    def __init__(self, parent: str, max_processes: int) -> None:
        self.path = os.path.join(parent, f"{_CGROUP_PREFIX}{uuid.uuid4().hex}")
        os.mkdir(self.path)
        try:
            with open(os.path.join(self.path, "pids.max"), "w") as limit:
                limit.write(str(max_processes))
            # Opened here, written in the forked child before exec: the child joins the cgroup
            # before it can start anything.
            self.procs_fd = os.open(os.path.join(self.path, "cgroup.procs"), os.O_WRONLY)
        except OSError:
            os.rmdir(self.path)
            raise

    def join(self) -> None:
        """Move the calling process into the cgroup (called in the child before exec)."""
        os.write(self.procs_fd, b"0")

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as procs:
                return [int(line) for line in procs if line.strip()]
        except OSError:
            return []

    def kill_all(self) -> None:
        """SIGKILL every process left in the cgroup."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, attempts: int = 50) -> None:
        """Kill what is left and remove the cgroup (blocking: a few ms while the dead exit)."""
        os.close(self.procs_fd)
        for _ in range(attempts):
            self.kill_all()
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)


def processes_refusal(sandbox: str) -> str | None:
    """Why the process limit cannot hold (``None``: it can): a root server needs a pids cgroup,
    since RLIMIT_NPROC does not hold for root. Only the bubblewrap mode insists."""
    if sandbox == "none" or os.getuid() != 0 or pids_cgroup_parent() is not None:
        return None
    return (
        "the server runs as root and this host offers no writable pids cgroup, so a command's "
        "process limit cannot hold; run the server as a non-root user, or give it a cgroup "
        "with the pids controller"
    )
