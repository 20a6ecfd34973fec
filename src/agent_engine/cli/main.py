"""The ``agent-engine`` command."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console

from agent_engine import __version__
from agent_engine.config import Settings, get_settings

app = typer.Typer(
    name="agent-engine",
    help="Deterministic Agent Execution Engine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
router_app = typer.Typer(help="The Smart Model Router service.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(router_app, name="router")
err = Console(stderr=True, soft_wrap=True)


def _settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "AGENT_ENGINE_" + "_".join(str(part) for part in first["loc"]).upper()
        err.print(f"[red]error:[/] invalid configuration: {name}: {first['msg']}")
        raise typer.Exit(2) from None


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address [env: AGENT_ENGINE_HOST, default 127.0.0.1]")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port [env: AGENT_ENGINE_PORT, default 8000]"),
    ] = None,
) -> None:
    """Start the API (migrations applied at start unless AGENT_ENGINE_AUTO_MIGRATE=false)."""
    from agent_engine.api.app import create_app

    settings = _settings()
    if settings.auto_migrate:
        # Migrate before the server starts, so a bad database URL is one clear line, not a
        # start-up traceback.
        from agent_engine.storage.migrations import upgrade

        _run_migration(lambda: upgrade(settings.database_url))
    uvicorn.run(
        create_app(settings.model_copy(update={"auto_migrate": False})),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level,
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1, max=256, help="Steps run at once [env: AGENT_ENGINE_WORKER_CONCURRENCY]"
        ),
    ] = None,
    step_types: Annotated[
        str | None, typer.Option(help="Comma-separated step types to serve (default: all)")
    ] = None,
    worker_id: Annotated[
        str | None, typer.Option("--id", help="Worker id (default: host:pid)")
    ] = None,
    lease_s: Annotated[
        float | None, typer.Option(min=1.0, help="Lease length [env: AGENT_ENGINE_WORKER_LEASE_S]")
    ] = None,
) -> None:
    """Claim and execute steps of started runs until SIGTERM (then finish or hand back)."""
    import asyncio
    import logging

    from agent_engine.worker.main import serve_worker
    from agent_engine.worker.worker import WorkerOptions

    settings = _settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    types = frozenset(t.strip() for t in (step_types or "").split(",") if t.strip())
    options = WorkerOptions.from_settings(
        settings, concurrency=concurrency, lease_s=lease_s, worker_id=worker_id, step_types=types
    )
    asyncio.run(serve_worker(settings, options))


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply migrations up to REVISION on AGENT_ENGINE_DATABASE_URL."""
    from agent_engine.storage.migrations import upgrade

    settings = _settings()
    _run_migration(lambda: upgrade(settings.database_url, revision))
    typer.echo(f"database upgraded to {revision}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision ('base' empties it)")] = "-1",
) -> None:
    """Revert migrations down to REVISION on AGENT_ENGINE_DATABASE_URL."""
    from agent_engine.storage.migrations import downgrade

    settings = _settings()
    _run_migration(lambda: downgrade(settings.database_url, revision))
    typer.echo(f"database downgraded to {revision}")


def _run_migration(action: object) -> None:
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        action()  # type: ignore[operator]
    except (CommandError, SQLAlchemyError, OSError) as exc:
        err.print(f"[red]error:[/] {str(exc).splitlines()[0]}")
        raise typer.Exit(1) from None


@router_app.command("serve")
def router_serve(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port")] = 8100,
) -> None:
    """Start the Smart Model Router as its own HTTP service."""
    from agent_engine.router.app import create_router_app

    settings = _settings()
    uvicorn.run(create_router_app(settings), host=host, port=port, log_level=settings.log_level)
