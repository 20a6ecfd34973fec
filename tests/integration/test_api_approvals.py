"""Approving and rejecting steps over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import noop_plan


async def _waiting_run(client: httpx.AsyncClient, **step_extra: Any) -> dict[str, Any]:
    steps = [
        {
            "step_type": "noop",
            "input_data": {"value": "gated"},
            "requires_approval": True,
            **step_extra,
        },
        *noop_plan(1),
    ]
    run = (await client.post("/v1/agent-runs", json={"goal": "g", "steps": steps})).json()
    waiting = (await client.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    assert waiting["status"] == "awaiting_approval"
    assert waiting["steps"][0]["status"] == "awaiting_approval"
    return waiting


async def test_step_needing_approval_waits_and_shows_what_will_run(
    client: httpx.AsyncClient,
) -> None:
    run = await _waiting_run(client)
    step = run["steps"][0]
    assert step["preview"] == {
        "input": {"value": "gated", "fail": False, "fail_attempts": 0, "sleep_s": 0.0}
    }
    assert step["approval_rule"] == "requires_approval=true in the plan"
    assert step["attempt"] == 0  # nothing ran
    blocked = await client.post(f"/v1/agent-runs/{run['id']}/execute")
    assert blocked.status_code == 409
    assert blocked.json()["code"] == "no_ready_step"
    assert "awaiting_approval" in blocked.json()["detail"]


async def test_approve_then_execute_runs_the_step(client: httpx.AsyncClient) -> None:
    run = await _waiting_run(client)
    step_id = run["steps"][0]["id"]
    response = await client.post(
        f"/v1/agent-runs/{run['id']}/steps/{step_id}/approve",
        json={"comment": "looks fine"},
        headers={"X-Actor": "reviewer"},
    )
    assert response.status_code == 200
    approved = response.json()
    assert approved["status"] == "running"
    assert approved["steps"][0]["status"] == "approved"
    executed = (await client.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    assert executed["steps"][0]["status"] == "completed"
    audit = (await client.get(f"/v1/agent-runs/{run['id']}/audit")).json()["events"]
    decision = next(e for e in audit if e["type"] == "step.approved")
    assert decision["actor"] == "reviewer"
    assert decision["payload"]["comment"] == "looks fine"
    assert decision["payload"]["shown"] == {
        "input": {"value": "gated", "fail": False, "fail_attempts": 0, "sleep_s": 0.0}
    }


async def test_approving_twice_or_a_step_not_waiting_is_409(client: httpx.AsyncClient) -> None:
    run = await _waiting_run(client)
    first, second = run["steps"]
    url = f"/v1/agent-runs/{run['id']}/steps"
    assert (await client.post(f"{url}/{first['id']}/approve")).status_code == 200
    twice = await client.post(f"{url}/{first['id']}/approve")
    assert twice.status_code == 409
    assert twice.json()["current_state"] == "approved"
    not_waiting = await client.post(f"{url}/{second['id']}/approve")
    assert not_waiting.status_code == 409
    assert not_waiting.json()["current_state"] == "pending"


async def test_approving_in_a_cancelled_run_is_409(client: httpx.AsyncClient) -> None:
    run = await _waiting_run(client)
    await client.post(f"/v1/agent-runs/{run['id']}/cancel")
    step_id = run["steps"][0]["id"]
    response = await client.post(f"/v1/agent-runs/{run['id']}/steps/{step_id}/approve")
    assert response.status_code == 409
    assert "cancelled" in response.json()["detail"]


async def test_reject_fails_run_unless_step_optional(client: httpx.AsyncClient) -> None:
    run = await _waiting_run(client)
    step_id = run["steps"][0]["id"]
    rejected = (
        await client.post(
            f"/v1/agent-runs/{run['id']}/steps/{step_id}/reject", json={"reason": "too risky"}
        )
    ).json()
    assert rejected["status"] == "failed"
    assert rejected["steps"][0]["status"] == "rejected"

    optional = await _waiting_run(client, optional=True)
    step_id = optional["steps"][0]["id"]
    continued = (
        await client.post(
            f"/v1/agent-runs/{optional['id']}/steps/{step_id}/reject", json={"reason": "skip it"}
        )
    ).json()
    assert continued["status"] == "running"
    done = (await client.post(f"/v1/agent-runs/{optional['id']}/execute")).json()
    assert done["status"] == "completed"
    assert [s["status"] for s in done["steps"]] == ["rejected", "completed"]


async def test_concurrent_approvals_exactly_one_wins(client: httpx.AsyncClient) -> None:
    run = await _waiting_run(client)
    url = f"/v1/agent-runs/{run['id']}/steps/{run['steps'][0]['id']}"
    responses = await asyncio.gather(
        *(client.post(f"{url}/approve", headers={"X-Actor": f"a{n}"}) for n in range(6)),
        *(client.post(f"{url}/reject", json={"reason": "no"}) for _ in range(2)),
    )
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 1 and codes.count(409) == 7
    audit = (await client.get(f"/v1/agent-runs/{run['id']}/audit")).json()
    decisions = [e for e in audit["events"] if e["type"] in ("step.approved", "step.rejected")]
    assert len(decisions) == 1
    assert audit["chain_valid"] is True
