"""``agent-engine runs list | show | steps | cost | events``: read runs from a server through
the typed client; ``--json`` prints the server's answer for scripts."""

from __future__ import annotations

from typing import Annotated

import typer

from agent_engine.cli.remote import JsonOption, connected, console, echo_json
from agent_engine.cli.runs import DEFAULT_URL, KeyOption, UrlOption

out = console()
RunArgument = Annotated[str, typer.Argument(help="The run's id")]


def list_runs(
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="Only runs in this status (repeat for several)"),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="Runs on the page")] = 20,
    all_pages: Annotated[bool, typer.Option("--all", help="Every run, page after page")] = False,
    cursor: Annotated[str | None, typer.Option(help="The page after this cursor")] = None,
    forked_from: Annotated[str | None, typer.Option(help="Only forks of this run")] = None,
    replay_of: Annotated[str | None, typer.Option(help="Only replays of this run")] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Runs, newest first: id, status, goal, project, cost, tokens, age."""
    from rich.table import Table

    from agent_engine.cli.remote import money
    from agent_engine.cli.run_views import age, short_goal, styled

    with connected(url, api_key) as client:
        if all_pages:
            runs = list(
                client.iter_runs(
                    status=status, page_size=limit, forked_from=forked_from, replay_of=replay_of
                )
            )
            next_cursor = None
        else:
            page = client.list_runs(
                status=status,
                limit=limit,
                cursor=cursor,
                forked_from=forked_from,
                replay_of=replay_of,
            )
            runs, next_cursor = page.items, page.next_cursor
    if as_json:
        echo_json({"items": runs, "next_cursor": next_cursor} if not all_pages else runs)
        return
    if not runs:
        out.print('no runs (make one with `agent-engine run "GOAL" --workspace DIR`)')
        return
    table = Table()
    table.add_column("id", no_wrap=True, min_width=36)  # whole, to copy into other commands
    table.add_column("status", no_wrap=True)
    for name in ("goal", "project", "cost", "tokens", "age"):
        table.add_column(name)
    for run in runs:
        table.add_row(
            str(run.id),
            styled(run.status),
            short_goal(run.goal),
            run.project or "-",
            money(run.total_cost_usd),
            str(run.input_tokens + run.output_tokens),
            age(run.created_at),
        )
    out.print(table)
    if next_cursor:
        out.print(f"more: --cursor {next_cursor}")


def show(
    run_id: RunArgument,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """A run: status, budget bar (spent / reserved / remaining) and its steps."""
    from agent_engine.cli.run_views import budget_bar, run_header, step_table

    with connected(url, api_key) as client:
        run = client.get_run(run_id)
        cost = client.cost(run_id)
    if as_json:
        echo_json({"run": run, "cost": cost})
        return
    out.print(run_header(run))
    out.print(budget_bar(cost))
    out.print(step_table(run))


def steps(
    run_id: RunArgument,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """The run's steps: number, type, status, duration, model, tokens, cost."""
    from agent_engine.cli.run_views import step_table

    with connected(url, api_key) as client:
        run = client.get_run(run_id)
    if as_json:
        echo_json(run.steps)
        return
    out.print(step_table(run))


def cost(
    run_id: RunArgument,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """The run's cost from the ledger: budget, spent, reserved, and by step and model."""
    from rich.table import Table

    from agent_engine.cli.remote import money
    from agent_engine.cli.run_views import budget_bar

    with connected(url, api_key) as client:
        summary = client.cost(run_id)
    if as_json:
        echo_json(summary)
        return
    out.print(budget_bar(summary))
    table = Table("by model", "calls", "tokens", "cost")
    for name, bucket in summary.get("by_model", {}).items():
        tokens = bucket.get("input_tokens", 0) + bucket.get("output_tokens", 0)
        table.add_row(name, str(bucket.get("calls", 0)), str(tokens), money(bucket["cost_usd"]))
    out.print(table)
    out.print(f"total {money(summary['total_cost_usd'])}")


def events(
    run_id: RunArgument,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Stream live events until the run ends or waits"),
    ] = False,
    type_prefix: Annotated[
        str | None, typer.Option("--type", help="Only events whose type starts so")
    ] = None,
    after: Annotated[int, typer.Option(min=0, help="Only events after this seq")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line (for scripts)")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """The run's audit events in order; with --follow, live (server-sent events) until the run
    completes, is cancelled, fails or waits for a person."""
    import json

    from agent_engine.cli.run_views import event_line

    with connected(url, api_key) as client:
        if follow:
            stream = client.events(run_id, until="waiting", after=after, type_prefix=type_prefix)
            for event in stream:
                if as_json:
                    typer.echo(event.model_dump_json())
                else:
                    typer.echo(event_line(event))
            return
        audit = client.audit(run_id, after_seq=after, limit=10_000)
    for item in audit.events:
        if type_prefix and not item.type.startswith(type_prefix):
            continue
        if as_json:
            typer.echo(json.dumps(item.model_dump(mode="json"), ensure_ascii=False))
        else:
            from agent_engine.client import RunEvent

            typer.echo(event_line(RunEvent.model_validate({**item.model_dump(), "id": item.seq})))


def register(runs_app: typer.Typer) -> None:
    """Add the read commands to the ``runs`` group."""
    runs_app.command("list")(list_runs)
    runs_app.command("show")(show)
    runs_app.command("steps")(steps)
    runs_app.command("cost")(cost)
    runs_app.command("events")(events)
