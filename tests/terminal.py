"""A command on a pseudo-terminal (Python's ``os.openpty``): what it wrote, and answers typed
into it, as a person at a terminal would."""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path

from tests.processes import clean_env


class Terminal:
    """The command on a pseudo-terminal: what it wrote, and answers typed into it."""

    def __init__(self, argv: list[str], cwd: Path, **env_vars: str) -> None:
        self.master, replica = os.openpty()
        env = clean_env(COLUMNS="120", LINES="40", TERM="xterm", **env_vars)
        self.process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=replica, stdout=replica, stderr=replica
        )
        os.close(replica)
        self.seen = b""

    def wait_for(self, text: bytes, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.seen:
            assert time.monotonic() < deadline, self.seen.decode(errors="replace")[-3000:]
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # the command ended and closed the terminal
                    assert text in self.seen, self.seen.decode(errors="replace")[-3000:]

    def type(self, line: str) -> None:
        self.seen = b""
        os.write(self.master, line.encode() + b"\n")

    def finish(self) -> int:
        code = self.process.wait(timeout=60)
        os.close(self.master)
        return code
