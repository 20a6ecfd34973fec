"""A run's event stream can end when the run waits for a person (``until=waiting``)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.integration.test_events import noop, read_events, server

__all__ = ["server"]  # the fixture, used by name


def gated(value: int) -> dict[str, Any]:
    return {**noop(value), "requires_approval": True}


async def test_until_waiting_ends_at_the_approval_and_again_when_the_run_is_done(
    server: str,
) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        body = {"goal": "gated", "steps": [noop(1), gated(2), noop(3)], "auto_start": True}
        run = (await client.post("/v1/agent-runs", json=body)).json()
        url = f"/v1/agent-runs/{run['id']}/events?until=waiting"
        # (The bound is a failure bound only: a stream that did not end would wait for ever.)
        waiting = await asyncio.wait_for(read_events(client, url), timeout=30)
        current = (await client.get(f"/v1/agent-runs/{run['id']}")).json()
        assert current["status"] == "awaiting_approval"
        audit = (await client.get(f"/v1/agent-runs/{run['id']}/audit")).json()["events"]
        # Every event up to the wait, and the stream ended there.
        assert [e["id"] for e in waiting] == [a["seq"] for a in audit]
        assert "run.awaiting_approval" in [e["event"] for e in waiting]
        completed = [
            e["data"]["output"]["value"] for e in waiting if e["event"] == "step.completed"
        ]
        assert completed == [1]

        second = current["steps"][1]["id"]
        approved = await client.post(
            f"/v1/agent-runs/{run['id']}/steps/{second}/approve", json={"comment": "fine"}
        )
        assert approved.status_code == 200, approved.text
        rest = await read_events(client, url, headers={"Last-Event-ID": str(waiting[-1]["id"])})
    assert rest[0]["id"] == waiting[-1]["id"] + 1
    assert rest[-1]["event"] == "run.completed"
    completed = [e["data"]["output"]["value"] for e in rest if e["event"] == "step.completed"]
    assert completed == [2, 3]


async def test_until_finished_is_the_default_and_an_unknown_until_is_refused(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        body = {"goal": "plain", "steps": [noop(1)], "auto_start": True}
        run = (await client.post("/v1/agent-runs", json=body)).json()
        finished = await read_events(client, f"/v1/agent-runs/{run['id']}/events?until=finished")
        default = await read_events(client, f"/v1/agent-runs/{run['id']}/events")
        bad = await client.get(f"/v1/agent-runs/{run['id']}/events?until=soon")
    assert finished == default
    assert finished[-1]["event"] == "run.completed"
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    problem = bad.json()
    assert problem["code"] == "validation_error"
    assert [e["field"] for e in problem["errors"]] == ["until"]


async def test_until_waiting_ends_when_the_run_failed(server: str) -> None:
    """A failed run waits for a person too (to resume, retry or cancel it); a stream that ends
    only at the end would stay open."""
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        failing = {**noop(1, fail_attempts=5), "retry_policy": {"max_attempts": 1}}
        body = {"goal": "fails", "steps": [failing, noop(2)], "auto_start": True}
        run = (await client.post("/v1/agent-runs", json=body)).json()
        url = f"/v1/agent-runs/{run['id']}/events?until=waiting"
        events = await asyncio.wait_for(read_events(client, url), timeout=30)
        current = (await client.get(f"/v1/agent-runs/{run['id']}")).json()
    assert current["status"] == "failed"
    assert events[-1]["event"] == "run.failed"
