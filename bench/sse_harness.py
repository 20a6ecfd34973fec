"""Live-event latency of our engine: a real API server (``agent-engine serve`` on loopback, with
its embedded worker) and an httpx client following ``GET /v1/agent-runs/{id}/events``.

Latency is the client's receive time minus the event's ``created_at``, which the engine stamps
inside the transaction that commits the event: it covers the rest of that transaction, the commit,
the notification, the server's re-read of the audit log and the HTTP hop.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from agent_engine.storage.migrations import upgrade
from bench.databases import BenchDatabase
from bench.processes import clean_env, logged_problems, worker_processes
from bench.results import StreamResult

SERVER_READY = "Application startup complete"
SUBSCRIBE_SETTLE_S = 0.2  # let the server subscribe before the run starts producing events
STREAM_TIMEOUT_S = 60.0


class EndpointMissingError(RuntimeError):
    """The server has no events endpoint (404)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _sse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """Decode a Server-Sent Events stream into the JSON bodies of its ``data`` fields."""
    data: list[str] = []
    async for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []


def _plan(steps: int) -> dict[str, Any]:
    return {
        "goal": "bench: live events",
        "steps": [{"step_type": "noop", "input_data": {"value": n}} for n in range(steps)],
        "auto_start": False,
    }


async def _follow_one(client: httpx.AsyncClient, steps: int) -> tuple[list[float], list[float]]:
    """Create a run, subscribe to its events, start it; (step.completed latencies, all)."""
    created = await client.post("/v1/agent-runs", json=_plan(steps))
    created.raise_for_status()
    run = created.json()
    url = f"/v1/agent-runs/{run['id']}/events"
    step_ms: list[float] = []
    all_ms: list[float] = []
    async with client.stream("GET", url, params={"after": run["audit_seq"]}) as response:
        if response.status_code == 404:
            raise EndpointMissingError(f"GET {url} answered 404")
        response.raise_for_status()

        async def start() -> None:
            await asyncio.sleep(SUBSCRIBE_SETTLE_S)
            (await client.post(f"/v1/agent-runs/{run['id']}/start")).raise_for_status()

        starter = asyncio.create_task(start())
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            async for body in _sse_events(response.aiter_lines()):
                latency = time.time() - datetime.fromisoformat(body["created_at"]).timestamp()
                all_ms.append(latency * 1000)
                if body["type"] == "step.completed":
                    step_ms.append(latency * 1000)
                if body["type"] in ("run.completed", "run.failed", "run.cancelled"):
                    break
        await starter
    return step_ms, all_ms


async def _follow(base_url: str, runs: int, steps: int) -> StreamResult:
    step_ms: list[float] = []
    all_ms: list[float] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as client:
        for index in range(runs + 1):  # the first run warms up and is not counted
            one_step, one_all = await _follow_one(client, steps)
            if index > 0:
                step_ms.extend(one_step)
                all_ms.extend(one_all)
    return StreamResult(step_ms, all_ms)


def measure_sse(db: BenchDatabase, *, runs: int, steps: int, log_dir: Path) -> StreamResult:
    """Event latency over SSE for ``runs`` runs of ``steps`` no-op steps, one at a time."""
    upgrade(db.engine_url)
    port = free_port()
    env = clean_env(
        AGENT_ENGINE_DATABASE_URL=db.engine_url,
        AGENT_ENGINE_AUTO_MIGRATE="false",
        AGENT_ENGINE_LOG_LEVEL="info",
    )
    argv = ["agent_engine", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with worker_processes(
        1, lambda _: argv, env=env, log_dir=log_dir, ready_marker=SERVER_READY
    ) as processes:
        try:
            result = asyncio.run(_follow(f"http://127.0.0.1:{port}", runs, steps))
        except EndpointMissingError as exc:
            return StreamResult([], skipped=f"SSE endpoint missing: {exc}")
        problems = [p for p in logged_problems(processes) if "GET /" not in p]
    return StreamResult(result.step_ms, result.all_ms, problems=problems)
