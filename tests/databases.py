"""Test databases: a fresh one per test, cloned from a template migrated once per session.

SQLite: the migrated template file is copied. PostgreSQL: ``CREATE DATABASE … TEMPLATE …``, which
copies files and takes a fraction of a second. PostgreSQL comes from
``AGENT_ENGINE_TEST_POSTGRES_URL``; without it the local default is tried, and the PostgreSQL tests
skip with the reason when nothing answers (CI sets the variable, so there they cannot skip).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from agent_engine.storage.migrations import upgrade

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
POSTGRES_URL_ENV = "AGENT_ENGINE_TEST_POSTGRES_URL"


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def make_sqlite_template(directory: Path) -> Path:
    template = directory / "template.db"
    upgrade(sqlite_url(template))
    return template


def clone_sqlite(template: Path, directory: Path) -> str:
    target = directory / f"test-{uuid.uuid4().hex[:8]}.db"
    shutil.copyfile(template, target)
    return sqlite_url(target)


@dataclass(frozen=True)
class PostgresServer:
    url: str  # the URL given (its database is only used to connect for admin commands)
    template: str

    def _dsn(self, database: str) -> str:
        url = make_url(self.url).set(drivername="postgresql", database=database)
        return url.render_as_string(hide_password=False)

    def url_for(self, database: str) -> str:
        return make_url(self.url).set(database=database).render_as_string(hide_password=False)

    async def _admin(self, sql: str) -> None:
        connection = await asyncpg.connect(self._dsn(make_url(self.url).database or "postgres"))
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    async def create_database(self) -> str:
        name = f"ae_test_{uuid.uuid4().hex[:12]}"
        await self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    async def drop_database(self, name: str) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_url() -> str:
    return os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)


async def _reachable(url: str) -> str | None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        connection = await asyncio.wait_for(asyncpg.connect(dsn), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL not reachable at {make_url(url).render_as_string()}: {exc}"
    await connection.close()
    return None


def prepare_postgres() -> tuple[PostgresServer | None, str | None]:
    """The server with a migrated template database, or the reason there is none."""
    url = postgres_url()
    problem = asyncio.run(_reachable(url))
    if problem is not None:
        if os.environ.get(POSTGRES_URL_ENV):
            raise RuntimeError(f"{POSTGRES_URL_ENV} is set but {problem}")
        return None, problem
    template = f"ae_template_{os.getpid()}"
    server = PostgresServer(url=url, template=template)
    asyncio.run(server._admin(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
    asyncio.run(server._admin(f'CREATE DATABASE "{template}"'))
    upgrade(server.url_for(template))
    return server, None


def drop_template(server: PostgresServer) -> None:
    asyncio.run(server._admin(f'DROP DATABASE IF EXISTS "{server.template}" WITH (FORCE)'))
