"""Migration 0007: events written before it sort first, new ones carry their transaction's id,
and it downgrades cleanly with the append-only triggers left in place."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_engine.storage import migrations
from agent_engine.storage.database import create_engine

INSERT_RUN = text(
    "INSERT INTO agent_runs (id, goal, status, plan_version, total_cost_usd, input_tokens,"
    " output_tokens, created_by, metadata, options, audit_seq, created_at, updated_at)"
    " VALUES (:id, 'g', 'created', 0, '0', 0, 0, 't', '{}', '{}', 0, CURRENT_TIMESTAMP,"
    " CURRENT_TIMESTAMP)"
)
INSERT_EVENT = text(
    "INSERT INTO audit_events (run_id, seq, type, payload, actor, created_at, hash)"
    " VALUES (:id, :seq, 'run.created', '{}', 't', CURRENT_TIMESTAMP, 'h')"
)


async def _columns(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        found = await connection.run_sync(lambda c: inspect(c).get_columns("audit_events"))
    return {column["name"] for column in found}


async def _write_event(engine: AsyncEngine, run_id: uuid.UUID, seq: int) -> None:
    key = run_id if engine.dialect.name == "postgresql" else run_id.hex
    async with engine.begin() as connection:
        if seq == 1:
            await connection.execute(INSERT_RUN, {"id": key})
        await connection.execute(INSERT_EVENT, {"id": key, "seq": seq})


async def test_old_events_get_zero_new_ones_their_transaction_and_it_downgrades(
    database_url: str,
) -> None:
    postgres = database_url.startswith("postgresql")
    await asyncio.to_thread(migrations.downgrade, database_url, "0006")
    engine = create_engine(database_url)
    run_id = uuid.uuid4()
    try:
        assert "xact_id" not in await _columns(engine)
        await _write_event(engine, run_id, 1)  # written before the revision
        await engine.dispose()
        await asyncio.to_thread(migrations.upgrade, database_url, "head")

        await _write_event(engine, run_id, 2)
        async with engine.connect() as connection:
            rows = (
                await connection.execute(text("SELECT seq, xact_id FROM audit_events ORDER BY id"))
            ).all()
            newest = await connection.scalar(
                text("SELECT pg_current_xact_id()::text::bigint") if postgres else text("SELECT 0")
            )
        (old_seq, old_xact), (new_seq, new_xact) = rows
        assert (old_seq, old_xact) == (1, 0)
        assert new_seq == 2
        if postgres:
            assert 0 < new_xact < newest  # a real transaction id, of a transaction now ended
        else:
            assert new_xact == 0  # one writer at a time: id order is commit order

        await engine.dispose()
        await asyncio.to_thread(migrations.downgrade, database_url, "0006")
        assert "xact_id" not in await _columns(engine)
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as connection:
                await connection.execute(text("DELETE FROM audit_events"))
        await engine.dispose()
        await asyncio.to_thread(migrations.upgrade, database_url, "head")
        assert "xact_id" in await _columns(engine)
    finally:
        await engine.dispose()
