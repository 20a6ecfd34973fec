"""Tampering with the database directly, as someone with write access to it would: every change
to a row the audit covers is found by verify, which names the place; events cannot be replaced
by any statement; a cut-short chain is found by its length; a chain recomputed wholesale is
found by its signature."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.domain.audit_verify import recompute_event_hash
from agent_engine.storage.tables import Base
from tests.audit_runs import (
    covered_run,
    drop_append_only,
    is_sqlite,
    raw_database,
    raw_run_id,
    verdict,
)

T = Base.metadata.tables


def _step(run: dict[str, Any], number: int) -> uuid.UUID:
    return uuid.UUID(next(s["id"] for s in run["steps"] if s["step_number"] == number))


async def test_an_untouched_run_verifies(client: httpx.AsyncClient, workspace_root: Path) -> None:
    run = await covered_run(client, workspace_root)
    found = await verdict(client, run["id"])
    assert found["valid"] is True and found["first_broken"] is None
    assert found["events"] > 10 and found["signature"] == "missing"


async def test_a_changed_step_output_is_found_at_its_step(
    client: httpx.AsyncClient, workspace_root: Path, settings: Settings
) -> None:
    run = await covered_run(client, workspace_root)
    async with raw_database(settings.database_url) as db:
        await db.execute(
            update(T["steps"])
            .where(T["steps"].c.id == _step(run, 2))
            .values(output_data={"value": "forged", "attempt": 1})
        )
    broken = (await verdict(client, run["id"]))["first_broken"]
    assert broken["kind"] == "step_output_changed" and broken["step_number"] == 2
    assert broken["seq"] is not None


async def test_a_changed_approver_is_found(
    client: httpx.AsyncClient, workspace_root: Path, settings: Settings
) -> None:
    run = await covered_run(client, workspace_root)
    async with raw_database(settings.database_url) as db:
        await db.execute(update(T["approvals"]).values(actor="mallory"))
    found = await verdict(client, run["id"])
    broken = found["first_broken"]
    assert found["valid"] is False
    assert broken["kind"] == "approval_changed" and broken["step_number"] == 2
    assert "actor" in broken["detail"] and "mallory" in broken["detail"]


async def test_a_changed_creator_is_found_in_the_creation_event(
    client: httpx.AsyncClient, workspace_root: Path, settings: Settings
) -> None:
    run = await covered_run(client, workspace_root)
    runs = T["agent_runs"]
    async with raw_database(settings.database_url) as db:
        # The version trigger wants every run update to bump the version: so does the attacker.
        await db.execute(update(runs).values(created_by="mallory", version=runs.c.version + 1))
    broken = (await verdict(client, run["id"]))["first_broken"]
    assert broken == {
        "seq": 1,
        "kind": "run_changed",
        "detail": "the run: created_by is 'mallory', the audit says 'alice'",
    }


async def test_a_changed_plan_document_is_found_at_its_version(
    client: httpx.AsyncClient, workspace_root: Path, settings: Settings
) -> None:
    run = await covered_run(client, workspace_root)
    plans = T["plans"]
    async with raw_database(settings.database_url) as db:
        document = (await db.execute(select(plans.c.document))).scalar_one()
        document["steps"][1]["input_data"] = {"value": "something else"}
        await db.execute(update(plans).values(document=document))
    broken = (await verdict(client, run["id"]))["first_broken"]
    assert broken["kind"] == "plan_changed" and broken["plan_version"] == 1


async def test_a_changed_llm_response_is_found(
    client: httpx.AsyncClient, workspace_root: Path, settings: Settings
) -> None:
    run = await covered_run(client, workspace_root)
    calls = T["llm_calls"]
    async with raw_database(settings.database_url) as db:
        await db.execute(update(calls).values(response={"content": "forged"}))
    broken = (await verdict(client, run["id"]))["first_broken"]
    assert broken["kind"] == "llm_call_changed" and broken["step_number"] == 1


async def test_no_statement_replaces_an_event(
    client: httpx.AsyncClient, workspace_root: Path, settings: Settings
) -> None:
    run = await covered_run(client, workspace_root)
    before = await verdict(client, run["id"])
    columns = "id, run_id, seq, type, step_id, payload, actor, created_at, prev_hash, hash"
    forged = (
        "SELECT id, run_id, seq, 'forged', step_id, payload, actor, created_at, prev_hash, hash "
        "FROM audit_events WHERE run_id = :run AND seq = 2"
    )
    if is_sqlite(settings.database_url):
        statements = [
            f"INSERT OR REPLACE INTO audit_events ({columns}) {forged}",
            f"REPLACE INTO audit_events ({columns}) {forged}",
            f"INSERT INTO audit_events ({columns}) {forged} "
            "ON CONFLICT DO UPDATE SET type = 'forged'",
            "DELETE FROM audit_events WHERE run_id = :run AND seq = 2",
            "UPDATE audit_events SET type = 'forged' WHERE run_id = :run",
        ]
    else:
        statements = [
            f"INSERT INTO audit_events ({columns}) {forged} "
            "ON CONFLICT (run_id, seq) DO UPDATE SET type = 'forged'",
            f"INSERT INTO audit_events ({columns}) {forged} "
            "ON CONFLICT (id) DO UPDATE SET type = 'forged'",
            "DELETE FROM audit_events WHERE run_id = :run AND seq = 2",
            "UPDATE audit_events SET type = 'forged' WHERE run_id = :run",
            "TRUNCATE audit_events CASCADE",
        ]
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"):
            async with raw_database(settings.database_url) as db:
                await db.execute(text(statement), {"run": await raw_run_id(db, run["id"])})
    assert await verdict(client, run["id"]) == before


async def test_an_event_changed_with_the_trigger_dropped_is_found_at_its_seq(
    client: httpx.AsyncClient, workspace_root: Path, settings: Settings
) -> None:
    run = await covered_run(client, workspace_root)
    events = T["audit_events"]
    async with raw_database(settings.database_url) as db:
        await drop_append_only(db, settings.database_url)
        await db.execute(update(events).where(events.c.seq == 5).values(actor="mallory"))
    broken = (await verdict(client, run["id"]))["first_broken"]
    assert broken["kind"] == "event_changed" and broken["seq"] == 5


async def test_the_last_events_deleted_are_found_by_the_chain_length(
    client: httpx.AsyncClient, workspace_root: Path, settings: Settings
) -> None:
    run = await covered_run(client, workspace_root)
    total = (await verdict(client, run["id"]))["events"]
    events = T["audit_events"]
    async with raw_database(settings.database_url) as db:
        await drop_append_only(db, settings.database_url)
        await db.execute(events.delete().where(events.c.seq > total - 2))
    found = await verdict(client, run["id"])
    assert found["events"] == total - 2
    assert found["first_broken"]["kind"] == "chain_truncated"
    assert found["first_broken"]["seq"] == total - 1


async def _rewrite_wholesale(url: str, run: dict[str, Any]) -> None:
    """Change step 3's output, then recompute its event, every later hash and the run's head,
    as someone who knows the recipe but not the signing key would."""
    steps, events, runs = T["steps"], T["audit_events"], T["agent_runs"]
    forged = {"value": "forged", "attempt": 1}
    from agent_engine.domain.canonical import content_hash

    async with raw_database(url) as db:
        await drop_append_only(db, url)
        await db.execute(
            update(steps)
            .where(steps.c.id == _step(run, 3))
            .values(output_data=forged, output_hash=content_hash(forged))
        )
        rows = [
            dict(r) for r in (await db.execute(select(events).order_by(events.c.seq))).mappings()
        ]
        prev = None
        for row in rows:
            if row["type"] == "step.completed" and row["payload"]["step_number"] == 3:
                row["payload"] = {**row["payload"], "output_hash": content_hash(forged)}
            row["prev_hash"] = prev
            row["hash"] = recompute_event_hash(row)
            prev = row["hash"]
            await db.execute(
                update(events)
                .where(events.c.id == row["id"])
                .values(payload=row["payload"], prev_hash=row["prev_hash"], hash=row["hash"])
            )
        await db.execute(update(runs).values(audit_head_hash=prev, version=runs.c.version + 1))


@pytest.fixture(scope="module")
def cli_made_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A signing key made by ``agent-engine audit keygen`` (a process), once for the module: the
    file is only read, by both backends' tests."""
    from tests.integration.test_cli import run_command

    folder = tmp_path_factory.mktemp("audit-key")
    key = folder / "audit.key"
    made = run_command("audit", "keygen", "--out", str(key), cwd=folder)
    assert made.returncode == 0, made.stderr
    return key


