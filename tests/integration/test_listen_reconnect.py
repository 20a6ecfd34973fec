"""The LISTEN connection: one of the engine's pool, re-opened when the server drops it, after which
every subscriber is told to look again (PostgreSQL only)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from agent_engine import metrics
from agent_engine.config import Settings
from agent_engine.engine.context import EngineContext, build_context
from agent_engine.engine.runs import CreateRunRequest, create_run
from agent_engine.storage.database import read_transaction
from agent_engine.storage.notifications import CHANNEL, LOOK_AGAIN
from agent_engine.storage.runs import get_run_txn, list_steps_txn
from agent_engine.storage.tables import AgentRun, Step
from agent_engine.worker.worker import Worker, WorkerOptions
from tests.databases import PostgresServer
from tests.integration.test_workers import step

RECONNECTS = "agent_engine_notification_reconnects_total"

pytestmark = pytest.mark.postgres
NOTIFIER_LOG = "agent_engine.storage.notifications"


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
async def database(postgres_server: PostgresServer | None) -> AsyncIterator[str]:
    """A fresh migrated PostgreSQL database: its name."""
    if postgres_server is None:
        pytest.skip(getattr(pytest, "postgres_skip_reason", "PostgreSQL not reachable"))
    name = await postgres_server.create_database()
    try:
        yield name
    finally:
        postgres_server.discard_database(name)


@pytest.fixture
async def admin(postgres_server: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the server's own database (not the test's): it stays up whatever the
    test does to the test database."""
    connection = await asyncpg.connect(_dsn(postgres_server.url))
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def pg_settings(postgres_server: PostgresServer, database: str, workspace_root: Any) -> Settings:
    return Settings(
        database_url=postgres_server.url_for(database),
        auto_migrate=False,
        embedded_worker=False,
        workspace_roots=[workspace_root],
        _env_file=None,  # type: ignore[call-arg]
    )


async def _poll(admin: asyncpg.Connection, query: str, *args: Any) -> Any:
    async with asyncio.timeout(20):  # a failure bound only
        while True:
            found = await admin.fetchval(query, *args)
            if found is not None:
                return found
            await asyncio.sleep(0.02)


LISTENING = (
    "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%' "
    "AND state = 'idle' AND pid <> $2"
)


async def _listening_pid(admin: asyncpg.Connection, database: str, *, not_pid: int = 0) -> int:
    """The server pid of the (one) connection that LISTENs on the test database."""
    return int(await _poll(admin, LISTENING, database, not_pid))


async def _terminate(admin: asyncpg.Connection, pid: int) -> None:
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    gone = "SELECT true WHERE NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)"
    await _poll(admin, gone, pid)


async def _until_logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    async with asyncio.timeout(20):  # a failure bound only
        while not any(text in r.getMessage() for r in caplog.records):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def _until_seen(queue: asyncio.Queue[str], wanted: set[str]) -> set[str]:
    seen: set[str] = set()
    async with asyncio.timeout(20):  # a failure bound only
        while not wanted <= seen:
            seen.add(await queue.get())
    return seen


async def test_listens_on_a_pool_connection_and_hears_again_after_the_server_dropped_it(
    pg_settings: Settings,
    database: str,
    admin: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=NOTIFIER_LOG)
    ctx = build_context(pg_settings)
    await ctx.start()
    notifying = await asyncpg.connect(_dsn(pg_settings.database_url))  # NOTIFY is per database
    reconnects = metrics.REGISTRY.get_sample_value(RECONNECTS)
    try:
        assert ctx.db.pool.checkedout() == 1  # type: ignore[attr-defined]  # the LISTEN one
        assert ctx.notifier.listening  # what /readyz's `listen` check reads
        first = await _listening_pid(admin, database)
        async with ctx.notifier.subscribe() as queue:
            await notifying.execute("SELECT pg_notify($1, 'before the drop')", CHANNEL)
            assert await _until_seen(queue, {"before the drop"}) == {"before the drop"}

            await _terminate(admin, first)
            await _listening_pid(admin, database, not_pid=first)
            await notifying.execute("SELECT pg_notify($1, 'after the drop')", CHANNEL)
            # The notification, and the wake-up that tells subscribers to re-read what they may
            # have missed while nobody listened.
            assert await _until_seen(queue, {"after the drop", LOOK_AGAIN}) == {
                "after the drop",
                LOOK_AGAIN,
            }
        # The dead connection went back to the pool as invalid; the new one is checked out.
        assert ctx.db.pool.checkedout() == 1  # type: ignore[attr-defined]
        messages = [r.getMessage() for r in caplog.records if r.name == NOTIFIER_LOG]
        assert any("LISTEN connection dropped" in m for m in messages)
        assert any("LISTEN connection is re-opened" in m for m in messages)
        assert metrics.REGISTRY.get_sample_value(RECONNECTS) == (reconnects or 0) + 1
        assert ctx.notifier.listening
    finally:
        await notifying.close()
        await ctx.close()


