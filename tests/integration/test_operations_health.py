"""Readiness names what is wrong (503 with a per-check status), and ``GET /v1/workers`` shows a
live worker with its heartbeat and the steps it is running."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from tests.backends import one_backend


def checks_of(body: dict[str, Any]) -> dict[str, str]:
    return {check["name"]: check["status"] for check in body["checks"]}


async def test_readyz_is_503_naming_the_migrations_when_the_database_is_not_migrated(
    tmp_path: Path, workspace_root: Path
) -> None:
    bare = tmp_path / "not-migrated.db"
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{bare}",
        auto_migrate=False,
        embedded_worker=False,
        workspace_roots=[workspace_root],
        _env_file=None,  # type: ignore[call-arg]
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        response = await http.get("/readyz")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "not_ready"
    assert checks_of(body) == {
        "database": "ok",
        "migrations": "failed",
        "listen": "skipped",
        "router": "skipped",
    }
    assert "migrations: database schema at None" in body["detail"]


async def test_readyz_lists_every_check_when_ready(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    checks = checks_of(response.json())
    assert checks["database"] == checks["migrations"] == "ok"
    # LISTEN is checked on PostgreSQL only; the router runs in-process here.
    assert checks["listen"] in {"ok", "skipped"} and checks["router"] == "skipped"


@one_backend("sqlite", "the router check does not involve the database")
async def test_readyz_names_the_router_when_its_service_is_unreachable(
    settings: Settings,
) -> None:
    # A loopback port nothing listens on: bind one, then close it.
    server = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    app = create_app(settings.model_copy(update={"router_url": f"http://127.0.0.1:{port}"}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert checks_of(response.json())["router"] == "failed"
    assert "router: router unreachable" in response.json()["detail"]


async def test_workers_lists_the_live_worker_with_its_heartbeat_and_steps_in_flight(
    settings: Settings,
) -> None:
    app = create_app(settings.model_copy(update={"embedded_worker": True, "worker_concurrency": 3}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        slow = {"step_type": "noop", "input_data": {"sleep_s": 30}, "depends_on": []}
        body = {"goal": "slow", "steps": [slow, slow]}  # side by side
        run = (await http.post("/v1/agent-runs", json={**body, "auto_start": True})).json()
        deadline = time.monotonic() + 10
        while True:
            workers = (await http.get("/v1/workers")).json()["items"]
            if workers and workers[0]["steps_in_flight"] == 2:
                break
            assert time.monotonic() < deadline, workers
            await asyncio.sleep(0.05)
        (worker,) = workers
        await http.post(f"/v1/agent-runs/{run['id']}/cancel")
    assert worker["alive"] is True and worker["slots"] == 3
    assert worker["host"] and worker["id"].startswith(worker["host"])
    beat = datetime.fromisoformat(worker["last_heartbeat_at"])
    assert abs(datetime.now(beat.tzinfo) - beat) < timedelta(minutes=5)
    assert datetime.fromisoformat(worker["started_at"]) <= beat
