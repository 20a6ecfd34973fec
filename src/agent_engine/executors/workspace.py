"""Workspace confinement: every file a step touches is reached through here, never by plain path.

Resolution happens in :mod:`agent_engine.executors.path_walk` (directory fds, ``O_NOFOLLOW``);
this module adds the file operations executors use. Everything here blocks: call it in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, ParamSpec, TypeVar

from agent_engine.errors import ExecutorError
from agent_engine.executors.path_walk import (
    DIR_FLAGS,
    WalkTarget,
    shown,
    split_path,
    violation,
    walk,
)

# O_NONBLOCK: a FIFO swapped in after the lstat check must not block the open.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20

P = ParamSpec("P")
T = TypeVar("T")
EntryKind = Literal["file", "dir", "symlink", "other"]


@dataclass(frozen=True)
class FileInfo:
    """A regular file inside the workspace; ``path`` is its canonical relative POSIX path."""

    path: str
    size: int
    mode: int


@dataclass(frozen=True)
class DirEntry:
    """One directory entry, not followed: symlinks are reported as ``symlink``."""

    name: str
    kind: EntryKind
    size: int
    links: int = 1


def _special_kind(mode: int) -> str | None:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return None


def _refuse_special(path: str, st: os.stat_result) -> None:
    kind = _special_kind(st.st_mode)
    if kind is not None:
        raise violation(path, f"is a {kind}")


def _refuse_dir(path: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise ExecutorError(f"{shown(path)!r} is a directory", path=shown(path))


def _refuse_hard_link(path: str, st: os.stat_result, allowed: bool) -> None:
    # Another name of the same file may live outside the workspace: its content is not ours.
    if not allowed and stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        raise violation(path, f"has {st.st_nlink} hard links (it may be a file outside)")


class Workspace:
    """A run's workspace root and the only sanctioned ways to read, write and list inside it.

    ``base`` is the allowed root holding it: every operation reaches the workspace from there
    again (see :func:`~agent_engine.executors.path_walk.open_root`).
    """

    def __init__(
        self,
        root: Path,
        *,
        base: Path | None = None,
        allow_hard_links: bool = False,
        allow_git_writes: bool = False,
    ) -> None:
        if not root.is_absolute():
            raise ValueError(f"workspace root must be absolute, got {root}")
        self.root = root
        self.base = base
        self.allow_hard_links = allow_hard_links
        self.allow_git_writes = allow_git_writes

    def _walk(
        self, path: str, *, create_parents: bool = False, missing_ok: bool = False
    ) -> contextlib.AbstractContextManager[WalkTarget]:
        return walk(
            self.root, path, create_parents=create_parents, missing_ok=missing_ok, base=self.base
        )

    def split(self, path: str) -> list[str]:
        """Validate ``path`` lexically and return its components (empty list: the root itself)."""
        return split_path(self.root, path)

    @contextlib.contextmanager
    def _open_regular(self, path: str) -> Iterator[tuple[int, os.stat_result, tuple[str, ...]]]:
        with self._walk(path) as target:
            if target.st is None or target.parent_fd is None:
                raise ExecutorError(f"no such file: {shown(path)!r}", path=shown(path))
            _refuse_special(path, target.st)
            _refuse_dir(path, target.st)
            try:
                fd = os.open(target.name, _READ_FLAGS, dir_fd=target.parent_fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise violation(path, "became a symlink while being opened") from exc
                raise ExecutorError(f"cannot open {shown(path)!r}: {exc.strerror}") from exc
            try:
                st = os.fstat(fd)
                _refuse_special(path, st)
                if not stat.S_ISREG(st.st_mode):
                    raise violation(path, "is not a regular file")
                _refuse_hard_link(path, st, self.allow_hard_links)
                yield fd, st, target.parts
            finally:
                os.close(fd)

    def _refuse_git(self, path: str, parts: tuple[str, ...]) -> None:
        # Checked on the resolved parts, so a symlink to .git inside the workspace is caught too;
        # a file named .git counts (it can point git at another repository). casefold: on a
        # case-insensitive file system '.GIT' is the same folder.
        if not self.allow_git_writes and any(part.casefold() == ".git" for part in parts):
            raise violation(
                path,
                "writes inside .git, whose hooks and config name programs git runs; "
                "allowed only with AGENT_ENGINE_ALLOW_GIT_WRITES=true",
            )

    # --- operations --------------------------------------------------------------------------

    def resolve_for_read(self, path: str) -> Path:
        """The canonical absolute path of an existing regular file inside the workspace."""
        with self._open_regular(path) as (_fd, _st, parts):
            return self.root.joinpath(*parts)

    def resolve_for_write(self, path: str) -> Path:
        """The canonical path a write would land on; the file and its parents may not exist yet."""
        with self._walk(path, missing_ok=True) as target:
            if target.st is not None:
                _refuse_special(path, target.st)
                _refuse_dir(path, target.st)
            return self.root.joinpath(*target.parts)

    def resolve_for_listing(self, path: str = ".") -> Path:
        """The canonical path of a directory inside the workspace."""
        with self._walk(path) as target:
            if target.st is None or not stat.S_ISDIR(target.st.st_mode):
                raise ExecutorError(f"no such directory: {shown(path)!r}", path=shown(path))
            return self.root.joinpath(*target.parts)

    def read_bytes(self, path: str, max_bytes: int) -> bytes:
        """The content of a regular file, refused with ExecutorError if over ``max_bytes``."""
        with self._open_regular(path) as (fd, st, _parts):
            if st.st_size > max_bytes:
                raise ExecutorError(
                    f"{shown(path)!r} is {st.st_size} bytes, over the {max_bytes}-byte cap",
                    path=shown(path),
                )
            chunks: list[bytes] = []
            remaining = max_bytes + 1  # one extra byte tells a file that grew after fstat
            while remaining > 0:
                chunk = os.read(fd, min(remaining, _CHUNK))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            if remaining <= 0:
                raise ExecutorError(f"{shown(path)!r} is over the {max_bytes}-byte cap")
            return b"".join(chunks)

    def read_bytes_if_exists(self, path: str, max_bytes: int) -> bytes | None:
        """Like :meth:`read_bytes`, but ``None`` when the file (or a parent) does not exist."""
        if self.stat(path) is None:
            return None
        return self.read_bytes(path, max_bytes)

    def hash_file(self, path: str) -> tuple[int, str]:
        """Size and SHA-256 of a regular file, streamed so any size works."""
        digest = hashlib.sha256()
        size = 0
        with self._open_regular(path) as (fd, _st, _parts):
            while chunk := os.read(fd, _CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()

    def stat(self, path: str) -> FileInfo | None:
        """The file at ``path``, or ``None`` if absent; refuses devices, FIFOs and sockets."""
        with self._walk(path, missing_ok=True) as target:
            if target.st is None:
                return None
            _refuse_special(path, target.st)
            _refuse_dir(path, target.st)
            return FileInfo("/".join(target.parts), target.st.st_size, target.st.st_mode)

    def write_atomic(self, path: str, data: bytes, *, create_parents: bool = True) -> FileInfo:
        """Replace (or create) a file atomically: temp file in the same directory, fsync, rename."""
        with self._walk(path, create_parents=create_parents) as target:
            if target.parent_fd is None:  # cannot happen without missing_ok; never write via cwd
                raise ExecutorError(f"no parent directory for {shown(path)!r}")
            self._refuse_git(path, target.parts)
            mode: int | None = None
            if target.st is not None:
                _refuse_special(path, target.st)
                _refuse_dir(path, target.st)
                _refuse_hard_link(path, target.st, self.allow_hard_links)
                mode = stat.S_IMODE(target.st.st_mode)
            tmp = f".agent-engine-{secrets.token_hex(8)}.tmp"
            fd = os.open(tmp, _TMP_FLAGS, 0o666, dir_fd=target.parent_fd)
            try:
                try:
                    if mode is not None:
                        os.fchmod(fd, mode)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                    final_mode = os.fstat(fd).st_mode
                finally:
                    os.close(fd)
                # rename() replaces a symlink swapped in meanwhile instead of writing through it.
                dir_fd = target.parent_fd
                os.replace(tmp, target.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=target.parent_fd)
                raise
            os.fsync(target.parent_fd)
            return FileInfo("/".join(target.parts), len(data), final_mode)

    def open_dir(self, path: str = ".") -> int:
        """An fd of the directory at ``path`` (the caller closes it), e.g. a child's cwd."""
        return self.open_dir_with_path(path)[0]

    def open_dir_with_path(self, path: str = ".") -> tuple[int, str]:
        """Like :meth:`open_dir`, plus the directory's canonical relative path ("" for the root)."""
        with self._walk(path) as target:
            if target.parent_fd is None or target.st is None:
                raise ExecutorError(f"no such directory: {shown(path)!r}", path=shown(path))
            if not stat.S_ISDIR(target.st.st_mode):
                _refuse_special(path, target.st)
                raise ExecutorError(f"{shown(path)!r} is not a directory", path=shown(path))
            try:
                fd = os.open(target.name, DIR_FLAGS, dir_fd=target.parent_fd)
            except OSError as exc:
                raise violation(path, "changed while being opened") from exc
            return fd, "/".join(target.parts)

    def list_dir(self, path: str = ".") -> list[DirEntry]:
        """The entries of a directory, sorted by name; nothing is followed."""
        fd = self.open_dir(path)
        try:
            return _scan(fd)
        finally:
            os.close(fd)

    def iter_tree(self, path: str = ".") -> Iterator[TreeDir]:
        """Each directory under ``path``, top-down in name order; prune by editing ``dirs``.

        Subdirectories are opened with ``O_NOFOLLOW`` relative to their parent's fd, so no symlink
        is ever descended into, even one swapped in after the scan; such a directory is skipped.
        """
        # One fd per level of depth (never per pending sibling), each with the names left to visit.
        stack: list[tuple[int, str, Iterator[str]]] = [(*self.open_dir_with_path(path), iter(()))]
        try:
            fd, rel, _ = stack[0]
            tree = _tree_dir(fd, rel)
            yield tree
            stack[0] = (fd, rel, iter(sorted(tree.dirs)))
            while stack:
                fd, rel, names = stack[-1]
                name = next(names, None)
                if name is None:
                    os.close(stack.pop()[0])
                    continue
                try:
                    child = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                        continue  # replaced or removed since the scan: never follow
                    raise
                child_rel = f"{rel}/{name}" if rel else name
                stack.append((child, child_rel, iter(())))
                tree = _tree_dir(child, child_rel)
                yield tree
                stack[-1] = (child, child_rel, iter(sorted(tree.dirs)))
        finally:
            for fd, _, _ in stack:
                os.close(fd)


