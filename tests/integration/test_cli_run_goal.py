"""`agent-engine run "GOAL" --workspace DIR` in this process on the embedded default (no server:
SQLite under ./var, the offline model, an in-process worker), as the real binary: in a
pseudo-terminal it shows the diff of the edit and asks, and the answer decides; without a
terminal it exits 3 naming the step that waits."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_cli import AGENT_ENGINE, run_command
from tests.terminal import Terminal

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
