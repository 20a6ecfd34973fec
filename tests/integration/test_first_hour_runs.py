"""What a newcomer tries in the first hour, through the API with its embedded worker: a goal
planned for approval and run once approved, and steps that cannot work failing at once with the
reason instead of waiting for a human to approve them."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.config import Settings
from tests.integration.test_workers import embedded_worker_client, step, wait_for

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_workspace"


@pytest.fixture
def sample_workspace(workspace_root: Path) -> Path:
    target = workspace_root / "sample"
    shutil.copytree(SAMPLE, target)
    (target / "notes.txt").write_text("hello\n", encoding="utf-8")
    return target


@pytest.fixture
async def woken_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API with its embedded worker, polling so rarely that only wake-ups can drive it."""
    async with embedded_worker_client(settings, poll_s=600.0) as http:
        yield http


async def _create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/agent-runs", json=body)
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    return run


async def _audit(client: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (await client.get(f"/v1/agent-runs/{run_id}/audit")).json()[
        "events"
    ]
    return events


async def test_a_planned_run_waits_for_its_plan_approval_then_the_worker_runs_it_to_completion(
    woken_client: httpx.AsyncClient, sample_workspace: Path
) -> None:
    run = await _create(
        woken_client,
        goal="Analyze the codebase and suggest improvements",
        workspace=str(sample_workspace),
        plan_approval=True,
        auto_start=True,
    )
    # The worker plans it (no steps were given), and the plan then waits for a human.
    waiting = await wait_for(woken_client, run["id"], {"awaiting_approval", "failed"})
    assert waiting["status"] == "awaiting_approval", waiting
    assert waiting["plan_version"] == 1 and waiting["steps"]
    assert [(s["status"], s["attempt"]) for s in waiting["steps"]] == [("pending", 0)] * len(
        waiting["steps"]
    )
    blocked = await woken_client.post(f"/v1/agent-runs/{run['id']}/execute")
    assert blocked.status_code == 409  # nothing may run before the plan is approved

    approved = await woken_client.post(
        f"/v1/agent-runs/{run['id']}/plan/approve",
        json={"comment": "go"},
        headers={"X-Actor": "lead"},
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "planned"
    # The worker polls every 10 minutes: only the approval's notification can bring it back.
    done = await wait_for(woken_client, run["id"], {"completed", "failed"}, limit_s=60)
    assert done["status"] == "completed", [(s["step_type"], s["error"]) for s in done["steps"]]
    assert all(s["status"] == "completed" and s["attempt"] == 1 for s in done["steps"])
    types = [e["type"] for e in await _audit(woken_client, run["id"])]
    assert types.index("run.awaiting_approval") < types.index("run.planned", 4)
    assert types.index("run.planned", 4) < types.index("step.running")
    assert types[-1] == "run.completed"


def _command_in_a_missing_folder() -> dict[str, Any]:
    # Knowable only when the step runs (a program off the allowlist is refused at creation).
    return {
        "step_type": "run_command",
        "input_data": {"argv": ["python3", "-c", "pass"], "cwd": "missing"},
    }


def _edit_that_does_not_apply() -> dict[str, Any]:
    return {
        "step_type": "edit_file",
        "input_data": {"path": "notes.txt", "operation": "replace", "old": "absent", "new": "x"},
    }


FAILING_PREVIEWS = {
    "command_in_a_missing_folder": (_command_in_a_missing_folder, "no such directory: 'missing'"),
    "edit_matching_nothing": (_edit_that_does_not_apply, "matches 0 times"),
}


@pytest.mark.parametrize("how", ["worker", "execute"])
@pytest.mark.parametrize("case", sorted(FAILING_PREVIEWS))
async def test_a_step_whose_preview_fails_fails_at_once_instead_of_awaiting_approval(
    woken_client: httpx.AsyncClient, sample_workspace: Path, case: str, how: str
) -> None:
    make, reason = FAILING_PREVIEWS[case]
    spec = {**make(), "requires_approval": True}
    run = await _create(
        woken_client,
        goal="first hour",
        workspace=str(sample_workspace),
        steps=[spec, step("after")],
        auto_start=how == "worker",
    )
    if how == "execute":
        executed = await woken_client.post(f"/v1/agent-runs/{run['id']}/execute")
        assert executed.status_code == 200, executed.text
    done = await wait_for(woken_client, run["id"], {"failed", "awaiting_approval", "completed"})
    assert done["status"] == "failed"
    first, after = done["steps"]
    assert first["status"] == "failed" and first["preview"] is None
    assert reason in first["error"]["message"]
    assert after["status"] == "pending" and after["attempt"] == 0
    assert reason in str(done["error"])
    types = [e["type"] for e in await _audit(woken_client, run["id"])]
    assert "step.awaiting_approval" not in types and "run.awaiting_approval" not in types
    assert types[-2:] == ["step.failed", "run.failed"]
    if case == "edit_matching_nothing":
        assert (sample_workspace / "notes.txt").read_text(encoding="utf-8") == "hello\n"


async def test_an_optional_step_whose_preview_fails_lets_the_run_go_on(
    woken_client: httpx.AsyncClient, sample_workspace: Path
) -> None:
    spec = {**_command_in_a_missing_folder(), "requires_approval": True, "optional": True}
    run = await _create(
        woken_client,
        goal="first hour",
        workspace=str(sample_workspace),
        steps=[spec, step("after")],
        auto_start=True,
    )
    done = await wait_for(woken_client, run["id"], {"failed", "awaiting_approval", "completed"})
    assert done["status"] == "completed"
    assert [s["status"] for s in done["steps"]] == ["failed", "completed"]
    assert "no such directory" in done["steps"][0]["error"]["message"]
