"""`agent-engine runs …` and `agent-engine run --server` as real subprocesses against one real
serve for the module (SQLite: the commands only speak HTTP, the backend does not matter): the
tables and --json of the read commands, approvals, cancel, retry, resume, export and import,
`events --follow`, and bad input as one `error:` line with a non-zero exit."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from agent_engine.cli.main import app
from agent_engine.client import EngineClient, NotFound
from tests.integration.test_cli import AGENT_ENGINE, run_command
from tests.integration.test_cli_forks import _one_error_line
from tests.processes import clean_env, free_port, running
from tests.terminal import Terminal

GATED = [
    {"step_type": "noop", "input_data": {"value": 1}},
    {"step_type": "noop", "input_data": {"value": 2}, "requires_approval": True},
    {"step_type": "noop", "input_data": {"value": {"$ref": "steps.2.output.value"}}},
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-runs")


@pytest.fixture(scope="module")
def server(folder: Path) -> Iterator[str]:
    db = f"sqlite+aiosqlite:///{folder / 'engine.db'}"
    settings = {
        "AGENT_ENGINE_DATABASE_URL": db,
        "AGENT_ENGINE_WORKSPACE_ROOTS": str(folder),
        "AGENT_ENGINE_WORKER_POLL_S": "0.2",
    }
    port = free_port()
    argv = ["agent_engine", "serve", "--port", str(port)]
    with running(argv, folder, clean_env(**settings), port) as url:
        yield url


@pytest.fixture(scope="module")
def api(server: str) -> Iterator[EngineClient]:
    with EngineClient(server, actor="tester") as client:
        yield client


def cli(server: str, folder: Path, *args: str) -> Any:
    # Tables fit the terminal's width, and a pipe has none (80 columns): wide enough to read.
    return run_command(*args, cwd=folder, AGENT_ENGINE_URL=server, COLUMNS="200")


def _until(api: EngineClient, run_id: str, *statuses: str) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = api.get_run(run_id)
        if run.status in statuses:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} stayed {run.status}")


def test_read_commands_print_tables_and_json(server: str, folder: Path, api: EngineClient) -> None:
    steps = [{"step_type": "summarize", "input_data": {"inputs": ["some words"]}}]
    made = api.create_run("summarise some words", steps=steps, auto_start=True, budget_usd="0.5")
    run_id = str(made.id)
    assert api.wait(run_id).status == "completed"

    listed = cli(server, folder, "runs", "list")
    assert listed.returncode == 0, listed.stderr
    assert run_id in listed.stdout and "summarise some words" in listed.stdout
    as_json = json.loads(cli(server, folder, "runs", "list", "--json", "--limit", "1").stdout)
    assert as_json["items"][0]["id"] == run_id
    everything = json.loads(cli(server, folder, "runs", "list", "--all", "--json").stdout)
    assert run_id in {run["id"] for run in everything}

    shown = cli(server, folder, "runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert f"run {run_id}: completed" in shown.stdout
    assert "budget $0.5" in shown.stdout and "remaining $0.5" in shown.stdout
    assert "summarize" in shown.stdout and "offline:offline-1" in shown.stdout
    shown_json = json.loads(cli(server, folder, "runs", "show", run_id, "--json").stdout)
    assert shown_json["run"]["steps"][0]["status"] == "completed"
    assert shown_json["cost"]["run_id"] == run_id

    step_rows = json.loads(cli(server, folder, "runs", "steps", run_id, "--json").stdout)
    assert [s["step_type"] for s in step_rows] == ["summarize"]
    assert "summarize" in cli(server, folder, "runs", "steps", run_id).stdout
    cost = cli(server, folder, "runs", "cost", run_id)
    assert "offline:offline-1" in cost.stdout and "total $0" in cost.stdout
    assert json.loads(cli(server, folder, "runs", "cost", run_id, "--json").stdout)["consistent"]

    replayed = cli(server, folder, "runs", "replay", run_id, "--mode", "verify", "--wait")
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines()[-1] == "completed"
    _one_error_line(cli(server, folder, "runs", "replay", run_id, "--mode", "live"), "unknown mode")

    events = cli(server, folder, "runs", "events", run_id)
    assert "run.completed" in events.stdout
    lines = cli(server, folder, "runs", "events", run_id, "--json", "--type", "step.").stdout
    assert {json.loads(line)["type"] for line in lines.splitlines()} >= {"step.completed"}


def test_approve_reject_and_events_follow(server: str, folder: Path, api: EngineClient) -> None:
    run_id = str(api.create_run("gated", steps=GATED, auto_start=True).id)
    _until(api, run_id, "awaiting_approval")
    followed = cli(server, folder, "runs", "events", run_id, "--follow")
    assert followed.returncode == 0, followed.stderr
    assert "awaiting_approval" in followed.stdout.splitlines()[-1]

    wrong = cli(server, folder, "runs", "approve", run_id, "3")
    _one_error_line(wrong, "invalid_transition")
    approved = cli(server, folder, "runs", "approve", run_id, "--comment", "fine")
    assert approved.returncode == 0, approved.stderr
    assert f"run {run_id}: step 2 approved" in approved.stdout
    assert _until(api, run_id, "completed", "failed").status == "completed"

    other = str(api.create_run("gated", steps=GATED, auto_start=True).id)
    _until(api, other, "awaiting_approval")
    no_reason = cli(server, folder, "runs", "reject", other)
    _one_error_line(no_reason, "give --reason")
    assert no_reason.returncode == 2
    rejected = cli(server, folder, "runs", "reject", other, "2", "--reason", "no", "--json")
    assert rejected.returncode == 0, rejected.stderr
    assert json.loads(rejected.stdout)["steps"][1]["status"] == "rejected"

    planned = str(api.create_run("plan first", steps=GATED[:1], plan_approval=True).id)
    plan = cli(server, folder, "runs", "approve", planned, "--plan")
    assert plan.returncode == 0 and "plan approved" in plan.stdout


def test_cancel_retry_resume_export_and_import(
    server: str, folder: Path, api: EngineClient
) -> None:
    waiting = str(api.create_run("to cancel", steps=GATED, auto_start=True).id)
    _until(api, waiting, "awaiting_approval")
    cancelled = cli(server, folder, "runs", "cancel", waiting, "--reason", "enough")
    assert cancelled.returncode == 0 and "the run is cancelled" in cancelled.stdout
    again = cli(server, folder, "runs", "cancel", waiting)
    _one_error_line(again, "cancelled")

    (folder / "empty").mkdir(exist_ok=True)
    missing = [{"step_type": "read_file", "input_data": {"path": "absent.txt"}}]
    failing = api.create_run("fails", workspace=str(folder / "empty"), steps=missing)
    failing_id = str(failing.id)
    api.start(failing_id)
    failed = _until(api, failing_id, "failed")
    retried = cli(server, folder, "runs", "retry", failing_id, "1")
    assert retried.returncode == 0, retried.stderr
    assert _until(api, failing_id, "failed").steps[0].attempt > failed.steps[0].attempt
    resumed = cli(server, folder, "runs", "resume", failing_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["id"] == failing_id

    bundle = folder / "bundle.json"
    exported = cli(server, folder, "runs", "export", failing_id, "--out", str(bundle))
    assert exported.returncode == 0, exported.stderr
    assert json.loads(bundle.read_text())["run"]["id"] == failing_id
    imported = cli(server, folder, "runs", "import", str(bundle))
    _one_error_line(imported, "exists")
    (folder / "not-json.json").write_text("{nope")
    broken = cli(server, folder, "runs", "import", str(folder / "not-json.json"))
    _one_error_line(broken, "is not JSON")
    assert broken.returncode == 2


def test_bad_input_is_one_line_with_a_non_zero_exit(server: str, folder: Path) -> None:
    unknown = cli(server, folder, "runs", "show", "00000000-0000-0000-0000-000000000000")
    _one_error_line(unknown, "not_found")
    assert unknown.returncode == 1
    unreachable = run_command(
        "runs", "list", "--url", f"http://127.0.0.1:{free_port()}", cwd=folder
    )
    _one_error_line(unreachable, "cannot reach the server")
    bad_budget = run_command(
        "run", "g", "--workspace", str(folder), "--budget", "abc", "--server", server, cwd=folder
    )
    _one_error_line(bad_budget, "--budget must be an amount in USD")
    assert bad_budget.returncode == 2


def test_run_on_a_server_starts_it_and_without_a_terminal_exits_3_naming_the_step(
    server: str, folder: Path, api: EngineClient
) -> None:
    plan = folder / "gated.json"
    plan.write_text(json.dumps(GATED))
    workspace = folder / "work"
    workspace.mkdir(exist_ok=True)
    args = ("run", "gated", "--workspace", str(workspace), "--steps", str(plan))
    started = run_command(*args, cwd=folder, AGENT_ENGINE_SERVER=server)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    assert api.get_run(run_id).goal == "gated"

    followed = run_command(
        *args, "--follow", "--budget", "1", cwd=folder, AGENT_ENGINE_SERVER=server
    )
    assert followed.returncode == 3, followed.stderr
    waits = followed.stderr.strip().splitlines()[-1]
    assert "waits: step 2 (noop) awaits approval" in waits
    assert "step 1 noop: completed" in followed.stdout


def test_the_sync_client_pages_and_streams_over_real_http(server: str, api: EngineClient) -> None:
    made = [str(api.create_run(f"page {n}", steps=GATED[:1]).id) for n in range(3)]
    seen = [str(run.id) for run in api.iter_runs(page_size=2)]
    assert seen[:3] == made[::-1]
    api.start(made[0])
    events = list(api.events(made[0]))
    assert events[-1].type == "run.completed" and events[0].seq == 1
    with pytest.raises(NotFound):
        api.get_run("00000000-0000-0000-0000-000000000000")
    assert httpx.get(f"{server}/healthz").status_code == 200


READ_AND_ACT = [
    "list", "show", "steps", "cost", "events", "approve", "reject", "cancel", "retry",
    "resume", "export", "import", "watch", "replay", "compare", "divergence", "fork", "budget",
]  # fmt: skip


@pytest.mark.parametrize("command", READ_AND_ACT)
def test_help_names_the_environment_variables_read(command: str) -> None:
    shown = CliRunner().invoke(app, ["runs", command, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    assert "AGENT_ENGINE_URL" in shown.output and "AGENT_ENGINE_API_KEY" in shown.output


def test_run_help_names_the_server_variable() -> None:
    shown = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert "AGENT_ENGINE_SERVER" in shown.output and "AGENT_ENGINE_API_KEY" in shown.output


def test_watch_in_a_terminal_raises_a_paused_budget_and_the_run_goes_on(
    server: str, folder: Path, api: EngineClient
) -> None:
    steps = [{"step_type": "summarize", "input_data": {"inputs": ["some words"]}}]
    run_id = str(api.create_run("tight", steps=steps, auto_start=True, budget_tokens=5).id)
    paused = _until(api, run_id, "awaiting_approval")
    assert paused.steps[0].budget_pause is not None
    terminal = Terminal([AGENT_ENGINE, "runs", "watch", run_id], folder, AGENT_ENGINE_URL=server)
    terminal.wait_for(b"[r/c]")
    assert b"step 1 waits for budget" in terminal.seen
    terminal.type("r")
    terminal.wait_for(b"new token budget")
    terminal.type("100000")
    terminal.wait_for(b"completed: tokens")
    assert terminal.finish() == 0
    assert api.get_run(run_id).budget_tokens == 100000
