"""Alembic owns the schema: upgrade/downgrade round trips, models agree, and the database itself
keeps the rules no writer may break: audit is append-only, every update of a run bumps its version
by exactly one, and no row holds a status the state machine does not know."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_engine.domain.records import RunRecord, StepRecord
from agent_engine.domain.states import RunStatus, StepStatus
from agent_engine.storage import migrations
from agent_engine.storage.database import create_engine
from agent_engine.storage.tables import Base
from tests.backends import one_backend

TABLES = {
    "agent_runs",
    "steps",
    "llm_calls",
    "approvals",
    "audit_events",
    "plans",
    "api_keys",
    "blobs",
    "budgets",
    "budget_counters",
    "budget_reservations",
    "webhook_deliveries",
    "workers",
    "audit_prune_permits",
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
                    MigrationContext.configure(
                        c, opts={"compare_type": True, "include_object": migrations.is_modelled}
                    ),
                    Base.metadata,
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


async def test_the_one_write_path_migration_downgrades_and_upgrades_again(
    database_url: str,
) -> None:
    await asyncio.to_thread(migrations.downgrade, database_url, "0005")
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(
                lambda c: {column["name"] for column in inspect(c).get_columns("agent_runs")}
            )
        assert "version" not in names
        await asyncio.to_thread(migrations.upgrade, database_url, "head")
        assert await migrations.current_revision(engine) == migrations.head_revision()
    finally:
        await engine.dispose()
    assert await _diff(database_url) == []


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


@one_backend("postgres", "TRUNCATE exists only on PostgreSQL")
async def test_audit_events_cannot_be_truncated_on_postgres(database_url: str) -> None:
    engine, _ = await _insert_event(database_url)
    try:
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as connection:
                await connection.execute(text("TRUNCATE audit_events CASCADE"))
    finally:
        await engine.dispose()


# --- the version guard and the status checks ------------------------------------------------------

RUNS = Base.metadata.tables["agent_runs"]
STEPS = Base.metadata.tables["steps"]
REFUSED_STATUS = "status_known|unknown status"  # PostgreSQL's CHECK name, SQLite's trigger text


def _run_row(**fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"status": "created", **fields}
    return RunRecord(id=uuid.uuid4(), goal="g", created_by="t", **values).row()


def _step_row(run_id: uuid.UUID, **fields: Any) -> dict[str, Any]:
    return StepRecord(
        id=uuid.uuid4(),
        run_id=run_id,
        step_number=1,
        step_type="noop",
        status=fields.pop("status", "pending"),
        input_data={},
        **fields,
    ).row()


async def _stored_run(engine: AsyncEngine, run_id: uuid.UUID) -> dict[str, Any]:
    async with engine.connect() as connection:
        row = (await connection.execute(RUNS.select().where(RUNS.c.id == run_id))).mappings().one()
    return dict(row)


@pytest.mark.parametrize(
    "assignments",
    [
        "goal = 'behind the guard'",  # version untouched
        "version = version",
        "version = version + 2",
        "version = version - 1",
        "version = 0, goal = 'reset'",
        "version = NULL",
    ],
)
async def test_an_update_of_a_run_that_does_not_bump_its_version_by_one_is_refused(
    database_url: str, assignments: str
) -> None:
    engine = create_engine(database_url)
    run = _run_row(version=3)
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(RUNS), [run])
        with pytest.raises(DBAPIError, match="bump version"):
            async with engine.begin() as connection:
                await connection.execute(text(f"UPDATE agent_runs SET {assignments}"))
        stored = await _stored_run(engine, run["id"])
        assert (stored["version"], stored["goal"]) == (3, "g")
        # The control: the same change bumping the version by one is accepted, twice in a row.
        for version in (4, 5):
            async with engine.begin() as connection:
                await connection.execute(
                    text("UPDATE agent_runs SET goal = 'changed', version = version + 1")
                )
            stored = await _stored_run(engine, run["id"])
            assert (stored["version"], stored["goal"]) == (version, "changed")
    finally:
        await engine.dispose()


async def test_an_unknown_status_is_refused_on_insert_and_update_of_runs_and_steps(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    try:
        with pytest.raises(DBAPIError, match=REFUSED_STATUS):
            async with engine.begin() as connection:
                await connection.execute(insert(RUNS), [_run_row(status="finished")])
        run = _run_row()
        async with engine.begin() as connection:
            await connection.execute(insert(RUNS), [run])
        with pytest.raises(DBAPIError, match=REFUSED_STATUS):
            async with engine.begin() as connection:
                await connection.execute(
                    update(RUNS).values(status="paused", version=RUNS.c.version + 1)
                )
        with pytest.raises(DBAPIError, match=REFUSED_STATUS):
            async with engine.begin() as connection:
                await connection.execute(insert(STEPS), [_step_row(run["id"], status="queued")])
        step = _step_row(run["id"])
        async with engine.begin() as connection:
            await connection.execute(insert(STEPS), [step])
        with pytest.raises(DBAPIError, match=REFUSED_STATUS):
            async with engine.begin() as connection:
                await connection.execute(update(STEPS).values(status="done"))
        # Every status the state machine knows is accepted, on both tables.
        for run_status in RunStatus:
            async with engine.begin() as connection:
                await connection.execute(
                    update(RUNS).values(status=run_status.value, version=RUNS.c.version + 1)
                )
        for step_status in StepStatus:
            async with engine.begin() as connection:
                await connection.execute(update(STEPS).values(status=step_status.value))
        async with engine.connect() as connection:
            stored = (await connection.execute(text("SELECT status FROM steps"))).scalar_one()
        assert stored == list(StepStatus)[-1].value
        assert (await _stored_run(engine, run["id"]))["version"] == len(RunStatus)
    finally:
        await engine.dispose()


@one_backend("postgres", "the trigram index is PostgreSQL's (pg_trgm); SQLite has none")
async def test_goal_search_has_a_trigram_index_that_the_planner_uses(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            found = await connection.scalar(
                text(
                    "SELECT indexdef FROM pg_indexes"
                    " WHERE indexname = 'ix_agent_runs_goal_trigrams'"
                )
            )
            # A small table is scanned whatever the indexes: say so, to see the index chosen.
            await connection.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(
                row[0]
                for row in await connection.execute(
                    text("EXPLAIN SELECT id FROM agent_runs WHERE goal ILIKE '%module 613%'")
                )
            )
    finally:
        await engine.dispose()
    assert found is not None and "gin_trgm_ops" in found
    assert "ix_agent_runs_goal_trigrams" in plan
