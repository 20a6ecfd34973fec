"""The command sandbox: bubblewrap's argv for one command, built from a small policy value, and
a one-time probe of whether bubblewrap can run on this host.

Inside: new user, PID, mount, network, IPC, UTS and cgroup namespaces; uid 1000; the system
read-only; the workspace at its own path as an overlay over the real one, writable; ``HOME`` and
``TMPDIR`` on the same size-limited tmpfs as the overlay's upper layer (the forked child makes
it before it execs bubblewrap, see ``overlay_runner``); a fresh ``/proc`` and a minimal ``/dev``;
nothing else of the host.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from agent_engine.errors import SandboxUnavailableError
from agent_engine.executors.overlay_layer import WriteLayer

BWRAP = "/usr/bin/bwrap"  # Debian's bubblewrap package; a fixed path, never looked up on PATH
SANDBOX_UID = 1000
SCRATCH = "/tmp"  # inside the sandbox: a fresh tmpfs, not the host's /tmp
HOME = f"{SCRATCH}/home"
# Read-only system: /usr and the top-level folders that merged-/usr systems make symlinks.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Only the parts of /etc that programs need to start, find libraries, names and certificates;
# not the whole of it (shadow files, service credentials).
ETC_ENTRIES = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "gitconfig",
    "group",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "passwd",
    "resolv.conf",
    "ssl",
)
PROBE_TIMEOUT_S = 10.0
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap) or set "
    "AGENT_ENGINE_SANDBOX=none to run commands without a sandbox"
)


@dataclass(frozen=True)
class SandboxPolicy:
    """What one sandboxed command may see and do."""

    workspace: str  # absolute path, where the command sees its workspace
    # An open directory fd of the workspace, checked by the server; the child mounts the
    # overlay over that very directory and puts the overlay's root on this fd number.
    workspace_fd: int
    # The fd number of the write layer's report socket; the child puts the scratch folder (HOME
    # and TMPDIR) there once it has reported.
    scratch_fd: int
    cwd: str  # absolute, inside the workspace
    env: Mapping[str, str]  # the whole environment inside (HOME and TMPDIR are set here)
    read_only_paths: tuple[str, ...] = ()  # extra host folders bound read-only at their path
    network: bool = False
    # Size of the tmpfs holding everything the command writes: the workspace's upper layer,
    # HOME and TMPDIR.
    scratch_bytes: int = 512 << 20
    # No user namespaces inside (the kernel code they reach is a common way out of sandboxes).
    disable_userns: bool = False


def sandbox_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with ``HOME`` and ``TMPDIR`` pointing into the sandbox's own scratch tmpfs."""
    return {**env, "HOME": HOME, "TMPDIR": SCRATCH}


def system_mounts() -> list[str]:
    """bwrap arguments for the read-only system: real folders bound, merged-/usr symlinks kept."""
    args: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in ETC_ENTRIES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def bwrap_argv(policy: SandboxPolicy, executable: str, args: Sequence[str]) -> list[str]:
    """The full argv that runs ``executable`` with ``args`` (argv[1:]) under ``policy``."""
    argv = [
        BWRAP,
        "--unshare-all",
        *(["--share-net"] if policy.network else []),
        *(["--unshare-user", "--disable-userns"] if policy.disable_userns else []),
        "--die-with-parent",  # the sandbox dies with the worker, even by kill -9
        "--new-session",  # no TIOCSTI into a terminal the server may hold
        "--clearenv",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--hostname",
        "sandbox",
        *system_mounts(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--bind-fd",  # the scratch folder of the write layer (mode 1777)
        str(policy.scratch_fd),
        SCRATCH,
        "--dir",
        HOME,
    ]
    # After the scratch folder, which would hide a read-only path under /tmp (a virtualenv in a
    # checkout there), and before the workspace, which may lie inside one and stays writable.
    for path in policy.read_only_paths:
        argv += ["--ro-bind-try", path, path]  # a folder that is gone hides nothing
    argv += [
        "--bind-fd",
        str(policy.workspace_fd),
        policy.workspace,
        # The sandbox's own root (where bubblewrap made /etc, /proc…) is read-only too; the
        # scratch tmpfs and the workspace are mounts of their own and stay writable.
        "--remount-ro",
        "/",
        "--chdir",
        policy.cwd,
    ]
    for name, value in sorted(policy.env.items()):
        argv += ["--setenv", name, value]
    return [*argv, "--", executable, *args]


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def outside_refusal(executable: str, read_only_paths: Sequence[str]) -> str | None:
    """Why ``executable`` cannot run in the sandbox (``None``: it can): it, and the file it
    resolves to, must lie in the read-only system or in a configured read-only path."""
    visible = [*(d for d in SYSTEM_DIRS if os.path.isdir(d)), *read_only_paths]
    for path in {os.path.normpath(executable), os.path.realpath(executable)}:
        if not any(_inside(path, folder) for folder in visible):
            return (
                f"{path!r} is not visible in the sandbox (only the system folders /usr, /bin, "
                "/lib… are); add its folder to AGENT_ENGINE_SANDBOX_READ_ONLY_PATHS"
            )
    return None


@dataclass(frozen=True)
class Probe:
    """What the one-time probe found: why bubblewrap cannot run (``None``: it can), and whether
    it can also forbid nested user namespaces (``--disable-userns``, bubblewrap 0.8 and later)."""

    problem: str | None
    disables_userns: bool = False


def _try(policy: SandboxPolicy, true: str) -> str | None:
    layer = WriteLayer(os.dup(policy.workspace_fd))
    try:
        policy = replace(policy, workspace_fd=layer.workspace_fd, scratch_fd=layer.child_fd)
        done = subprocess.run(
            bwrap_argv(policy, true, []),
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            env={},
            check=False,
            pass_fds=(policy.workspace_fd, policy.scratch_fd),  # the workspace, the report socket
            preexec_fn=layer.child_setup(policy.workspace, policy.workspace_fd, 1 << 20),
        )
        layer.receive()  # the write layer was made
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap could not start: {exc}"
    except SandboxUnavailableError as exc:
        return exc.detail
    finally:
        layer.close()
    if done.returncode == 0:
        return None
    reason = done.stderr.decode(errors="replace").strip().splitlines()
    return f"bubblewrap failed its probe: {reason[-1] if reason else f'exit {done.returncode}'}"


@functools.cache
def probe() -> Probe:
    """Run ``true`` once in a sandbox of exactly the real shape (cached for the process)."""
    if not os.access(BWRAP, os.X_OK):
        return Probe(f"bubblewrap is not installed ({BWRAP} not found)")
    true = next((p for p in ("/usr/bin/true", "/bin/true") if os.access(p, os.X_OK)), None)
    if true is None:
        return Probe("no /usr/bin/true to probe bubblewrap with")
    with tempfile.TemporaryDirectory(prefix="agent-engine-probe-") as folder:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            policy = SandboxPolicy(
                workspace=folder, workspace_fd=fd, scratch_fd=-1, cwd=folder, env={}
            )
            if _try(replace(policy, disable_userns=True), true) is None:
                return Probe(None, disables_userns=True)
            return Probe(_try(policy, true))
        finally:
            os.close(fd)


def bwrap_problem() -> str | None:
    """Why bubblewrap cannot run here (``None``: it can), from the one-time probe."""
    return probe().problem


def sandbox_refusal(mode: str) -> str | None:
    """Why commands cannot run under sandbox ``mode`` (``None``: they can), naming the fix."""
    if mode == "none":
        return None
    problem = bwrap_problem()
    return None if problem is None else f"run_command needs its sandbox: {problem}; {INSTALL_HINT}"
