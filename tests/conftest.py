"""Shared fixtures: one parametrised database fixture runs API tests on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from tests.databases import (
    PostgresServer,
    clone_sqlite,
    make_sqlite_template,
    prepare_postgres,
)
from tests.sandboxing import INTERPRETER_PATHS, TEST_SANDBOX

PINNED = pytest.StashKey[int]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[PINNED] = sum(1 for item in items if item.get_closest_marker("one_backend"))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    pinned = config.stash.get(PINNED, 0)
    if pinned:
        terminalreporter.write_line(
            f"{pinned} of the tests collected run on one backend only; why, for each: "
            "its one_backend mark (pytest --collect-only -m one_backend lists them)"
        )


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sqlite_template(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer | None]:
    server, reason = prepare_postgres()
    pytest.postgres_skip_reason = reason  # type: ignore[attr-defined]
    yield server
    if server is not None:
        server.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_template: Path,
    postgres_server: PostgresServer | None,
) -> AsyncIterator[str]:
    """A freshly migrated, empty database of each backend, private to the test."""
    if request.param == "sqlite":
        yield clone_sqlite(sqlite_template, tmp_path)
        return
    server = postgres_server
    if server is None:
        pytest.skip(getattr(pytest, "postgres_skip_reason", "PostgreSQL not reachable"))
    name = await server.create_database()
    try:
        yield server.url_for(name)
    finally:
        server.discard_database(name)


@pytest.fixture
def workspace_root(tmp_path: Path) -> Path:
    root = tmp_path / "workspaces"
    root.mkdir()
    return root


@pytest.fixture
def settings(database_url: str, workspace_root: Path) -> Settings:
    return Settings(
        database_url=database_url,
        auto_migrate=False,
        embedded_worker=False,  # tests that want workers start them explicitly
        workspace_roots=[workspace_root],
        sandbox_read_only_paths=list(INTERPRETER_PATHS),
        sandbox=TEST_SANDBOX,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client speaking to the real app (lifespan run) over ASGI."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http,
    ):
        yield http


def noop_plan(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"step_type": "noop", "input_data": {"value": n}, **extra} for n in range(1, count + 1)]
