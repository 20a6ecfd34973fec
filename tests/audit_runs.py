"""Runs whose audit covers every kind of row (an LLM call, an approval, a $ref), and direct
access to the database an attacker with the file or a superuser login would have."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from agent_engine.storage.database import create_engine


async def covered_run(client: httpx.AsyncClient, workspace_root: Path) -> dict[str, Any]:
    """A completed run: an analyze step (one LLM call), an approved step, and a step whose
    input is the approved step's output by ``$ref``."""
    workspace = workspace_root / "project"
    workspace.mkdir(exist_ok=True)
    (workspace / "app.py").write_text("print('hello')\n")
    created = await client.post(
        "/v1/agent-runs",
        json={
            "goal": "look at the project",
            "workspace": str(workspace),
            "steps": [
                {"step_type": "analyze", "input_data": {"instruction": "what does app.py do"}},
                {"step_type": "noop", "input_data": {"value": "gated"}, "requires_approval": True},
                {"step_type": "noop", "input_data": {"value": {"$ref": "steps.2.output.value"}}},
            ],
        },
        headers={"X-Actor": "alice"},
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    for _ in range(6):
        state = (await client.post(f"/v1/agent-runs/{run_id}/execute")).json()
        if state.get("status") == "completed":
            break
        waiting = [s for s in state.get("steps", []) if s["status"] == "awaiting_approval"]
        if waiting:
            approved = await client.post(
                f"/v1/agent-runs/{run_id}/steps/{waiting[0]['id']}/approve",
                headers={"X-Actor": "bob"},
            )
            assert approved.status_code == 200, approved.text
    run: dict[str, Any] = (await client.get(f"/v1/agent-runs/{run_id}")).json()
    assert run["status"] == "completed", run
    return run


async def verdict(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/agent-runs/{run_id}/audit/verify")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


@asynccontextmanager
async def raw_database(url: str) -> AsyncIterator[AsyncConnection]:
    """A connection to the database itself, outside the engine (committed at the end)."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            yield connection
    finally:
        await engine.dispose()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


async def drop_append_only(connection: AsyncConnection, url: str) -> None:
    """What an attacker with the database does first: take the append-only triggers away."""
    if is_sqlite(url):
        for name in ("audit_events_no_update", "audit_events_no_delete", "audit_events_no_replace"):
            await connection.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
    else:
        await connection.execute(
            text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete")
        )


async def raw_run_id(connection: AsyncConnection, run_id: str) -> Any:
    """The run id as the database stores it (hex text on SQLite, uuid on PostgreSQL)."""
    return (
        await connection.execute(
            text("SELECT id FROM agent_runs WHERE CAST(id AS TEXT) IN (:a, :b)"),
            {"a": run_id, "b": run_id.replace("-", "")},
        )
    ).scalar_one()
