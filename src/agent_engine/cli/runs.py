"""``agent-engine runs``: act on the runs of a running server, over its HTTP API.

Unlike ``keys`` (which bootstraps access and so works on the database itself), these commands
are a client of a running ``serve``: the work they ask for is done by its workers, under the
same keys, roles and audit as any other client. ``--url`` falls back to ``AGENT_ENGINE_URL``
(default http://127.0.0.1:8000) and ``--api-key`` to ``AGENT_ENGINE_API_KEY``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

runs_app = typer.Typer(
    help="Runs on a server: list, show, follow, approve, replay, fork, compare, export.",
    no_args_is_help=True,
)
DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"completed", "failed", "cancelled"})
POLL_S = 0.2

UrlOption = Annotated[
    str,
    typer.Option(
        "--url", envvar="AGENT_ENGINE_URL", help="The server's base URL (AGENT_ENGINE_URL)"
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="AGENT_ENGINE_API_KEY",
        help="API key (AGENT_ENGINE_API_KEY); none when the server runs without keys",
        show_default=False,
    ),
]


@runs_app.command("replay")
def replay(
    run_id: Annotated[str, typer.Argument(help="The completed or failed run to replay")],
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    mode: Annotated[
        str,
        typer.Option(help="hermetic (side effects happen) or verify (none: served from records)"),
    ] = "hermetic",
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the replay to finish")] = False,
    timeout_s: Annotated[float, typer.Option(help="How long --wait waits at most")] = 600.0,
) -> None:
    """Replay a finished run from its records: print the new run's id (and with --wait, its
    final status; exit 1 unless it completed)."""
    from agent_engine.cli.main import fail
    from agent_engine.cli.remote import connected

    if mode not in ("hermetic", "verify"):
        fail(f"unknown mode {mode!r}: hermetic or verify", 2)
    with connected(url, api_key) as client:
        made = client.replay(run_id, mode)
        new_id = str(made.id)
        typer.echo(new_id)
        if not wait:
            return
        deadline = time.monotonic() + timeout_s
        status = made.status
        while status not in TERMINAL:
            if time.monotonic() > deadline:
                fail(f"replay {new_id} is still '{status}' after {timeout_s:g}s")
            time.sleep(POLL_S)
            run = client.get_run(new_id)
            status = run.status
        final = client.get_run(new_id).model_dump(mode="json")
    typer.echo(status)
    if status != "completed":
        fail(f"replay {new_id} ended '{status}': {_why(final)}")


def _why(run: dict[str, Any]) -> str:
    """The run's error, else its first failed step's."""
    if run.get("error"):
        return f"{run['error'].get('code')}: {run['error'].get('message')}"
    for step in run.get("steps") or []:
        if step.get("status") == "failed" and step.get("error"):
            error = step["error"]
            return f"step {step['step_number']}: {error.get('code')}: {error.get('message')}"
    return "see its steps"
