"""Applying a command's upper layer to its real workspace, all or nothing.

The upper layer of the overlay holds what the command changed: new and changed regular files
(whole: a changed file is copied up entire), folders, whiteouts (a character device 0:0: the
path was deleted) and opaque folders (xattr ``user.overlay.opaque`` = ``y``: the folder replaces
whatever was there). Anything else (a symlink, a device, a FIFO, a socket) is refused before
anything is applied, so a command cannot plant a link that later steps would follow out of the
workspace. Hard links become separate copies; set-uid, set-gid and sticky bits are dropped.

Two phases: the bytes of every file are first written under temporary names in a staging
folder inside the workspace (where a full disk or a read error leaves the workspace as it was);
only then are deletions, folders and renames into place done, each a metadata operation. Every
operation goes through directory fds and never follows a symlink in the workspace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
from dataclasses import dataclass, field
from typing import Any

from agent_engine.errors import ExecutorError, WorkspaceViolationError

OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque")
STAGING_PREFIX = ".agent-engine-apply-"
MAX_DEPTH = 256  # deeper folders are refused (and the walk stays far from Python's recursion limit)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_REFUSALS_SHOWN = 5
_COPY_CHUNK = 1 << 20


@dataclass
class LayerEntry:
    """One name in the upper layer and what it means for the workspace."""

    name: str
    kind: str  # "delete", "directory" or "file"
    mode: int = 0
    opaque: bool = False
    times_ns: tuple[int, int] = (0, 0)
    size: int = 0
    children: list[LayerEntry] = field(default_factory=list)
    staged: str = ""


@dataclass(frozen=True)
class AppliedChanges:
    """What applying a layer did to the workspace."""

    files: int = 0
    directories: int = 0
    deletions: int = 0
    bytes: int = 0


def _open_dir(name: str, dir_fd: int) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        # A folder the command made unreadable (mode 000); the layer is the server's own copy.
        os.chmod(name, 0o700, dir_fd=dir_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _open_file(name: str, dir_fd: int) -> int:
    try:
        return os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        os.chmod(name, 0o600, dir_fd=dir_fd)
        return os.open(name, _FILE_FLAGS, dir_fd=dir_fd)


def _opaque(fd: int) -> bool:
    for name in OPAQUE_XATTRS:
        with contextlib.suppress(OSError):  # absent, or trusted.* unreadable when not root
            if os.getxattr(fd, name) == b"y":
                return True
    return False


def _kind_name(mode: int) -> str:
    kinds = {
        stat.S_IFLNK: "symlink",
        stat.S_IFCHR: "character device",
        stat.S_IFBLK: "block device",
        stat.S_IFIFO: "FIFO",
        stat.S_IFSOCK: "socket",
    }
    return kinds.get(stat.S_IFMT(mode), "special file")


def _scan(dir_fd: int, prefix: str, refused: list[str], depth: int) -> list[LayerEntry]:
    entries = []
    for name in sorted(os.listdir(dir_fd)):
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        path, mode = f"{prefix}{name}", info.st_mode
        if stat.S_ISCHR(mode) and info.st_rdev == 0:
            entries.append(LayerEntry(name, "delete"))
        elif stat.S_ISDIR(mode):
            if depth >= MAX_DEPTH:
                refused.append(f"{path} (folders nested deeper than {MAX_DEPTH})")
                continue
            child = _open_dir(name, dir_fd)
            try:
                opaque, children = _opaque(child), _scan(child, f"{path}/", refused, depth + 1)
            finally:
                os.close(child)
            entries.append(LayerEntry(name, "directory", mode & 0o777, opaque, children=children))
        elif stat.S_ISREG(mode):
            times = (info.st_atime_ns, info.st_mtime_ns)
            entries.append(
                LayerEntry(name, "file", mode & 0o777, times_ns=times, size=info.st_size)
            )
        else:
            refused.append(f"{path} ({_kind_name(mode)})")
    return entries


def read_layer(root_fd: int, program: str, data: dict[str, Any]) -> list[LayerEntry]:
    """The upper layer under the tmpfs root ``root_fd`` as a tree of changes; a symlink,
    device, FIFO or socket in it refuses the whole layer (WorkspaceViolationError)."""
    upper = _open_dir("upper", root_fd)
    refused: list[str] = []
    try:
        entries = _scan(upper, "", refused, 0)
    finally:
        os.close(upper)
    if refused:
        shown = ", ".join(refused[:_REFUSALS_SHOWN])
        more = (
            f" and {len(refused) - _REFUSALS_SHOWN} more" if len(refused) > _REFUSALS_SHOWN else ""
        )
        raise WorkspaceViolationError(
            f"run_command {program!r} created {shown}{more} in the workspace; only regular "
            "files and folders are applied (a symlink could point out of the workspace), so "
            "nothing it wrote was applied",
            paths=refused[:_REFUSALS_SHOWN],
            **data,
        )
    return entries


def _copy(source: int, target: int) -> None:
    while os.sendfile(target, source, None, _COPY_CHUNK):
        pass


def _stage(entries: list[LayerEntry], upper: int, staging: int, counter: list[int]) -> None:
    """Phase one: every file's bytes into the staging folder, with its final mode and times."""
    for entry in entries:
        if entry.kind == "directory":
            child = _open_dir(entry.name, upper)
            try:
                _stage(entry.children, child, staging, counter)
            finally:
                os.close(child)
        elif entry.kind == "file":
            counter[0] += 1
            entry.staged = str(counter[0])
            source = _open_file(entry.name, upper)
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                target = os.open(entry.staged, flags, 0o600, dir_fd=staging)
                try:
                    _copy(source, target)
                    os.fchmod(target, entry.mode)
                    os.utime(target, ns=entry.times_ns)
                finally:
                    os.close(target)
            finally:
                os.close(source)


