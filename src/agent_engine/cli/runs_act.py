"""``agent-engine runs approve | reject | cancel | retry | resume | export | import | watch``: act
on a server's runs through the typed client, under the caller's key and role."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent_engine.cli.remote import JsonOption, connected, echo_json, find_step
from agent_engine.cli.runs import DEFAULT_URL, KeyOption, UrlOption

if TYPE_CHECKING:
    from agent_engine.client import EngineClient

RunArgument = Annotated[str, typer.Argument(help="The run's id")]
OptionalStep = Annotated[
    str | None,
    typer.Argument(help="The step's number or id (default: the one that awaits approval)"),
]
PlanFlag = Annotated[bool, typer.Option("--plan", help="Decide the plan the run waits on")]


def _waiting_step(client: EngineClient, run_id: str, step: str | None) -> str:
    """The id of the step named, or of the run's only step awaiting approval."""
    from agent_engine.cli.main import fail

    run = client.get_run(run_id)
    if step is not None:
        return str(find_step(run, step).id)
    waiting = [s for s in run.steps if s.status == "awaiting_approval"]
    if len(waiting) != 1:
        fail(
            f"run {run_id} has {len(waiting)} steps awaiting approval: name one"
            if waiting
            else f"run {run_id} has no step awaiting approval ({run.status})"
        )
    return str(waiting[0].id)


def _done(run_id: str, what: str, status: str) -> None:
    typer.echo(f"run {run_id}: {what}; the run is {status}")


def approve(
    run_id: RunArgument,
    step: OptionalStep = None,
    comment: Annotated[str | None, typer.Option(help="Recorded with the decision")] = None,
    plan: PlanFlag = False,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Approve the step (or, with --plan, the plan) that waits for a person."""
    with connected(url, api_key) as client:
        if plan:
            run = client.approve_plan(run_id, comment)
            what = "plan approved"
        else:
            step_id = _waiting_step(client, run_id, step)
            run = client.approve(run_id, step_id, comment)
            what = f"step {find_step(run, step_id).step_number} approved"
    if as_json:
        echo_json(run)
        return
    _done(run_id, what, run.status)


def reject(
    run_id: RunArgument,
    step: OptionalStep = None,
    reason: Annotated[str, typer.Option(help="Why (required; recorded)")] = "",
    plan: PlanFlag = False,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Reject the waiting step (or --plan): the run fails unless the step is optional."""
    from agent_engine.cli.main import fail

    if not reason.strip():
        fail("give --reason: a rejection is recorded with why", 2)
    with connected(url, api_key) as client:
        if plan:
            run = client.reject_plan(run_id, reason)
            what = "plan rejected"
        else:
            step_id = _waiting_step(client, run_id, step)
            run = client.reject(run_id, step_id, reason)
            what = f"step {find_step(run, step_id).step_number} rejected"
    if as_json:
        echo_json(run)
        return
    _done(run_id, what, run.status)


def cancel(
    run_id: RunArgument,
    reason: Annotated[str | None, typer.Option(help="Why (recorded)")] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Cancel the run and its unfinished steps."""
    with connected(url, api_key) as client:
        run = client.cancel(run_id, reason)
    if as_json:
        echo_json(run)
        return
    _done(run_id, "cancelled", run.status)


def retry(
    run_id: RunArgument,
    step: Annotated[str, typer.Argument(help="The failed step's number or id")],
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Retry a failed step by hand."""
    with connected(url, api_key) as client:
        step_id = str(find_step(client.get_run(run_id), step).id)
        run = client.retry_step(run_id, step_id)
    if as_json:
        echo_json(run)
        return
    _done(run_id, f"step {step} retried", run.status)


def resume(
    run_id: RunArgument,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Resume a failed run from its first unfinished step."""
    with connected(url, api_key) as client:
        run = client.resume(run_id)
    if as_json:
        echo_json(run)
        return
    _done(run_id, "resumed", run.status)


def export(
    run_id: RunArgument,
    out_file: Annotated[Path, typer.Option("--out", help="The bundle file to write")],
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Write the run as one self-contained bundle (JSON) that verifies offline."""
    from agent_engine.cli.main import fail

    with connected(url, api_key) as client:
        bundle = client.export_run(run_id)
    try:
        out_file.write_text(json.dumps(bundle, ensure_ascii=False, indent=1), encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {out_file}: {exc.strerror}", 2)
    typer.echo(f"exported run {run_id} to {out_file}")


def import_(
    bundle: Annotated[Path, typer.Argument(help="A bundle written by `runs export`")],
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Load a bundle on the server (admin): verified there first, rows unchanged."""
    from agent_engine.cli.main import fail

    try:
        document = json.loads(bundle.read_bytes())
    except OSError as exc:
        fail(f"cannot read {bundle}: {exc.strerror}", 2)
    except ValueError as exc:
        fail(f"{bundle} is not JSON: {exc}", 2)
    if not isinstance(document, dict):
        fail(f"{bundle} is not a bundle (a JSON object)", 2)
    with connected(url, api_key) as client:
        verdict = client.import_run(document)
    if as_json:
        echo_json(verdict)
        return
    typer.echo(f"imported run {verdict['run_id']}: {verdict['events']} events")


def watch(
    run_id: RunArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Follow a run live and, in a terminal, decide what waits (approve, reject, show more;
    raise a paused budget); exit 0 completed, 1 failed or cancelled, 3 it waits and stdin is
    not a terminal."""
    from agent_engine.cli.follow import follow_run

    with connected(url, api_key) as client:
        status = follow_run(client, run_id, live=True)
    if status:
        raise typer.Exit(status)


def register(runs_app: typer.Typer) -> None:
    """Add the acting commands to the ``runs`` group."""
    runs_app.command("approve")(approve)
    runs_app.command("reject")(reject)
    runs_app.command("cancel")(cancel)
    runs_app.command("retry")(retry)
    runs_app.command("resume")(resume)
    runs_app.command("export")(export)
    runs_app.command("import")(import_)
    runs_app.command("watch")(watch)
