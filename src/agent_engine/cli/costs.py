"""``agent-engine costs``: the ledger's totals from a running server (``GET /v1/costs``), as a
table, CSV or JSON. A client of a serve like ``runs replay``: ``--url`` falls back to
``AGENT_ENGINE_URL`` and ``--api-key`` to ``AGENT_ENGINE_API_KEY``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agent_engine.cli.runs import DEFAULT_URL, KeyOption, UrlOption

out = Console(soft_wrap=True)
MONEY = ("cost_usd", "saved_by_cache_usd", "saved_by_routing_usd")
# The table's columns beyond the groups (--csv and --json have every field).
SHOWN = {
    "calls": "calls",
    "tokens": "tokens",
    "cost_usd": "cost",
    "saved_by_cache_usd": "saved: cache",
    "saved_by_routing_usd": "saved: routing",
}


def register(app: typer.Typer) -> None:
    """Add the ``costs`` command to ``app``."""
    app.command("costs")(costs)


def costs(
    group_by: Annotated[
        list[str] | None,
        typer.Option(
            "--group-by", help="day, model, step_type, project or key (repeat for several)"
        ),
    ] = None,
    since: Annotated[str | None, typer.Option(help="First UTC day (YYYY-MM-DD)")] = None,
    until: Annotated[str | None, typer.Option(help="Last UTC day (YYYY-MM-DD)")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project's calls")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV (a header row)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Totals of every model call (calls, tokens, cost, savings), grouped as asked."""
    from agent_engine.cli.main import fail  # cli.main imports this module
    from agent_engine.cli.remote import connected

    if as_csv and as_json:
        fail("--csv and --json exclude each other", 2)
    params: dict[str, Any] = {"group_by": group_by or []}
    params.update({k: v for k, v in (("since", since), ("until", until)) if v is not None})
    if project is not None:
        params["project"] = project
    if as_csv:
        params["format"] = "csv"
    with connected(url, api_key) as client:
        response = client.raw("GET", "/v1/costs", params=params)
    if as_csv:
        typer.echo(response.text, nl=False)
        return
    report: dict[str, Any] = response.json()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    out.print(_table(report))


def _table(report: dict[str, Any]) -> Table:
    groups = list(report["group_by"])
    table = Table(title="Model calls")
    for name in [*groups, *SHOWN.values()]:
        table.add_column(name, overflow="fold")  # a model id is never cut short
    for row in report["rows"]:
        row = {**row, "tokens": row["input_tokens"] + row["output_tokens"]}
        table.add_row(*(_shown(name, row.get(name)) for name in [*groups, *SHOWN]))
    return table


def _shown(name: str, value: Any) -> str:
    if value is None:
        return "-"
    return f"${value:.9f}".rstrip("0").rstrip(".") if name in MONEY else str(value)
