"""The ``agent-engine`` command."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from agent_engine import __version__
from agent_engine.cli import budgets, compare, costs, run_goal, runs_act, runs_read
from agent_engine.cli.audit import audit_app
from agent_engine.cli.keys import keys_app
from agent_engine.cli.runs import runs_app
from agent_engine.cli.startup import describe_serve, log_to_stderr, shown_database_url
from agent_engine.config import DEFAULT_DATABASE_URL, Settings, get_settings

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
app.add_typer(keys_app, name="keys")
# `runs` (cli/runs.py: replay) also gets compare, divergence and fork (cli/compare.py), the
# read commands (cli/runs_read.py) and the acting ones (cli/runs_act.py).
compare.register(runs_app)
runs_read.register(runs_app)
runs_act.register(runs_app)
run_goal.register(app)
app.add_typer(runs_app, name="runs")
app.add_typer(audit_app, name="audit")
costs.register(app)
app.add_typer(budgets.budgets_app, name="budgets")
err = Console(stderr=True, soft_wrap=True)
logger = logging.getLogger("agent_engine.serve")
DATABASE_URL_VARIABLE = "AGENT_ENGINE_DATABASE_URL"


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one ``error:`` line on stderr and exit with ``code`` (no traceback)."""
    err.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def prepared_settings() -> Settings:
    """The settings, with the database reached and (unless AGENT_ENGINE_AUTO_MIGRATE=false)
    migrated to the head: what commands that use the schema need first."""
    settings = _settings()
    _reach_database(settings)
    if settings.auto_migrate:
        # Migrate before the work starts, so a failing migration is one clear line, not a
        # traceback.
        from agent_engine.storage.migrations import upgrade

        _run_migration(lambda: upgrade(settings.database_url))
    return settings


def _settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "AGENT_ENGINE_" + "_".join(str(part) for part in first["loc"]).upper()
        message = str(first["msg"]).removeprefix("Value error, ")
        fail(f"invalid configuration: {name}: {message}", 2)


def _check_policies(settings: Settings) -> None:
    """Refuse to start on a policies or MCP servers file that cannot be used: one line naming
    the file and the field."""
    from agent_engine.engine.policies import load_policy_catalog
    from agent_engine.errors import McpServersFileError, PolicyFileError
    from agent_engine.executors.mcp_config import load_mcp_servers

    try:
        load_policy_catalog(settings.policies_file)
    except PolicyFileError as exc:
        fail(f"invalid configuration: AGENT_ENGINE_POLICIES_FILE: {exc.detail}", 2)
    try:
        load_mcp_servers(settings.mcp_servers)
    except McpServersFileError as exc:
        fail(f"invalid configuration: AGENT_ENGINE_MCP_SERVERS: {exc.detail}", 2)
    _check_audit_keys(settings)


def _check_audit_keys(settings: Settings) -> None:
    """Refuse to start on an audit key file that cannot be used (one line naming it)."""
    from agent_engine.engine.audit_keys import load_signer, load_verify_key
    from agent_engine.errors import AuditKeyFileError

    try:
        load_signer(settings)
        load_verify_key(settings)
    except AuditKeyFileError as exc:
        fail(f"invalid configuration: {exc.detail}", 2)


@contextmanager
def _tracing(service_name: str) -> Iterator[None]:
    """The process's traces, as the OTEL_* variables ask (docs/tracing.md); a variable asking
    for what we cannot do is one line on stderr and exit code 1."""
    from agent_engine.tracing import TracingConfigError, setup_tracing, shutdown_tracing

    try:
        setup_tracing(service_name)
    except TracingConfigError as exc:
        fail(str(exc))
    try:
        yield
    finally:
        shutdown_tracing()  # what is still buffered is exported


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

    _check_policies(_settings())
    # The app is told where it is bound: off loopback it requires API keys.
    settings = prepared_settings().model_copy(update={"auto_migrate": False})
    settings = settings.model_copy(update={"host": host or settings.host})
    if settings.auth_enforced:
        _require_admin_key(settings)
    log_to_stderr(settings)
    logger.info(describe_serve(settings))
    with _tracing("agent-engine"):
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=port or settings.port,
            log_level=settings.log_level,
            log_config=None,  # uvicorn's lines go through the structured logs too
        )


