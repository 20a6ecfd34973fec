"""Approval receipts: an approval binds to the hash of the step's exact resolved input; when the
input the step would run has changed by the time it is claimed, the step waits again."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import update

from agent_engine.config import Settings
from agent_engine.domain.canonical import content_hash
from agent_engine.storage.tables import Base
from tests.audit_runs import raw_database

STEPS = Base.metadata.tables["steps"]


async def _approved_run(client: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    """Step 2's input is step 1's output by $ref; step 2 is approved once step 1 ran."""
    created = await client.post(
        "/v1/agent-runs",
        json={
            "goal": "g",
            "steps": [
                {"step_type": "noop", "input_data": {"value": "first"}},
                {
                    "step_type": "noop",
                    "input_data": {"value": {"$ref": "steps.1.output.value"}},
                    "requires_approval": True,
                },
            ],
        },
    )
    run_id = created.json()["id"]
    await client.post(f"/v1/agent-runs/{run_id}/execute")
    waiting = (await client.post(f"/v1/agent-runs/{run_id}/execute")).json()
    step = waiting["steps"][1]
    assert step["status"] == "awaiting_approval"
    approved = await client.post(
        f"/v1/agent-runs/{run_id}/steps/{step['id']}/approve", headers={"X-Actor": "bob"}
    )
    assert approved.status_code == 200
    return run_id, step


async def _audit(client: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (await client.get(f"/v1/agent-runs/{run_id}/audit")).json()[
        "events"
    ]
    return events


async def test_an_approval_records_the_input_it_binds_to_and_what_was_shown(
    client: httpx.AsyncClient,
) -> None:
    run_id, step = await _approved_run(client)
    decision = next(e for e in await _audit(client, run_id) if e["type"] == "step.approved")
    receipt = decision["payload"]["approval"]
    assert receipt["actor"] == "bob" and receipt["decision"] == "approved"
    assert receipt["input_hash"] == content_hash({"value": "first"})
    assert receipt["shown_hash"] == content_hash(step["preview"])
    done = (await client.post(f"/v1/agent-runs/{run_id}/execute")).json()
    assert done["status"] == "completed" and done["steps"][1]["output_data"]["value"] == "first"
    assert not [e for e in await _audit(client, run_id) if e["type"] == "approval.invalidated"]


async def test_an_approval_no_longer_applies_once_the_input_changed(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    run_id, _ = await _approved_run(client)
    async with raw_database(settings.database_url) as db:
        # The output step 2 reads by $ref is no longer what the approver saw.
        await db.execute(
            update(STEPS)
            .where(STEPS.c.step_number == 1)  # the only run in this database
            .values(output_data={"value": "second", "attempt": 1})
        )
    parked = await client.post(f"/v1/agent-runs/{run_id}/execute")
    state = (await client.get(f"/v1/agent-runs/{run_id}")).json()
    second = state["steps"][1]
    assert parked.status_code in (200, 409)
    assert state["status"] == "awaiting_approval" and second["status"] == "awaiting_approval"
    assert second["output_data"] is None  # it did not run on the changed input
    assert second["preview"]["input"]["value"] == "second"  # the approver now sees the new one
    voided = [e for e in await _audit(client, run_id) if e["type"] == "approval.invalidated"]
    assert len(voided) == 1 and voided[0]["payload"] == {
        "step_number": 2,
        "approved_input_hash": content_hash({"value": "first"}),
        "input_hash": content_hash({"value": "second"}),
        "attempt": 0,
    }
    again = await client.post(
        f"/v1/agent-runs/{run_id}/steps/{second['id']}/approve", headers={"X-Actor": "carol"}
    )
    assert again.status_code == 200, again.text
    done = (await client.post(f"/v1/agent-runs/{run_id}/execute")).json()
    assert done["status"] == "completed" and done["steps"][1]["output_data"]["value"] == "second"
    approvals = [e for e in await _audit(client, run_id) if e["type"] == "step.approved"]
    assert [e["payload"]["approval"]["input_hash"] for e in approvals] == [
        content_hash({"value": "first"}),
        content_hash({"value": "second"}),
    ]
