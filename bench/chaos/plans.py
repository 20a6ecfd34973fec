"""The runs the chaos workload creates, and the effects each is expected to leave exactly once:
an edit's marker line (checked by the file's hash), a command's line in its own counter file,
a tool call's line in the MCP server's log."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POLICY = "chaos"
POLICIES_FILE = """
policies:
  chaos:
    description: the chaos run - edits, commands and tool calls run without a person
    rules:
      - {step_type: edit_file, action: auto_approve}
      - {step_type: run_command, action: auto_approve}
      - {step_type: mcp_tool, action: auto_approve}
"""
BASE = "base\n"
# Appends its second argument as a line to the file named by its first (after a short sleep, so
# that a worker killed mid-command is likely).
APPEND = (
    "import sys, time\n"
    "time.sleep(0.3)\n"
    "with open(sys.argv[1], 'a') as f:\n"
    "    f.write(sys.argv[2] + '\\n')\n"
)
KINDS = ("dag", "dag", "budget", "approval")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Effect:
    """A side effect a step applies: ``kind`` is edit, command or tool."""

    kind: str
    step_number: int
    marker: str
    path: Path | None = None  # the edited file, or the command's counter file
    idempotent: bool = False  # a command declared safe to repeat


@dataclass
class Tracked:
    """A run the workload created, what it expects of it, and what the script decided."""

    run_id: str
    kind: str  # dag, budget, approval, fork, replay
    number: int
    effects: list[Effect] = field(default_factory=list)
    parent: str | None = None
    budget_choice: str | None = None  # raise or cancel, for a budget run that pauses
    decided: dict[str, str] = field(default_factory=dict)  # step id -> approved/rejected/raised
    followed_up: bool = False


def _edit(path: str, marker: str, **flags: Any) -> dict[str, Any]:
    data = {"path": path, "operation": "replace", "old": BASE, "new": f"{BASE}{marker}\n"}
    return {"step_type": "edit_file", "input_data": data, **flags}


def _command(counter: str, marker: str, **flags: Any) -> dict[str, Any]:
    argv = ["python3", "-c", APPEND, counter, marker]
    return {"step_type": "run_command", "input_data": {"argv": argv}, **flags}


def _analyze(instruction: str, **flags: Any) -> dict[str, Any]:
    return {"step_type": "analyze", "input_data": {"instruction": instruction}, **flags}


def _tool(marker: str, **flags: Any) -> dict[str, Any]:
    data = {"server": "chaos", "tool": "record", "arguments": {"marker": marker}}
    return {"step_type": "mcp_tool", "input_data": data, **flags}


def prepare_workspace(root: Path, name: str) -> Path:
    """A fresh workspace with the files the edits start from."""
    workspace = root / name
    (workspace / "edits").mkdir(parents=True)
    (workspace / "counters").mkdir()
    for edited in ("a.txt", "b.txt"):
        (workspace / "edits" / edited).write_text(BASE, encoding="utf-8")
    return workspace


def build_run(
    kind: str, number: int, workspace: Path, rng: random.Random, budget_usd: str | None
) -> tuple[dict[str, Any], list[Effect]]:
    """The creation body of run ``number`` of ``kind`` and the effects it is expected to apply."""
    tag = f"r{number}"
    effects: list[Effect] = []

    def edit(step: int, name: str, **flags: Any) -> dict[str, Any]:
        marker = f"{tag}-s{step}-edit"
        effects.append(Effect("edit", step, marker, workspace / "edits" / name))
        return _edit(f"edits/{name}", marker, **flags)

    def command(step: int, idempotent: bool, **flags: Any) -> dict[str, Any]:
        marker = f"{tag}-s{step}-command"
        counter = workspace / "counters" / f"s{step}.txt"
        effects.append(Effect("command", step, marker, counter, idempotent))
        return _command(f"counters/s{step}.txt", marker, idempotent=idempotent, **flags)

    def tool(step: int) -> dict[str, Any]:
        marker = f"{tag}-s{step}-tool"
        effects.append(Effect("tool", step, marker))
        return _tool(marker)

    body: dict[str, Any] = {"goal": f"chaos {kind} {number}", "workspace": str(workspace)}
    if kind == "dag":
        steps = [
            edit(1, "a.txt", depends_on=[]),
            command(2, rng.random() < 0.25, depends_on=[1]),
            _analyze(f"Report on part {number}.", depends_on=[1]),
            tool(4) | {"depends_on": [1]},
            edit(5, "b.txt", depends_on=[2, 3, 4]),
            _analyze(f"Summarize run {number}.", depends_on=[5]),
        ]
    elif kind == "approval":
        steps = [
            edit(1, "a.txt", depends_on=[], requires_approval=True),
            command(2, False, depends_on=[1], requires_approval=True, optional=True),
            _analyze(f"Check part {number}.", depends_on=[1]),
        ]
    elif kind == "budget":
        steps = [_analyze(f"Part {n} of run {number}.", depends_on=[]) for n in range(1, 5)]
        body["budget_usd"] = budget_usd
    else:
        raise ValueError(f"unknown run kind {kind!r}")
    body |= {"steps": steps, "auto_start": True, "policy": POLICY}
    return body, effects


def fork_body(number: int) -> dict[str, Any]:
    """A fork of a completed dag run from its last step (an analysis): steps 1-5 and their
    effects are reused, not applied again."""
    return {
        "from_step": 6,
        "input_data": {"instruction": f"Summarize run {number} again, briefly."},
    }
