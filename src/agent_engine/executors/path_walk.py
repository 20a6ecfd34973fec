"""Resolve a workspace-relative path with directory fds, so the kernel never follows a symlink.

A path is walked one component at a time from an fd of the root; each directory is opened with
``O_NOFOLLOW`` relative to its parent's fd, so a symlink swapped in between a check and a use is
never followed. Symlinks are followed only here, by reading them and re-walking their target, which
is refused when it leaves the root. Everything here blocks: callers run it in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent_engine.errors import ExecutorError, WorkspaceViolationError

PATH_MAX = 4096
NAME_MAX = 255
MAX_SYMLINKS = 40
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SHOWN_PATH_CHARS = 200


def shown(path: str) -> str:
    """``path`` shortened for messages, so a 4 KiB path does not flood an error body."""
    return path if len(path) <= _SHOWN_PATH_CHARS else path[:_SHOWN_PATH_CHARS] + "…"


def violation(path: str, reason: str) -> WorkspaceViolationError:
    """The confinement refusal for ``path``, naming the path and the reason."""
    return WorkspaceViolationError(
        f"path {shown(path)!r} refused: {reason}", path=shown(path), reason=reason
    )


def _inside(root: Path, absolute: str) -> str | None:
    """``absolute`` relative to ``root`` (lexically), or ``None`` when it is not under it."""
    prefix = str(root).rstrip("/")
    if absolute == prefix or absolute.startswith(prefix + "/"):
        return absolute[len(prefix) :]
    return None


def split_path(root: Path, path: str) -> list[str]:
    """Validate ``path`` lexically and return its components (empty list: the root itself)."""
    if path == "":
        raise violation(path, "empty path")
    if "\x00" in path:
        raise violation(path, "contains a NUL byte")
    try:
        encoded = os.fsencode(path)
    except UnicodeEncodeError:
        raise violation(path, "not encodable as a file name") from None
    if len(encoded) >= PATH_MAX:
        raise violation(path, f"longer than PATH_MAX ({PATH_MAX} bytes)")
    relative = path
    if path.startswith("/"):
        inside = _inside(root, path)
        if inside is None:
            raise violation(path, "absolute path outside the workspace")
        relative = inside
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    for part in parts:
        # '..' is refused rather than normalised: 'a/..' means something else when 'a' is a
        # symlink, and no legitimate step needs it.
        if part == "..":
            raise violation(path, "'..' components are not allowed")
        if len(os.fsencode(part)) > NAME_MAX:
            raise violation(path, f"a component is longer than NAME_MAX ({NAME_MAX} bytes)")
    return parts


@dataclass(frozen=True)
class WalkTarget:
    """Where a path ends: its parent directory fd (owned by the walk), final name and stat.

    ``parent_fd`` is ``None`` only with ``missing_ok`` when a parent directory does not exist;
    ``st`` is the final component's lstat, ``None`` when it does not exist. ``name`` is ``"."``
    when the path names a directory reached without a final name (the root).
    """

    parent_fd: int | None
    name: str
    parts: tuple[str, ...]
    st: os.stat_result | None


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_root(root: Path, base: Path | None) -> int:
    """An fd of the workspace ``root``, reached from the allowed root ``base`` one directory at a
    time with ``O_NOFOLLOW``, so a parent swapped for a symlink since the run was created is
    refused (``base``: None opens ``root`` by path). The caller closes the fd."""
    if base is None:
        return os.open(root, DIR_FLAGS)
    relative = _inside(base, str(root))
    if relative is None or not relative.strip("/"):
        raise violation(str(root), "the workspace is not strictly inside a configured root")
    fd = os.open(base, DIR_FLAGS)  # the operator's root: the one path opened by name
    try:
        for name in relative.strip("/").split("/"):
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise violation(
                        str(root), f"the workspace folder {name!r} is no longer a directory"
                    ) from exc
                if exc.errno == errno.ENOENT:
                    raise violation(str(root), "the workspace no longer exists") from exc
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Walk:
    """The state of one walk: open directory fds from the root down and the components left."""

    def __init__(
        self, root: Path, path: str, create_parents: bool, missing_ok: bool, base: Path | None
    ) -> None:
        self.root = root
        self.base = base
        self.path = path
        self.create_parents = create_parents
        self.missing_ok = missing_ok
        self.pending = deque(split_path(root, path))
        self.parts: list[str] = []
        self.fds: list[int] = []
        self.hops = 0  # symlinks followed plus retries after a component changed under us

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop())

    def run(self) -> WalkTarget:
        self.fds.append(open_root(self.root, self.base))
        while self.pending:
            if self.hops > MAX_SYMLINKS:
                raise violation(self.path, "too many symlinks or concurrent changes")
            name = self.pending.popleft()
            if name == "..":  # only symlink targets get here; user paths never hold '..'
                if not self.parts:
                    raise violation(self.path, "a symlink target leaves the workspace")
                self.parts.pop()
                os.close(self.fds.pop())
                continue
            st = _lstat(self.fds[-1], name)
            if st is not None and stat.S_ISLNK(st.st_mode):
                self._follow(name)
            elif not self.pending:
                return WalkTarget(self.fds[-1], name, (*self.parts, name), st)
            elif st is None:
                if self.missing_ok:
                    rest = (*self.parts, name, *self.pending)
                    return WalkTarget(None, rest[-1], rest, None)
                self._make_dir(name)
            else:
                self._descend(name, st)
        return WalkTarget(self.fds[-1], ".", tuple(self.parts), os.fstat(self.fds[-1]))

    def _follow(self, name: str) -> None:
        """Queue the target of the symlink ``name`` if it stays inside the root."""
        self.hops += 1
        try:
            target = os.readlink(name, dir_fd=self.fds[-1])
        except OSError:
            self.pending.appendleft(name)  # changed since the lstat: look at it again
            return
        if target.startswith("/"):
            relative = _inside(self.root, target)
            if relative is None:
                where = "/".join([*self.parts, name])
                raise violation(self.path, f"symlink {where!r} points outside the workspace")
            while len(self.fds) > 1:
                os.close(self.fds.pop())
            self.parts.clear()
            target = relative
        components = [part for part in target.split("/") if part not in ("", ".")]
        self.pending.extendleft(reversed(components))

    def _make_dir(self, name: str) -> None:
        if not self.create_parents:
            raise ExecutorError(f"no such directory {'/'.join([*self.parts, name])!r}")
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o777, dir_fd=self.fds[-1])
        self.pending.appendleft(name)
        self.hops += 1

    def _descend(self, name: str, st: os.stat_result) -> None:
        if not stat.S_ISDIR(st.st_mode):
            raise ExecutorError(f"{'/'.join([*self.parts, name])!r} is not a directory")
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=self.fds[-1])
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                raise
            self.pending.appendleft(name)  # swapped since the lstat: never follow, re-check
            self.hops += 1
            return
        self.fds.append(fd)
        self.parts.append(name)


@contextlib.contextmanager
def walk(
    root: Path,
    path: str,
    *,
    create_parents: bool = False,
    missing_ok: bool = False,
    base: Path | None = None,
) -> Iterator[WalkTarget]:
    """Resolve ``path`` under ``root``; the target's ``parent_fd`` is valid inside the block.

    ``create_parents`` makes missing intermediate directories; ``missing_ok`` stops at the first
    missing one instead of failing (nothing below a missing directory can be a symlink). ``base``
    is the allowed root the workspace ``root`` is reached from (see :func:`open_root`).
    """
    state = _Walk(root, path, create_parents, missing_ok, base)
    try:
        yield state.run()
    finally:
        state.close()
