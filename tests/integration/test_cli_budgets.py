"""`agent-engine runs budget` and `agent-engine budgets` as real subprocesses against a real
serve (SQLite: the commands only speak HTTP): a paused run resumed by a raise, monthly budgets
set, listed and removed, and bad input one line with a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.integration.test_cli import run_command
from tests.integration.test_cli_forks import _one_error_line, _wait_finished
from tests.processes import clean_env, free_port, running


def test_budget_commands_change_a_runs_budget_and_monthly_budgets(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'engine.db'}"
    settings = {"AGENT_ENGINE_DATABASE_URL": db, "AGENT_ENGINE_WORKSPACE_ROOTS": str(tmp_path)}
    port = free_port()
    steps = [{"step_type": "summarize", "input_data": {"inputs": ["some words"]}}]
    argv = ["agent_engine", "serve", "--port", str(port)]
    with (
        running(argv, tmp_path, clean_env(**settings), port) as url,
        httpx.Client(base_url=url) as api,
    ):
        body = {"goal": "g", "steps": steps, "auto_start": True, "budget_tokens": 5}
        created = api.post("/v1/agent-runs", json=body)
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        for _ in range(200):  # the embedded worker pauses it: its call needs more tokens
            state = api.get(f"/v1/agent-runs/{run_id}").json()
            if state["status"] == "awaiting_approval":
                break
        assert state["steps"][0]["budget_pause"]["measure"] == "tokens"

        raised = run_command(
            "runs", "budget", run_id, "--no-token-limit", "--reason", "worth it", "--url", url,
            cwd=tmp_path,
        )  # fmt: skip
        assert raised.returncode == 0, raised.stderr
        assert "steps 1 go on" in raised.stdout
        assert _wait_finished(api, run_id)["status"] == "completed"

        bad_amount = run_command(
            "runs", "budget", run_id, "--usd", "lots", "--reason", "r", "--url", url, cwd=tmp_path
        )
        _one_error_line(bad_amount, "--usd must be an amount in USD")
        assert bad_amount.returncode == 2
        finished = run_command(
            "runs", "budget", run_id, "--usd", "3", "--reason", "r", "--url", url, cwd=tmp_path
        )
        _one_error_line(finished, "run_finished")

        made = run_command("budgets", "set", "project", "web", "--usd", "25", "--url", url,
                           cwd=tmp_path)  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert "web" in made.stdout and "$25" in made.stdout
        listed = run_command("budgets", "list", "--json", "--url", url, cwd=tmp_path)
        assert [b["subject"] for b in json.loads(listed.stdout)] == ["web"]
        removed = run_command("budgets", "remove", "project", "web", "--url", url, cwd=tmp_path)
        assert removed.returncode == 0, removed.stderr
        again = run_command("budgets", "remove", "project", "web", "--url", url, cwd=tmp_path)
        _one_error_line(again, "no monthly budget for project 'web'")
