"""The whole story over HTTP on the sample workspace: read, analyze, propose an edit, wait,
approve, apply, run the project's tests after approval, summarize — every step, decision and
effect in the audit log; on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.api.app import create_app
from agent_engine.config import Settings

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_workspace"


@pytest.fixture
def workspace(workspace_root: Path) -> Path:
    target = workspace_root / "inventory"
    shutil.copytree(SAMPLE, target)
    return target


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    # The interpreter running the tests has pytest; allow exactly it, by absolute path.
    allowed = settings.model_copy(update={"command_allowlist": [sys.executable]})
    app = create_app(allowed)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


def plan() -> list[dict[str, Any]]:
    return [
        {"step_type": "list_files", "input_data": {"patterns": ["**/*.py"]}},
        {"step_type": "read_file", "input_data": {"path": "inventory/store.py"}},
        {
            "step_type": "analyze",
            "input_data": {
                "instruction": "Find problems in the store module",
                "inputs": [{"$ref": "steps.1.output"}, {"$ref": "steps.2.output"}],
            },
        },
        {
            "step_type": "edit_file",
            "input_data": {
                "path": "inventory/store.py",
                "operation": "replace",
                "old": "import json\nimport os\n",
                "new": "import json\n",
            },
        },
        {
            "step_type": "run_command",
            "input_data": {"argv": [sys.executable, "-m", "pytest", "-q"]},
        },
        {
            "step_type": "summarize",
            "input_data": {
                "inputs": [{"$ref": "steps.3.output.text"}, {"$ref": "steps.5.output.stdout"}]
            },
        },
    ]


async def execute(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await client.post(f"/v1/agent-runs/{run_id}/execute", headers={"X-Actor": "bot"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def approve(client: httpx.AsyncClient, run: dict[str, Any], number: int) -> dict[str, Any]:
    step = run["steps"][number - 1]
    response = await client.post(
        f"/v1/agent-runs/{run['id']}/steps/{step['id']}/approve",
        json={"comment": f"ok step {number}"},
        headers={"X-Actor": "alice"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_read_propose_approve_edit_test_and_summarize(
    client: httpx.AsyncClient, workspace: Path
) -> None:
    store = workspace / "inventory" / "store.py"
    before = store.read_bytes()
    response = await client.post(
        "/v1/agent-runs",
        json={"goal": "Tidy the store module", "workspace": str(workspace), "steps": plan()},
    )
    assert response.status_code == 201, response.text
    run = response.json()
    assert [s["requires_approval"] for s in run["steps"]] == [
        False,
        False,
        False,
        True,
        True,
        False,
    ]

    for _ in range(3):
        run = await execute(client, run["id"])
    listing, read, analysis = (s["output_data"] for s in run["steps"][:3])
    assert "inventory/store.py" in [f["path"] for f in listing["files"]]
    assert read["sha256"] == hashlib.sha256(before).hexdigest()
    assert any(f["kind"] == "unused_import" for f in analysis["structured"]["findings"])

    # The edit waits, showing the exact diff; nothing is touched before the decision.
    run = await execute(client, run["id"])
    assert run["status"] == "awaiting_approval"
    edit = run["steps"][3]
    assert edit["status"] == "awaiting_approval"
    assert "-import os" in edit["preview"]["diff"]
    assert edit["preview"]["before_sha256"] == hashlib.sha256(before).hexdigest()
    assert store.read_bytes() == before
    run = await approve(client, run, 4)
    run = await execute(client, run["id"])
    edit = run["steps"][3]
    assert edit["status"] == "completed"
    assert edit["output_data"]["before_sha256"] == hashlib.sha256(before).hexdigest()
    assert edit["output_data"]["after_sha256"] == hashlib.sha256(store.read_bytes()).hexdigest()
    assert b"import os" not in store.read_bytes()

    # The test run waits too, showing argv, cwd and the environment's keys (never values).
    run = await execute(client, run["id"])
    command = run["steps"][4]
    assert command["status"] == "awaiting_approval"
    assert command["preview"]["argv"] == [sys.executable, "-m", "pytest", "-q"]
    assert "PATH" in command["preview"]["env_keys"]
    run = await approve(client, run, 5)
    run = await execute(client, run["id"])
    result = run["steps"][4]["output_data"]
    assert result["exit_code"] == 0, result["stdout"] + result["stderr"]
    assert "passed" in result["stdout"]

    run = await execute(client, run["id"])
    assert run["status"] == "completed"
    assert "offline model" in run["steps"][5]["output_data"]["text"]

    audit = (await client.get(f"/v1/agent-runs/{run['id']}/audit")).json()
    assert audit["chain_valid"]
    types = [e["type"] for e in audit["events"]]
    assert types.count("step.awaiting_approval") == 2
    assert types.count("step.approved") == 2
    assert types.count("effect.intent") == 2
    decisions = [e for e in audit["events"] if e["type"] == "step.approved"]
    assert {e["actor"] for e in decisions} == {"alice"}
    assert decisions[0]["payload"]["shown"]["diff"] == run["steps"][3]["preview"]["diff"]
    assert types[-1] == "run.completed"
    logs = [e["payload"]["message"] for e in audit["events"] if e["type"] == "step.log"]
    assert any(m.startswith("replace inventory/store.py") for m in logs)
    assert any(m.startswith("exit code 0") for m in logs)


async def test_edit_fails_if_the_file_changed_after_approval(
    client: httpx.AsyncClient, workspace: Path
) -> None:
    store = workspace / "inventory" / "store.py"
    steps = [plan()[3]]
    run = (
        await client.post(
            "/v1/agent-runs", json={"goal": "g", "workspace": str(workspace), "steps": steps}
        )
    ).json()
    run = await execute(client, run["id"])
    run = await approve(client, run, 1)
    store.write_text(store.read_text() + "# changed by someone else\n")
    changed = store.read_bytes()
    run = await execute(client, run["id"])
    assert run["status"] == "failed"
    assert "precondition failed" in run["steps"][0]["error"]["message"]
    assert store.read_bytes() == changed  # untouched


POLICIES = """
policies:
  trusted-edits:
    description: edits and the interpreter's --version run without a person
    rules:
      - {step_type: edit_file, action: auto_approve}
      - {step_type: run_command, argv0: %s, action: auto_approve}
