"""A fresh database per measurement: ``ae_bench_<pid>_<label>`` on PostgreSQL (dropped after),
a file in a temporary directory on SQLite."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

BACKENDS = ("postgres", "sqlite")
DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class BenchDatabase:
    """One empty database, addressed the way each system wants it."""

    backend: str
    engine_url: str  # SQLAlchemy async URL for agent_engine
    dbos_url: str  # plain URL for DBOS (psycopg / sqlite3)
    sqlite_path: Path | None = None


def _dsn(admin_url: str, database: str) -> str:
    url = make_url(admin_url).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


async def _admin(admin_url: str, sql: str) -> None:
    admin_db = make_url(admin_url).database or "postgres"
    connection = await asyncpg.connect(_dsn(admin_url, admin_db))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def check_postgres(admin_url: str) -> str | None:
    """None when the server answers, else why not (the PostgreSQL figures are then skipped)."""
    try:
        asyncio.run(asyncio.wait_for(_admin(admin_url, "SELECT 1"), timeout=5))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL not reachable at {make_url(admin_url).render_as_string()}: {exc}"
    return None


def postgres_version(admin_url: str) -> str:
    async def read() -> str:
        admin_db = make_url(admin_url).database or "postgres"
        connection = await asyncpg.connect(_dsn(admin_url, admin_db))
        try:
            return str(await connection.fetchval("SHOW server_version"))
        finally:
            await connection.close()

    return asyncio.run(read())


@contextmanager
def fresh_database(backend: str, label: str, *, admin_url: str) -> Iterator[BenchDatabase]:
    """Create an empty database for one measurement and remove it afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="ae_bench_") as directory:
            path = Path(directory) / f"{label}.db"
            yield BenchDatabase(
                backend, f"sqlite+aiosqlite:///{path}", f"sqlite:///{path}", sqlite_path=path
            )
        return
    name = f"ae_bench_{os.getpid()}_{label}"
    asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        engine_url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        yield BenchDatabase(backend, engine_url, _dsn(admin_url, name))
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
