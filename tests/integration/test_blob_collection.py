"""Retention collects the blobs no row references: an old unreferenced blob goes, a referenced
one and a fresh unreferenced one stay, the blobs of pruned runs go with them, and every chain
still verifies. A blob a write re-stores is written anew (its grace period starts again), and on
PostgreSQL a blob a write in flight holds is never deleted under it."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select, update

from agent_engine.config import Settings
from agent_engine.domain.blob_refs import referenced_blobs
from agent_engine.domain.canonical import wire_json
from agent_engine.domain.clock import utcnow
from agent_engine.engine.context import build_context
from agent_engine.engine.retention import PruneReport, prune_database
from agent_engine.storage.blobs import BLOBS, blob_rows
from agent_engine.storage.changes import APPLY_SQL, Write
from tests.audit_runs import covered_run, raw_database, verdict
from tests.backends import one_backend

OLD = timedelta(days=2)  # well past the grace period (an hour)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The smallest blob threshold: the runs' steps and model calls store their longer strings
    as blobs."""
    return settings.model_copy(update={"blob_threshold_bytes": 64})


async def stored_blobs(settings: Settings) -> set[str]:
    async with raw_database(settings.database_url) as connection:
        return set((await connection.execute(select(BLOBS.c.hash))).scalars())


async def written_at(settings: Settings, digest: str) -> Any:
    async with raw_database(settings.database_url) as connection:
        query = select(BLOBS.c.created_at).where(BLOBS.c.hash == digest)
        return (await connection.execute(query)).scalar_one()


async def add_blob(settings: Settings, text: str, age: timedelta) -> str:
    """Store ``text`` as a blob no row references, last written ``age`` ago; its hash."""
    data = text.encode()
    digest = hashlib.sha256(data).hexdigest()
    row = {"hash": digest, "size": len(data), "content": data, "created_at": utcnow() - age}
    async with raw_database(settings.database_url) as connection:
        await connection.execute(insert(BLOBS), [row])
    return digest


async def age_blobs(settings: Settings, hashes: Iterable[str], age: timedelta) -> None:
    async with raw_database(settings.database_url) as connection:
        await connection.execute(
            update(BLOBS).where(BLOBS.c.hash.in_(list(hashes))).values(created_at=utcnow() - age)
        )


async def pruned(settings: Settings, age: timedelta, **options: Any) -> PruneReport:
    defaults: dict[str, Any] = {"keep_audit": True, "dry_run": False, "batch_rows": 1}
    return await prune_database(settings.database_url, age, **{**defaults, **options})


def failed_write(blobs: dict[str, bytes]) -> Write:
    """A write whose guard fails (its run is not there): only its blobs are stored."""
    return Write(uuid.uuid4(), 1, {"goal": "never written"}, [], [], blob_rows(blobs))


async def run_blobs(client: httpx.AsyncClient, run_id: str) -> set[str]:
    """The blobs the run's rows reference, as its bundle carries them."""
    bundle = (await client.get(f"/v1/agent-runs/{run_id}/export")).json()
    return {blob["hash"] for blob in bundle["blobs"]}


async def audit_blobs(client: httpx.AsyncClient, run_id: str) -> set[str]:
    """The blobs the run's audit events reference (an edit's diff, a plan's content)."""
    bundle = (await client.get(f"/v1/agent-runs/{run_id}/export")).json()
    return referenced_blobs([event["payload"] for event in bundle["audit_events"]])


@pytest.mark.parametrize("keep_audit", [True, False], ids=["keep-audit", "delete"])
async def test_prune_collects_old_unreferenced_blobs_and_keeps_referenced_and_fresh_ones(
    client: httpx.AsyncClient, settings: Settings, workspace_root: Path, keep_audit: bool
) -> None:
    run = await covered_run(client, workspace_root)
    referenced = await run_blobs(client, run["id"])
    assert referenced and await stored_blobs(settings) == referenced  # steps' and calls' blobs
    old = await add_blob(settings, "an old payload no row references " * 4, OLD)
    fresh = await add_blob(
        settings, "a payload just written, its row not committed yet " * 2, timedelta(0)
    )
    await age_blobs(settings, referenced, OLD)

    dry = await pruned(settings, timedelta(days=365), dry_run=True)
    assert dry.blobs == 1 and old in await stored_blobs(settings)
    report = await pruned(settings, timedelta(days=365))
    assert report.runs == 0 and report.blobs == 1
    assert await stored_blobs(settings) == referenced | {fresh}
    kept = await verdict(client, run["id"])
    assert kept["valid"] is True and kept["pruned"] == []
    again = (await client.get(f"/v1/agent-runs/{run['id']}")).json()
    assert [s["output_data"] for s in again["steps"]] == [s["output_data"] for s in run["steps"]]

    # Its run pruned (payloads, or whole): the same prune takes the blobs no row references any
    # more. A kept audit keeps the blobs its events reference (the chain is over them).
    in_audit = await audit_blobs(client, run["id"])
    assert in_audit and in_audit < referenced  # a diff in the events; file contents only in steps
    report = await pruned(settings, timedelta(0), keep_audit=keep_audit)
    kept_blobs = in_audit if keep_audit else set()
    assert report.runs == 1 and report.blobs == len(referenced - kept_blobs)
    assert await stored_blobs(settings) == {fresh} | kept_blobs
    if keep_audit:
        after = await verdict(client, run["id"])
        assert after["valid"] is True and after["pruned"], after
        assert "unreferenced blobs were collected" in report.line()


async def test_a_blob_of_a_write_whose_guard_failed_is_collected_once_old(
    settings: Settings,
) -> None:
    ctx = build_context(settings)
    try:
        orphan = b"stored by a write whose guard then failed " * 3
        again = b"stored long ago, written again by a write that failed " * 2
        digest, restored = (hashlib.sha256(data).hexdigest() for data in (orphan, again))
        await add_blob(settings, again.decode(), OLD)
        assert await ctx.changes.send(failed_write({digest: orphan, restored: again}), "") is False
    finally:
        await ctx.close()
    assert {digest, restored} <= await stored_blobs(settings)
    # Written now, both: none is collected within its grace period.
    assert (await pruned(settings, timedelta(days=1))).blobs == 0
    assert await written_at(settings, restored) > utcnow() - timedelta(hours=1)
    await age_blobs(settings, [digest, restored], OLD)
    assert (await pruned(settings, timedelta(days=1))).blobs == 2
    assert not {digest, restored} & await stored_blobs(settings)


@one_backend(
    "postgres",
    "only PostgreSQL lets a collection run while a write is in flight: SQLite's writes are "
    "serial, the collection's delete waits for the write's commit and sees its blob written anew",
)
async def test_a_blob_a_write_in_flight_stores_again_is_not_collected_under_it(
    settings: Settings,
) -> None:
    data = b"an old payload that a write in flight references again " * 2
    digest = await add_blob(settings, data.decode(), OLD)
    async with raw_database(settings.database_url) as writer:
        # The write function's blob insert, its transaction still open (its rows uncommitted).
        await writer.execute(
            APPLY_SQL, {"batch": wire_json([failed_write({digest: data}).document()])}
        )
        during = await pruned(settings, timedelta(days=1))
        assert during.blobs == 0 and digest in await stored_blobs(settings)
    assert (await pruned(settings, timedelta(days=1))).blobs == 0  # written anew at commit
    assert digest in await stored_blobs(settings)
