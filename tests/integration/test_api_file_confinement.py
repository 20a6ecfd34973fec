"""Files through the engine (F5): every step reaches its workspace from the configured root, so
a parent swapped for a symlink after creation is refused; hard links are refused by default."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx


async def _run(client: httpx.AsyncClient, workspace: Path, *steps: dict[str, Any]) -> str:
    body = {"goal": "g", "workspace": str(workspace), "steps": list(steps)}
    response = await client.post("/v1/agent-runs", json=body)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


async def _execute(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await client.post(f"/v1/agent-runs/{run_id}/execute")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_parent_swapped_for_a_symlink_after_creation_is_refused(
    client: httpx.AsyncClient, workspace_root: Path, tmp_path: Path
) -> None:
    workspace = workspace_root / "team" / "ws"
    workspace.mkdir(parents=True)
    (workspace / "notes.txt").write_text("inside\n")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "ws").mkdir(parents=True)
    (elsewhere / "ws" / "notes.txt").write_text("OUTSIDE\n")
    read = {"step_type": "read_file", "input_data": {"path": "notes.txt"}}
    edit = {
        "step_type": "edit_file",
        "input_data": {"path": "notes.txt", "operation": "write", "content": "changed\n"},
    }
    reading = await _run(client, workspace, read)
    editing = await _run(client, workspace, edit)
    (workspace_root / "team").rename(tmp_path / "team-before")
    (workspace_root / "team").symlink_to(elsewhere)
    for run_id in (reading, editing):
        run = await _execute(client, run_id)
        assert run["status"] == "failed", run
        assert run["steps"][0]["error"]["code"] == "workspace_violation"
        assert run["steps"][0]["output_data"] is None
    assert (elsewhere / "ws" / "notes.txt").read_text() == "OUTSIDE\n"


async def test_a_hard_link_to_an_outside_file_is_neither_read_nor_listed(
    client: httpx.AsyncClient, workspace_root: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET\n")
    workspace = workspace_root / "ws"
    workspace.mkdir()
    os.link(secret, workspace / "alias.txt")
    (workspace / "plain.txt").write_text("mine\n")
    run_id = await _run(
        client,
        workspace,
        {"step_type": "list_files", "input_data": {}},
        {"step_type": "read_file", "input_data": {"path": "alias.txt"}, "depends_on": []},
    )
    run = await _execute(client, run_id)
    assert [f["path"] for f in run["steps"][0]["output_data"]["files"]] == ["plain.txt"]
    run = await _execute(client, run_id)
    assert run["steps"][1]["error"]["code"] == "workspace_violation"
    assert "TOP SECRET" not in str(run)