def _require_admin_key(settings: Settings) -> None:
    """Refuse to serve with auth on until someone can administer keys: a server nobody can
    call would otherwise start, or worse, one reachable from the network with no way in."""
    import asyncio

    from agent_engine.engine.keys import ApiKeys
    from agent_engine.storage.database import create_engine, create_sessionmaker

    async def exists() -> bool:
        engine = create_engine(settings.database_url)
        try:
            return await ApiKeys(create_sessionmaker(engine, lambda _: None)).admin_exists()
        finally:
            await engine.dispose()

    if not asyncio.run(exists()):
        why = (
            "AGENT_ENGINE_AUTH_REQUIRED=true"
            if settings.auth_required
            else f"bound to {settings.host}, not loopback"
        )
        fail(
            f"authentication is required ({why}) and no admin API key exists; make one with "
            "`agent-engine keys create --name admin --role admin` and start again"
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

    from agent_engine.worker.main import serve_worker
    from agent_engine.worker.worker import WorkerOptions

    settings = _settings()
    _check_policies(settings)
    _reach_database(settings)
    log_to_stderr(settings)
    types = frozenset(t.strip() for t in (step_types or "").split(",") if t.strip())
    options = WorkerOptions.from_settings(
        settings, concurrency=concurrency, lease_s=lease_s, worker_id=worker_id, step_types=types
    )
    with _tracing("agent-engine-worker"):
        asyncio.run(serve_worker(settings, options))


@app.command()
def prune(
    older_than: Annotated[
        str, typer.Option(help="Age of the finished runs to prune: 30d, 12h or 90m")
    ],
    keep_audit: Annotated[
        bool,
        typer.Option(
            "--keep-audit",
            help="Keep the runs and their audit chains; prune only their payloads (hashes kept)",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be pruned; change nothing")
    ] = False,
) -> None:
    """Prune finished runs older than --older-than in batches of 500: delete them whole, or
    with --keep-audit replace their payloads by markers keeping their hashes. The model calls
    of no run older than it lose their payloads too (deleted, without --keep-audit, once their
    month is over), and the blobs no row references are collected."""
    import asyncio

    from agent_engine.engine.retention import parse_age, prune_database
    from agent_engine.errors import EngineError

    try:
        age = parse_age(older_than)
    except EngineError as exc:
        fail(exc.detail, 2)
    settings = prepared_settings()
    report = asyncio.run(
        prune_database(settings.database_url, age, keep_audit=keep_audit, dry_run=dry_run)
    )
    typer.echo(report.line())


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply migrations up to REVISION on AGENT_ENGINE_DATABASE_URL."""
    from agent_engine.storage.migrations import upgrade

    settings = _settings()
    _reach_database(settings)
    _run_migration(lambda: upgrade(settings.database_url, revision))
    typer.echo(f"database upgraded to {revision}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision ('base' empties it)")] = "-1",
) -> None:
    """Revert migrations down to REVISION on AGENT_ENGINE_DATABASE_URL."""
    from agent_engine.storage.migrations import downgrade

    settings = _settings()
    _reach_database(settings)
    _run_migration(lambda: downgrade(settings.database_url, revision))
    typer.echo(f"database downgraded to {revision}")


def _reach_database(settings: Settings) -> None:
    """Connect once before doing anything, so that an unreachable database, or a SQLite file in
    a folder that does not exist, is one line naming AGENT_ENGINE_DATABASE_URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from agent_engine.storage.database import DatabaseFolderMissingError
    from agent_engine.storage.migrations import database_revision

    url = settings.database_url
    if url == DEFAULT_DATABASE_URL:
        # The default file's folder is the engine's own to make; a folder named in a URL
        # someone wrote is not (a typo would start an empty database elsewhere).
        Path(make_url(url).database or ".").parent.mkdir(exist_ok=True)
    try:
        database_revision(url)
    except DatabaseFolderMissingError as exc:
        fail(f"{DATABASE_URL_VARIABLE}: {exc}")
    except (SQLAlchemyError, OSError) as exc:
        fail(
            f"could not connect to the database at {shown_database_url(url)} "
            f"(set by {DATABASE_URL_VARIABLE}): {_reason(exc)}"
        )


def _reason(exc: BaseException) -> str:
    """The first line of what the driver said, without SQLAlchemy's wrapping."""
    from sqlalchemy.exc import DBAPIError

    cause: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        # The async adapters wrap the driver's exception once more; its own words are clearest.
        cause = exc.orig.__cause__ or exc.orig
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


def _run_migration(action: Callable[[], None]) -> None:
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        action()
    except (CommandError, SQLAlchemyError, OSError) as exc:
        fail(_reason(exc))


@router_app.command("serve")
def router_serve(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port")] = 8100,
) -> None:
    """Start the Smart Model Router as its own HTTP service."""
    from agent_engine.router.app import create_router_app

    settings = _settings()
    log_to_stderr(settings)
    with _tracing("agent-engine-router"):
        uvicorn.run(
            create_router_app(settings),
            host=host,
            port=port,
            log_level=settings.log_level,
            log_config=None,  # uvicorn's lines go through the structured logs too
        )
