"""F2 against a real `agent-engine serve` started, as an operator would, with provider keys in
its environment and its SQLite database under ./var: a run whose commands go for the server's
environment (/proc of its parent, of pid 1), their own environment and the database file finds
no key and no database, and nothing the API serves holds a key."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.policies import UNATTENDED, unattended_policies
from tests.processes import clean_env, free_port, running
from tests.sandboxing import require_sandbox

pytestmark = pytest.mark.slow

OPENAI_KEY = "sk-test-F2-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-F2-anthropic-0123456789"
KEY_NAMES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
# Prints /proc/<pid>/environ (NUL-separated) one variable a line; "parent": the parent's.
READ_ENVIRON = (
    "import os, sys\n"
    "pid = os.getppid() if sys.argv[1] == 'parent' else sys.argv[1]\n"
    "print(open(f'/proc/{pid}/environ').read().replace(chr(0), chr(10)))\n"
)
# Reads a file by a path the command analysis cannot see (it is in the script), so what stops
# it is the sandbox, not the refusal of `cat /outside` at plan time.
READ_FILE = "import sys; sys.stdout.write(open(sys.argv[1], 'rb').read().decode('latin-1'))"
ENV = shutil.which("env") or "/usr/bin/env"
CAT = shutil.which("cat") or "/usr/bin/cat"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`serve` in ``tmp_path`` on the embedded default database (./var/agent-engine.db) with
    both provider keys set; yields its URL and the database file."""
    require_sandbox()
    (tmp_path / "workspaces" / "project").mkdir(parents=True)
    port = free_port()
    env = clean_env(
        OPENAI_API_KEY=OPENAI_KEY,
        ANTHROPIC_API_KEY=ANTHROPIC_KEY,
        AGENT_ENGINE_WORKSPACE_ROOTS=str(tmp_path / "workspaces"),
        AGENT_ENGINE_COMMAND_ALLOWLIST=f"{sys.executable},{ENV},{CAT}",
        AGENT_ENGINE_LOG_LEVEL="warning",
        AGENT_ENGINE_POLICIES_FILE=str(unattended_policies(tmp_path)),
    )
    env.pop("AGENT_ENGINE_DATABASE_URL", None)
    with running(["agent_engine", "serve", "--port", str(port)], tmp_path, env, port) as url:
        database = tmp_path / "var" / "agent-engine.db"
        assert database.exists()
        yield url, database


def command(*argv: str) -> dict[str, Any]:
    return {
        "step_type": "run_command",
        "input_data": {"argv": list(argv), "timeout_s": 20},
        "optional": True,  # a refused read fails its step; the run goes on
    }


def wait_done(client: httpx.Client, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        run: dict[str, Any] = client.get(f"/v1/agent-runs/{run_id}").json()
        if run["status"] in {"completed", "failed"}:
            return run
        assert time.monotonic() < deadline, f"run stuck in {run['status']}"
        time.sleep(0.1)


def test_a_served_command_finds_no_provider_key_and_no_database(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    url, database = served
    steps = [
        command(sys.executable, "-c", READ_ENVIRON, "parent"),
        command(sys.executable, "-c", READ_ENVIRON, "1"),
        command(ENV),
        command(sys.executable, "-c", READ_FILE, str(database)),
        command(sys.executable, "-c", READ_FILE, "../../var/agent-engine.db"),
    ]
    body = {
        "goal": "look for secrets",
        "workspace": str(tmp_path / "workspaces" / "project"),
        "steps": steps,
        "policy": UNATTENDED,
        "auto_start": True,
    }
    with httpx.Client(base_url=url, timeout=30) as client:
        created = client.post("/v1/agent-runs", json=body)
        assert created.status_code == 201, created.text
        run = wait_done(client, created.json()["id"])
        texts = [
            client.get(f"/v1/agent-runs/{run['id']}{p}").text for p in ("", "/steps", "/audit")
        ]
    served_text = "\n".join(texts)
    assert OPENAI_KEY not in served_text and ANTHROPIC_KEY not in served_text
    for step in run["steps"]:
        recorded = str(step["output_data"] or step["error"])
        # Not even the names: the keys were never in sight, not merely masked.
        assert not any(name in recorded for name in KEY_NAMES), recorded
        assert "[REDACTED]" not in recorded
    parent, pid1, env, by_path, by_relative_path = (s["output_data"] for s in run["steps"])
    # The parent and pid 1 the command sees are the sandbox's own init, holding the scrubbed
    # environment; the server is not in its PID namespace.
    assert (parent["exit_code"], pid1["exit_code"], env["exit_code"]) == (0, 0, 0)
    for read in (by_path, by_relative_path):
        assert read["exit_code"] != 0 and "No such file" in read["stderr"], read
        assert "SQLite format" not in read["stdout"]
