"""``agent-engine runs budget`` and ``agent-engine budgets``: change a run's budget (with the
reason, into its audit chain) and set, list and remove the monthly budgets of projects and API
keys, on a running server. ``--url`` falls back to ``AGENT_ENGINE_URL`` and ``--api-key`` to
``AGENT_ENGINE_API_KEY``."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agent_engine.cli.remote import connected
from agent_engine.cli.runs import DEFAULT_URL, KeyOption, UrlOption, runs_app

budgets_app = typer.Typer(help="Monthly budgets of projects and API keys.", no_args_is_help=True)
out = Console(soft_wrap=True)
Scope = Annotated[str, typer.Argument(help="project or api_key")]
Subject = Annotated[str, typer.Argument(help="The project's name, or the key's id")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the server's answer as JSON")]


def _usd(value: str | None, option: str) -> str | None:
    """A USD amount as the server takes it; a clear error (exit 2) for anything else."""
    from agent_engine.cli.main import fail  # cli.main imports this module

    if value is None or value.lower() == "none":
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        fail(f"{option} must be an amount in USD, e.g. 2.50 (got {value!r})", 2)
    if not amount.is_finite() or amount < 0:
        fail(f"{option} must be zero or more (got {value!r})", 2)
    return format(amount, "f")


@runs_app.command("budget")
def change_run_budget(
    run_id: Annotated[str, typer.Argument(help="The run's id")],
    reason: Annotated[str, typer.Option("--reason", help="Why: recorded in the audit chain")],
    usd: Annotated[
        str | None, typer.Option("--usd", help="New budget in USD ('none' removes it)")
    ] = None,
    tokens: Annotated[int | None, typer.Option("--tokens", min=0, help="New token budget")] = None,
    no_token_limit: Annotated[
        bool, typer.Option("--no-token-limit", help="Remove the token budget")
    ] = False,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Change a run's budget; steps paused for budget go on."""
    from agent_engine.cli.main import fail
    from agent_engine.cli.remote import connected, jsonable
    from agent_engine.client import UNSET

    changes: dict[str, Any] = {}
    if usd is not None:
        changes["budget_usd"] = _usd(usd, "--usd")
    if tokens is not None and no_token_limit:
        fail("--tokens and --no-token-limit exclude each other", 2)
    if tokens is not None or no_token_limit:
        changes["budget_tokens"] = tokens
    if not changes:
        fail("give --usd, --tokens or --no-token-limit", 2)
    with connected(url, api_key) as client:
        changed = client.change_budget(
            run_id,
            reason=reason,
            budget_usd=changes.get("budget_usd", UNSET),
            budget_tokens=changes.get("budget_tokens", UNSET),
        )
    answer = jsonable(changed)
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    resumed = answer["resumed_steps"]
    typer.echo(
        f"run {answer['run_id']}: budget ${answer['budget_usd']} "
        f"(spent ${answer['spent_usd']}), {answer['status']}"
        + (f"; steps {', '.join(map(str, resumed))} go on" if resumed else "")
    )


@budgets_app.command("set")
def set_budget(
    scope: Scope,
    subject: Subject,
    usd: Annotated[str | None, typer.Option("--usd", help="USD per calendar month")] = None,
    tokens: Annotated[
        int | None, typer.Option("--tokens", min=0, help="Tokens per calendar month")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Set a project's or key's monthly budget (admin); its runs paused for budget go on."""
    from agent_engine.cli.main import fail

    if usd is None and tokens is None:
        fail("give --usd, --tokens or both", 2)
    body = {"limit_usd": _usd(usd, "--usd"), "limit_tokens": tokens}
    with connected(url, api_key) as client:
        answer = client.raw("PUT", f"/v1/budgets/{scope}/{subject}", json=body).json()
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    out.print(_table([answer]))


@budgets_app.command("list")
def list_budgets(
    as_json: JsonOption = False, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None
) -> None:
    """Every monthly budget with this month's spent, reserved and remaining."""
    with connected(url, api_key) as client:
        answer = client.raw("GET", "/v1/budgets").json()
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    out.print(_table(answer))


@budgets_app.command("remove")
def remove_budget(
    scope: Scope, subject: Subject, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None
) -> None:
    """Remove a project's or key's monthly budget (admin)."""

    with connected(url, api_key) as client:
        client.raw("DELETE", f"/v1/budgets/{scope}/{subject}")
    typer.echo(f"removed the monthly budget of {scope} {subject}")


def _table(rows: Any) -> Table:
    table = Table(title="Monthly budgets")
    for name in ("scope", "subject", "period", "limit", "spent", "reserved", "remaining"):
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(
            row["scope"],
            row["subject"],
            row["period"],
            _money(row["limit_usd"]),
            _money(row["spent_usd"]),
            _money(row["reserved_usd"]),
            _money(row["remaining_usd"]),
        )
    return table


def _money(value: Any) -> str:
    return "-" if value is None else f"${value}"
