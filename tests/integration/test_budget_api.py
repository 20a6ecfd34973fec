"""Budgets over HTTP: a run that hits its budget pauses (never fails), a raise resumes it where
it stopped and it completes with a total equal to its calls and to what the provider reported;
planning that does not fit waits too; bad budgets are refused clearly; monthly budgets of
projects and keys are set, listed and removed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from tests.backends import one_backend
from tests.budget_flow import call_cost, metered_server, metered_settings
from tests.fakes.llm_servers import FakeLLMServer


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with metered_server() as running:
        yield running


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


@pytest.fixture
async def metered(
    settings: Settings, tmp_path: Path, server: FakeLLMServer
) -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client(metered_settings(settings, tmp_path, server)):
        yield http


@pytest.fixture
async def offline(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client(settings):
        yield http


def _analyses(count: int) -> list[dict[str, Any]]:
    return [{"step_type": "analyze", "input_data": {"instruction": "Say ok."}}] * count


async def _create(http: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await http.post("/v1/agent-runs", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _execute(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await http.post(f"/v1/agent-runs/{run_id}/execute")
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


async def _cost_of_one_call(http: httpx.AsyncClient) -> Decimal:
    run = await _create(http, goal="calibrate", steps=_analyses(1))
    await _execute(http, run["id"])
    cost = (await http.get(f"/v1/agent-runs/{run['id']}/cost")).json()
    return Decimal(str(cost["total_cost_usd"]))


async def test_run_that_hits_its_budget_pauses_and_a_raise_resumes_it_to_completion(
    metered: httpx.AsyncClient, server: FakeLLMServer
) -> None:
    cost = await _cost_of_one_call(metered)
    sent_before = len(server.requests)
    run = await _create(metered, goal="three calls", steps=_analyses(3), budget_usd=str(cost))
    first = await _execute(metered, run["id"])
    assert first["steps"][0]["status"] == "completed"
    paused = await _execute(metered, run["id"])
    assert paused["status"] == "awaiting_approval"
    step = paused["steps"][1]
    assert step["status"] == "awaiting_approval" and step["error"] is None
    shown = step["budget_pause"]
    assert shown["scope"] == "run" and Decimal(shown["needed_usd"]) == cost
    assert Decimal(shown["spent_usd"]) == cost and Decimal(shown["reserved_usd"]) == 0
    assert len(server.requests) - sent_before == 1  # the paused call was never sent

    raised = await metered.patch(
        f"/v1/agent-runs/{run['id']}/budget",
        json={"budget_usd": str(cost * 3), "reason": "the analysis is worth it"},
        headers={"X-Actor": "carol"},
    )
    assert raised.status_code == 200, raised.text
    assert raised.json()["resumed_steps"] == [2]
    for _ in range(3):
        state = await _execute(metered, run["id"])
        if state["status"] == "completed":
            break
    assert state["status"] == "completed"
    assert len(server.requests) - sent_before == 3

    events = (await metered.get(f"/v1/agent-runs/{run['id']}/audit")).json()["events"]
    change = next(e for e in events if e["type"] == "budget.changed")
    assert change["actor"] == "carol" and change["payload"]["reason"] == "the analysis is worth it"
    assert Decimal(change["payload"]["after"]["budget_usd"]) == cost * 3
    summary = (await metered.get(f"/v1/agent-runs/{run['id']}/cost")).json()
    total = Decimal(str(summary["total_cost_usd"]))
    assert total == cost * 3 and summary["consistent"] is True
    reported = sum(
        call_cost(r["usage"]["prompt_tokens"], r["usage"]["completion_tokens"])
        for r in (request_usage(received) for received in server.requests[sent_before:])
    )
    assert total == reported  # the provider's own usage at the catalog's price


def request_usage(received: Any) -> dict[str, Any]:
    """The usage the metered server reported for one request (its reply is a pure function)."""
    from tests.budget_flow import worst_case_reply

    body: dict[str, Any] = worst_case_reply(received).body
    return body


async def test_planning_that_does_not_fit_waits_and_a_raise_plans_the_run(
    offline: httpx.AsyncClient,
) -> None:
    run = await _create(offline, goal="Summarize the project", budget_tokens=10)
    waiting = await _execute(offline, run["id"])
    assert waiting["status"] == "awaiting_approval" and waiting["steps"] == []
    assert waiting["budget_pause"]["measure"] == "tokens"
    assert waiting["budget_pause"]["limit_tokens"] == 10
    raised = await offline.patch(
        f"/v1/agent-runs/{run['id']}/budget", json={"budget_tokens": None, "reason": "no cap"}
    )
    assert raised.status_code == 200, raised.text
    assert raised.json()["status"] == "planning"
    planned = await _execute(offline, run["id"])
    assert planned["plan_version"] == 1 and planned["steps"]
    assert planned["budget_pause"] is None


@one_backend("sqlite", "the body is refused by its model before the database is read")
@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"budget_usd": "-1", "reason": "r"}, "budget_usd"),
        ({"budget_usd": "lots", "reason": "r"}, "budget_usd"),
        ({"budget_tokens": -5, "reason": "r"}, "budget_tokens"),
        ({"reason": "r"}, "budget_usd, budget_tokens"),
        ({"budget_usd": "1"}, "reason"),
    ],
)
async def test_bad_budget_changes_are_refused_with_a_clear_422(
    offline: httpx.AsyncClient, body: dict[str, Any], where: str
) -> None:
    run = await _create(offline, goal="g", steps=[{"step_type": "noop", "input_data": {}}])
    response = await offline.patch(f"/v1/agent-runs/{run['id']}/budget", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert where.split(",")[0] in response.text


async def test_budget_below_spent_is_422_and_a_finished_run_is_409(
    metered: httpx.AsyncClient,
) -> None:
    cost = await _cost_of_one_call(metered)
    run = await _create(metered, goal="g", steps=_analyses(2), budget_usd=str(cost * 5))
    await _execute(metered, run["id"])
    below = await metered.patch(
        f"/v1/agent-runs/{run['id']}/budget", json={"budget_usd": str(cost / 2), "reason": "r"}
    )
    assert below.status_code == 422 and below.json()["code"] == "budget_below_spent"
    assert below.json()["spent_usd"] is not None and "spent" in below.json()["detail"]
    await _execute(metered, run["id"])  # the last step: the run completes
    finished = await metered.patch(
        f"/v1/agent-runs/{run['id']}/budget", json={"budget_usd": "9", "reason": "r"}
    )
    assert finished.status_code == 409 and finished.json()["code"] == "run_finished"
    missing = await metered.patch(
        "/v1/agent-runs/00000000-0000-0000-0000-000000000000/budget",
        json={"budget_usd": "9", "reason": "r"},
    )
    assert missing.status_code == 404


async def test_monthly_budgets_are_set_listed_and_removed(offline: httpx.AsyncClient) -> None:
    put = await offline.put("/v1/budgets/project/web-shop", json={"limit_usd": "25"})
    assert put.status_code == 200, put.text
    assert put.json()["remaining_usd"] == 25 and len(put.json()["period"]) == 7
    listed = (await offline.get("/v1/budgets")).json()
    assert [(b["scope"], b["subject"]) for b in listed] == [("project", "web-shop")]
    assert (await offline.put("/v1/budgets/project/x", json={"limit_usd": "-3"})).status_code == 422
    assert (await offline.put("/v1/budgets/team/x", json={"limit_usd": "3"})).status_code == 422
    assert (await offline.delete("/v1/budgets/project/web-shop")).status_code == 204
    assert (await offline.get("/v1/budgets/project/web-shop")).status_code == 404
    assert (await offline.delete("/v1/budgets/project/web-shop")).status_code == 404


async def test_a_plan_estimated_over_its_budget_is_warned_about_or_refused(
    metered: httpx.AsyncClient,
) -> None:
    warned = await _create(metered, goal="g", steps=_analyses(3), budget_usd="0.000001")
    warning = warned["options"]["budget_warning"]
    assert Decimal(warning["estimated_cost_usd"]) > Decimal("0.000001")
    assert warning["unestimated_steps"] == []
    plan = (await metered.get(f"/v1/agent-runs/{warned['id']}/plan")).json()
    assert all(Decimal(e["estimated_cost_usd"]) > 0 for e in plan["step_estimates"])
    events = (await metered.get(f"/v1/agent-runs/{warned['id']}/audit")).json()["events"]
    assert "budget.estimate_exceeds" in [e["type"] for e in events]
    refused = await metered.post(
        "/v1/agent-runs",
        json={
            "goal": "g",
            "steps": _analyses(3),
            "budget_usd": "0.000001",
            "over_budget": "refuse",
        },
    )
    assert refused.status_code == 422 and refused.json()["code"] == "estimate_over_budget"
    within = await _create(metered, goal="g", steps=_analyses(1), budget_usd="5")
    assert "budget_warning" not in within["options"]
