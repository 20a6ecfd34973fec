"""Alembic owns the schema: upgrade/downgrade round trips, models agree, audit is append-only."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from agent_engine.storage import migrations
from agent_engine.storage.database import create_engine
from agent_engine.storage.tables import Base

TABLES = {
    "agent_runs",
    "steps",
    "llm_calls",
    "approvals",
    "audit_events",
    "plans",
    "alembic_version",
}


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _diff(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade_round_trips(database_url: str) -> None:
    assert await _tables(database_url) == TABLES
    await asyncio.to_thread(migrations.downgrade, database_url, "base")
    assert await _tables(database_url) == {"alembic_version"}
    await asyncio.to_thread(migrations.upgrade, database_url, "head")
    assert await _tables(database_url) == TABLES
    engine = create_engine(database_url)
    try:
        assert await migrations.current_revision(engine) == migrations.head_revision()
    finally:
        await engine.dispose()


async def test_models_and_migrations_agree(database_url: str) -> None:
    assert await _diff(database_url) == []


async def _insert_event(database_url: str) -> tuple[Any, uuid.UUID]:
    engine = create_engine(database_url)
    run_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO agent_runs (id, goal, status, plan_version, total_cost_usd,"
                " input_tokens, output_tokens, created_by, metadata, options, audit_seq,"
                " created_at, updated_at) VALUES (:id, 'g', 'created', 0, '0', 0, 0, 't',"
                " '{}', '{}', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            {"id": run_id if engine.dialect.name == "postgresql" else run_id.hex},
        )
        await connection.execute(
            text(
                "INSERT INTO audit_events (run_id, seq, type, payload, actor, created_at, hash)"
                " VALUES (:id, 1, 'run.created', '{}', 't', CURRENT_TIMESTAMP, 'h')"
            ),
            {"id": run_id if engine.dialect.name == "postgresql" else run_id.hex},
        )
    return engine, run_id


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET type = 'forged'",
        "UPDATE audit_events SET payload = '{\"x\": 1}'",
        "DELETE FROM audit_events",
    ],
)
async def test_audit_events_are_append_only_in_the_database(
    database_url: str, statement: str
) -> None:
    engine, _ = await _insert_event(database_url)
    try:
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as connection:
                await connection.execute(text(statement))
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT type FROM audit_events"))).all()
        assert [r[0] for r in rows] == ["run.created"]
    finally:
        await engine.dispose()


async def test_audit_events_cannot_be_truncated_on_postgres(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("TRUNCATE exists only on PostgreSQL")
    engine, _ = await _insert_event(database_url)
    try:
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as connection:
                await connection.execute(text("TRUNCATE audit_events CASCADE"))
    finally:
        await engine.dispose()
