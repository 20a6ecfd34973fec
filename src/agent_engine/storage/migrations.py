"""Apply and revert schema migrations programmatically (the only way the schema is made)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_engine.storage.database import create_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Indexes the migrations make on PostgreSQL that no model declares: they need an extension
# (pg_trgm, migration 0019) that may be missing, so their absence is no drift either.
UNMODELLED_INDEXES = frozenset({"ix_agent_runs_goal_trigrams"})


def is_modelled(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic's ``include_object``: everything but ``UNMODELLED_INDEXES`` is compared."""
    return not (type_ == "index" and name in UNMODELLED_INDEXES)


def alembic_config(url: str) -> Config:
    """An Alembic configuration for ``url`` without any ini file."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on '%' in passwords.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` (blocking; call from a thread inside an event loop)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Downgrade the database at ``url`` to ``revision``."""
    command.downgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    """Upgrade from async code: Alembic's env runs its own event loop, so it gets a thread."""
    await asyncio.to_thread(upgrade, url, revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


def database_revision(url: str) -> str | None:
    """Connect to the database at ``url`` and return its revision (blocking; the driver's error
    if it cannot be reached). Commands call it first so that an unreachable database is told
    apart from a failing migration."""

    async def read() -> str | None:
        engine = create_engine(url)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    return asyncio.run(read())
