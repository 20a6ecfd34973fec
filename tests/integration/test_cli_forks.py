"""`agent-engine runs fork | compare | divergence` as real subprocesses beside a real serve on
the same database: the fork the CLI writes is run by the serve's worker, and the tables say what
differs; bad input is one `error:` line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.test_cli import run_command
from tests.processes import clean_env, free_port, running


def _wait_finished(api: httpx.Client, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run: dict[str, Any] = api.get(f"/v1/agent-runs/{run_id}").json()
        if run["status"] in ("completed", "failed"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish: {run['status']}")


def _one_error_line(result: Any, fragment: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0], lines[0]


def test_fork_compare_and_divergence_from_the_command_line(tmp_path: Path) -> None:
    workspace = tmp_path / "project"
    workspace.mkdir()
    (workspace / "notes.txt").write_text("alpha\nbeta\n", encoding="utf-8")
    db = f"sqlite+aiosqlite:///{tmp_path / 'engine.db'}"
    settings = {"AGENT_ENGINE_DATABASE_URL": db, "AGENT_ENGINE_WORKSPACE_ROOTS": str(tmp_path)}
    port = free_port()
    steps = [
        {"step_type": "read_file", "input_data": {"path": "notes.txt"}},
        {
            "step_type": "analyze",
            "input_data": {"instruction": "List the words", "inputs": [{"$ref": "steps.1.output"}]},
        },
        {"step_type": "summarize", "input_data": {"inputs": [{"$ref": "steps.2.output.text"}]}},
    ]
    argv = ["agent_engine", "serve", "--port", str(port)]
    with (
        running(argv, tmp_path, clean_env(**settings), port) as url,
        httpx.Client(base_url=url) as api,
    ):
        created = api.post(
            "/v1/agent-runs",
            json={"goal": "notes", "workspace": str(workspace), "steps": steps, "auto_start": True},
        )
        assert created.status_code == 201, created.text
        original = _wait_finished(api, created.json()["id"])
        assert original["status"] == "completed"

        new_input = json.dumps(
            {"instruction": "Count the lines", "inputs": [{"$ref": "steps.1.output"}]}
        )
        forked = run_command(
            "runs", "fork", original["id"], "--from-step", "2", "--input", new_input,
            cwd=tmp_path, **settings,
        )  # fmt: skip
        assert forked.returncode == 0, forked.stderr
        fork_id = forked.stdout.strip()
        done = _wait_finished(api, fork_id)  # the serve's worker ran it
        assert done["status"] == "completed" and done["forked_from"] == original["id"]
        assert done["steps"][0]["reused_from"] == original["steps"][0]["id"]

        # A fork made through the serve's API goes to its worker in the write that makes it.
        over_http = api.post(f"/v1/agent-runs/{original['id']}/fork", json={"from_step": 3})
        assert over_http.status_code == 201, over_http.text
        again = _wait_finished(api, over_http.json()["id"])
        assert again["status"] == "completed"
        assert [s["reused_from"] is not None for s in again["steps"]] == [True, True, False]

        compared = run_command("runs", "compare", original["id"], fork_id, cwd=tmp_path, **settings)
        assert compared.returncode == 0, compared.stderr
        assert "input_data.instruction" in compared.stdout and "differs" in compared.stdout
        # Through the serve's API instead of the database: the same report.
        as_json = run_command(
            "runs", "compare", original["id"], fork_id, "--json", "--url", url, cwd=tmp_path
        )
        report = json.loads(as_json.stdout)
        assert [row["verdict"] for row in report["steps"]][:2] == ["same", "differs"]
        assert report == api.get(f"/v1/agent-runs/{original['id']}/compare/{fork_id}").json()

        diverged = run_command("runs", "divergence", fork_id, "--url", url, cwd=tmp_path)
        assert diverged.returncode == 0, diverged.stderr
        assert "diverged" in diverged.stdout and "first at step 2" in diverged.stdout
        assert "match (reused)" in diverged.stdout

        for args, fragment in [
            (
                ("fork", original["id"], "--from-step", "2", "--input", "{nope"),
                "--input is not JSON",
            ),
            (("fork", original["id"], "--from-step", "9"), "from_step 9 is past the last step"),
            (("fork", original["id"], "--from-step", "0"), "from_step: Input should be greater"),
            (("divergence", original["id"]), "neither a replay nor a fork"),
        ]:
            _one_error_line(run_command("runs", *args, cwd=tmp_path, **settings), fragment)
        over_url = run_command(
            "runs", "fork", original["id"], "--from-step", "9", "--url", url, cwd=tmp_path
        )
        _one_error_line(over_url, "from_step 9 is past the last step")
