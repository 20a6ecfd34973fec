"""Driving the real app from synchronous code (hypothesis tests) on one long-lived event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from tests.databases import PostgresServer, clone_sqlite
from tests.sandboxing import INTERPRETER_PATHS, TEST_SANDBOX


@contextmanager
def database_for(
    backend: str, tmp_path: Path, sqlite_template: Path, server: PostgresServer | None
) -> Iterator[str]:
    """A fresh database of ``backend`` for a synchronous test; skips when PostgreSQL is absent."""
    if backend == "sqlite":
        yield clone_sqlite(sqlite_template, tmp_path)
        return
    if server is None:
        pytest.skip(getattr(pytest, "postgres_skip_reason", "PostgreSQL not reachable"))
    name = asyncio.run(server.create_database())
    try:
        yield server.url_for(name)
    finally:
        server.discard_database(name)


@contextmanager
def app_on_loop(url: str, tmp_path: Path) -> Iterator[tuple[asyncio.Runner, httpx.AsyncClient]]:
    """The app (lifespan entered) and a client, with the runner that must drive both."""
    settings = Settings(
        database_url=url,
        auto_migrate=False,
        embedded_worker=False,
        workspace_roots=[tmp_path],
        sandbox_read_only_paths=list(INTERPRETER_PATHS),
        sandbox=TEST_SANDBOX,
        _env_file=None,  # type: ignore[call-arg]
    )
    app = create_app(settings)
    runner = asyncio.Runner()
    lifespan = app.router.lifespan_context(app)
    runner.run(lifespan.__aenter__())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    try:
        yield runner, client
    finally:
        runner.run(client.aclose())
        runner.run(lifespan.__aexit__(None, None, None))
        runner.close()
