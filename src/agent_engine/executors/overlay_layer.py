"""A sandboxed command's write layer, seen from the server: what its child runs to make it,
how its tmpfs reaches the server, and whether the command filled it.

Every byte a command writes (workspace changes, ``HOME`` and ``TMPDIR``) lands on one tmpfs of
``max_write_bytes`` that the command's forked child makes before it execs bubblewrap
(``overlay_runner``); the real workspace is the overlay's read-only lower layer. The child sends
the tmpfs root over a socket; the fd keeps the tmpfs alive after the sandbox is gone, and
``overlay_apply`` copies the upper layer into the workspace.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from agent_engine.errors import ExecutorError, SandboxUnavailableError
from agent_engine.executors.overlay_apply import AppliedChanges, apply_layer
from agent_engine.executors.overlay_runner import LayerSpec, make_layer

# One inode per 8 KiB of the budget (65,536 at the default 512 MiB), at least 4,096: empty files
# cost no bytes, so without this a command could fill the workspace's disk with inodes.
BYTES_PER_INODE = 8 << 10
MIN_INODES = 4096
_MESSAGE_BYTES = 4096
WRITE_SETTING = "AGENT_ENGINE_COMMAND_MAX_WRITE_BYTES"


class CommandWriteLimitError(ExecutorError):
    """A command filled its write budget (``max_write_bytes``): its writes failed with ENOSPC
    and nothing it wrote was applied to the workspace; its output is in the data."""

    code = "command_write_limit"


def layer_inodes(size: int) -> int:
    """How many files and folders a layer of ``size`` bytes may hold."""
    return max(size // BYTES_PER_INODE, MIN_INODES)


class WriteLayer:
    """What a sandboxed command holds open: the workspace fd (its child builds the overlay on
    that directory; the apply writes through it), the socket the child reports on, and the
    tmpfs root it sends (``root_fd``). ``close`` drops them all."""

    def __init__(self, workspace_fd: int) -> None:
        self.workspace_fd = workspace_fd
        self._ours, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.child_fd = self._theirs.fileno()  # inherited by the child, which puts /tmp there
        self.root_fd: int | None = None

    def child_setup(self, workspace: str, workspace_fd: int, size: int) -> Callable[[], None]:
        """What the forked child runs before it execs bubblewrap: build the layer over
        ``workspace`` (open on ``workspace_fd``, inherited) and report it."""
        spec = LayerSpec(workspace, workspace_fd, self.child_fd, size, layer_inodes(size))

        def build() -> None:
            make_layer(spec)

        return build

    def receive(self) -> int:
        """The tmpfs root the child sent; raises SandboxUnavailableError with the child's
        reason when it could not build the layer (then the command never ran)."""
        # Never waits: the child has ended, and its one message (if any) is queued.
        self._ours.setblocking(False)  # (recv_fds drops its flags argument before Python 3.12)
        try:
            message, fds, _flags, _address = socket.recv_fds(self._ours, _MESSAGE_BYTES, 1)
        except BlockingIOError:
            message, fds = b"", []
        for extra in fds[1:]:
            os.close(extra)
        if message == b"ok" and fds:
            self.root_fd = fds[0]
            return fds[0]
        for fd in fds:
            os.close(fd)
        reason = message.decode(errors="replace").removeprefix("error: ") or "no answer"
        raise SandboxUnavailableError(f"the command's write layer could not be made: {reason}")

    def apply(self, program: str, output: dict[str, Any], size: int, cap: int) -> AppliedChanges:
        """Apply what the command (ended by itself, its ``output`` as recorded) wrote to the
        workspace, all or nothing: not when it filled its write budget of ``size`` bytes
        (CommandWriteLimitError naming ``cap``), nor when it made a symlink."""
        root_fd = self.receive()  # the child made the layer, so the command ran
        if write_limit_reached(root_fd):
            raise CommandWriteLimitError(
                write_limit_message(program, size, cap),
                limit="max_write_bytes",
                maximum=size,
                output={**output, "write_limit_reached": True},
            )
        return apply_layer(root_fd, self.workspace_fd, program, {"output": output})

    def close(self) -> None:
        """Drop the workspace fd, the socket and the tmpfs (freed with its last fd)."""
        if self.workspace_fd >= 0:
            os.close(self.workspace_fd)
            self.workspace_fd = -1
        self._theirs.close()
        self._ours.close()
        if self.root_fd is not None:
            os.close(self.root_fd)
            self.root_fd = None


def write_limit_reached(root_fd: int) -> bool:
    """Whether the layer is full, in bytes or in inodes: a write that needed more failed with
    ENOSPC. (A command that then deleted enough to make room is not told apart.)"""
    usage = os.fstatvfs(root_fd)
    return usage.f_bfree == 0 or usage.f_ffree == 0


def write_limit_message(program: str, size: int, cap: int) -> str:
    """The failure of a command that filled its write budget, naming the limit and the cap."""
    return (
        f"run_command {program!r} reached its write limit: max_write_bytes {size} "
        f"(the server's cap is {cap}, {WRITE_SETTING}) covers everything it writes, in the "
        "workspace, HOME and TMPDIR; writes past it failed with 'No space left on device' and "
        "nothing it wrote was applied to the workspace"
    )
