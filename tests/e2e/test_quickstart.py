"""The README's Quickstart, run as written against a real ``agent-engine serve``, so it cannot drift
from the code.

The shell blocks under "## Quickstart" run: the first; the sample-workspace block, whose
``…/events?until=waiting`` stream ends when the run waits for its edit's approval; and the
fix-a-bug block, whose adaptive run completes after its three approvals.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.storage.migrations import head_revision
from tests.databases import sqlite_url
from tests.processes import clean_env, free_port, running
from tests.sandboxing import require_sandbox

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
API_LINE = "API=http://127.0.0.1:8000"
SCRIPT_LIMIT_S = 120  # a failure bound, not a measurement
GATED_GOAL = "two no-op steps, the second gated"


def quickstart_blocks() -> list[str]:
    """The ```sh blocks of the README's "## Quickstart" section, in order."""
    text = README.read_text(encoding="utf-8")
    _, found, rest = text.partition("\n## Quickstart\n")
    assert found, "README.md has no '## Quickstart' section"
    section = rest.split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    assert blocks, "the Quickstart has no ```sh block"
    return blocks


def quickstart_block() -> str:
    """The first ```sh block of the README's "## Quickstart" section."""
    return quickstart_blocks()[0]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """``agent-engine serve`` as ``make serve`` runs it, on a free port and temporary state."""
    workspaces = tmp_path / "workspaces"
    workspaces.mkdir()
    port = free_port()
    env = clean_env(
        AGENT_ENGINE_PORT=str(port),
        AGENT_ENGINE_DATABASE_URL=sqlite_url(tmp_path / "agent-engine.db"),
        AGENT_ENGINE_WORKSPACE_ROOTS=str(workspaces),
        AGENT_ENGINE_LOG_LEVEL="warning",
    )
    with running(["agent_engine", "serve"], tmp_path, env, port) as url:
        yield url


def run_block(block: str, api: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    assert API_LINE in block.splitlines(), f"the Quickstart no longer sets {API_LINE}"
    script = workdir / "quickstart.sh"
    script.write_text("set -euo pipefail\n" + block.replace(API_LINE, f"API={api}"))
    return subprocess.run(
        ["bash", str(script)],
        cwd=workdir,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=SCRIPT_LIMIT_S,
        check=False,
    )


def json_documents(output: str) -> list[Any]:
    """The JSON documents the script printed one after another (curl adds no newlines)."""
    decoder = json.JSONDecoder()
    documents: list[Any] = []
    position = 0
    while (position := _skip_space(output, position)) < len(output):
        document, position = decoder.raw_decode(output, position)
        documents.append(document)
    return documents


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def test_readme_quickstart_runs_as_written(server: str, tmp_path: Path) -> None:
    result = run_block(quickstart_block(), server, tmp_path)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    documents = json_documents(result.stdout)
    problems = [d for d in documents if isinstance(d, dict) and "code" in d and "title" in d]
    # The one refusal the Quickstart shows: cancelling the completed run. Nothing else failed.
    assert [(p["status"], p["code"]) for p in problems] == [(409, "invalid_transition")], problems
    assert problems[0]["instance"].endswith("/cancel")
    health = [d for d in documents if isinstance(d, dict) and "schema_revision" in d]
    assert [d["status"] for d in health] == ["ok", "ready"], health
    assert health[1]["schema_revision"] == head_revision()

    # What the script did, as the server now tells it.
    with httpx.Client(base_url=server, timeout=30) as client:
        runs: list[dict[str, Any]] = client.get("/v1/agent-runs").json()["items"]
        by_goal = {run["goal"]: run for run in runs}
        assert len(runs) == 2, runs
        gated = client.get(f"/v1/agent-runs/{by_goal[GATED_GOAL]['id']}").json()
    assert by_goal["Analyze the codebase and suggest improvements"]["status"] == "created"
    assert gated["status"] == "completed"
    assert [step["status"] for step in gated["steps"]] == ["completed", "completed"]
    assert gated["steps"][1]["output_data"] == gated["steps"][0]["output_data"]
    audits = [d for d in documents if isinstance(d, dict) and "chain_valid" in d]
    assert [(a["run_id"], a["chain_valid"]) for a in audits] == [(gated["id"], True)]
    approvals = [event for event in audits[0]["events"] if event["type"] == "step.approved"]
    assert [event["actor"] for event in approvals] == ["alice"]


def test_readme_sample_workspace_run_stops_at_the_edit_as_written(
    server: str, tmp_path: Path
) -> None:
    """The second block, as written (after the first block's ``API=`` line), from a folder that
    holds ``examples/`` and the server's ``workspaces/``: the run stops at its edit's approval and
    the events stream ends there."""
    blocks = quickstart_blocks()
    assert len(blocks) >= 2, "the Quickstart no longer has the sample-workspace block"
    (tmp_path / "examples").symlink_to(README.parent / "examples")
    result = run_block(API_LINE + "\n" + blocks[1], server, tmp_path)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "workspaces" / "inventory" / "inventory" / "store.py").is_file()
    stream = [line for line in result.stdout.splitlines() if line.startswith("event:")]
    assert stream, result.stdout
    with httpx.Client(base_url=server, timeout=30) as client:
        (run,) = client.get("/v1/agent-runs").json()["items"]
        steps = client.get(f"/v1/agent-runs/{run['id']}/steps").json()
    assert run["status"] == "awaiting_approval"
    assert [s["status"] for s in steps][:3] == ["completed", "completed", "awaiting_approval"]
    assert "-import os" in json.dumps(steps[2]["preview"])  # the exact diff a person approves


def test_readme_fix_a_bug_run_completes_as_written(server: str, tmp_path: Path) -> None:
    """The third block, as written: the offline model plans adaptively, the three approvals in
    its loop (the tests, the edit, the tests again) are given, and the run fixes the test."""
    require_sandbox()
    blocks = quickstart_blocks()
    assert len(blocks) >= 3, "the Quickstart no longer has the fix-a-bug block"
    (tmp_path / "examples").symlink_to(README.parent / "examples")
    result = run_block(API_LINE + "\n" + blocks[2], server, tmp_path)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    fixed = tmp_path / "workspaces" / "fixme" / "tests" / "test_models.py"
    original = README.parent / "examples" / "sample_workspace" / "tests" / "test_models.py"
    assert fixed.read_text(encoding="utf-8") == original.read_text(encoding="utf-8")
    with httpx.Client(base_url=server, timeout=30) as client:
        (run,) = client.get("/v1/agent-runs").json()["items"]
        steps = client.get(f"/v1/agent-runs/{run['id']}/steps").json()
        audit = client.get(f"/v1/agent-runs/{run['id']}/audit").json()
    assert run["status"] == "completed"
    assert [s["step_type"] for s in steps] == [
        "list_files",
        "run_command",
        "read_file",
        "read_file",
        "propose_edit",
        "edit_file",
        "run_command",
        "summarize",
    ]
    assert steps[-2]["output_data"]["exit_code"] == 0
    plan_events = [e["type"] for e in audit["events"] if e["type"].startswith("plan.")]
    assert plan_events[-1] == "plan.goal_met"
    approvals = [e for e in audit["events"] if e["type"] == "step.approved"]
    assert [e["actor"] for e in approvals] == ["alice"] * 3
    assert audit["chain_valid"] is True
