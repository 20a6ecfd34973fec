"""What the forked child of a sandboxed command does before it execs bubblewrap: build the
command's write layer and hand it to the server.

It runs between fork and exec (subprocess's ``preexec_fn``, after the child has joined its
cgroup and before its rlimits), so no interpreter starts for it. In a mount namespace of its
own (with a user namespace where the child is root over nothing but its own mounts, unless the
server is root and may mount already), it

1. creates a tmpfs of ``size`` bytes and ``inodes`` inodes, detached, and attaches it on the
   workspace directory the server opened and checked (the ``workspace_fd`` it inherits);
2. mounts an overlay whose lower layer is that real workspace (never written) and whose upper
   and work folders lie on the tmpfs, plus a ``scratch`` folder for HOME and TMPDIR;
3. sends the server an fd of the tmpfs root over ``socket_fd`` (it keeps the tmpfs alive after
   every process of the sandbox is gone, so the server reads the upper layer at leisure), or
   one message ``error: …`` and exits 1 when a step failed;
4. puts the overlay's root on fd ``workspace_fd`` and the scratch folder on fd ``socket_fd``,
   which bubblewrap binds at the workspace's path and at ``/tmp`` (``--bind-fd``).

The tmpfs is the kernel's hard limit: a write past ``size`` fails inside the command with
ENOSPC. Mounts are made with the new mount API on file descriptors, never on paths a host user
could swap, and the namespace's propagation is private, so the host never sees them. Only
system calls and the standard library are used here: this code runs in a forked child.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
from dataclasses import dataclass

# The mount API's system calls have one number on every architecture but alpha, ia64 and mips
# (the table unified at Linux 5.1); glibc before 2.36 has no wrappers for them.
_NR_MOVE_MOUNT, _NR_FSOPEN, _NR_FSCONFIG, _NR_FSMOUNT = 429, 430, 431, 432
_FSOPEN_CLOEXEC = _FSMOUNT_CLOEXEC = 1
_FSCONFIG_SET_FLAG, _FSCONFIG_SET_STRING, _FSCONFIG_CMD_CREATE = 0, 1, 6
_MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x2, 0x4
_MOVE_MOUNT_F_EMPTY_PATH, _MOVE_MOUNT_T_EMPTY_PATH = 0x4, 0x40
_CLONE_NEWNS, _CLONE_NEWUSER = 0x00020000, 0x10000000
_MS_REC, _MS_PRIVATE = 0x4000, 1 << 18
_PR_SET_PDEATHSIG = 1

_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.syscall.restype = ctypes.c_long


def _checked(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def _syscall(number: int, what: str, *args: object) -> int:
    return _checked(_LIBC.syscall(number, *args), what)


def _new_mount(kind: str, strings: dict[str, str], flags: tuple[str, ...] = ()) -> int:
    """A detached mount of a new ``kind`` filesystem: the fd of its root."""
    config = _syscall(_NR_FSOPEN, f"fsopen {kind}", kind.encode(), _FSOPEN_CLOEXEC)
    try:
        for key, value in strings.items():
            _syscall(
                _NR_FSCONFIG, f"{kind} {key}", config, _FSCONFIG_SET_STRING, key.encode(),
                value.encode(), 0,
            )  # fmt: skip
        for key in flags:
            _syscall(
                _NR_FSCONFIG, f"{kind} {key}", config, _FSCONFIG_SET_FLAG, key.encode(), None, 0
            )
        _syscall(_NR_FSCONFIG, f"create {kind}", config, _FSCONFIG_CMD_CREATE, None, None, 0)
        attributes = _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV
        return _syscall(_NR_FSMOUNT, f"fsmount {kind}", config, _FSMOUNT_CLOEXEC, attributes)
    finally:
        os.close(config)


def _attach(mount_fd: int, target_dir_fd: int, name: str = "") -> None:
    """Attach a detached mount on ``name`` in ``target_dir_fd`` (on that directory itself when
    ``name`` is empty): no path is looked up but the one component."""
    flags = _MOVE_MOUNT_F_EMPTY_PATH | (0 if name else _MOVE_MOUNT_T_EMPTY_PATH)
    _syscall(_NR_MOVE_MOUNT, "move_mount", mount_fd, b"", target_dir_fd, name.encode(), flags)


def _enter_namespaces() -> bool:
    """A mount namespace of its own whose mounts never propagate to the host: alone when this
    process may mount (a root server), else with a user namespace where it is root (mapped to
    the server's uid and gid). Whether it is in a user namespace of its own."""
    uid, gid = os.getuid(), os.getgid()
    own_user_namespace = uid != 0 or _LIBC.unshare(_CLONE_NEWNS) != 0
    if own_user_namespace:
        _checked(_LIBC.unshare(_CLONE_NEWUSER | _CLONE_NEWNS), "unshare")
        maps = (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1"))
        for name, text in maps:
            with open(f"/proc/self/{name}", "w") as control:
                control.write(text)
        # Gaining capabilities in the new namespace cleared the parent-death signal.
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    _checked(_LIBC.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "private mounts")
    return own_user_namespace


def _open_workspace(path: str, inherited_fd: int) -> int:
    """The workspace opened again inside the new mount namespace (mounts need a directory of
    their own namespace), refused unless it is the very directory the server checked."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    here, checked = os.fstat(fd), os.fstat(inherited_fd)
    if (here.st_dev, here.st_ino) != (checked.st_dev, checked.st_ino):
        raise OSError(f"the workspace {path!r} changed while its sandbox was being made")
    return fd


def _require_user_xattrs(folder_fd: int) -> None:
    """Refuse a tmpfs without user.* xattrs (Linux before 6.6): the overlay would mount, but
    could not mark a folder deleted and made again as opaque."""
    path = f"/proc/self/fd/{folder_fd}"
    try:
        os.setxattr(path, "user.agent-engine.probe", b"1")
        os.removexattr(path, "user.agent-engine.probe")
    except OSError as exc:
        reason = f"this kernel's tmpfs keeps no user xattrs (Linux 6.6 or later): {exc}"
        raise OSError(reason) from exc


@dataclass(frozen=True)
class LayerSpec:
    """Where the layer goes and how large it is; the fds are numbers in the child."""

    workspace: str
    workspace_fd: int
    socket_fd: int
    size: int
    inodes: int


LAYER_FAILED_EXIT = 1


def build_layer(spec: LayerSpec) -> tuple[int, int, int]:
    """Mount the layer; return the fds of the tmpfs root, the overlay root and the scratch."""
    user_namespace = _enter_namespaces()
    lower = _open_workspace(spec.workspace, spec.workspace_fd)
    sizes = {"size": str(spec.size), "nr_inodes": str(spec.inodes), "mode": "0755"}
    top = _new_mount("tmpfs", sizes)
    # Covers the real workspace in this namespace only; ``lower`` still reads it.
    _attach(top, lower)
    for name in ("upper", "work", "merged", "scratch"):
        os.mkdir(name, 0o755, dir_fd=top)
    os.chmod("scratch", 0o1777, dir_fd=top)  # /tmp inside: every uid may write, sticky
    folders = {
        name: os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=top)
        for name in ("upper", "work", "scratch")
    }
    if user_namespace:
        _require_user_xattrs(folders["work"])
    layers = {
        "lowerdir": f"/proc/self/fd/{lower}",
        "upperdir": f"/proc/self/fd/{folders['upper']}",
        "workdir": f"/proc/self/fd/{folders['work']}",
        "index": "off",
        "metacopy": "off",
    }
    if user_namespace:
        # The overlay's own marks (opaque folders) become user.overlay.* xattrs, the only ones
        # a mount in a user namespace may write; that also keeps renames of lower folders off.
        overlay = _new_mount("overlay", layers, ("userxattr",))
    else:
        # trusted.overlay.* marks; a folder's rename is refused (EXDEV) here too, since the
        # apply copies the upper layer as it is and follows no redirect.
        overlay = _new_mount("overlay", {**layers, "redirect_dir": "off"})
    _attach(overlay, top, "merged")
    return top, overlay, folders["scratch"]


def _report(socket_fd: int, message: bytes, fds: list[int]) -> None:
    with socket.socket(fileno=os.dup(socket_fd)) as report:
        socket.send_fds(report, [message], fds)


def make_layer(spec: LayerSpec) -> None:
    """In the forked child: build the layer, report it and leave the fds bubblewrap binds; on
    failure report why and exit, so the command never runs without its layer."""
    try:
        top, overlay, scratch = build_layer(spec)
    except OSError as exc:
        _report(spec.socket_fd, f"error: {exc}".encode(errors="replace"), [])
        os._exit(LAYER_FAILED_EXIT)
    _report(spec.socket_fd, b"ok", [top])
    os.dup2(overlay, spec.workspace_fd)  # also closes the inherited workspace fd
    os.dup2(scratch, spec.socket_fd)  # also closes this end of the socket
