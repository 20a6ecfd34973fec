"""Test databases: a fresh one per test, cloned from a template migrated once per session.

SQLite: the migrated template file is copied. PostgreSQL: ``CREATE DATABASE … TEMPLATE …``, which
copies files and takes a fraction of a second; the clone is made ahead, while the test before runs.
PostgreSQL comes from ``AGENT_ENGINE_TEST_POSTGRES_URL``; without it the local default is tried,
and the PostgreSQL tests skip with the reason when nothing answers (CI sets the variable, so there
they cannot skip).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from agent_engine.storage.migrations import upgrade

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
POSTGRES_URL_ENV = "AGENT_ENGINE_TEST_POSTGRES_URL"
MAX_WAITING_DROPS = 8  # clones of finished tests not dropped yet, at most


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


class PostgresServer:
    """The server with its migrated template; hands out fresh clones of it.

    A clone is made ahead, in a thread of its own, while the test before runs, and a test's clone is
    dropped there after it (``DROP DATABASE`` waits for a checkpoint): each test still gets its own
    database, fresh from the template, without waiting for either.
    """

    def __init__(self, url: str, template: str) -> None:
        self.url = url  # the URL given (its database is only used to connect for admin commands)
        self.template = template
        # Two threads: a clone made ahead never waits behind a drop's checkpoint.
        self._cloning = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ae-test-clone")
        self._dropping = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ae-test-drop")
        self._next: Future[str] | None = None
        self._drops: list[Future[None]] = []

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

    def _clone(self) -> str:
        name = f"ae_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        return name

    def _drop(self, name: str) -> None:
        asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    async def create_database(self) -> str:
        """A new database cloned from the template, private to the caller."""
        ready = self._next or self._cloning.submit(self._clone)
        self._next = self._cloning.submit(self._clone)
        return await asyncio.wrap_future(ready)

    async def drop_database(self, name: str) -> None:
        """Drop ``name`` now (a test that drops its own database while it runs), on a connection
        of its own rather than behind the background drops."""
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def discard_database(self, name: str) -> None:
        """Drop ``name`` in the background: for a test that is done with it."""
        self._drops = [drop for drop in self._drops if not drop.done() or drop.exception()]
        waiting = [drop for drop in self._drops if not drop.done()]
        if len(waiting) >= MAX_WAITING_DROPS:
            wait(waiting[:1])  # tests outpace the drops: keep the clones left on disk bounded
        self._drops.append(self._dropping.submit(self._drop, name))

    def quiesce(self) -> None:
        """Wait until no clone or drop runs in the background: for a test that reads the
        server's own counters (a CREATE or DROP DATABASE beside it changes what it measures)."""
        if self._next is not None:
            wait([self._next])
        wait([drop for drop in self._drops if not drop.done()])

    def close(self) -> None:
        """Drop the clone made ahead, wait for the drops, and drop the template last."""
        if self._next is not None:
            self._drop(self._next.result())
            self._next = None
        self._cloning.shutdown(wait=True)
        self._dropping.shutdown(wait=True)
        failures = [drop.exception() for drop in self._drops if drop.exception() is not None]
        self._drop(self.template)
        if failures:
            raise RuntimeError(f"{len(failures)} test databases were not dropped: {failures[0]}")


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
