"""`agent-engine costs` as a real subprocess against a real serve (SQLite: the command only
speaks HTTP, the backend does not matter): a table, --csv, --json, and bad input one line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import httpx

from tests.integration.test_cli import run_command
from tests.integration.test_cli_forks import _one_error_line, _wait_finished
from tests.processes import clean_env, free_port, running


def test_costs_prints_the_servers_totals_as_a_table_csv_and_json(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'engine.db'}"
    settings = {"AGENT_ENGINE_DATABASE_URL": db, "AGENT_ENGINE_WORKSPACE_ROOTS": str(tmp_path)}
    port = free_port()
    steps = [{"step_type": "summarize", "input_data": {"inputs": ["some words"]}}]
    argv = ["agent_engine", "serve", "--port", str(port)]
    with (
        running(argv, tmp_path, clean_env(**settings), port) as url,
        httpx.Client(base_url=url) as api,
    ):
        created = api.post("/v1/agent-runs", json={"goal": "g", "steps": steps, "auto_start": True})
        assert created.status_code == 201, created.text
        assert _wait_finished(api, created.json()["id"])["status"] == "completed"

        table = run_command("costs", "--group-by", "model", "--url", url, cwd=tmp_path)
        assert table.returncode == 0, table.stderr
        assert "offline:offline-1" in table.stdout

        as_csv = run_command(
            "costs", "--group-by", "model", "--group-by", "step_type", "--csv", "--url", url,
            cwd=tmp_path,
        )  # fmt: skip
        assert as_csv.returncode == 0, as_csv.stderr
        rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
        assert [(r["model"], r["step_type"], r["calls"]) for r in rows] == [
            ("offline:offline-1", "summarize", "1")
        ]

        as_json = run_command("costs", "--json", "--url", url, cwd=tmp_path)
        assert as_json.returncode == 0, as_json.stderr
        assert json.loads(as_json.stdout)["totals"]["calls"] == 1

        bad = run_command("costs", "--group-by", "colour", "--url", url, cwd=tmp_path)
        _one_error_line(bad, "unknown grouping 'colour'")
