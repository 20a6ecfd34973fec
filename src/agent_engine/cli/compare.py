"""``agent-engine runs compare | divergence | fork``: forks and what differs between runs.

Through a serve's HTTP API with ``--url`` (and ``--api-key`` when it requires keys), else on the
database of AGENT_ENGINE_DATABASE_URL as ``keys`` works (a serve's workers then run a fork)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent_engine.errors import EngineError

if TYPE_CHECKING:  # the engine is imported by the commands that use it: `--help` stays quick
    from agent_engine.client import EngineClient
    from agent_engine.engine.context import EngineContext

out = Console(soft_wrap=True)
CLI_ACTOR = "cli"
SHOWN_CHARS = 40
T = TypeVar("T")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the report as JSON instead")]
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="AGENT_ENGINE_URL",
        help="A serve's base URL, e.g. http://127.0.0.1:8000 (default: the database itself) "
        "[env: AGENT_ENGINE_URL]",
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="AGENT_ENGINE_API_KEY",
        help="API key for --url [env: AGENT_ENGINE_API_KEY]",
    ),
]


def _over_http(url: str, key: str | None, call: Callable[[EngineClient], T]) -> T:
    """One call to a serve through the typed client; a refusal (problem+json) or no answer is
    one ``error:`` line."""
    from agent_engine.cli.remote import connected

    with connected(url, key) as client:
        return call(client)


def _with_engine(action: Callable[[EngineContext], Awaitable[T]]) -> T:
    """Run ``action`` on an engine context for the configured database (migrated first, as
    `serve` does); an engine error is one ``error:`` line."""
    # Imported here: cli.main imports this module to register its commands.
    from agent_engine.cli.main import fail, prepared_settings
    from agent_engine.engine.context import build_context

    settings = prepared_settings()

    async def run() -> T:
        ctx = build_context(settings)
        try:
            return await action(ctx)
        finally:
            await ctx.close()

    try:
        return asyncio.run(run())
    except EngineError as exc:
        fail(exc.detail)


def _short(value: Any) -> str:
    """A value for one table cell: JSON, cut to a few dozen characters."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", "\\n")
    return escape(text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…")


def _pair(row: dict[str, Any], field: str) -> str:
    a, b = (_cell(row[field][side]) for side in ("a", "b"))
    return a if a == b else f"{a} → {b}"


def _cell(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"input", "output"}:
        return f"{value['input']}/{value['output']}"  # tokens in/out
    if isinstance(value, float):
        return f"{value:.0f}" if value >= 1 else f"{value:g}"
    return _short(value)


def _contrast(expected: Any, actual: Any) -> tuple[str, str]:
    """Two values for one line; long texts from a little before where they start to differ."""
    if not (isinstance(expected, str) and isinstance(actual, str)):
        return _short(expected), _short(actual)
    if max(len(expected), len(actual)) <= SHOWN_CHARS:
        return _short(expected), _short(actual)
    same = next(
        (i for i, (x, y) in enumerate(zip(expected, actual, strict=False)) if x != y),
        min(len(expected), len(actual)),
    )
    start = max(same - 10, 0)
    lead = "…" if start else ""
    return _short(lead + expected[start:]), _short(lead + actual[start:])


def _difference_line(step_number: int, found: dict[str, Any]) -> str:
    expected, actual = _contrast(found["expected"], found["actual"])
    return f"step {step_number}: {escape(found['field'])}: {expected} → {actual}"


def compare(
    run_a: Annotated[str, typer.Argument(help="The first run (a)")],
    run_b: Annotated[str, typer.Argument(help="The run to compare it with (b)")],
    as_json: JsonFlag = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Compare two runs step by step: status, inputs, outputs, model, tokens, cost, duration."""
    from agent_engine.engine.comparison import compare_runs, jsonable

    if url:
        report = _over_http(url, api_key, lambda client: client.compare(run_a, run_b))
    else:
        report = jsonable(_with_engine(lambda ctx: compare_runs(ctx, run_a, run_b)))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    table = Table("step", "type", "verdict", "differs in", "model", "tokens", "cost $", "ms")
    details = []
    for row in report["steps"]:
        status = row["status"]
        table.add_row(
            str(row["step_number"]),
            _pair(row, "step_type"),
            row["verdict"] + ("" if status["a"] == status["b"] else f" ({_pair(row, 'status')})"),
            escape(", ".join(row["differs_in"])) or "-",
            _pair(row, "model"),
            _pair(row, "tokens"),
            _pair(row, "cost_usd"),
            _pair(row, "duration_ms"),
        )
        for part in ("input", "output"):
            if row[part] and row[part]["first_difference"]:
                details.append(_difference_line(row["step_number"], row[part]["first_difference"]))
    out.print(table)
    for line in details:
        out.print(line)
    out.print(f"a {report['a']['id']} · b {report['b']['id']}: {report['verdict']}")


def divergence(
    run_id: Annotated[str, typer.Argument(help="A replay or a fork")],
    as_json: JsonFlag = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Each step of a replay or fork against its run: match, diverged or not_reached."""
    from agent_engine.engine.comparison import divergence_report, jsonable

    if url:
        report = _over_http(url, api_key, lambda client: client.divergence(run_id))
    else:
        report = jsonable(_with_engine(lambda ctx: divergence_report(ctx, run_id)))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    table = Table("step", "type", "status", "verdict", "field")
    details = []
    for row in report["steps"]:
        table.add_row(
            str(row["step_number"]),
            escape(row["step_type"]),
            row["status"] or "-",
            row["verdict"] + (" (reused)" if row["reused"] else ""),
            escape(row.get("field", "")),
        )
        if "field" in row:
            line = _difference_line(row["step_number"], row)
            if row.get("file"):
                line += (
                    f" (file {escape(row['file'])}: sha256 {row['expected_sha256']} → "
                    f"{row['actual_sha256']})"
                )
            details.append(line)
    out.print(table)
    for line in details:
        out.print(line)
    first = report["first_divergence"]
    where = f"first at step {first['step_number']}, {first['field']}" if first else "none"
    out.print(
        f"{report['relation']} of {report['against']}: {report['verdict']} (divergence: {where})"
    )


def _json_option(name: str, text: str | None) -> dict[str, Any] | None:
    from agent_engine.cli.main import fail

    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{name} is not JSON: {exc}", 2)
    if not isinstance(value, dict):
        fail(f"{name} must be a JSON object", 2)
    return value


def fork(
    run_id: Annotated[str, typer.Argument(help="The run to fork")],
    from_step: Annotated[int, typer.Option("--from-step", help="First step not reused")],
    input_json: Annotated[
        str | None, typer.Option("--input", help="New input_data of that step (JSON object)")
    ] = None,
    output_json: Annotated[
        str | None, typer.Option("--output", help="Its output given outright (JSON object)")
    ] = None,
    model: Annotated[str | None, typer.Option(help="The model that step must use")] = None,
    replay: Annotated[
        bool, typer.Option("--replay", help="Later model calls from the run's records")
    ] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Fork a run from a step; prints the new run's id (a serve's workers run it)."""
    from agent_engine.cli.main import fail
    from agent_engine.engine.forks import ForkRequest, fork_run

    try:
        request = ForkRequest(
            from_step=from_step,
            input_data=_json_option("--input", input_json),
            output_data=_json_option("--output", output_json),
            model=model,
            replay=replay,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        fail(f"{where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}", 2)
    if url:
        made = _over_http(
            url,
            api_key,
            lambda client: client.fork(
                run_id,
                request.from_step,
                input_data=request.input_data,
                output_data=request.output_data,
                model=request.model,
                replay=request.replay,
            ),
        )
        new_id, status = str(made.id), str(made.status)
    else:
        view = _with_engine(
            lambda ctx: fork_run(ctx, run_id, request, actor=CLI_ACTOR, may_loosen_policy=True)
        )
        new_id, status = str(view.run.id), str(view.run.status)
    typer.echo(new_id)
    typer.echo(f"run {new_id} forked from {run_id} at step {from_step}: {status}", err=True)


def register(runs_app: typer.Typer) -> None:
    """Add ``compare``, ``divergence`` and ``fork`` to the ``runs`` command group."""
    runs_app.command("compare")(compare)
    runs_app.command("divergence")(divergence)
    runs_app.command("fork")(fork)
