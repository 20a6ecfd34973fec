"""``GET /v1/agent-runs/{id}/manifest`` on SQLite and PostgreSQL: a run that reads a file, runs a
command, asks the model and calls an MCP tool is described by versions, models, routing, prices,
plan hashes, tool schemas, policy and the nondeterminism of each step, under its own hash."""

from __future__ import annotations

import platform
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import agent_engine
from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.domain.canonical import content_hash
from agent_engine.engine.manifest import manifest_hash
from tests.mcp_servers import fake_server, write_servers


@pytest.fixture
async def api(settings: Settings, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    servers = write_servers(tmp_path, {"own": fake_server()})
    app = create_app(settings.model_copy(update={"mcp_servers": servers, "mcp_timeout_s": 30.0}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


async def execute(api: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await api.post(f"/v1/agent-runs/{run_id}/execute")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def finished_run(api: httpx.AsyncClient, workspace_root: Path) -> dict[str, Any]:
    workspace = workspace_root / "manifest"
    workspace.mkdir()
    (workspace / "hello.py").write_text("print('hello')\n", encoding="utf-8")
    steps = [
        {"step_type": "read_file", "input_data": {"path": "hello.py"}},
        {"step_type": "run_command", "input_data": {"argv": ["python3", "hello.py"]}},
        {
            "step_type": "analyze",
            "input_data": {
                "instruction": "What does it print?",
                "inputs": [{"$ref": "steps.1.output.content"}],
            },
        },
        {
            "step_type": "mcp_tool",
            "input_data": {"server": "own", "tool": "echo", "arguments": {"text": "hi"}},
        },
    ]
    body = {"goal": "describe hello.py", "workspace": str(workspace), "steps": steps}
    created = await api.post("/v1/agent-runs", json=body)
    assert created.status_code == 201, created.text
    run = created.json()
    await execute(api, run["id"])  # read_file
    waiting = await execute(api, run["id"])  # run_command waits for a person
    command = waiting["steps"][1]
    assert command["status"] == "awaiting_approval"
    approved = await api.post(
        f"/v1/agent-runs/{run['id']}/steps/{command['id']}/approve",
        headers={"X-Actor": "reviewer"},
    )
    assert approved.status_code == 200, approved.text
    for _ in range(3):
        done = await execute(api, run["id"])
    assert done["status"] == "completed", done
    return done


async def test_the_manifest_describes_what_the_run_depended_on(
    api: httpx.AsyncClient, workspace_root: Path, settings: Settings
) -> None:
    run = await finished_run(api, workspace_root)
    response = await api.get(f"/v1/agent-runs/{run['id']}/manifest")
    assert response.status_code == 200, response.text
    manifest = response.json()

    assert manifest["manifest_hash"] == manifest_hash(manifest)
    assert manifest["run_id"] == run["id"]
    assert manifest["engine"] == {
        "name": "agent-engine",
        "version": agent_engine.__version__,
        "python": platform.python_version(),
        "database": "postgresql" if "postgresql" in settings.database_url else "sqlite",
    }
    assert [(e["name"], e["version"]) for e in manifest["executors"]] == [
        (name, agent_engine.__version__)
        for name in ("analyze", "mcp_tool", "read_file", "run_command")
    ]
    assert manifest["workspace"] == run["workspace"]
    assert manifest["approval_policy"]["policy"]["name"] == "default"
    assert manifest["plan_hash"] == run["plan_hash"]
    assert [(p["version"], p["plan_hash"]) for p in manifest["plans"]] == [(1, run["plan_hash"])]

    (model,) = manifest["models"]
    assert model["calls"] >= 1
    assert model["sampling"][0]["temperature"] is not None
    assert model["sampling"][0]["max_output_tokens"] >= 1
    assert model["price"]["source"] == model["price_sources"][0]
    calls = manifest["llm_calls"]
    assert {c["step_number"] for c in calls} == {3}
    for call in calls:
        assert call["model"] == model["id"]
        assert call["routing"]["model"] == model["id"] and call["routing"]["reason"]
        assert len(call["request_hash"]) == 64 and len(call["response_hash"]) == 64

    (server,) = manifest["mcp_servers"]
    assert server["name"] == "own" and server["server"]["transport"] == "stdio"
    (tool,) = server["tools"]
    assert tool["name"] == "echo" and tool["input_schema"]["type"] == "object"
    assert tool["input_schema_hash"] == content_hash(tool["input_schema"])

    steps = {s["step_number"]: s for s in manifest["steps"]}
    command = run["steps"][1]["output_data"]
    assert steps[2]["nondeterminism"] == {
        "clock_readings": [{"what": "command started", "at": command["started_at"]}],
        "seeds": [],
        "environment_keys": command["env_keys"],
    }
    assert "PATH" in command["env_keys"]
    for number, step in steps.items():
        stored = run["steps"][number - 1]
        assert (step["input_hash"], step["output_hash"]) == (
            stored["input_hash"],
            stored["output_hash"],
        )
    assert steps[1]["nondeterminism"] == {
        "clock_readings": [],
        "seeds": [],
        "environment_keys": None,
    }


async def test_the_manifest_is_the_same_when_asked_again(
    api: httpx.AsyncClient, workspace_root: Path
) -> None:
    run = await finished_run(api, workspace_root)
    first = (await api.get(f"/v1/agent-runs/{run['id']}/manifest")).json()
    second = (await api.get(f"/v1/agent-runs/{run['id']}/manifest")).json()
    assert first == second


@pytest.mark.parametrize("run_id", ["00000000-0000-0000-0000-000000000000", "not-a-run"])
async def test_an_unknown_runs_manifest_is_a_404_problem(
    client: httpx.AsyncClient, run_id: str
) -> None:
    # The plain app: no run means no MCP server to describe, so none is started for this.
    response = await client.get(f"/v1/agent-runs/{run_id}/manifest")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "not_found"
