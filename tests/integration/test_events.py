"""Server-Sent Events over a real HTTP server: order, live delivery, resumption."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from tests.processes import free_port


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    """The API with an embedded worker on a loopback port, served by uvicorn in a thread."""
    app = create_app(settings.model_copy(update={"embedded_worker": True, "worker_poll_s": 0.2}))
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=15)


async def read_events(
    client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        async for line in response.aiter_lines():
            if line.startswith("id:"):
                current["id"] = int(line[3:].strip())
            elif line.startswith("event:"):
                current["event"] = line[6:].strip()
            elif line.startswith("data:"):
                current["data"] = json.loads(line[5:].strip())
            elif not line and "data" in current:
                events.append(current)
                current = {}
    return events


def noop(value: int, **extra: Any) -> dict[str, Any]:
    return {"step_type": "noop", "input_data": {"value": value, **extra}}


async def test_run_stream_delivers_every_event_in_order_and_ends_when_done(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        body = {"goal": "sse", "steps": [noop(1, sleep_s=0.3), noop(2)], "auto_start": True}
        run = (await client.post("/v1/agent-runs", json=body)).json()
        events = await read_events(client, f"/v1/agent-runs/{run['id']}/events")
        audit = (await client.get(f"/v1/agent-runs/{run['id']}/audit")).json()["events"]
    assert [e["id"] for e in events] == [a["seq"] for a in audit]
    assert [e["event"] for e in events] == [a["type"] for a in audit]
    assert events[-1]["event"] == "run.completed"
    completed = [e for e in events if e["event"] == "step.completed"]
    assert [e["data"]["output"]["value"] for e in completed] == [1, 2]


async def test_reconnect_with_last_event_id_loses_nothing(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        body = {"goal": "sse", "steps": [noop(1), noop(2), noop(3)], "auto_start": True}
        run = (await client.post("/v1/agent-runs", json=body)).json()
        everything = await read_events(client, f"/v1/agent-runs/{run['id']}/events")
        cut = everything[4]["id"]
        rest = await read_events(
            client, f"/v1/agent-runs/{run['id']}/events", headers={"Last-Event-ID": str(cut)}
        )
    assert [e["id"] for e in rest] == [e["id"] for e in everything if e["id"] > cut]


async def test_live_events_arrive_while_the_run_progresses(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        run = (await client.post("/v1/agent-runs", json={"goal": "g", "steps": [noop(1)]})).json()
        reader = asyncio.create_task(read_events(client, f"/v1/agent-runs/{run['id']}/events"))
        await asyncio.sleep(0.3)
        assert not reader.done()  # the run has not finished: the stream stays open
        await client.post(f"/v1/agent-runs/{run['id']}/start")
        events = await asyncio.wait_for(reader, timeout=15)
    assert events[-1]["event"] == "run.completed"


async def test_global_stream_filters_by_type(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        run = (await client.post("/v1/agent-runs", json={"goal": "g", "steps": [noop(1)]})).json()
        collected: list[dict[str, Any]] = []

        async def collect() -> None:
            async with client.stream("GET", "/v1/events?type=run.") as response:
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        collected.append(json.loads(line[5:]))
                        if collected[-1]["type"] == "run.completed":
                            return

        task = asyncio.create_task(collect())
        await client.post(f"/v1/agent-runs/{run['id']}/start")
        await asyncio.wait_for(task, timeout=15)
    assert all(e["type"].startswith("run.") for e in collected)
    assert [e["type"] for e in collected][-2:] == ["run.running", "run.completed"]
    ids = [e["id"] for e in collected]
    assert ids == sorted(ids)


async def test_unknown_run_and_bad_last_event_id(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        missing = await client.get("/v1/agent-runs/00000000-0000-0000-0000-000000000000/events")
        assert missing.status_code == 404
        run = (await client.post("/v1/agent-runs", json={"goal": "g"})).json()
        bad = await client.get(
            f"/v1/agent-runs/{run['id']}/events", headers={"Last-Event-ID": "abc"}
        )
        assert bad.status_code == 422
