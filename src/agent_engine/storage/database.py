"""Engine and session factory. SQLite gets WAL, a busy timeout, foreign keys and IMMEDIATE
transactions so that concurrent writers queue instead of failing on lock upgrades."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from agent_engine.storage.audit import CHANGED_RUNS, ENDED_RUNS, take_notices
from agent_engine.storage.documents import load_document
from agent_engine.tracing import emit_run_span

SQLITE_BUSY_TIMEOUT_MS = 30_000
PING_AFTER_IDLE_S = 5.0
READ_ONLY = "agent_engine_read_only"


class DatabaseFolderMissingError(FileNotFoundError):
    """The folder of a SQLite database file does not exist. It is not created on a guess: a
    mistyped path would otherwise start an empty database somewhere nobody looks."""


def _prepare_sqlite_file(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        folder = Path(database).parent.absolute()
        if not folder.is_dir():
            raise DatabaseFolderMissingError(
                f"the folder {folder} of the SQLite file does not exist; create it first "
                f"(mkdir -p {folder}) or name a file in an existing folder"
            )


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url`` with the per-backend settings the engine relies on."""
    if url.startswith("sqlite"):
        _prepare_sqlite_file(url)
        engine = create_async_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            json_deserializer=load_document,
            **kwargs,
        )
        configure_sqlite(engine.sync_engine)
        return engine
    engine = create_async_engine(url, json_deserializer=load_document, **kwargs)
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """Check a pooled connection before use only when it sat idle for a while.

    SQLAlchemy's ``pool_pre_ping`` costs three round trips on every checkout with asyncpg; a
    connection in steady use has just proven itself. An idle one may have been dropped by a
    server restart or a firewall, so it is pinged and replaced if dead (a connection that dies
    while in use is invalidated by SQLAlchemy on the error, and the caller's error is a 503).
    """
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:  # any failure means the connection is unusable
            raise DisconnectionError(f"pooled connection is dead: {exc}") from exc


def create_sqlite_sync_engine(url: str) -> Engine:
    """A blocking engine on the same SQLite file, for writes done whole in a worker thread (one
    thread hop per transaction instead of one per statement)."""
    sync_url = make_url(url).set(drivername="sqlite+pysqlite")
    engine = sa_create_engine(
        sync_url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        json_deserializer=load_document,
    )
    configure_sqlite(engine)
    return engine


def configure_sqlite(sync_engine: Engine) -> None:
    """WAL, busy timeout, foreign keys, and BEGIN IMMEDIATE for writing transactions."""

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that we can say BEGIN IMMEDIATE ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: a read-then-write transaction can never fail
        # half-way with SQLITE_BUSY on lock upgrade, which makes SQLite behave like row locks.
        # Read-only transactions take no lock at all: WAL lets them read beside the writer.
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_sessionmaker(
    engine: AsyncEngine, on_events_committed: Callable[[list[str]], None]
) -> async_sessionmaker[AsyncSession]:
    """Sessions for ``engine``; ``on_events_committed`` gets the notifications of each commit
    (announced in this process; PostgreSQL's trigger also announces them to the others)."""

    class EngineSession(Session):
        pass

    @event.listens_for(EngineSession, "after_commit")
    def _after_commit(session: Session) -> None:
        notices = take_notices(session.info)
        if notices:
            on_events_committed(notices)
        for run in session.info.pop(ENDED_RUNS, ()):
            emit_run_span(run)

    @event.listens_for(EngineSession, "after_rollback")
    def _after_rollback(session: Session) -> None:
        session.info.pop(CHANGED_RUNS, None)
        session.info.pop(ENDED_RUNS, None)

    return async_sessionmaker(
        engine, expire_on_commit=False, autoflush=False, sync_session_class=EngineSession
    )


@asynccontextmanager
async def read_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session for reading only: on SQLite one consistent snapshot and no write lock; on
    PostgreSQL no transaction around the statements (autocommit)."""
    async with sessions() as session:
        options: dict[str, Any] = {READ_ONLY: True}
        if session.get_bind().dialect.name == "postgresql":
            # Under READ COMMITTED each statement takes its own snapshot, inside a transaction
            # or not: the BEGIN and ROLLBACK round trips around a read would buy nothing.
            options["isolation_level"] = "AUTOCOMMIT"
        await session.connection(execution_options=options)
        yield session


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session inside one transaction: committed on success, rolled back on any error."""
    async with sessions() as session, session.begin():
        yield session
