"""Bundles: a run exported from one instance verifies offline (the real CLI, no database) and
imports into another backend, where it verifies too; a changed byte is found with its place."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.engine.bundles import verify_bundle
from tests.audit_runs import covered_run, verdict
from tests.backends import one_backend
from tests.databases import PostgresServer, clone_sqlite
from tests.forking import run_to_end
from tests.integration.test_cli import run_command


@asynccontextmanager
async def _serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


async def _export(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/agent-runs/{run_id}/export")
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    return bundle


def _one_byte_changed(bundle: dict[str, Any]) -> bytes:
    """The bundle's text with one byte of step 2's recorded output changed."""
    raw = json.dumps(bundle).encode()
    needle = b'"value": "gated", "attempt": 1'
    at = raw.index(needle) + len(b'"value": "g')
    return raw[:at] + b"G" + raw[at + 1 :]


async def test_an_exported_bundle_verifies_offline_and_a_changed_byte_is_named(
    client: httpx.AsyncClient, workspace_root: Path, tmp_path: Path
) -> None:
    run = await covered_run(client, workspace_root)
    bundle = await _export(client, run["id"])
    assert bundle["format"] == "agent-engine-run-bundle" and bundle["run"]["id"] == run["id"]
    assert len(bundle["steps"]) == 3 and len(bundle["llm_calls"]) == 1
    assert len(bundle["approvals"]) == 1 and len(bundle["plans"]) == 1
    assert len(bundle["audit_events"]) == bundle["run"]["audit_seq"]
    assert verify_bundle(bundle)["valid"] is True
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(bundle))
    bad.write_bytes(_one_byte_changed(bundle))
    broken = verify_bundle(json.loads(bad.read_bytes()))["first_broken"]
    assert broken["kind"] == "step_output_changed" and broken["step_number"] == 2
    # The real command, with no database anywhere near it.
    nowhere = {"AGENT_ENGINE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'absent' / 'x.db'}"}
    ok = run_command("audit", "verify", "--bundle", str(good), cwd=tmp_path, **nowhere)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"ok: run {run['id']}: {len(bundle['audit_events'])} events, " + (
        "signature missing"
    )
    failed = run_command("audit", "verify", "--bundle", str(bad), cwd=tmp_path, **nowhere)
    assert failed.returncode == 1
    (line,) = failed.stdout.strip().splitlines()
    assert line.startswith(f"error: run {run['id']}: step_output_changed at seq ")
    assert ", step 2:" in line
    assert not (tmp_path / "absent").exists()


async def test_a_value_no_event_covers_changed_fails_by_the_bundle_hash(
    client: httpx.AsyncClient, workspace_root: Path
) -> None:
    run = await covered_run(client, workspace_root)
    bundle = await _export(client, run["id"])
    bundle["steps"][0]["latency_ms"] = 0.5
    broken = verify_bundle(bundle)["first_broken"]
    assert broken["kind"] == "bundle_changed"
    assert verify_bundle({"format": "something else"})["first_broken"]["kind"] == "bundle_invalid"


@one_backend("sqlite", "one direction is enough: the SQLite instance exports")
async def test_a_bundle_from_sqlite_imports_into_postgresql_and_verifies_there(
    settings: Settings,
    workspace_root: Path,
    tmp_path: Path,
    sqlite_template: Path,
    postgres_server: PostgresServer | None,
) -> None:
    if postgres_server is None:
        pytest.skip(getattr(pytest, "postgres_skip_reason", "PostgreSQL not reachable"))
    async with _serving(settings) as sqlite_instance:
        run = await covered_run(sqlite_instance, workspace_root)
        bundle = await _export(sqlite_instance, run["id"])
    name = await postgres_server.create_database()
    try:
        target = settings.model_copy(update={"database_url": postgres_server.url_for(name)})
        async with _serving(target) as postgres_instance:
            imported = await postgres_instance.post("/v1/agent-runs/import", json=bundle)
            assert imported.status_code == 201, imported.text
            assert imported.json()["valid"] is True
            found = await verdict(postgres_instance, run["id"])
            assert found["valid"] is True and found["events"] == len(bundle["audit_events"])
            there = (await postgres_instance.get(f"/v1/agent-runs/{run['id']}")).json()
            assert there["status"] == "completed" and there["metadata"]["imported"]["by"]
            assert [s["output_data"] for s in there["steps"]] == [
                s["output_data"] for s in run["steps"]
            ]
            again = await postgres_instance.post("/v1/agent-runs/import", json=bundle)
            assert again.status_code == 409
            # The imported run replays there, from the records it came with.
            made = await postgres_instance.post(
                f"/v1/agent-runs/{run['id']}/replay", json={"mode": "verify"}
            )
            assert made.status_code == 201, made.text
            replay = await run_to_end(postgres_instance, made.json()["id"])
            assert replay["status"] == "completed", replay
            report = await postgres_instance.get(f"/v1/agent-runs/{replay['id']}/divergence")
            assert report.json()["first_divergence"] is None, report.text
            assert {row["verdict"] for row in report.json()["steps"]} == {"match"}
            audit = await postgres_instance.get(f"/v1/agent-runs/{replay['id']}/audit")
            payloads = json.dumps([e["payload"] for e in audit.json()["events"]])
            assert "replayed_from_approval" in payloads  # bob's decision, from the bundle
            # Exported again from PostgreSQL, the bundle's rows are the same rows.
            back = await _export(postgres_instance, run["id"])
            assert back["audit_events"] == [
                {**e, "id": b["id"], "xact_id": b["xact_id"]}
                for e, b in zip(bundle["audit_events"], back["audit_events"], strict=True)
            ]
    finally:
        postgres_server.discard_database(name)


async def test_a_broken_bundle_is_refused_naming_the_place(
    client: httpx.AsyncClient, workspace_root: Path, tmp_path: Path
) -> None:
    run = await covered_run(client, workspace_root)
    bundle = await _export(client, run["id"])
    bundle["approvals"][0]["actor"] = "mallory"
    bundle["run"]["id"] = "5d1f1d8e-0000-4000-8000-000000000000"
    refused = await client.post("/v1/agent-runs/import", json=bundle)
    assert refused.status_code == 422
    problem = refused.json()
    assert problem["code"] == "audit_invalid"
    assert problem["first_broken"]["kind"] in ("foreign_event", "approval_changed")
    broken = dict(bundle)
    broken["run"] = {**bundle["run"], "id": run["id"]}
    answer = await client.post("/v1/agent-runs/import", json=broken)
    assert answer.status_code == 422
    assert answer.json()["first_broken"]["kind"] == "approval_changed"


async def test_a_malformed_bundle_is_a_clear_422(client: httpx.AsyncClient) -> None:
    for body in (
        {"format": "agent-engine-run-bundle", "version": 1, "run": {"id": "x"}},
        {
            "format": "agent-engine-run-bundle",
            "version": 1,
            "run": {"id": "not-a-uuid"},
            "steps": [],
            "llm_calls": [],
            "approvals": [],
            "plans": [],
            "audit_events": [{"seq": "one"}],
        },
        [1, 2],
    ):
        answer = await client.post("/v1/agent-runs/import", json=body)
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")


@one_backend(
    "sqlite",
    "the CLI's verify, export and import are the same commands on both backends (the API tests "
    "cover PostgreSQL); each starts a process",
)
async def test_the_cli_verifies_exports_and_imports_runs_in_a_database(
    client: httpx.AsyncClient,
    workspace_root: Path,
    tmp_path: Path,
    settings: Settings,
    sqlite_template: Path,
) -> None:
    from sqlalchemy import update

    from agent_engine.storage.tables import Base
    from tests.audit_runs import raw_database

    run = await covered_run(client, workspace_root)
    here = {"AGENT_ENGINE_DATABASE_URL": settings.database_url}
    checked = run_command("audit", "verify", run["id"], cwd=tmp_path, **here)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"ok: run {run['id']}: ")
    bundle = tmp_path / "run.json"
    exported = run_command("audit", "export", run["id"], "--out", str(bundle), cwd=tmp_path, **here)
    assert exported.returncode == 0, exported.stderr
    elsewhere = {"AGENT_ENGINE_DATABASE_URL": clone_sqlite(sqlite_template, tmp_path)}
    imported = run_command("audit", "import", str(bundle), cwd=tmp_path, **elsewhere)
    assert imported.returncode == 0, imported.stderr
    assert run_command("audit", "verify", "--all", cwd=tmp_path, **elsewhere).returncode == 0
    again = run_command("audit", "import", str(bundle), cwd=tmp_path, **elsewhere)
    assert again.returncode == 1 and "exists on this instance" in again.stderr
    steps = Base.metadata.tables["steps"]
    async with raw_database(settings.database_url) as db:
        await db.execute(update(steps).where(steps.c.step_number == 3).values(output_data={}))
    broken = run_command("audit", "verify", "--all", cwd=tmp_path, **here)
    assert broken.returncode == 1
    (line,) = broken.stdout.strip().splitlines()
    assert "step_output_changed" in line and ", step 3:" in line
    usage = run_command("audit", "verify", cwd=tmp_path, **here)
    assert usage.returncode == 2 and usage.stderr.startswith("error:")
