"""Listing runs with filters and cursor pagination; health endpoints."""

from __future__ import annotations

import httpx

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.storage.migrations import head_revision
from tests.backends import one_backend
from tests.conftest import noop_plan
from tests.databases import PostgresServer


async def test_cursor_pagination_visits_every_run_once_newest_first(
    client: httpx.AsyncClient,
) -> None:
    created = []
    for n in range(7):
        created.append((await client.post("/v1/agent-runs", json={"goal": f"g{n}"})).json()["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/agent-runs", params=params)).json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))


async def test_status_filter(client: httpx.AsyncClient) -> None:
    planned = (
        await client.post("/v1/agent-runs", json={"goal": "p", "steps": noop_plan(1)})
    ).json()
    created = (await client.post("/v1/agent-runs", json={"goal": "c"})).json()
    only_planned = (await client.get("/v1/agent-runs", params={"status": "planned"})).json()
    assert [r["id"] for r in only_planned["items"]] == [planned["id"]]
    both = (await client.get("/v1/agent-runs?status=planned,created")).json()
    assert {r["id"] for r in both["items"]} == {planned["id"], created["id"]}
    repeated = (await client.get("/v1/agent-runs?status=planned&status=created")).json()
    assert len(repeated["items"]) == 2
    none = (await client.get("/v1/agent-runs", params={"status": "completed"})).json()
    assert none == {"items": [], "next_cursor": None}


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = (await client.get("/readyz")).json()
    assert ready["status"] == "ready"
    assert ready["schema_revision"] == head_revision()


async def test_openapi_documents_every_endpoint(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = set(spec["paths"])
    assert {
        "/v1/agent-runs",
        "/v1/agent-runs/{run_id}",
        "/v1/agent-runs/{run_id}/execute",
        "/v1/agent-runs/{run_id}/steps",
        "/v1/agent-runs/{run_id}/steps/{step_id}/approve",
        "/v1/agent-runs/{run_id}/steps/{step_id}/reject",
        "/v1/agent-runs/{run_id}/cancel",
        "/v1/agent-runs/{run_id}/audit",
        "/v1/agent-runs/{run_id}/cost",
        "/healthz",
        "/readyz",
    } <= paths
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/redoc")).status_code == 200


@one_backend("postgres", "needs a PostgreSQL database this test may drop")
async def test_lost_database_is_a_503_problem_not_a_500(
    settings: Settings, postgres_server: PostgresServer | None
) -> None:
    assert postgres_server is not None  # the postgres parameter skips without a server
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        assert (await client.get("/v1/agent-runs")).status_code == 200
        name = settings.database_url.rsplit("/", 1)[1]
        await postgres_server.drop_database(name)
        response = await client.get("/v1/agent-runs")
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "database_unavailable"
        assert response.headers["retry-after"] == "1"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        checks = {check["name"]: check["status"] for check in ready.json()["checks"]}
        assert checks["database"] == "failed"
        assert ready.json()["detail"].startswith("database: database unreachable")
