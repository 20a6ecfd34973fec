"""Approval policies over HTTP (F1, F3): what runs without a person is the server's named policy;
a client's own rules and flags may only add requirements; rules match the parsed command."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.domain.principals import Role
from agent_engine.engine import runs
from agent_engine.engine.context import EngineContext
from agent_engine.llm.base import (
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMClient,
    Usage,
)
from tests.keys import authed_app, bearer

PYTHON = sys.executable
POLICIES = f"""
policies:
  python-tests:
    description: the interpreter's pytest in the workspace runs without a person
    rules:
      - step_type: run_command
        executable: {PYTHON}
        argv_prefix: ["-m", "pytest"]
        forbidden_flags: ["--lf"]
        action: auto_approve
"""
AUTO_COMMANDS = {"rules": [{"step_type": "run_command", "action": "auto_approve"}]}


class PlanningModel(LLMClient):
    """Answers every planning request with one fixed plan."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        return CompletionResponse(
            text=json.dumps(self.plan), usage=Usage(), provider="test", model="fixed"
        )

    async def estimate_cost(self, request: CompletionRequest) -> Decimal | None:
        return Decimal(0)

    @property
    def calls(self) -> list[LLMCallRecord]:
        return []


@pytest.fixture
def workspace(workspace_root: Path) -> Path:
    target = workspace_root / "project"
    target.mkdir()
    (target / "test_ok.py").write_text("def test_ok():\n    assert True\n")
    return target


@pytest.fixture
def policy_settings(settings: Settings, tmp_path: Path) -> Settings:
    policies = tmp_path / "policies.yaml"
    policies.write_text(POLICIES)
    return settings.model_copy(
        update={"policies_file": policies, "command_allowlist": [PYTHON, "python3", "cat", "git"]}
    )