def _remove(name: str, dir_fd: int) -> bool:
    """Remove ``name`` (a whole folder, or a file or symlink itself); whether it existed."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)  # fd-based: never follows a symlink inside
    else:
        os.unlink(name, dir_fd=dir_fd)
    return True


def _place(
    entries: list[LayerEntry], workspace_dir: int, staging: int, counts: dict[str, int]
) -> None:
    """Phase two: deletions, folders and renames of the staged files, parents first; a
    folder's final mode is set once its children are in place."""
    for entry in entries:
        if entry.kind == "delete":
            counts["deletions"] += _remove(entry.name, workspace_dir)
        elif entry.kind == "file":
            with contextlib.suppress(FileNotFoundError):
                info = os.stat(entry.name, dir_fd=workspace_dir, follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    _remove(entry.name, workspace_dir)
            os.rename(entry.staged, entry.name, src_dir_fd=staging, dst_dir_fd=workspace_dir)
            counts["files"] += 1
            counts["bytes"] += entry.size
        else:
            _place_directory(entry, workspace_dir, staging, counts)


def _place_directory(
    entry: LayerEntry, workspace_dir: int, staging: int, counts: dict[str, int]
) -> None:
    existing = None
    with contextlib.suppress(FileNotFoundError):
        existing = os.stat(entry.name, dir_fd=workspace_dir, follow_symlinks=False)
    if existing is not None and (entry.opaque or not stat.S_ISDIR(existing.st_mode)):
        _remove(entry.name, workspace_dir)
        existing = None
    if existing is None:
        os.mkdir(entry.name, 0o700, dir_fd=workspace_dir)
        counts["directories"] += 1
    child = os.open(entry.name, _DIR_FLAGS, dir_fd=workspace_dir)
    try:
        os.fchmod(child, entry.mode | 0o700)  # room for the children, whoever the server is
        _place(entry.children, child, staging, counts)
        os.fchmod(child, entry.mode)
    finally:
        os.close(child)


def apply_layer(
    root_fd: int, workspace_fd: int, program: str, data: dict[str, Any]
) -> AppliedChanges:
    """Apply the upper layer under ``root_fd`` to the workspace open as ``workspace_fd``;
    ``data`` (the command's output) goes into any error raised."""
    entries = read_layer(root_fd, program, data)
    if not entries:
        return AppliedChanges()
    staging_name = f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    os.mkdir(staging_name, 0o700, dir_fd=workspace_fd)
    upper = staging = -1
    try:
        upper = _open_dir("upper", root_fd)
        staging = os.open(staging_name, _DIR_FLAGS, dir_fd=workspace_fd)
        try:
            _stage(entries, upper, staging, [0])
        except OSError as exc:
            raise ExecutorError(
                f"run_command {program!r} finished but its changes could not be copied into "
                f"the workspace ({exc}); nothing it wrote was applied",
                **data,
            ) from exc
        counts = {"files": 0, "directories": 0, "deletions": 0, "bytes": 0}
        try:
            _place(entries, workspace_fd, staging, counts)
        except OSError as exc:
            raise ExecutorError(
                f"run_command {program!r} finished but applying its changes stopped part way "
                f"({exc}); the workspace holds part of them",
                **data,
            ) from exc
        return AppliedChanges(**counts)
    finally:
        for fd in (upper, staging):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(staging_name, dir_fd=workspace_fd, ignore_errors=True)