async def test_a_chain_recomputed_wholesale_is_found_by_its_signature(
    settings: Settings, workspace_root: Path, cli_made_key: Path
) -> None:
    key = cli_made_key
    signed = settings.model_copy(update={"audit_signing_key_file": key})
    app = create_app(signed)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        run = await covered_run(http, workspace_root)
        assert await verdict(http, run["id"]) == {
            "run_id": run["id"],
            "valid": True,
            "events": (await verdict(http, run["id"]))["events"],
            "first_broken": None,
            "signature": "valid",
            "pruned": [],
        }
        await _rewrite_wholesale(signed.database_url, run)
        found = await verdict(http, run["id"])
    assert found["valid"] is False and found["signature"] == "invalid"
    assert found["first_broken"]["kind"] == "signature_invalid"
    # Without the key the rewrite is not seen: this is what signing is for.
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        unkeyed = await verdict(http, run["id"])
    assert unkeyed["valid"] is True and unkeyed["signature"] == "no_key"


async def test_a_worker_signs_every_head_it_moves(settings: Settings, tmp_path: Path) -> None:
    """The worker's own writes (known records, group commit) sign heads as the API's do."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent_engine.domain.audit_signing import private_key_pem
    from agent_engine.engine.audit_checks import verify_run_chain
    from tests.engines import engine_context, new_run, noop, running_worker, wait_finished

    key = Ed25519PrivateKey.generate()
    (tmp_path / "k.pem").write_bytes(private_key_pem(key))
    signed = settings.model_copy(update={"audit_signing_key_file": tmp_path / "k.pem"})
    async with engine_context(signed) as ctx:
        async with running_worker(ctx, concurrency=2):
            run_id = await new_run(ctx, [noop(n) for n in range(1, 6)], auto_start=True)
            finished = await wait_finished(ctx, run_id)
        assert finished["run"]["status"] == "completed"
        found = await verify_run_chain(ctx, str(run_id))
    assert found["valid"] is True and found["signature"] == "valid"
    assert found["events"] == finished["run"]["audit_seq"] > 10
