"""The same proof with no key: ``agent-engine serve`` on its embedded default (the offline model,
the default approval policy, so every command and edit waits for a person) fixes a failing test
of the sample workspace adaptively. The first test is the flow the README's worked example
shows, approval by approval; the second shows how far the offline model gets on a bug it cannot
fix: it applies the one fix it knows, the tests still fail, and the run says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fix_flow import (
    GOAL,
    SAMPLE,
    approve,
    audit_types,
    broken_copy,
    plan_versions,
    serve,
    steps_of,
    wait_until,
)
from tests.sandboxing import require_sandbox

pytestmark = pytest.mark.slow

TEST_ARGV = ["python3", "-m", "pytest", "-q"]
MODELS_TEST = "tests/test_models.py"
# A test that compares floats by identity: 4 * 2.5 is a new float, never the literal's object.
IDENTITY_BUG = (").value == 10.0", ").value is 10.0")
IDENTITY_DIFF = (
    "--- a/tests/test_models.py\n"
    "+++ b/tests/test_models.py\n"
    "@@ -4,7 +4,7 @@\n"
    " \n"
    " \n"
    " def test_value_is_quantity_times_price():\n"
    '-    assert Item("A-1", "Widget", "tools", quantity=4, unit_price=2.5).value is 10.0\n'
    '+    assert Item("A-1", "Widget", "tools", quantity=4, unit_price=2.5).value == 10.0\n'
    " \n"
    " \n"
    " def test_low_stock_below_threshold():\n"
)
STORE = "inventory/store.py"
LOGIC_BUG = ("item.quantity += quantity\n", "item.quantity -= quantity\n")
FLOW = [
    (1, "list_files"),
    (2, "run_command"),
    (3, "read_file"),
    (4, "read_file"),
    (5, "propose_edit"),
    (6, "edit_file"),
    (7, "run_command"),
    (8, "summarize"),
]


def run_with_approvals(
    client: httpx.Client, body: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Create the run, then approve each step it waits for, in turn, until it ends; returns the
    ended run and the steps approved (as they were shown)."""
    response = client.post("/v1/agent-runs", json=body)
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    approved: list[dict[str, Any]] = []
    while True:
        run = wait_until(client, run["id"], {"awaiting_approval", "completed", "failed"})
        if run["status"] != "awaiting_approval":
            return run, approved
        (waiting,) = [s for s in run["steps"] if s["status"] == "awaiting_approval"]
        assert len(approved) < 5, f"more approvals than the flow has: {steps_of(run)}"
        approved.append(waiting)
        approve(client, run, waiting)


def fix_body() -> dict[str, Any]:
    # As the README writes it: the workspace relative to where `make serve` runs, no policy.
    return {
        "goal": GOAL,
        "workspace": "workspaces/inventory",
        "planning": "adaptive",
        "auto_start": True,
    }


def test_the_offline_model_fixes_the_failing_test_with_three_approvals(tmp_path: Path) -> None:
    require_sandbox()
    with serve(tmp_path) as (client, workspaces):
        workspace = broken_copy(workspaces, MODELS_TEST, *IDENTITY_BUG)
        run, approved = run_with_approvals(client, fix_body())
        assert run["status"] == "completed", steps_of(run)
        # Both test runs and the edit waited for a person; nothing else did.
        assert [(s["step_number"], s["step_type"]) for s in approved] == [
            (2, "run_command"),
            (6, "edit_file"),
            (7, "run_command"),
        ]
        assert approved[0]["preview"]["argv"] == TEST_ARGV
        assert approved[1]["preview"]["diff"] == IDENTITY_DIFF
        assert [(n, t) for n, t, _ in steps_of(run)] == FLOW
        assert all(status == "completed" for _, _, status in steps_of(run))
        steps = run["steps"]
        assert steps[1]["output_data"]["exit_code"] == 1
        assert "1 failed, 13 passed" in steps[1]["output_data"]["stdout"]
        assert [steps[2]["input_data"], steps[3]["input_data"]] == [
            {"path": MODELS_TEST},
            {"path": "inventory/models.py"},
        ]
        assert steps[4]["input_data"]["files"] == [MODELS_TEST, "inventory/models.py"]
        assert steps[5]["input_data"] == {"$ref": "steps.5.output.edit"}
        assert steps[6]["output_data"]["exit_code"] == 0
        assert "14 passed" in steps[6]["output_data"]["stdout"]
        summary = steps[7]["output_data"]["text"]
        assert f"Edited `{MODELS_TEST}`" in summary
        assert "exit code 0, 14 passed" in summary
        assert '"preview_diff"' not in summary  # the proposal is not quoted, its edit is told
        assert run["adaptive"] == {"revisions": 2, "due_after": None, "closed": "goal_met"}

        first, second, third = plan_versions(client, run)
        assert [s["step_type"] for s in first["document"]["steps"]] == ["list_files", "run_command"]
        assert second["document"]["revision"] == {"after_step": 2, "replaced": [], "added": [3, 4]}
        assert third["document"]["revision"]["added"] == [5, 6, 7, 8]
        assert third["document"]["steps"][:4] == second["document"]["steps"]
        events = audit_types(client, run["id"])
        assert [e["type"] for e in events if e["type"].startswith("plan.")] == [
            "plan.recorded",
            "plan.kept",  # after the listing
            "plan.revised",  # after the failing tests: read what failed
            "plan.kept",  # after the first read
            "plan.revised",  # after the second: propose, apply, test, summarize
            "plan.goal_met",  # after the passing tests
        ]
        assert [e["actor"] for e in events if e["type"] == "step.approved"] == ["alice"] * 3
        cost = client.get(f"/v1/agent-runs/{run['id']}/cost").json()
    assert cost["total_cost_usd"] == 0
    fixed = (SAMPLE / MODELS_TEST).read_text(encoding="utf-8")
    assert (workspace / MODELS_TEST).read_text(encoding="utf-8") == fixed


def test_on_a_bug_it_cannot_fix_the_offline_model_says_the_tests_still_fail(
    tmp_path: Path,
) -> None:
    require_sandbox()
    with serve(tmp_path) as (client, workspaces):
        workspace = broken_copy(workspaces, STORE, *LOGIC_BUG)
        broken = (workspace / STORE).read_text(encoding="utf-8")
        run, approved = run_with_approvals(client, fix_body())
        events = audit_types(client, run["id"])
    # The same loop; the one fix it knows in the files it read is the unused `import os`. It is
    # shown, approved and applied, and the tests still fail: the run ends with its summary
    # saying so, and the planner never claims the goal met.
    assert run["status"] == "completed", steps_of(run)
    assert [(n, t) for n, t, _ in steps_of(run)] == FLOW
    assert [s["step_number"] for s in approved] == [2, 6, 7]
    assert "-import os\n" in approved[1]["preview"]["diff"]
    assert (workspace / STORE).read_text(encoding="utf-8") == broken.replace("import os\n", "")
    steps = run["steps"]
    assert steps[6]["output_data"]["exit_code"] == 1
    assert "exit code 1, 1 failed, 13 passed" in steps[7]["output_data"]["text"]
    assert run["adaptive"]["closed"] is None
    assert "plan.goal_met" not in [e["type"] for e in events]
