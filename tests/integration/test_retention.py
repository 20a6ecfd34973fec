"""Retention (`agent-engine prune`): old finished runs lose their payloads (--keep-audit) or go
whole, in batches, while every remaining chain verifies and names what was pruned; a dry run
changes nothing; a bad age is one line and exit 2."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from agent_engine.api.app import create_app
from agent_engine.cli.main import app
from agent_engine.config import Settings
from agent_engine.domain.clock import utcnow
from agent_engine.engine.retention import PruneReport, prune_database
from tests.audit_runs import covered_run, raw_database, raw_run_id, verdict


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The smallest blob threshold: the runs' longer strings sit in ``blobs``, so a marker's
    hash must be over the whole document, blobs expanded, to verify."""
    return settings.model_copy(update={"blob_threshold_bytes": 64})


async def two_old_and_one_new(
    client: httpx.AsyncClient, workspace_root: Path
) -> tuple[list[dict[str, Any]], dict[str, Any], timedelta]:
    """Two runs finished before a point in time, one after; the age that separates them."""
    old = [await covered_run(client, workspace_root) for _ in range(2)]
    between = utcnow()
    new = await covered_run(client, workspace_root)
    return old, new, utcnow() - between


async def pruned(settings: Settings, age: timedelta, **options: Any) -> PruneReport:
    defaults: dict[str, Any] = {"keep_audit": True, "dry_run": False, "batch_runs": 1}
    return await prune_database(settings.database_url, age, **{**defaults, **options})


async def test_keep_audit_prunes_old_payloads_in_batches_and_their_chains_name_them(
    client: httpx.AsyncClient, settings: Settings, workspace_root: Path
) -> None:
    old, new, age = await two_old_and_one_new(client, workspace_root)
    report = await pruned(settings, age)
    assert (report.runs, report.batches) == (2, 2)  # one run per transaction, as asked
    assert report.payloads.llm_calls == 2 and report.payloads.approvals == 2
    for run in old:
        found = await verdict(client, run["id"])
        assert found["valid"] is True, found["first_broken"]
        places = {(p["table"], p.get("step_number"), p["column"]) for p in found["pruned"]}
        assert ("steps", 1, "output_data") in places and ("steps", 3, "resolved_input") in places
        assert {("llm_calls", None, "request"), ("llm_calls", None, "response")} <= places
        assert ("approvals", None, "shown") in places
        steps = (await client.get(f"/v1/agent-runs/{run['id']}/steps")).json()
        first = steps[0] if isinstance(steps, list) else steps["steps"][0]
        assert first["output_data"] == {"pruned": True, "sha256": first["output_hash"]}
    untouched = await verdict(client, new["id"])
    assert untouched["valid"] is True and untouched["pruned"] == []
    # Its recorded answers are hashes now: nothing to replay from.
    replay = await client.post(f"/v1/agent-runs/{old[0]['id']}/replay")
    assert replay.status_code == 409 and replay.json()["code"] == "payloads_pruned"
    everything = await pruned(settings, timedelta(0))
    assert everything.runs == 1  # the new run only: a pruned run is not visited twice
    assert (await verdict(client, old[0]["id"]))["valid"] is True


async def test_prune_deletes_old_runs_whole_and_the_rest_still_verify(
    client: httpx.AsyncClient, settings: Settings, workspace_root: Path
) -> None:
    old, new, age = await two_old_and_one_new(client, workspace_root)
    report = await pruned(settings, age, keep_audit=False)
    assert (report.runs, report.batches) == (2, 2)
    for run in old:
        assert (await client.get(f"/v1/agent-runs/{run['id']}")).status_code == 404
    kept = await verdict(client, new["id"])
    assert kept["valid"] is True and kept["pruned"] == []
    # Without the prune path's permit the database still refuses to delete an event.
    with pytest.raises(DBAPIError, match="append-only"):
        async with raw_database(settings.database_url) as connection:
            run_id = await raw_run_id(connection, new["id"])
            await connection.execute(
                text("DELETE FROM audit_events WHERE run_id = :id"), {"id": run_id}
            )


async def test_dry_run_counts_and_changes_nothing(
    client: httpx.AsyncClient, settings: Settings, workspace_root: Path
) -> None:
    old, _, age = await two_old_and_one_new(client, workspace_root)
    for keep_audit in (True, False):
        report = await pruned(settings, age, keep_audit=keep_audit, dry_run=True)
        assert report.runs == 2
    found = await verdict(client, old[0]["id"])
    assert found["valid"] is True and found["pruned"] == []


@pytest.mark.parametrize("age", ["30", "thirty days", "0d", "-1d", "3w"])
def test_a_bad_older_than_is_one_line_and_exit_2(age: str) -> None:
    result = CliRunner().invoke(app, ["prune", "--older-than", age])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--older-than" in lines[0], result.output


async def test_serve_with_retention_days_prunes_in_the_background_until_it_stops(
    settings: Settings,
) -> None:
    def pruners() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "retention"]

    served = create_app(settings.model_copy(update={"retention_days": 30}))
    async with served.router.lifespan_context(served):
        assert len(pruners()) == 1
    assert pruners() == []
    unset = create_app(settings)
    async with unset.router.lifespan_context(unset):
        assert pruners() == []  # unset: never