"""


async def test_approval_policy_auto_approves_pytest_but_never_edits_outside_src(
    settings: Settings, workspace: Path, tmp_path: Path
) -> None:
    # The auto-approvals come from the server's named policy; the run only adds a requirement.
    policies = tmp_path / "policies.yaml"
    policies.write_text(POLICIES % Path(sys.executable).name)
    app = create_app(
        settings.model_copy(
            update={"command_allowlist": [sys.executable], "policies_file": policies}
        )
    )
    policy = {
        "rules": [
            {"step_type": "edit_file", "path_not_under": "src", "action": "require_approval"},
        ]
    }
    steps = [
        {
            "step_type": "edit_file",
            "requires_approval": False,
            "input_data": {"path": "inventory/x.py", "operation": "write", "content": "x = 1\n"},
        },
        {
            "step_type": "edit_file",
            "input_data": {"path": "src/y.py", "operation": "write", "content": "y = 1\n"},
        },
        {"step_type": "run_command", "input_data": {"argv": [sys.executable, "--version"]}},
    ]
    body = {
        "goal": "policy",
        "workspace": str(workspace),
        "steps": steps,
        "policy": "trusted-edits",
        "approval_policy": policy,
    }
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        run = (await client.post("/v1/agent-runs", json=body)).json()
        assert [s["requires_approval"] for s in run["steps"]] == [True, False, False]
        assert run["steps"][0]["approval_rule"].startswith("run rule 1:")
        assert run["steps"][1]["approval_rule"].startswith("policy trusted-edits rule 1:")
        assert run["steps"][2]["approval_rule"].startswith("policy trusted-edits rule 2:")
        audit = (await client.get(f"/v1/agent-runs/{run['id']}/audit")).json()["events"]
    recorded = next(e for e in audit if e["type"] == "plan.recorded")["payload"]["approvals"]
    assert [a["requires"] for a in recorded] == [True, False, False]
    created = next(e for e in audit if e["type"] == "run.created")["payload"]
    assert created["policy"]["name"] == "trusted-edits"


async def test_workspace_outside_the_roots_is_refused_at_creation(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for candidate in (str(outside), "/etc", "../../.."):
        response = await client.post("/v1/agent-runs", json={"goal": "g", "workspace": candidate})
        assert response.status_code == 422, candidate
        assert response.json()["code"] == "workspace_violation"


async def test_step_escaping_the_workspace_fails_closed_with_an_audit_event(
    client: httpx.AsyncClient, workspace: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    (workspace / "link").symlink_to(secret)
    steps = [
        {"step_type": "read_file", "input_data": {"path": "link"}},
    ]
    run = (
        await client.post(
            "/v1/agent-runs", json={"goal": "g", "workspace": str(workspace), "steps": steps}
        )
    ).json()
    run = await execute(client, run["id"])
    assert run["status"] == "failed"
    assert run["steps"][0]["error"]["code"] == "workspace_violation"
    assert run["steps"][0]["output_data"] is None
    audit = (await client.get(f"/v1/agent-runs/{run['id']}/audit")).json()["events"]
    violation = next(e for e in audit if e["type"] == "security.workspace_violation")
    assert violation["payload"]["step_number"] == 1
    assert secret.read_text() == "do not read"


async def test_executor_needing_a_workspace_is_refused_without_one(
    client: httpx.AsyncClient,
) -> None:
    steps = [{"step_type": "read_file", "input_data": {"path": "x"}}]
    response = await client.post("/v1/agent-runs", json={"goal": "g", "steps": steps})
    assert response.status_code == 422
    assert "workspace" in response.json()["detail"]
