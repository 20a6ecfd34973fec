"""Four-eyes: with it asked for (per run, or for every run by the server), the run's creator may
not approve its steps or its plan, nor may the maker of the plan approve that plan."""

from __future__ import annotations

from typing import Any

import httpx

from agent_engine.config import Settings
from agent_engine.domain.principals import Role
from tests.keys import AuthedApp, authed_app, bearer

GATED = [{"step_type": "noop", "input_data": {"value": "gated"}, "requires_approval": True}]


async def _waiting_step(
    http: httpx.AsyncClient, creator: dict[str, str], **body: Any
) -> tuple[str, str]:
    run = await http.post(
        "/v1/agent-runs", json={"goal": "g", "steps": GATED, **body}, headers=creator
    )
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    waiting = (await http.post(f"/v1/agent-runs/{run_id}/execute", headers=creator)).json()
    assert waiting["steps"][0]["status"] == "awaiting_approval"
    return run_id, waiting["steps"][0]["id"]


async def _keys(authed: AuthedApp) -> tuple[dict[str, str], dict[str, str]]:
    # The creator holds the approver role itself: only four-eyes stands in its way.
    alice = bearer(await authed.key("alice", Role.APPROVER))
    bob = bearer(await authed.key("bob", Role.APPROVER))
    return alice, bob


async def test_a_four_eyes_run_refuses_its_creator_as_approver_of_its_steps(
    settings: Settings,
) -> None:
    async with authed_app(settings) as authed:
        alice, bob = await _keys(authed)
        run_id, step_id = await _waiting_step(authed.http, alice, four_eyes=True)
        url = f"/v1/agent-runs/{run_id}/steps/{step_id}"
        own = await authed.http.post(f"{url}/approve", headers=alice)
        assert own.status_code == 403, own.text
        assert own.json()["code"] == "four_eyes"
        assert "'alice' created run" in own.json()["detail"]
        still = (await authed.http.get(f"/v1/agent-runs/{run_id}", headers=bob)).json()
        assert still["steps"][0]["status"] == "awaiting_approval"  # nothing was written
        other = await authed.http.post(f"{url}/approve", headers=bob)
        assert other.status_code == 200 and other.json()["steps"][0]["status"] == "approved"
        audit = (await authed.http.get(f"/v1/agent-runs/{run_id}/audit", headers=bob)).json()
    approvals = [e for e in audit["events"] if e["payload"].get("to") == "approved"]
    assert [e["actor"] for e in approvals] == ["bob"]


async def test_without_four_eyes_the_creator_may_approve_and_may_always_reject(
    settings: Settings,
) -> None:
    async with authed_app(settings) as authed:
        alice, _ = await _keys(authed)
        run_id, step_id = await _waiting_step(authed.http, alice)
        url = f"/v1/agent-runs/{run_id}/steps/{step_id}"
        assert (await authed.http.post(f"{url}/approve", headers=alice)).status_code == 200
        run_id, step_id = await _waiting_step(authed.http, alice, four_eyes=True)
        url = f"/v1/agent-runs/{run_id}/steps/{step_id}"
        rejected = await authed.http.post(f"{url}/reject", json={"reason": "no"}, headers=alice)
        assert rejected.status_code == 200  # stopping one's own run needs no second person


async def test_the_server_setting_asks_four_eyes_of_every_run(settings: Settings) -> None:
    async with authed_app(settings, four_eyes=True) as authed:
        alice, _ = await _keys(authed)
        run_id, step_id = await _waiting_step(authed.http, alice)
        refused = await authed.http.post(
            f"/v1/agent-runs/{run_id}/steps/{step_id}/approve", headers=alice
        )
    assert refused.status_code == 403 and refused.json()["code"] == "four_eyes"


async def test_a_four_eyes_plan_is_approved_by_neither_the_run_creator_nor_the_plan_maker(
    settings: Settings,
) -> None:
    async with authed_app(settings) as authed:
        alice, bob = await _keys(authed)
        carol = bearer(await authed.key("carol", Role.APPROVER))
        run = await authed.http.post(
            "/v1/agent-runs",
            json={"goal": "Summarize the risks", "plan_approval": True, "four_eyes": True},
            headers=alice,
        )
        run_id = run.json()["id"]
        # bob has the run planned, so bob made the plan that waits for approval.
        planned = await authed.http.post(f"/v1/agent-runs/{run_id}/execute", headers=bob)
        assert planned.json()["status"] == "awaiting_approval", planned.text
        url = f"/v1/agent-runs/{run_id}/plan/approve"
        by_creator = await authed.http.post(url, headers=alice)
        by_planner = await authed.http.post(url, headers=bob)
        assert by_creator.status_code == by_planner.status_code == 403
        assert by_creator.json()["code"] == by_planner.json()["code"] == "four_eyes"
        assert "made the plan" in by_planner.json()["detail"]
        approved = await authed.http.post(url, headers=carol)
        assert approved.status_code == 200 and approved.json()["status"] == "planned"


async def test_with_auth_off_four_eyes_compares_x_actor_names(client: httpx.AsyncClient) -> None:
    run_id, step_id = await _waiting_step(client, {"X-Actor": "alice"}, four_eyes=True)
    url = f"/v1/agent-runs/{run_id}/steps/{step_id}/approve"
    refused = await client.post(url, headers={"X-Actor": "alice"})
    assert refused.status_code == 403 and refused.json()["code"] == "four_eyes"
    assert (await client.post(url, headers={"X-Actor": "bob"})).status_code == 200
