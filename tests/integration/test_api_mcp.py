"""MCP tools as steps through the API, on SQLite and PostgreSQL: plans naming configured servers
run (the embedded worker or manual stepping) and record what the tool answered; plans naming a
server that is not configured are refused at creation; a server that is not running fails the
step with its reason, retried by the step's policy; writing tools wait for a person."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.domain.canonical import content_hash
from agent_engine.engine.planner import step_catalog
from agent_engine.llm.base import (
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMClient,
    Usage,
)
from tests.backends import one_backend
from tests.mcp_servers import dead_server, fake_server, time_server, write_servers
from tests.processes import free_port

FINISHED = {"completed", "failed", "cancelled"}


def mcp_step(server: str, tool: str, **extra: Any) -> dict[str, Any]:
    arguments = extra.pop("arguments", {})
    return {
        "step_type": "mcp_tool",
        "input_data": {"server": server, "tool": tool, "arguments": arguments},
        **extra,
    }


@pytest.fixture
def mcp_settings(settings: Settings, tmp_path: Path) -> Settings:
    servers = {
        "time": time_server(),
        "own": fake_server(),
        "down": dead_server(),
        "remote-down": {"url": f"http://127.0.0.1:{free_port()}/mcp"},
    }
    return settings.model_copy(
        update={"mcp_servers": write_servers(tmp_path, servers), "mcp_timeout_s": 30.0}
    )


@pytest.fixture
async def served(mcp_settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(mcp_settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield app, http


@pytest.fixture
async def api(served: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return served[1]


async def create(client: httpx.AsyncClient, steps: list[dict[str, Any]], **body: Any) -> Any:
    response = await client.post("/v1/agent-runs", json={"goal": "g", "steps": steps, **body})
    assert response.status_code == 201, response.text
    return response.json()


async def execute(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await client.post(f"/v1/agent-runs/{run_id}/execute")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_mcp_steps_run_in_the_embedded_worker_and_are_recorded(
    mcp_settings: Settings,
) -> None:
    settings = mcp_settings.model_copy(update={"embedded_worker": True, "worker_poll_s": 0.05})
    app = create_app(settings)
    steps = [
        mcp_step("time", "get_current_time", arguments={"timezone": "Europe/Paris"}),
        # $refs inside the arguments are resolved when the step runs and recorded resolved.
        mcp_step(
            "own",
            "echo",
            arguments={"text": {"$ref": "steps.1.output.structured_content.timezone"}},
        ),
    ]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        run = await create(http, steps, auto_start=True)
        async with asyncio.timeout(60):
            while run["status"] not in FINISHED:
                await asyncio.sleep(0.05)
                run = (await http.get(f"/v1/agent-runs/{run['id']}")).json()
        audit = (await http.get(f"/v1/agent-runs/{run['id']}/audit")).json()["events"]
    assert run["status"] == "completed", run
    first, second = run["steps"]
    assert [first["requires_approval"], second["requires_approval"]] == [False, False]
    assert first["output_data"]["structured_content"]["timezone"] == "Europe/Paris"
    assert first["output_data"]["server"] == "time"
    assert first["output_hash"] == content_hash(first["output_data"])
    assert first["input_hash"] == content_hash(first["input_data"])
    assert second["resolved_input"]["arguments"] == {"text": "Europe/Paris"}
    assert second["output_data"]["content"] == [{"type": "text", "text": "Europe/Paris"}]
    # The audit chain carries the hash of each recorded output, like any other step's.
    completed = [e["payload"] for e in audit if e["type"] == "step.completed"]
    assert [p.get("output_hash") for p in completed] == [
        first["output_hash"],
        second["output_hash"],
    ]


REFUSED_BEFORE_ANY_WRITE = one_backend(
    "sqlite", "the plan is refused from the MCP servers' listings before anything is written"
)


@REFUSED_BEFORE_ANY_WRITE
async def test_server_not_configured_is_refused_at_plan_creation(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/agent-runs", json={"goal": "g", "steps": [mcp_step("weather", "forecast")]}
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "invalid_plan"
    assert problem["errors"][0]["field"] == "server"
    assert "MCP server 'weather' is not configured" in problem["detail"]
    assert "AGENT_ENGINE_MCP_SERVERS" in problem["detail"]


@REFUSED_BEFORE_ANY_WRITE
async def test_tool_the_server_does_not_list_is_refused_at_plan_creation(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post(
        "/v1/agent-runs", json={"goal": "g", "steps": [mcp_step("time", "set_clock")]}
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["errors"][0]["field"] == "tool"
    assert "has no tool 'set_clock'" in problem["detail"]
    assert "get_current_time" in problem["detail"]


@REFUSED_BEFORE_ANY_WRITE
async def test_bad_step_input_is_refused_at_plan_creation(api: httpx.AsyncClient) -> None:
    step = {"step_type": "mcp_tool", "input_data": {"server": "own", "arguments": []}}
    response = await api.post("/v1/agent-runs", json={"goal": "g", "steps": [step]})
    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"tool", "arguments"}


async def test_writing_tool_waits_for_approval_and_read_only_tool_does_not(
    api: httpx.AsyncClient,
) -> None:
    run = await create(
        api,
        [
            mcp_step("own", "echo", arguments={"text": "hi"}),
            mcp_step("own", "write_note", arguments={"text": "note"}),
        ],
    )
    read, write = run["steps"]
    assert read["requires_approval"] is False
    assert write["requires_approval"] is True
    assert "mcp_tool requires approval by default" in write["approval_rule"]
    after_first = await execute(api, run["id"])
    assert after_first["steps"][0]["status"] == "completed"
    waiting = await execute(api, run["id"])
    step = waiting["steps"][1]
    assert step["status"] == "awaiting_approval"
    assert step["preview"]["tool"]["read_only"] is False
    assert step["preview"]["server"]["transport"] == "stdio"
    assert step["preview"]["input"]["arguments"] == {"text": "note"}
    approved = await api.post(
        f"/v1/agent-runs/{run['id']}/steps/{step['id']}/approve", headers={"X-Actor": "reviewer"}
    )
    assert approved.status_code == 200, approved.text
    done = await execute(api, run["id"])
    assert done["status"] == "completed"
    assert done["steps"][1]["output_data"]["content"][0]["text"] == "wrote 4 characters"


async def test_the_runs_policy_may_hold_a_read_only_tool_for_a_person(
    api: httpx.AsyncClient,
) -> None:
    policy = {"rules": [{"step_type": "mcp_tool", "action": "require_approval"}]}
    run = await create(
        api, [mcp_step("own", "echo", arguments={"text": "hi"})], approval_policy=policy
    )
    assert run["steps"][0]["requires_approval"] is True


async def test_server_that_is_not_running_fails_the_step_after_its_retries(
    api: httpx.AsyncClient,
) -> None:
    retry = {"max_attempts": 2, "initial_backoff_s": 0, "max_backoff_s": 0}
    run = await create(api, [mcp_step("down", "anything", retry_policy=retry)])
    # The server's tools could not be listed: the step is held for a person (fail closed).
    assert run["steps"][0]["requires_approval"] is True
    step_id = run["steps"][0]["id"]
    waiting = await execute(api, run["id"])
    assert waiting["steps"][0]["status"] == "awaiting_approval"
    await api.post(
        f"/v1/agent-runs/{run['id']}/steps/{step_id}/approve", headers={"X-Actor": "reviewer"}
    )
    first = await execute(api, run["id"])
    step = first["steps"][0]
    assert step["status"] == "pending"  # failed once, back for its second attempt
    assert step["error"]["code"] == "mcp_unavailable"
    # Each attempt of a step held for a person is approved again.
    again = await execute(api, run["id"])
    assert again["steps"][0]["status"] == "awaiting_approval"
    await api.post(
        f"/v1/agent-runs/{run['id']}/steps/{step_id}/approve", headers={"X-Actor": "reviewer"}
    )
    last = await execute(api, run["id"])
    step = last["steps"][0]
    assert last["status"] == "failed"
    assert step["status"] == "failed"
    assert step["attempt"] == 2
    assert step["error"]["code"] == "mcp_unavailable"
    assert "MCP server 'down'" in step["error"]["message"]
    assert "cannot start: no database" in step["error"]["message"]


async def test_http_server_nobody_listens_on_fails_the_step(api: httpx.AsyncClient) -> None:
    run = await create(
        api, [mcp_step("remote-down", "echo", arguments={"text": "x"}, requires_approval=True)]
    )
    step_id = run["steps"][0]["id"]
    await execute(api, run["id"])
    await api.post(
        f"/v1/agent-runs/{run['id']}/steps/{step_id}/approve", headers={"X-Actor": "reviewer"}
    )
    done = await execute(api, run["id"])
    assert done["status"] == "failed"
    error = done["steps"][0]["error"]
    assert error["code"] == "mcp_unavailable"
    assert "MCP server 'remote-down' (http://127.0.0.1:" in error["message"]


@one_backend("sqlite", "the catalog is built from the MCP servers' listings, not from the database")
async def test_planner_catalog_lists_each_tool_with_its_schema(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, _ = served
    catalog = step_catalog(app.state.engine)
    tools = {
        (
            entry["input_schema"]["properties"]["server"]["const"],
            entry["input_schema"]["properties"]["tool"]["const"],
        ): entry
        for entry in catalog
        if entry["step_type"] == "mcp_tool"
    }
    assert ("time", "get_current_time") in tools
    assert ("own", "write_note") in tools
    assert not any(server == "down" for server, _ in tools)  # not reachable: nothing to offer
    schema = tools[("time", "get_current_time")]["input_schema"]["properties"]["arguments"]
    assert "timezone" in schema["properties"]
    assert tools[("own", "write_note")]["requires_approval"] is True
    assert tools[("time", "get_current_time")]["requires_approval"] is False


class ToolPlanningModel(LLMClient):
    """Plans two MCP steps, and keeps the prompts it was sent."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        self.prompts.append("\n".join(message.content for message in request.messages))
        plan = {
            "steps": [
                mcp_step("time", "get_current_time", arguments={"timezone": "UTC"}),
                mcp_step("own", "write_note", arguments={"text": "it is late"}),
            ],
            "rationale": "look at the clock, then note it",
        }
        return CompletionResponse(text=json.dumps(plan), usage=Usage(), provider="t", model="m")

    async def estimate_cost(self, request: CompletionRequest) -> Decimal | None:
        return Decimal(0)

    @property
    def calls(self) -> list[LLMCallRecord]:
        return []


async def test_planner_sees_the_tools_and_its_plan_gets_their_approval_defaults(
    mcp_settings: Settings,
) -> None:
    model = ToolPlanningModel()
    app = create_app(mcp_settings, llm_factory=lambda budget: model)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        run = (await http.post("/v1/agent-runs", json={"goal": "note the time"})).json()
        executed = await execute(http, run["id"])
    assert "get_current_time" in model.prompts[0]
    assert "write_note" in model.prompts[0]
    steps = executed["steps"]
    assert [s["step_type"] for s in steps] == ["mcp_tool", "mcp_tool"]
    assert [s["requires_approval"] for s in steps] == [False, True]
    assert steps[0]["status"] == "completed"
    assert steps[0]["output_data"]["structured_content"]["timezone"] == "UTC"
