"""`agent-engine run "GOAL" --workspace DIR` in this process on the embedded default (no server:
SQLite under ./var, the offline model, an in-process worker), as the real binary: in a
pseudo-terminal it shows the diff of the edit and asks, and the answer decides; without a
terminal it exits 3 naming the step that waits."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path

from tests.integration.test_cli import AGENT_ENGINE, run_command
from tests.processes import clean_env

PROMPT = b"[a/r/s]"


def _workspace(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("alpha\nbeta\n", encoding="utf-8")
    plan = [
        {"step_type": "read_file", "input_data": {"path": "notes.txt"}},
        {
            "step_type": "edit_file",
            "input_data": {
                "path": "notes.txt",
                "operation": "replace",
                "old": "beta",
                "new": "gamma",
            },
        },
    ]
    (tmp_path / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    return project


class Terminal:
    """The command on a pseudo-terminal: what it wrote, and answers typed into it."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.master, replica = os.openpty()
        env = clean_env(COLUMNS="120", LINES="40", TERM="xterm")
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


def test_in_a_terminal_it_shows_the_diff_asks_and_the_approval_lets_the_edit_happen(
    tmp_path: Path,
) -> None:
    project = _workspace(tmp_path)
    argv = [AGENT_ENGINE, "run", "fix the notes", "--workspace", str(project)]
    terminal = Terminal([*argv, "--steps", str(tmp_path / "plan.json"), "--follow"], tmp_path)
    terminal.wait_for(PROMPT)
    assert b"-beta" in terminal.seen and b"+gamma" in terminal.seen
    assert b"step 2 (edit_file) awaits approval" in terminal.seen
    terminal.type("s")  # show more: the whole preview, hashes included
    terminal.wait_for(b"before_sha256")
    terminal.wait_for(PROMPT)
    terminal.type("a")
    terminal.wait_for(b"completed: tokens")
    assert terminal.finish() == 0
    assert (project / "notes.txt").read_text(encoding="utf-8") == "alpha\ngamma\n"
    assert (tmp_path / "var" / "agent-engine.db").exists()  # the embedded default's database


def test_in_a_terminal_a_rejection_asks_why_and_the_run_fails(tmp_path: Path) -> None:
    project = _workspace(tmp_path)
    argv = [AGENT_ENGINE, "run", "fix the notes", "--workspace", str(project)]
    terminal = Terminal([*argv, "--steps", str(tmp_path / "plan.json")], tmp_path)
    terminal.wait_for(PROMPT)
    terminal.type("r")
    terminal.wait_for(b"reason")
    terminal.type("not this word")
    terminal.wait_for(b"rejected")
    assert terminal.finish() == 1
    assert (project / "notes.txt").read_text(encoding="utf-8") == "alpha\nbeta\n"


def test_without_a_terminal_it_exits_3_and_says_which_step_waits(tmp_path: Path) -> None:
    project = _workspace(tmp_path)
    result = run_command(
        "run", "fix the notes", "--workspace", str(project), "--steps",
        str(tmp_path / "plan.json"), "--follow", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "waits: step 2 (edit_file) awaits approval" in last
    assert "step 1 read_file: completed" in result.stdout
    assert (project / "notes.txt").read_text(encoding="utf-8") == "alpha\nbeta\n"
