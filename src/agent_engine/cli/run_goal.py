"""``agent-engine run "GOAL" --workspace DIR``: create and start a run on a server, or with none
named on the embedded default in this process (the same app ``serve`` builds: SQLite under
./var, the offline model, an in-process worker), and follow it.

Exit status: 0 the run completed (or, on a server without --follow, was started), 1 it failed
or was cancelled (or a refusal), 2 bad input, 3 it waits for a person and stdin is not a
terminal to ask on."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from agent_engine.cli.runs import KeyOption

SERVER_VARIABLE = "AGENT_ENGINE_SERVER"
ROOTS_VARIABLE = "AGENT_ENGINE_WORKSPACE_ROOTS"
STARTUP_S = 30.0
IN_PROCESS_HINT = (
    "it goes on under `agent-engine serve` (same database) once decided with "
    "`agent-engine runs approve RUN`"
)


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to ``app``."""
    app.command("run")(run)


def run(
    goal: Annotated[str, typer.Argument(help="What the run should achieve")],
    workspace: Annotated[
        Path, typer.Option("--workspace", "-w", help="The folder the run may read and change")
    ],
    budget: Annotated[
        str | None, typer.Option("--budget", help="Budget in USD, e.g. 1.00 (default: none)")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="A live view of the steps; ask when a step needs approval"
        ),
    ] = False,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar=SERVER_VARIABLE,
            help="A serve's base URL (AGENT_ENGINE_SERVER); none: run in this process "
            "on the embedded default (AGENT_ENGINE_DATABASE_URL, AGENT_ENGINE_WORKSPACE_ROOTS "
            "and the other AGENT_ENGINE_* settings apply)",
        ),
    ] = None,
    api_key: KeyOption = None,
    steps_file: Annotated[
        Path | None,
        typer.Option("--steps", help="An explicit plan: a JSON list of steps (default: planned)"),
    ] = None,
    policy: Annotated[
        str | None, typer.Option(help="The server's approval policy to run under")
    ] = None,
) -> None:
    """Create and start a run, then (with --follow, or always in this process) follow it until
    it ends; exit 3 if it waits for approval and stdin is not a terminal."""
    from agent_engine.cli.budgets import _usd
    from agent_engine.cli.follow import follow_run
    from agent_engine.cli.remote import connected

    budget_usd = _usd(budget, "--budget")
    steps = _read_steps(steps_file) if steps_file else None
    folder = workspace.expanduser().resolve()
    fields: dict[str, Any] = {
        "workspace": str(folder),
        "budget_usd": budget_usd,
        "steps": steps,
        "policy": policy,
        "auto_start": True,
    }
    with _server(server, folder) as url, connected(url, api_key) as client:
        made = client.create_run(goal, **fields)
        run_id = str(made.id)
        typer.echo(f"run {run_id} started ({made.status})", err=True)
        if not follow and server:
            typer.echo(run_id)
            return
        hint = None if server else IN_PROCESS_HINT
        status = follow_run(client, run_id, live=follow, hint=hint)
    if status:
        raise typer.Exit(status)


def _read_steps(path: Path) -> list[Any]:
    from agent_engine.cli.main import fail

    try:
        steps = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", 2)
    except ValueError as exc:
        fail(f"{path} is not JSON: {exc}", 2)
    if not isinstance(steps, list):
        fail(f"{path} must hold a JSON list of steps", 2)
    return steps


@contextmanager
def _server(url: str | None, workspace: Path) -> Iterator[str]:
    """The server's URL: the one named, else the embedded default served from this process on
    a loopback port for as long as the block lasts."""
    if url:
        yield url
        return
    from agent_engine.cli.main import fail

    if not workspace.is_dir():
        fail(f"--workspace {workspace} is not a folder", 2)
    with _embedded(workspace) as local:
        yield local


@contextmanager
def _embedded(workspace: Path) -> Iterator[str]:
    """The app ``serve`` runs (migrated, embedded worker) on a free loopback port in a thread."""
    import uvicorn

    from agent_engine.api.app import create_app
    from agent_engine.cli.main import _check_policies, fail, prepared_settings

    settings = prepared_settings()
    _check_policies(settings)
    updates: dict[str, Any] = {"auto_migrate": False, "host": "127.0.0.1"}
    if ROOTS_VARIABLE not in os.environ and "workspace_roots" not in settings.model_fields_set:
        # Nobody said where runs may work: the folder named on the command line is the one.
        updates["workspace_roots"] = [workspace.parent]
    app = create_app(settings.model_copy(update=updates))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        if not _started(server, thread):
            fail("the embedded engine did not start (see the log above)")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_S)
        sock.close()


def _started(server: Any, thread: threading.Thread) -> bool:
    import time

    deadline = time.monotonic() + STARTUP_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