async def test_closing_gives_the_connection_back_to_the_pool_without_its_listen(
    pg_settings: Settings, database: str, admin: asyncpg.Connection
) -> None:
    ctx = build_context(pg_settings)
    await ctx.start()
    try:
        pid = await _listening_pid(admin, database)
        await ctx.notifier.close()
        assert ctx.db.pool.checkedout() == 0  # type: ignore[attr-defined]
        last = "SELECT query FROM pg_stat_activity WHERE pid = $1 AND state = 'idle'"
        assert (await _poll(admin, last, pid)).startswith("UNLISTEN")
    finally:
        await ctx.close()


async def _create(creator: EngineContext, value: int, *, auto_start: bool = True) -> uuid.UUID:
    """A run of one step created by ``creator``."""
    request = CreateRunRequest.model_validate(
        {"goal": "elsewhere", "steps": [step(value)], "auto_start": auto_start}
    )
    return (await create_run(creator, request, actor="t", idempotency_key=None)).run.id


async def _completed(
    ctx: EngineContext, run_id: uuid.UUID, *, status: str = "completed"
) -> AgentRun:
    """The run once it reached ``status``."""
    async with asyncio.timeout(30):  # a failure bound only
        while True:
            async with read_transaction(ctx.sessions) as session:
                run = await get_run_txn(session, run_id)
            if run.status == status:
                return run
            assert run.status in {"planned", "running"}, run.status
            await asyncio.sleep(0.05)


async def _steps(ctx: EngineContext, run_id: uuid.UUID) -> list[Step]:
    async with read_transaction(ctx.sessions) as session:
        return list(await list_steps_txn(session, run_id))


BACKENDS = "SELECT coalesce(array_agg(pid), '{}') FROM pg_stat_activity WHERE datname = $1"


async def test_a_worker_takes_a_run_created_elsewhere_while_its_listen_connection_was_down(
    pg_settings: Settings,
    database: str,
    admin: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server drops every connection of the worker's engine and refuses new ones for a
    while; meanwhile another engine creates a run, whose notification nobody hears. The worker
    polls every ten minutes: only the wake-up after its LISTEN connection is re-opened brings
    the run to it."""
    caplog.set_level(logging.INFO, logger=NOTIFIER_LOG)
    # The other engine: no worker, no LISTEN. Its connections are open (and known) before the
    # worker's engine opens any.
    creator = build_context(pg_settings)
    await _completed(creator, await _create(creator, 1, auto_start=False), status="planned")
    creators = set(await admin.fetchval(BACKENDS, database))
    worker_ctx = build_context(pg_settings)
    await worker_ctx.start()
    stop = asyncio.Event()
    worker = Worker(worker_ctx, WorkerOptions(worker_id="w", concurrency=2, poll_s=600))
    task = asyncio.create_task(worker.run(stop))
    try:
        await _completed(creator, await _create(creator, 2))  # heard through LISTEN
        first_listener = await _listening_pid(admin, database)
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            for pid in set(await admin.fetchval(BACKENDS, database)) - creators:
                await _terminate(admin, pid)
            # Re-opening went through the dead pooled connections, then tried a new one.
            await _until_logged(caplog, "not currently accepting connections")
            missed = await _create(creator, 3)  # committed while nobody listens
        finally:
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        run = await _completed(creator, missed)
        assert [s.status for s in await _steps(creator, run.id)] == ["completed"]
        assert await _listening_pid(admin, database, not_pid=first_listener)
    finally:
        stop.set()
        await task
        await creator.close()
        await worker_ctx.close()