@dataclass
class TreeDir:
    """One directory met by :meth:`Workspace.iter_tree`.

    ``path`` is relative to the root (``""`` for the root); ``dirs`` holds real subdirectories
    (remove names to prune), ``files`` regular files; symlinks and special files are left out.
    ``fd`` is the directory's fd, valid only until the iteration resumes.
    """

    path: str
    dirs: list[str]
    files: list[DirEntry]
    fd: int

    def read_small(
        self, name: str, max_bytes: int, *, allow_hard_links: bool = False
    ) -> bytes | None:
        """A regular file in this directory (e.g. ``.gitignore``), or ``None`` if unusable
        (hard-linked too, unless allowed)."""
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self.fd)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
                return None
            if st.st_nlink > 1 and not allow_hard_links:
                return None
            return os.read(fd, max_bytes)
        finally:
            os.close(fd)


def _scan(fd: int) -> list[DirEntry]:
    entries: list[DirEntry] = []
    with os.scandir(fd) as scan:
        for entry in scan:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while scanning
            kind: EntryKind = "other"
            if stat.S_ISLNK(st.st_mode):
                kind = "symlink"
            elif stat.S_ISDIR(st.st_mode):
                kind = "dir"
            elif stat.S_ISREG(st.st_mode):
                kind = "file"
            entries.append(DirEntry(entry.name, kind, st.st_size, st.st_nlink))
    return sorted(entries, key=lambda e: e.name)


def _tree_dir(fd: int, rel: str) -> TreeDir:
    entries = _scan(fd)
    dirs = [e.name for e in entries if e.kind == "dir"]
    return TreeDir(rel, dirs, [e for e in entries if e.kind == "file"], fd)


async def run_blocking(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking workspace work in a thread; a stray OSError becomes an ExecutorError.

    Only ``strerror`` is kept in the message so absolute host paths never reach API clients.
    """
    try:
        return await asyncio.to_thread(func, *args, **kwargs)
    except OSError as exc:
        raise ExecutorError(
            f"file operation failed: {exc.strerror or type(exc).__name__}", errno=exc.errno
        ) from exc
