"""Large plans never sit in hot tables, on SQLite and PostgreSQL: an edit whose new content is
over the blob limit is stored with references in the step's planned input, its diff preview,
the plan version and what each approver was shown; every reader (the API, the plan endpoints,
the executor, audit verify, a bundle, a replay) still sees the whole documents, and the blob
collection keeps what they reference."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.domain.blob_refs import referenced_blobs
from agent_engine.domain.canonical import content_hash
from agent_engine.domain.clock import utcnow
from agent_engine.engine.bundles import verify_bundle
from agent_engine.engine.context import build_context
from agent_engine.engine.event_stream import StreamFilter, follow_all
from agent_engine.storage.blob_collection import collect_blobs
from tests.databases import clone_sqlite
from tests.forking import run_to_end

THRESHOLD = 1024
NEW_CONTENT = "".join(f"generated line {n}: {'y' * 40}\n" for n in range(600))  # ~36 KB
DIGEST = hashlib.sha256(NEW_CONTENT.encode()).hexdigest()


@asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        settings.model_copy(update={"blob_threshold_bytes": THRESHOLD, "embedded_worker": False})
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


async def planned_big_edit(client: httpx.AsyncClient, workspace: Path) -> str:
    """A run whose plan writes NEW_CONTENT to a file, its plan approved, nothing executed."""
    steps = [
        {
            "step_type": "edit_file",
            "input_data": {"path": "big.txt", "operation": "write", "content": NEW_CONTENT},
        },
        {"step_type": "noop", "input_data": {"value": "after the edit"}},
    ]
    body = {
        "goal": "write a large generated file",
        "workspace": str(workspace),
        "steps": steps,
        "plan_approval": True,
    }
    created = await client.post("/v1/agent-runs", json=body)
    assert created.status_code == 201, created.text
    run_id = str(created.json()["id"])
    assert created.json()["status"] == "awaiting_approval"  # the explicit plan waits for a person
    plan = await client.post(f"/v1/agent-runs/{run_id}/plan/approve", headers={"X-Actor": "lead"})
    assert plan.status_code == 200, plan.text
    return run_id


async def finished_big_edit(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """The planned run executed: its edit shown (the diff whole), approved, then run to the end."""
    gated = (await client.post(f"/v1/agent-runs/{run_id}/execute")).json()
    edit = gated["steps"][0]
    assert edit["status"] == "awaiting_approval", gated
    assert NEW_CONTENT.splitlines()[-1] in json.dumps(edit["preview"])  # the diff, whole
    approved = await client.post(
        f"/v1/agent-runs/{run_id}/steps/{edit['id']}/approve", headers={"X-Actor": "reviewer"}
    )
    assert approved.status_code == 200, approved.text
    run = await run_to_end(client, run_id)
    assert run["status"] == "completed", run
    return run


async def global_event(settings: Settings, run_id: str, kind: str) -> dict[str, Any]:
    """The run's first event of type ``kind`` as the global stream (``/v1/events``, which
    never ends) serves it."""
    ctx = build_context(settings)
    try:
        stream = follow_all(ctx, 0, StreamFilter(run_id=uuid.UUID(run_id), type_prefix=kind))
        return await asyncio.wait_for(anext(stream), timeout=30)
    finally:
        await ctx.close()


async def stored_documents(settings: Settings, run_id: str) -> dict[str, list[str]]:
    """The run's documents as the database holds them (JSON text, not expanded), by column."""
    ctx = build_context(settings)
    queries = {
        "steps.input_data": "SELECT input_data FROM steps WHERE run_id = :id",
        "steps.preview": "SELECT preview FROM steps WHERE run_id = :id",
        "plans.document": "SELECT document FROM plans WHERE run_id = :id",
        "approvals.shown": "SELECT shown FROM approvals WHERE run_id = :id",
        "audit_events.payload": "SELECT payload FROM audit_events WHERE run_id = :id",
        "llm_calls.request": "SELECT request FROM llm_calls WHERE run_id = :id",
    }
    try:
        key = run_id if ctx.db.dialect.name == "postgresql" else run_id.replace("-", "")
        found: dict[str, list[str]] = {}
        async with ctx.sessions() as session:
            for name, query in queries.items():
                values = (await session.scalars(text(query), {"id": key})).all()
                found[name] = [v if isinstance(v, str) else json.dumps(v) for v in values if v]
        return found
    finally:
        await ctx.close()


