"""What the "fix the failing test" proofs share: a copy of the sample workspace with one bug, a
real ``agent-engine serve`` to run it on, and the calls a user makes (create, wait, approve).

The server runs the tests (``python3 -m pytest``) without a person under the named policy
``tests-run-alone``; edits still wait for one, as under the default policy.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.databases import sqlite_url
from tests.processes import clean_env, free_port, running

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sample_workspace"
GOAL = "Fix the failing test"
POLICY = "tests-run-alone"
POLICIES = """\
policies:
  tests-run-alone:
    description: the project's tests run without a person; edits wait for one
    rules:
      - step_type: run_command
        executable: python3
        argv_prefix: ["-m", "pytest"]
        action: auto_approve
"""
TERMINAL = {"completed", "failed", "cancelled"}


def broken_copy(folder: Path, path: str, good: str, bad: str) -> Path:
    """The sample workspace copied to ``folder/inventory`` with ``good`` replaced by ``bad``
    (once) in ``path``."""
    target = folder / "inventory"
    shutil.copytree(SAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    file = target / path
    source = file.read_text(encoding="utf-8")
    assert source.count(good) == 1, f"{good!r} is not once in {path}"
    file.write_text(source.replace(good, bad), encoding="utf-8")
    return target


@contextmanager
def serve(tmp_path: Path, **settings: str) -> Iterator[tuple[httpx.Client, Path]]:
    """``agent-engine serve`` (embedded worker, SQLite, auth off on loopback) with the named
    policy, workspaces under ``tmp_path/workspaces`` and ``settings`` (``AGENT_ENGINE_*``);
    yields a client of its API and the workspaces folder."""
    workspaces = tmp_path / "workspaces"
    workspaces.mkdir()
    policies = tmp_path / "policies.yaml"
    policies.write_text(POLICIES, encoding="utf-8")
    port = free_port()
    env = clean_env(
        AGENT_ENGINE_PORT=str(port),
        AGENT_ENGINE_DATABASE_URL=sqlite_url(tmp_path / "agent-engine.db"),
        AGENT_ENGINE_WORKSPACE_ROOTS=str(workspaces),
        AGENT_ENGINE_POLICIES_FILE=str(policies),
        AGENT_ENGINE_LOG_LEVEL="warning",
        **settings,
    )
    with (
        running(["agent_engine", "serve"], tmp_path, env, port) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client, workspaces


def create_fix_run(client: httpx.Client, workspace: Path, **options: Any) -> dict[str, Any]:
    """POST the adaptive "Fix the failing test" run, started at once."""
    body = {
        "goal": GOAL,
        "workspace": str(workspace),
        "planning": "adaptive",
        "policy": POLICY,
        "auto_start": True,
        **options,
    }
    response = client.post("/v1/agent-runs", json=body)
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    return run


def wait_until(
    client: httpx.Client, run_id: str, statuses: set[str], limit_s: float = 120
) -> dict[str, Any]:
    """The run once its status is one of ``statuses`` (a failure bound, not a measurement)."""
    deadline = time.monotonic() + limit_s
    while True:
        response = client.get(f"/v1/agent-runs/{run_id}")
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        if run["status"] in statuses:
            return run
        assert time.monotonic() < deadline, f"run stuck in {run['status']}: {steps_of(run)}"
        time.sleep(0.1)


def steps_of(run: dict[str, Any]) -> list[tuple[int, str, str]]:
    """``(number, type, status)`` of every step, for assertions and messages."""
    return [(s["step_number"], s["step_type"], s["status"]) for s in run["steps"]]


def approve(client: httpx.Client, run: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    """Approve a waiting step as ``alice`` (auth off: the actor header names who decided)."""
    response = client.post(
        f"/v1/agent-runs/{run['id']}/steps/{step['id']}/approve",
        json={"comment": "the diff fixes it"},
        headers={"X-Actor": "alice"},
    )
    assert response.status_code == 200, response.text
    approved: dict[str, Any] = response.json()
    return approved


def audit_types(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    """The run's audit events, after checking the chain verifies."""
    audit = client.get(f"/v1/agent-runs/{run_id}/audit").json()
    assert audit["chain_valid"] is True, audit
    # And every row the chain covers (plans, revisions, calls, approvals, outputs) verifies.
    verdict = client.get(f"/v1/agent-runs/{run_id}/audit/verify").json()
    assert verdict["valid"] is True, verdict
    events: list[dict[str, Any]] = audit["events"]
    return events


def plan_versions(client: httpx.Client, run: dict[str, Any]) -> list[dict[str, Any]]:
    """Every plan version of the run, 1 to the current one."""
    versions = []
    for number in range(1, run["plan_version"] + 1):
        response = client.get(f"/v1/agent-runs/{run['id']}/plan", params={"version": number})
        assert response.status_code == 200, response.text
        versions.append(response.json())
    return versions
