"""The run lifecycle over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import httpx

from tests.conftest import noop_plan

PROBLEM = "application/problem+json"


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("goal", "test goal")
    response = await client.post("/v1/agent-runs", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def execute(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await client.post(f"/v1/agent-runs/{run_id}/execute")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_create_with_goal_only_is_created_and_readable(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/agent-runs", json={"goal": "Analyze the codebase"})
    assert response.status_code == 201
    run = response.json()
    assert run["status"] == "created"
    assert run["steps"] == []
    assert run["total_cost_usd"] == 0
    assert response.headers["location"] == f"/v1/agent-runs/{run['id']}"
    fetched = (await client.get(f"/v1/agent-runs/{run['id']}")).json()
    assert fetched["id"] == run["id"] and fetched["goal"] == "Analyze the codebase"
    assert fetched["created_at"].endswith(("+00:00", "Z"))


async def test_explicit_plan_is_planned_with_default_sequential_dependencies(
    client: httpx.AsyncClient,
) -> None:
    run = await create(client, steps=noop_plan(3))
    assert run["status"] == "planned"
    assert [s["step_number"] for s in run["steps"]] == [1, 2, 3]
    assert [s["depends_on"] for s in run["steps"]] == [[], [1], [2]]
    assert all(s["status"] == "pending" for s in run["steps"])
    assert run["plan_version"] == 1 and len(run["plan_hash"]) == 64
    steps = (await client.get(f"/v1/agent-runs/{run['id']}/steps")).json()
    assert [s["id"] for s in steps] == [s["id"] for s in run["steps"]]


async def test_execute_runs_steps_one_at_a_time_until_completed(client: httpx.AsyncClient) -> None:
    run = await create(client, steps=noop_plan(2))
    first = await execute(client, run["id"])
    assert first["status"] == "running"
    assert first["executed_step_id"] == run["steps"][0]["id"]
    assert first["steps"][0]["status"] == "completed"
    assert first["steps"][0]["output_data"] == {"value": 1, "attempt": 1}
    assert len(first["steps"][0]["output_hash"]) == 64
    assert first["steps"][1]["status"] == "pending"
    second = await execute(client, run["id"])
    assert second["status"] == "completed"
    assert second["completed_at"] is not None
    again = await client.post(f"/v1/agent-runs/{run['id']}/execute")
    assert again.status_code == 409
    problem = again.json()
    assert again.headers["content-type"].startswith(PROBLEM)
    assert problem["code"] == "invalid_transition"
    assert "completed" in problem["detail"] and "running" in problem["detail"]


async def test_every_transition_has_one_audit_event_and_the_chain_verifies(
    client: httpx.AsyncClient,
) -> None:
    run = await create(client, steps=noop_plan(2))
    await execute(client, run["id"])
    await execute(client, run["id"])
    audit = (await client.get(f"/v1/agent-runs/{run['id']}/audit")).json()
    types = [e["type"] for e in audit["events"]]
    assert types == [
        "run.created",
        "run.planning",
        "plan.recorded",
        "run.planned",
        "run.running",
        "step.running",
        "step.completed",
        "step.running",
        "step.completed",
        "run.completed",
    ]
    assert [e["seq"] for e in audit["events"]] == list(range(1, len(types) + 1))
    assert audit["chain_valid"] is True
    events = audit["events"]
    assert all(e["prev_hash"] == p["hash"] for p, e in itertools.pairwise(events))
    transition = audit["events"][-1]
    assert transition["payload"] == {"from": "running", "to": "completed"}
    assert transition["actor"] == "anonymous"


async def test_actor_header_is_recorded(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/agent-runs", json={"goal": "g"}, headers={"X-Actor": "alice@example.com"}
    )
    run = response.json()
    assert run["created_by"] == "alice@example.com"
    audit = (await client.get(f"/v1/agent-runs/{run['id']}/audit")).json()
    assert audit["events"][0]["actor"] == "alice@example.com"


async def test_failing_step_fails_the_run_and_records_the_error(client: httpx.AsyncClient) -> None:
    run = await create(
        client, steps=[{"step_type": "noop", "input_data": {"fail": True}}, *noop_plan(1)]
    )
    result = await execute(client, run["id"])
    assert result["status"] == "failed"
    assert result["steps"][0]["status"] == "failed"
    assert result["steps"][0]["error"]["code"] == "executor_error"
    assert result["error"]["step_number"] == 1
    assert result["steps"][1]["status"] == "pending"


async def test_optional_failing_step_lets_the_run_continue(client: httpx.AsyncClient) -> None:
    steps = [{"step_type": "noop", "input_data": {"fail": True}, "optional": True}, *noop_plan(1)]
    run = await create(client, steps=steps)
    assert (await execute(client, run["id"]))["status"] == "running"
    done = await execute(client, run["id"])
    assert done["status"] == "completed"
    assert [s["status"] for s in done["steps"]] == ["failed", "completed"]


async def test_references_resolve_from_earlier_outputs_and_are_recorded(
    client: httpx.AsyncClient,
) -> None:
    steps = [
        {"step_type": "noop", "input_data": {"value": {"answer": 42}}},
        {"step_type": "noop", "input_data": {"value": {"$ref": "steps.1.output.value.answer"}}},
    ]
    run = await create(client, steps=steps)
    await execute(client, run["id"])
    done = await execute(client, run["id"])
    second = done["steps"][1]
    assert second["input_data"] == {"value": {"$ref": "steps.1.output.value.answer"}}
    assert second["resolved_input"] == {"value": 42}
    assert second["output_data"] == {"value": 42, "attempt": 1}


async def test_cancel_cancels_run_and_unfinished_steps(client: httpx.AsyncClient) -> None:
    run = await create(client, steps=noop_plan(3))
    await execute(client, run["id"])
    response = await client.post(f"/v1/agent-runs/{run['id']}/cancel", json={"reason": "stop"})
    assert response.status_code == 200
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert [s["status"] for s in cancelled["steps"]] == ["completed", "cancelled", "cancelled"]
    again = await client.post(f"/v1/agent-runs/{run['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["current_state"] == "cancelled"
    execute_after = await client.post(f"/v1/agent-runs/{run['id']}/execute")
    assert execute_after.status_code == 409


async def test_cost_of_a_run_without_llm_calls_is_zero_and_consistent(
    client: httpx.AsyncClient,
) -> None:
    run = await create(client, steps=noop_plan(1))
    await execute(client, run["id"])
    cost = (await client.get(f"/v1/agent-runs/{run['id']}/cost")).json()
    assert cost["total_cost_usd"] == 0
    assert cost["totals"]["calls"] == 0
    assert cost["consistent"] is True
    assert cost["has_unpriced_calls"] is False


async def test_unknown_and_malformed_ids_are_404_problems(client: httpx.AsyncClient) -> None:
    for path in (
        f"/v1/agent-runs/{uuid.uuid4()}",
        "/v1/agent-runs/not-a-uuid",
        f"/v1/agent-runs/{uuid.uuid4()}/steps",
        f"/v1/agent-runs/{uuid.uuid4()}/audit",
        f"/v1/agent-runs/{uuid.uuid4()}/cost",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith(PROBLEM)
        assert response.json()["code"] == "not_found"
    run = await create(client, steps=noop_plan(1))
    response = await client.post(f"/v1/agent-runs/{run['id']}/steps/{uuid.uuid4()}/approve")
    assert response.status_code == 404
    response = await client.post(f"/v1/agent-runs/{uuid.uuid4()}/execute")
    assert response.status_code == 404
    response = await client.get("/v1/no-such-endpoint")
    assert response.status_code == 404 and response.json()["type"].endswith("/not-found")
