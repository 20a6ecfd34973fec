"""A run whose goal asked for a change it did not make says so where its status is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx


async def _run_to_the_end(client: httpx.AsyncClient, goal: str, workspace: Path) -> dict[str, Any]:
    steps = [
        {"step_type": "read_file", "input_data": {"path": "store.py"}},
        {"step_type": "summarize", "input_data": {}},
    ]
    created = await client.post(
        "/v1/agent-runs", json={"goal": goal, "workspace": str(workspace), "steps": steps}
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    for _ in steps:
        executed = await client.post(f"/v1/agent-runs/{run_id}/execute")
        assert executed.status_code == 200, executed.text
    run = await client.get(f"/v1/agent-runs/{run_id}")
    body: dict[str, Any] = run.json()
    return body


async def test_a_fix_that_was_never_made_marks_the_completed_run(
    client: httpx.AsyncClient, workspace_root: Path
) -> None:
    workspace = workspace_root / "shop"
    workspace.mkdir()
    (workspace / "store.py").write_text("import os\n\n\ndef total(xs):\n    return sum(xs)\n")
    run = await _run_to_the_end(client, "Fix the bugs in store.py", workspace)
    assert run["status"] == "completed"
    assert run["error"]["code"] == "goal_unmet"
    assert "made none" in run["error"]["message"]
    summary = run["steps"][1]["output_data"]
    assert summary["unmet_goal"] == run["error"]["message"]


async def test_a_goal_that_asked_for_no_change_completes_clean(
    client: httpx.AsyncClient, workspace_root: Path
) -> None:
    workspace = workspace_root / "shop"
    workspace.mkdir()
    (workspace / "store.py").write_text("def total(xs):\n    return sum(xs)\n")
    run = await _run_to_the_end(client, "Describe what store.py does", workspace)
    assert run["status"] == "completed"
    assert run["error"] is None
    assert run["steps"][1]["output_data"]["unmet_goal"] is None
