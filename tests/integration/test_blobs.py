"""Large payloads are stored once, content-addressed, on SQLite and PostgreSQL: two runs reading
the same big file store one blob; every reader (the API, ``$ref``, the event stream) sees the
whole value; hashes are the same whatever the threshold."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.domain.canonical import content_hash
from agent_engine.engine.context import build_context
from agent_engine.storage.tables import Blob

THRESHOLD = 1024
BIG = "".join(f"line {n}: the same large file, read by two runs\n" for n in range(400))


@asynccontextmanager
async def api(settings: Settings, threshold: int) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"blob_threshold_bytes": threshold}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


def workspace_with_big_file(root: Path) -> Path:
    workspace = root / "big"
    workspace.mkdir(exist_ok=True)
    (workspace / "big.txt").write_text(BIG, encoding="utf-8")
    return workspace


async def run_to_end(client: httpx.AsyncClient, workspace: Path) -> dict[str, Any]:
    steps = [
        {"step_type": "read_file", "input_data": {"path": "big.txt"}},
        {"step_type": "noop", "input_data": {"value": {"$ref": "steps.1.output.content"}}},
    ]
    body = {"goal": "read a big file", "workspace": str(workspace), "steps": steps}
    created = await client.post("/v1/agent-runs", json=body)
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    for _ in steps:
        executed = await client.post(f"/v1/agent-runs/{run_id}/execute")
        assert executed.status_code == 200, executed.text
    run = await client.get(f"/v1/agent-runs/{run_id}")
    assert run.status_code == 200
    data: dict[str, Any] = run.json()
    assert data["status"] == "completed", data
    return data


async def blob_count(settings: Settings) -> int:
    ctx = build_context(settings)
    try:
        async with ctx.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(Blob)) or 0)
    finally:
        await ctx.close()


async def stored_output(settings: Settings, step_id: str) -> Any:
    """A step's output_data as the database holds it (not expanded)."""
    ctx = build_context(settings)
    try:
        async with ctx.sessions() as session:
            query = text("SELECT output_data FROM steps WHERE id = :id")
            key = step_id if ctx.db.dialect.name == "postgresql" else step_id.replace("-", "")
            raw = await session.scalar(query, {"id": key})
            return json.loads(raw) if isinstance(raw, str) else raw
    finally:
        await ctx.close()


async def test_two_runs_reading_the_same_large_file_store_one_blob(
    settings: Settings, workspace_root: Path
) -> None:
    workspace = workspace_with_big_file(workspace_root)
    async with api(settings, THRESHOLD) as client:
        first = await run_to_end(client, workspace)
        second = await run_to_end(client, workspace)
    digest = hashlib.sha256(BIG.encode()).hexdigest()
    assert await blob_count(settings) == 1  # the file, its $ref'd copies, two runs: one blob
    stored = await stored_output(settings, first["steps"][0]["id"])
    assert stored["content"] == {"$blob": digest, "size": len(BIG.encode())}
    for run in (first, second):
        read, echoed = run["steps"]
        assert read["output_data"]["content"] == BIG  # served whole
        assert read["output_data"]["sha256"] == digest
        assert echoed["resolved_input"] == {"value": BIG}  # the $ref resolved to the whole text
        assert echoed["output_data"]["value"] == BIG
        assert read["output_hash"] == content_hash(read["output_data"])
        assert echoed["input_hash"] == content_hash(echoed["resolved_input"])


async def test_hashes_do_not_depend_on_the_threshold(
    settings: Settings, workspace_root: Path
) -> None:
    workspace = workspace_with_big_file(workspace_root)
    async with api(settings, THRESHOLD) as client:
        small = await run_to_end(client, workspace)
    async with api(settings, 1 << 30) as client:
        huge = await run_to_end(client, workspace)
    assert await blob_count(settings) == 1  # only the run with the small threshold made one
    inline = await stored_output(settings, huge["steps"][0]["id"])
    assert inline["content"] == BIG
    for kept, whole in zip(small["steps"], huge["steps"], strict=True):
        assert kept["output_hash"] == whole["output_hash"]
        assert kept["input_hash"] == whole["input_hash"]
        assert kept["output_data"] == whole["output_data"]


async def test_an_output_holding_blob_like_objects_reads_back_as_it_was(
    settings: Settings, workspace_root: Path
) -> None:
    # A step's own data may look like a reference: it must never be taken for one.
    lookalike = {"$blob": hashlib.sha256(BIG.encode()).hexdigest(), "size": 3, "$$blob": 1}
    async with api(settings, THRESHOLD) as client:
        body = {"goal": "g", "steps": [{"step_type": "noop", "input_data": {"value": lookalike}}]}
        created = await client.post("/v1/agent-runs", json=body)
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        assert (await client.post(f"/v1/agent-runs/{run_id}/execute")).status_code == 200
        (step,) = (await client.get(f"/v1/agent-runs/{run_id}")).json()["steps"]
    assert step["output_data"]["value"] == lookalike
    assert step["output_hash"] == content_hash(step["output_data"])
    stored = await stored_output(settings, step["id"])
    assert stored["value"] == {"$$blob": lookalike["$blob"], "size": 3, "$$$blob": 1}


async def test_the_event_stream_serves_a_blobbed_output_whole(
    settings: Settings, workspace_root: Path
) -> None:
    workspace = workspace_with_big_file(workspace_root)
    async with api(settings, THRESHOLD) as client:
        run = await run_to_end(client, workspace)
        response = await client.get(f"/v1/agent-runs/{run['id']}/events")
        assert response.status_code == 200, response.text
    completed = [
        json.loads(line[len("data:") :])
        for line in response.text.splitlines()
        if line.startswith("data:") and '"step.completed"' in line
    ]
    assert [event["output"]["content"] for event in completed[:1]] == [BIG]


async def test_a_worker_stores_blobs_and_its_next_step_reads_them_whole(
    settings: Settings, workspace_root: Path
) -> None:
    # The worker's path: records kept in memory across steps, group-committed writes.
    workspace = workspace_with_big_file(workspace_root)
    worker_settings = settings.model_copy(update={"embedded_worker": True, "worker_poll_s": 0.05})
    steps = [
        {"step_type": "read_file", "input_data": {"path": "big.txt"}},
        {"step_type": "noop", "input_data": {"value": {"$ref": "steps.1.output.content"}}},
        {"step_type": "noop", "input_data": {"value": {"$ref": "steps.2.output.value"}}},
    ]
    body = {"goal": "g", "workspace": str(workspace), "steps": steps, "auto_start": True}
    async with api(worker_settings, THRESHOLD) as client:
        created = await client.post("/v1/agent-runs", json=body)
        assert created.status_code == 201, created.text
        run = created.json()
        async with asyncio.timeout(60):
            while run["status"] not in {"completed", "failed", "cancelled"}:
                await asyncio.sleep(0.05)
                run = (await client.get(f"/v1/agent-runs/{run['id']}")).json()
    assert run["status"] == "completed", run
    assert [
        s["output_data"].get("value", s["output_data"].get("content")) for s in run["steps"]
    ] == [BIG] * 3
    assert await blob_count(settings) == 1
    stored = await stored_output(settings, run["steps"][2]["id"])
    assert stored["value"]["$blob"] == hashlib.sha256(BIG.encode()).hexdigest()
