"""What the commands that talk to a server share: the typed client made from ``--url`` and
``--api-key``, its refusals as one ``error:`` line, ``--json`` output, and how a step is named
on the command line (its number or its id).

The client (and the API's models with it) is imported when a command runs, not when the
command line is parsed: ``agent-engine --help`` stays quick."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from agent_engine.client import EngineClient, RunWithSteps, StepOut

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the server's answer as JSON (for scripts)")
]
StepArgument = Annotated[str, typer.Argument(help="The step's number in the run, or its id")]


@contextmanager
def connected(url: str, api_key: str | None) -> Iterator[EngineClient]:
    """A client of the server at ``url``; any refusal or failure to reach it inside the block
    is one ``error:`` line on stderr and exit 1."""
    from agent_engine.cli.main import fail  # cli.main imports this module
    from agent_engine.client import EngineAPIError, EngineClient, EngineUnreachable

    client = EngineClient(url, api_key, actor=default_actor())
    try:
        yield client
    except EngineAPIError as exc:
        fail(f"{exc.detail} ({exc.code})")
    except EngineUnreachable as exc:
        fail(str(exc))
    finally:
        client.close()


PIPED_WIDTH = 160


def console() -> Console:
    """A console for tables: the terminal's width, or when piped one wide enough for a run's
    id, goal and figures on one line (rich would assume 80 columns)."""
    shown = Console(soft_wrap=True, highlight=False)
    if not shown.is_terminal and "COLUMNS" not in os.environ:
        shown = Console(soft_wrap=True, highlight=False, width=PIPED_WIDTH)
    return shown


def default_actor() -> str:
    """Who acts, on a server without keys (which honours ``X-Actor``): the login name."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "cli"


def echo_json(value: Any) -> None:
    """Print a model, a list of models or plain JSON, indented."""
    typer.echo(json.dumps(jsonable(value), indent=2, ensure_ascii=False))


def jsonable(value: Any) -> Any:
    """A model (or a list of them) as the JSON the API sent."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=False)
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    return value


def find_step(run: RunWithSteps, step: str) -> StepOut:
    """The run's step named by number or id; a name that fits none is one line, exit 1."""
    from agent_engine.cli.main import fail

    for candidate in run.steps:
        if step in (str(candidate.step_number), str(candidate.id)):
            return candidate
    fail(f"run {run.id} has no step {step!r} (steps 1-{len(run.steps)})")


def money(value: Any) -> str:
    """A USD amount as ``$0.0012`` (no trailing zeros; ``-`` for none)."""
    if value is None:
        return "-"
    text = format(value, "f") if not isinstance(value, float) else f"{value:.9f}"
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return f"${text or '0'}"
