"""``agent-engine keys``: make, list and revoke API keys on AGENT_ENGINE_DATABASE_URL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from agent_engine.errors import EngineError

if TYPE_CHECKING:  # the engine is imported by the commands that use it: `--help` stays quick
    from agent_engine.config import Settings
    from agent_engine.engine.keys import ApiKeys

keys_app = typer.Typer(help="API keys and their roles.", no_args_is_help=True)
out = Console(soft_wrap=True)
CLI_ACTOR = "cli"
T = TypeVar("T")


def _with_keys(action: Callable[[ApiKeys], Awaitable[T]]) -> T:
    """Run ``action`` against the database of the settings (migrated first, as `serve` does);
    an engine error is one ``error:`` line."""
    # Imported here: cli.main imports this module to register its commands.
    from agent_engine.cli.main import fail, prepared_settings
    from agent_engine.engine.keys import ApiKeys
    from agent_engine.storage.database import create_engine, create_sessionmaker

    settings: Settings = prepared_settings()

    async def run() -> T:
        engine = create_engine(settings.database_url)
        try:
            return await action(ApiKeys(create_sessionmaker(engine, lambda _: None)))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except EngineError as exc:
        fail(exc.detail)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="Unique name; the actor the audit log records")],
    role: Annotated[str, typer.Option(help="viewer, operator, approver or admin")],
    may_auto_approve: Annotated[
        bool,
        typer.Option(
            "--may-auto-approve",
            help="May set rules that let steps run without a person (admin keys always may)",
        ),
    ] = False,
) -> None:
    """Make a key and print it once (only its hash is stored)."""
    from agent_engine.cli.main import fail  # cli.main imports this module
    from agent_engine.engine.keys import parse_role

    try:
        chosen = parse_role(role)
    except EngineError as exc:
        fail(exc.detail, 2)
    made = _with_keys(
        lambda keys: keys.create(
            name=name, role=chosen, may_auto_approve=may_auto_approve, created_by=CLI_ACTOR
        )
    )
    typer.echo(made.token)
    typer.echo(
        f"API key {made.info.name!r} ({made.info.role.value}) made; it is shown only now: "
        "send it as `Authorization: Bearer <key>`",
        err=True,
    )


@keys_app.command("list")
def list_keys() -> None:
    """List every key (revoked ones too), never their secrets."""
    infos = _with_keys(lambda keys: keys.list_keys())
    table = Table("name", "role", "prefix", "may auto-approve", "created", "revoked")
    for info in infos:
        table.add_row(
            info.name,
            info.role.value,
            info.prefix,
            "yes" if info.may_auto_approve else "no",
            f"{info.created_at:%Y-%m-%d %H:%M} by {info.created_by}",
            f"{info.revoked_at:%Y-%m-%d %H:%M} by {info.revoked_by}" if info.revoked_at else "",
        )
    out.print(table)


@keys_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The key's name")]) -> None:
    """Revoke a key (running servers refuse it within AGENT_ENGINE_AUTH_CACHE_TTL_S)."""
    info = _with_keys(lambda keys: keys.revoke(name, actor=CLI_ACTOR))
    typer.echo(f"API key {info.name!r} revoked")