async def test_a_large_plan_is_stored_as_blobs_and_every_reader_sees_it_whole(
    settings: Settings, workspace_root: Path
) -> None:
    workspace = workspace_root / "generated"
    workspace.mkdir()
    async with api(settings) as client:
        run_id = await planned_big_edit(client, workspace)
        run = await finished_big_edit(client, run_id)
        plan = (await client.get(f"/v1/agent-runs/{run_id}/plan")).json()
        verified = (await client.get(f"/v1/agent-runs/{run_id}/audit/verify")).json()
        audit = (await client.get(f"/v1/agent-runs/{run_id}/audit")).json()
        streamed = await client.get(f"/v1/agent-runs/{run_id}/events")
        bundle = (await client.get(f"/v1/agent-runs/{run_id}/export")).json()
        made = await client.post(f"/v1/agent-runs/{run_id}/replay", json={"mode": "verify"})
        assert made.status_code == 201, made.text
        replay = await run_to_end(client, made.json()["id"])

    # Stored: a reference in each column, the content nowhere inline.
    stored = await stored_documents(settings, run_id)
    blobbed = ("steps.input_data", "steps.preview", "plans.document", "approvals.shown")
    for column in (*blobbed, "audit_events.payload"):
        assert any(DIGEST in value for value in stored[column]), column
        assert all(len(value) < 4 * THRESHOLD for value in stored[column]), column
    assert len(stored["approvals.shown"]) == 2  # the plan's and the edit's decisions
    assert all(len(value) < 4 * THRESHOLD for value in stored["llm_calls.request"])

    # Read: whole everywhere, hashes of the whole documents.
    assert (workspace / "big.txt").read_text(encoding="utf-8") == NEW_CONTENT
    edit = run["steps"][0]
    assert edit["input_data"]["content"] == NEW_CONTENT
    assert edit["input_hash"] == content_hash(edit["resolved_input"])
    assert plan["document"]["steps"][0]["input_data"]["content"] == NEW_CONTENT
    assert plan["plan_hash"] == content_hash(plan["document"])
    assert verified["valid"] is True, verified["first_broken"]
    assert audit["chain_valid"] is True
    (created,) = [e for e in audit["events"] if e["type"] == "plan.recorded"]
    assert created["payload"]["plan"] == plan["document"]
    assert streamed.status_code == 200, streamed.text
    events = [
        json.loads(line[len("data:") :])
        for line in streamed.text.splitlines()
        if line.startswith("data:")
    ]
    assert next(e for e in events if e["type"] == "plan.recorded")["payload"] == created["payload"]
    assert (await global_event(settings, run_id, "plan.recorded"))["payload"] == created["payload"]
    assert replay["status"] == "completed", replay
    assert [s["status"] for s in replay["steps"]] == ["completed", "completed"]
    assert [s["output_hash"] for s in replay["steps"]] == [s["output_hash"] for s in run["steps"]]

    # A bundle carries the documents as stored, beside their blobs, and verifies offline.
    assert bundle["version"] == 3
    carried = {blob["hash"] for blob in bundle["blobs"]}
    sections = (
        ("plans", "document"),
        ("approvals", "shown"),
        ("steps", "input_data"),
        ("audit_events", "payload"),
    )
    for section, column in sections:
        referenced = referenced_blobs([row[column] for row in bundle[section]])
        assert DIGEST in referenced and referenced <= carried, section
    assert verify_bundle(bundle)["valid"] is True
    lacking = {**bundle, "blobs": [b for b in bundle["blobs"] if b["hash"] != DIGEST]}
    assert verify_bundle(lacking)["valid"] is False


async def test_the_blob_collection_keeps_the_blobs_a_plan_references(
    settings: Settings, workspace_root: Path
) -> None:
    """Before the edit runs, only the planned input, the plan version and the plan's approval
    reference the new content: a collection must keep it for the edit to write it."""
    workspace = workspace_root / "collected"
    workspace.mkdir()
    async with api(settings) as client:
        run_id = await planned_big_edit(client, workspace)
    ctx = build_context(settings)
    try:
        # Every blob is past any grace period: only what is referenced survives.
        await collect_blobs(ctx.sessions, utcnow() + timedelta(days=1), batch_rows=100)
        async with ctx.sessions() as session:
            kept = (await session.scalars(text("SELECT hash FROM blobs"))).all()
    finally:
        await ctx.close()
    assert DIGEST in kept
    async with api(settings) as client:
        run = await finished_big_edit(client, run_id)
        verified = (await client.get(f"/v1/agent-runs/{run_id}/audit/verify")).json()
    assert run["steps"][0]["input_data"]["content"] == NEW_CONTENT
    assert (workspace / "big.txt").read_text(encoding="utf-8") == NEW_CONTENT
    assert verified["valid"] is True, verified["first_broken"]


async def test_a_bundle_of_a_large_plan_imports_elsewhere_and_verifies_there(
    settings: Settings, workspace_root: Path, tmp_path: Path, sqlite_template: Path
) -> None:
    workspace = workspace_root / "exported"
    workspace.mkdir()
    async with api(settings) as client:
        run_id = await planned_big_edit(client, workspace)
        await finished_big_edit(client, run_id)
        bundle = (await client.get(f"/v1/agent-runs/{run_id}/export")).json()
    elsewhere = settings.model_copy(
        update={"database_url": clone_sqlite(sqlite_template, tmp_path)}
    )
    async with api(elsewhere) as other:
        imported = await other.post("/v1/agent-runs/import", json=bundle)
        assert imported.status_code == 201, imported.text
        verified = (await other.get(f"/v1/agent-runs/{run_id}/audit/verify")).json()
        plan = (await other.get(f"/v1/agent-runs/{run_id}/plan")).json()
        audit = (await other.get(f"/v1/agent-runs/{run_id}/audit")).json()
    assert verified["valid"] is True, verified["first_broken"]
    assert plan["document"]["steps"][0]["input_data"]["content"] == NEW_CONTENT
    assert audit["chain_valid"] is True
    stored = await stored_documents(elsewhere, run_id)
    assert any(DIGEST in value for value in stored["audit_events.payload"])  # as it came
