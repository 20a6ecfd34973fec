"""The Alembic and uvicorn commands, run from the repository root as a user runs them: the root
``alembic.ini`` reaches the database named by ``AGENT_ENGINE_DATABASE_URL`` with the engine's own
migrations, and ``uvicorn --factory agent_engine.api.app:create_app`` serves the API; on a fresh
SQLite file and a fresh PostgreSQL database."""

from __future__ import annotations

import ast
import asyncio
import configparser
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from agent_engine.storage.database import create_engine
from agent_engine.storage.migrations import MIGRATIONS_DIR, alembic_config, current_revision
from tests.databases import PostgresServer, sqlite_url
from tests.processes import clean_env, free_port, stop, wait_healthy

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # .venv/bin under `make test`
COMMAND_LIMIT_S = 120  # a failure bound, not a measurement


def _admin_dsn(server: PostgresServer) -> str:
    return make_url(server.url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(server: PostgresServer, sql: str) -> None:
    connection = await asyncpg.connect(_admin_dsn(server))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def fresh_database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_server: PostgresServer | None
) -> AsyncIterator[str]:
    """A database with no schema at all (not cloned from the migrated template)."""
    if request.param == "sqlite":
        # A fresh file in an existing folder (a missing folder is refused, see test_cli.py).
        (tmp_path / "var").mkdir()
        yield sqlite_url(tmp_path / "var" / "agent-engine.db")
        return
    if postgres_server is None:
        pytest.skip(getattr(pytest, "postgres_skip_reason", "PostgreSQL not reachable"))
    name = f"ae_seed_{uuid.uuid4().hex[:12]}"
    await _admin(postgres_server, f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.url_for(name)
    finally:
        await _admin(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def command_env(database_url: str, **overrides: str) -> dict[str, str]:
    env = clean_env(AGENT_ENGINE_DATABASE_URL=database_url, **overrides)
    env.pop("ALEMBIC_CONFIG", None)  # the root alembic.ini is what is under test
    return env


def alembic(
    database_url: str, *args: str, **env_overrides: str
) -> subprocess.CompletedProcess[str]:
    """``.venv/bin/alembic ARGS`` in the repository root, as the set-up documents it."""
    return subprocess.run(
        [str(BIN / "alembic"), *args],
        cwd=REPOSITORY,
        env=command_env(database_url, **env_overrides),
        capture_output=True,
        text=True,
        timeout=COMMAND_LIMIT_S,
        check=False,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    """The command's stdout and stderr, after asserting it exited 0."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{output}"
    return output


def head_and_previous() -> tuple[str, str]:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None
    previous = script.get_revision(head).down_revision
    assert isinstance(previous, str)
    return head, previous


async def revision_of(database_url: str) -> str | None:
    engine = create_engine(database_url)
    try:
        return await current_revision(engine)
    finally:
        await engine.dispose()


async def test_alembic_upgrade_downgrade_upgrade_from_the_repository_root(
    fresh_database_url: str,
) -> None:
    head, previous = head_and_previous()
    assert await revision_of(fresh_database_url) is None

    output = succeeded(await asyncio.to_thread(alembic, fresh_database_url, "upgrade", "head"))
    assert f"Running upgrade {previous} -> {head}" in output
    assert await revision_of(fresh_database_url) == head

    output = succeeded(await asyncio.to_thread(alembic, fresh_database_url, "downgrade", "-1"))
    assert f"Running downgrade {head} -> {previous}" in output
    assert await revision_of(fresh_database_url) == previous
    # The check below is a real one: one revision behind, it refuses.
    behind = await asyncio.to_thread(alembic, fresh_database_url, "check")
    assert behind.returncode != 0
    assert "Target database is not up to date" in behind.stderr

    succeeded(await asyncio.to_thread(alembic, fresh_database_url, "upgrade", "head"))
    assert await revision_of(fresh_database_url) == head


def _config_writing_revisions_to(target: Path, copy: Path) -> Path:
    """The root alembic.ini with one more version location, where new revisions are written."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPOSITORY / "alembic.ini")
    locations = [str(MIGRATIONS_DIR / "versions"), str(target)]
    parser["alembic"]["version_locations"] = os.pathsep.join(locations)
    with copy.open("w") as file:
        parser.write(file)
    return copy


def _bodies_are_pass(revision_file: Path) -> bool:
    functions = {
        node.name: node
        for node in ast.parse(revision_file.read_text()).body
        if isinstance(node, ast.FunctionDef)
    }
    return all(
        [type(statement) for statement in functions[name].body] == [ast.Pass]
        for name in ("upgrade", "downgrade")
    )


async def test_alembic_check_and_autogenerate_find_no_changes_after_upgrade(
    fresh_database_url: str, tmp_path: Path
) -> None:
    succeeded(await asyncio.to_thread(alembic, fresh_database_url, "upgrade", "head"))

    checked = succeeded(await asyncio.to_thread(alembic, fresh_database_url, "check"))
    assert "No new upgrade operations detected." in checked

    versions_before = sorted(p.name for p in (MIGRATIONS_DIR / "versions").iterdir())
    target = tmp_path / "new-versions"
    target.mkdir()
    config = _config_writing_revisions_to(target, tmp_path / "alembic.ini")
    args = ["-c", str(config), "revision", "--autogenerate", "-m", "x", "--rev-id", "9999"]
    args += ["--version-path", str(target)]
    succeeded(await asyncio.to_thread(alembic, fresh_database_url, *args))
    generated = list(target.iterdir())
    assert [p.name for p in generated] == ["9999_x.py"]
    assert _bodies_are_pass(generated[0]), generated[0].read_text()
    assert sorted(p.name for p in (MIGRATIONS_DIR / "versions").iterdir()) == versions_before


def assert_failed_in_one_line(result: subprocess.CompletedProcess[str], message: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"FAILED: {message}" in result.stdout, output
    assert "Traceback" not in output


def test_alembic_reports_an_invalid_setting_in_one_line(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "unused.db")
    result = alembic(url, "upgrade", "head", AGENT_ENGINE_PORT="not-a-port")
    assert_failed_in_one_line(result, "invalid configuration: AGENT_ENGINE_PORT")
    assert not (tmp_path / "unused.db").exists()


def test_alembic_reports_an_unreachable_database_in_one_line() -> None:
    nobody_listens = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x"
    result = alembic(nobody_listens, "upgrade", "head")
    assert_failed_in_one_line(result, "[Errno 111] Connect call failed")


async def test_uvicorn_factory_serves_the_api_with_settings_from_the_environment(
    fresh_database_url: str, tmp_path: Path
) -> None:
    head, _ = head_and_previous()
    workspaces = tmp_path / "workspaces"
    workspaces.mkdir()
    port = free_port()
    log_path = tmp_path / "uvicorn.log"
    env = command_env(fresh_database_url, AGENT_ENGINE_WORKSPACE_ROOTS=str(workspaces))
    argv = [str(BIN / "uvicorn"), "--factory", "agent_engine.api.app:create_app"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*argv, "--port", str(port)],
            cwd=tmp_path,  # away from any .env in the repository: the environment alone decides
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_healthy, url, process, log_path)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            health = await client.get("/healthz")
            ready = await client.get("/readyz")
            runs = await client.get("/v1/agent-runs")
    finally:
        stop(process)
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"
    # Ready means the database the environment names was reached and migrated at start-up.
    assert ready.status_code == 200, ready.text
    assert ready.json()["schema_revision"] == head
    assert runs.status_code == 200, runs.text
    assert runs.json()["items"] == []
    assert await revision_of(fresh_database_url) == head
