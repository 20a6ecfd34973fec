"""Per-key limits: a request rate (429 `rate_limited` with Retry-After) and the runs a key may
have in flight (429 `too_many_runs`); both off by default."""

from __future__ import annotations

import asyncio

import httpx

from agent_engine.config import Settings
from agent_engine.domain.principals import Role
from tests.keys import authed_app, bearer

ONE_STEP = {"goal": "g", "steps": [{"step_type": "noop", "input_data": {}}]}


async def test_a_key_over_its_rate_gets_429_with_retry_after_and_others_are_unaffected(
    settings: Settings,
) -> None:
    # 0.01/s: the bucket does not refill during the test, so the third request must be refused.
    async with authed_app(settings, rate_limit_per_s=0.01, rate_limit_burst=2) as authed:
        busy = bearer(await authed.key("busy", Role.VIEWER))
        calm = bearer(await authed.key("calm", Role.VIEWER))
        answers = [await authed.http.get("/v1/agent-runs", headers=busy) for _ in range(3)]
        other = await authed.http.get("/v1/agent-runs", headers=calm)
        health = await authed.http.get("/healthz", headers=busy)
    assert [a.status_code for a in answers] == [200, 200, 429]
    limited = answers[2]
    assert limited.headers["content-type"].startswith("application/problem+json")
    assert limited.json()["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) == limited.json()["retry_after_s"] >= 1
    assert other.status_code == 200 and health.status_code == 200


async def test_a_key_with_its_maximum_of_runs_in_flight_may_create_another_once_one_is_over(
    settings: Settings,
) -> None:
    async with authed_app(settings, max_runs_in_flight=2) as authed:
        ops = bearer(await authed.key("ops", Role.OPERATOR))
        other = bearer(await authed.key("other", Role.OPERATOR))
        created = await asyncio.gather(
            *(authed.http.post("/v1/agent-runs", json=ONE_STEP, headers=ops) for _ in range(4))
        )
        statuses = sorted(r.status_code for r in created)
        assert statuses == [201, 201, 429, 429]  # concurrent creations cannot overshoot
        refused = next(r for r in created if r.status_code == 429)
        assert refused.json()["code"] == "too_many_runs"
        assert refused.json()["limit"] == 2 and refused.json()["in_flight"] == 2
        assert (
            await authed.http.post("/v1/agent-runs", json=ONE_STEP, headers=other)
        ).status_code == 201
        first = next(r for r in created if r.status_code == 201).json()["id"]
        await authed.http.post(f"/v1/agent-runs/{first}/cancel", headers=ops)
        again = await authed.http.post("/v1/agent-runs", json=ONE_STEP, headers=ops)
    assert again.status_code == 201, again.text


async def test_by_default_neither_limit_applies(client: httpx.AsyncClient) -> None:
    created = [await client.post("/v1/agent-runs", json=ONE_STEP) for _ in range(30)]
    assert {r.status_code for r in created} == {201}