@pytest.fixture
async def app_client(policy_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(policy_settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        http.app = app  # type: ignore[attr-defined]
        yield http


def command(*argv: str, **extra: Any) -> dict[str, Any]:
    return {"step_type": "run_command", "input_data": {"argv": list(argv)}, **extra}


async def test_f1_a_client_auto_approve_rule_is_refused_and_nothing_runs(
    app_client: httpx.AsyncClient, workspace: Path
) -> None:
    marker = workspace / "ran"
    body = {
        "goal": "g",
        "workspace": str(workspace),
        "steps": [command("python3", "-c", f"open({str(marker)!r}, 'w')")],
        "approval_policy": AUTO_COMMANDS,
        "auto_start": True,
    }
    response = await app_client.post("/v1/agent-runs", json=body)
    assert response.status_code == 403, response.text
    problem = response.json()
    assert problem["code"] == "policy_loosening"
    assert problem["errors"][0]["field"] == "approval_policy.rules.0"
    assert "rule 1" in problem["detail"]
    assert (await app_client.get("/v1/agent-runs")).json()["items"] == []
    assert not marker.exists()


async def test_a_goal_only_run_cannot_bring_its_own_auto_approval_either(
    app_client: httpx.AsyncClient,
) -> None:
    response = await app_client.post(
        "/v1/agent-runs", json={"goal": "g", "approval_policy": AUTO_COMMANDS}
    )
    assert response.status_code == 403 and response.json()["code"] == "policy_loosening"


async def test_requires_approval_false_on_a_command_is_refused_naming_the_step(
    app_client: httpx.AsyncClient, workspace: Path
) -> None:
    steps = [
        {"step_type": "noop", "input_data": {}, "requires_approval": False},
        command("python3", "-c", "pass", requires_approval=False),
    ]
    response = await app_client.post(
        "/v1/agent-runs", json={"goal": "g", "workspace": str(workspace), "steps": steps}
    )
    assert response.status_code == 403
    problem = response.json()
    assert [(e["step_number"], e["field"]) for e in problem["errors"]] == [(2, "requires_approval")]


async def test_the_creator_with_the_policy_privilege_may_loosen(
    app_client: httpx.AsyncClient, workspace: Path
) -> None:
    ctx: EngineContext = app_client.app.state.engine  # type: ignore[attr-defined]
    request = runs.CreateRunRequest.model_validate(
        {
            "goal": "g",
            "workspace": str(workspace),
            "steps": [command("python3", "-c", "pass")],
            "approval_policy": AUTO_COMMANDS,
        }
    )
    view = await runs.create_run(
        ctx, request, actor="admin", idempotency_key=None, may_loosen_policy=True
    )
    assert view.steps[0].requires_approval is False
    assert view.run.options["may_loosen_policy"] is True


async def test_over_http_only_a_key_with_the_policy_privilege_may_loosen(
    policy_settings: Settings, workspace: Path
) -> None:
    body = {
        "goal": "g",
        "workspace": str(workspace),
        "steps": [command("python3", "-c", "pass")],
        "approval_policy": AUTO_COMMANDS,
    }
    async with authed_app(policy_settings) as served:
        plain = await served.key("ops", Role.OPERATOR)
        privileged = await served.key("ops-auto", Role.OPERATOR, may_auto_approve=True)
        admin = await served.key("root", Role.ADMIN)
        refused = await served.http.post("/v1/agent-runs", json=body, headers=bearer(plain))
        assert refused.status_code == 403 and refused.json()["code"] == "policy_loosening"
        for token, actor in ((privileged, "ops-auto"), (admin, "root")):
            made = await served.http.post("/v1/agent-runs", json=body, headers=bearer(token))
            assert made.status_code == 201, made.text
            run = made.json()
            assert run["steps"][0]["requires_approval"] is False
            assert run["created_by"] == actor


async def test_a_named_policy_decides_and_is_recorded_with_the_run(
    app_client: httpx.AsyncClient, workspace: Path
) -> None:
    steps = [
        command(PYTHON, "-m", "pytest", "-q", "test_ok.py"),
        command(PYTHON, "-m", "pytest", "-p", "evil_plugin"),  # plugin loading: a person decides
        command(PYTHON, "-m", "pytest", "--lf"),  # a flag the policy forbids
        command(PYTHON, "-c", "pass"),  # not the policy's argv_prefix
    ]
    body = {"goal": "g", "workspace": str(workspace), "steps": steps, "policy": "python-tests"}
    response = await app_client.post("/v1/agent-runs", json=body)
    assert response.status_code == 201, response.text
    run = response.json()
    assert [s["requires_approval"] for s in run["steps"]] == [False, True, True, True]
    assert run["steps"][0]["approval_rule"].startswith("policy python-tests rule 1:")
    audit = (await app_client.get(f"/v1/agent-runs/{run['id']}/audit")).json()["events"]
    created = next(e for e in audit if e["type"] == "run.created")["payload"]
    assert created["policy"]["name"] == "python-tests"
    assert created["policy"]["rules"][0]["argv_prefix"] == ["-m", "pytest"]
    executed = (await app_client.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    assert executed["steps"][0]["status"] == "completed"
    assert executed["steps"][0]["output_data"]["exit_code"] == 0
    waiting = (await app_client.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    assert waiting["steps"][1]["status"] == "awaiting_approval"
    preview = waiting["steps"][1]["preview"]
    assert any("-p loads a plugin module" in w for w in preview["warnings"])


async def test_a_test_path_outside_the_workspace_is_refused_even_under_a_policy(
    app_client: httpx.AsyncClient, workspace: Path
) -> None:
    body = {
        "goal": "g",
        "workspace": str(workspace),
        "steps": [command(PYTHON, "-m", "pytest", "/elsewhere/test_evil.py")],
        "policy": "python-tests",
    }
    response = await app_client.post("/v1/agent-runs", json=body)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_plan"
    assert response.json()["errors"][0]["field"] == "argv.3"


async def test_policies_are_listed_with_their_rules(app_client: httpx.AsyncClient) -> None:
    listed = (await app_client.get("/v1/policies")).json()["items"]
    assert [p["name"] for p in listed] == ["default", "python-tests"]
    assert listed[0]["rules"] == [] and listed[1]["rules"][0]["action"] == "auto_approve"


async def test_an_unknown_policy_is_refused(app_client: httpx.AsyncClient) -> None:
    response = await app_client.post("/v1/agent-runs", json={"goal": "g", "policy": "lenient"})
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_policy"
    assert "python-tests" in response.json()["detail"]


async def test_the_planner_applies_the_runs_policy_to_the_models_plan(
    policy_settings: Settings, workspace: Path
) -> None:
    plan = {
        "steps": [
            command(PYTHON, "-m", "pytest", "-q", "test_ok.py"),
            command(PYTHON, "-m", "pytest", "-p", "evil_plugin"),
            command("python3", "-c", "pass"),
        ],
        "rationale": "tests",
    }
    app = create_app(policy_settings, llm_factory=lambda budget: PlanningModel(plan))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        body = {"goal": "run the tests", "workspace": str(workspace), "policy": "python-tests"}
        run = (await http.post("/v1/agent-runs", json=body)).json()
        executed = (await http.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    assert [s["requires_approval"] for s in executed["steps"]] == [False, True, True]


async def test_the_planner_refuses_a_models_command_pointed_outside(
    policy_settings: Settings, workspace: Path
) -> None:
    plan = {"steps": [command("cat", "/etc/passwd")], "rationale": "look"}
    app = create_app(policy_settings, llm_factory=lambda budget: PlanningModel(plan))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        run = (
            await http.post("/v1/agent-runs", json={"goal": "g", "workspace": str(workspace)})
        ).json()
        failed = (await http.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    assert failed["status"] == "failed"
    assert "/etc/passwd" in failed["error"]["message"]


async def test_an_argument_from_an_earlier_output_pointing_outside_fails_before_it_runs(
    app_client: httpx.AsyncClient, workspace: Path
) -> None:
    steps = [
        {"step_type": "noop", "input_data": {"value": "/etc/passwd"}},
        command("cat", "placeholder"),
    ]
    steps[1]["input_data"]["argv"][1] = {"$ref": "steps.1.output.value"}
    body = {"goal": "g", "workspace": str(workspace), "steps": steps}
    run = (await app_client.post("/v1/agent-runs", json=body)).json()
    assert run["steps"][1]["requires_approval"] is True  # unknown arguments are never pre-approved
    await app_client.post(f"/v1/agent-runs/{run['id']}/execute")
    failed = (await app_client.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    step = failed["steps"][1]
    assert step["status"] == "failed"
    assert step["error"]["code"] == "workspace_violation"
    assert "/etc/passwd" in step["error"]["message"] and step["output_data"] is None
