"""Alembic environment: runs migrations over the engine's async driver.

Two ways in, one database: ``agent-engine db`` and the API's start-up build an Alembic config that
carries the URL; the ``alembic`` command reads the repository's ``alembic.ini``, which names none,
so the URL comes from the engine's settings (``AGENT_ENGINE_DATABASE_URL``) here.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from pydantic import ValidationError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from agent_engine.config import get_settings
from agent_engine.storage.database import create_engine
from agent_engine.storage.migrations import is_modelled
from agent_engine.storage.tables import Base

target_metadata = Base.metadata
config = context.config
# Only the alembic command reads an ini file; its logging sections print each revision applied.
ini_file = config.config_file_name
from_command_line = ini_file is not None
if ini_file is not None:
    fileConfig(ini_file, disable_existing_loggers=False)


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    try:
        return get_settings().database_url
    except ValidationError as exc:
        # The alembic command prints a CommandError as one line instead of a traceback.
        first = exc.errors()[0]
        name = "AGENT_ENGINE_" + "_".join(str(part) for part in first["loc"]).upper()
        raise CommandError(f"invalid configuration: {name}: {first['msg']}") from None


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=is_modelled,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def _run_online(url: str) -> None:
    try:
        asyncio.run(_run_async(url))
    except (SQLAlchemyError, OSError) as exc:
        if not from_command_line:
            raise  # the engine's callers report these themselves
        raise CommandError(str(exc).splitlines()[0]) from exc


url = _database_url()
if context.is_offline_mode():
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    _run_online(url)
