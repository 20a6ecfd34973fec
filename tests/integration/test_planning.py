"""Planning through the API: the offline planner, plan versions, re-planning, plan approval,
validation retries against a model that keeps answering wrongly, and the router over HTTP."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from tests.fakes.llm_servers import FakeLLMServer, openai_completion
from tests.processes import clean_env, router_process

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_workspace"


@pytest.fixture
def sample_workspace(workspace_root: Path) -> Path:
    target = workspace_root / "sample"
    shutil.copytree(SAMPLE, target)
    return target


async def _create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/agent-runs", json=body)
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    return run


async def test_goal_only_run_is_planned_by_the_offline_model_on_first_execute(
    client: httpx.AsyncClient, sample_workspace: Path
) -> None:
    run = await _create(
        client,
        goal="Analyze the codebase and suggest improvements",
        workspace=str(sample_workspace),
    )
    assert run["status"] == "created"
    executed = (await client.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    types = [s["step_type"] for s in executed["steps"]]
    assert types[0] == "list_files" and types[-1] == "summarize"
    assert "read_file" in types and "analyze" in types
    assert executed["steps"][0]["status"] == "completed"
    assert executed["executed_step_id"] == executed["steps"][0]["id"]
    plan = (await client.get(f"/v1/agent-runs/{run['id']}/plan")).json()
    assert plan["version"] == 1 and plan["source"] == "planner"
    assert plan["plan_hash"] == executed["plan_hash"]
    assert plan["llm_call_id"] is not None
    assert len(plan["step_estimates"]) == len(types)
    cost = (await client.get(f"/v1/agent-runs/{run['id']}/cost")).json()
    assert cost["by_step"][0]["step_type"] == "plan"
    assert cost["by_provider"]["offline"]["calls"] == 1
    assert cost["total_cost_usd"] == 0 and cost["has_unpriced_calls"] is False


async def test_offline_run_executes_to_completion_with_an_offline_summary(
    client: httpx.AsyncClient, sample_workspace: Path
) -> None:
    run = await _create(client, goal="Analyze the codebase", workspace=str(sample_workspace))
    for _ in range(20):
        state = (await client.post(f"/v1/agent-runs/{run['id']}/execute")).json()
        if state["status"] != "running":
            break
    assert state["status"] == "completed", [(s["step_type"], s["status"]) for s in state["steps"]]
    summary = state["steps"][-1]["output_data"]
    assert "offline model" in summary["text"]
    analysis = next(s for s in state["steps"] if s["step_type"] == "analyze")["output_data"]
    kinds = {f["kind"] for f in analysis["structured"]["findings"]}
    assert kinds  # the sample workspace has deliberate problems; the analysis must find some


async def test_replan_makes_a_new_version_and_diffs_against_the_old(
    client: httpx.AsyncClient, sample_workspace: Path
) -> None:
    run = await _create(client, goal="Analyze", workspace=str(sample_workspace), plan_approval=True)
    waiting = (await client.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    assert waiting["status"] == "awaiting_approval"
    assert all(s["status"] == "pending" for s in waiting["steps"])
    blocked = await client.post(f"/v1/agent-runs/{run['id']}/execute")
    assert blocked.status_code == 409
    replanned = (await client.post(f"/v1/agent-runs/{run['id']}/plan/replan")).json()
    assert replanned["plan_version"] == 2 and replanned["status"] == "awaiting_approval"
    diff = (await client.get(f"/v1/agent-runs/{run['id']}/plan/diff?from=1&to=2")).json()
    assert diff["identical"] is True and diff["steps"] == []  # the offline model is deterministic
    first = (await client.get(f"/v1/agent-runs/{run['id']}/plan?version=1")).json()
    assert first["version"] == 1
    missing = await client.get(f"/v1/agent-runs/{run['id']}/plan?version=9")
    assert missing.status_code == 404

    approved = await client.post(
        f"/v1/agent-runs/{run['id']}/plan/approve",
        json={"comment": "go"},
        headers={"X-Actor": "lead"},
    )
    assert approved.status_code == 200 and approved.json()["status"] == "planned"
    again = await client.post(f"/v1/agent-runs/{run['id']}/plan/approve")
    assert again.status_code == 409
    ran = (await client.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    assert ran["status"] == "running"
    too_late = await client.post(f"/v1/agent-runs/{run['id']}/plan/replan")
    assert too_late.status_code == 409
    audit = (await client.get(f"/v1/agent-runs/{run['id']}/audit")).json()["events"]
    decision = next(e for e in audit if e["payload"].get("decision") == "plan approved")
    assert decision["actor"] == "lead" and decision["payload"]["plan_version"] == 2


async def test_rejected_plan_fails_the_run(client: httpx.AsyncClient) -> None:
    run = await _create(client, goal="Summarize the risks", plan_approval=True)
    await client.post(f"/v1/agent-runs/{run['id']}/execute")
    rejected = await client.post(
        f"/v1/agent-runs/{run['id']}/plan/reject", json={"reason": "wrong approach"}
    )
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "failed"
    assert rejected.json()["error"] == {"code": "plan_rejected", "message": "wrong approach"}


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def _catalog(tmp_path: Path, fake_llm: FakeLLMServer) -> Path:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(
        "providers:\n"
        f"  fakeai: {{kind: openai, base_url: '{fake_llm.openai_base_url}', api_key_env: null,"
        " timeout_s: 5}\n"
        "models:\n"
        "  - {provider: fakeai, model: planner-x, tier: medium, context_window: 100000,"
        " max_output_tokens: 4096, prices: {input: 1, output: 2}}\n",
        encoding="utf-8",
    )
    return catalog


@pytest.fixture
async def fake_model_client(
    settings: Settings, tmp_path: Path, fake_llm: FakeLLMServer
) -> AsyncIterator[httpx.AsyncClient]:
    pinned = settings.model_copy(
        update={"models_file": _catalog(tmp_path, fake_llm), "model": "fakeai:planner-x"}
    )
    app = create_app(pinned)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


async def test_plan_that_never_validates_fails_the_run_with_the_last_errors(
    fake_model_client: httpx.AsyncClient, fake_llm: FakeLLMServer
) -> None:
    bad = json.dumps({"steps": [{"step_type": "teleport", "input_data": {}}], "rationale": "x"})
    fake_llm.script(
        *(openai_completion(bad, prompt_tokens=1000, completion_tokens=100) for _ in range(3))
    )
    run = await _create(fake_model_client, goal="Do something")
    failed = (await fake_model_client.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "planning_failed"
    assert "teleport" in failed["error"]["message"]
    cost = (await fake_model_client.get(f"/v1/agent-runs/{run['id']}/cost")).json()
    assert cost["totals"]["calls"] == 3
    # 3 × (1000 input at $1/M + 100 output at $2/M) = $0.0036, priced per class, summed exactly
    assert cost["total_cost_usd"] == pytest.approx(0.0036)
    assert cost["consistent"] is True
    retry_prompt = fake_llm.requests[-1].body["messages"][-1]["content"]
    assert "teleport" in retry_prompt


async def test_invalid_plan_then_valid_plan_is_accepted_on_retry(
    fake_model_client: httpx.AsyncClient, fake_llm: FakeLLMServer
) -> None:
    bad = json.dumps({"steps": [{"step_type": "summarize", "input_data": {"bogus": 1}}]})
    good = json.dumps(
        {
            "steps": [{"step_type": "summarize", "input_data": {"instruction": "sum up"}}],
            "rationale": "one step",
        }
    )
    fake_llm.script(openai_completion(bad), openai_completion(good))
    run = await _create(fake_model_client, goal="Summarize")
    await fake_model_client.post(f"/v1/agent-runs/{run['id']}/execute")
    plan = (await fake_model_client.get(f"/v1/agent-runs/{run['id']}/plan")).json()
    assert plan["document"]["steps"][0]["input_data"] == {"instruction": "sum up"}
    assert plan["rationale"] == "one step"


@pytest.fixture(scope="module")
def router_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("router")
    with router_process(workdir, clean_env()) as url:
        yield url


@pytest.mark.slow
async def test_engine_plans_and_runs_through_the_router_over_http(
    settings: Settings, router_url: str
) -> None:
    app = create_app(settings.model_copy(update={"router_url": router_url}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        run = await _create(http, goal="Summarize the state of the project")
        for _ in range(5):
            state = (await http.post(f"/v1/agent-runs/{run['id']}/execute")).json()
            if state["status"] != "running":
                break
        assert state["status"] == "completed"
        cost = (await http.get(f"/v1/agent-runs/{run['id']}/cost")).json()
        assert cost["totals"]["calls"] >= 2  # the plan and at least one LLM step
        assert set(cost["by_provider"]) == {"offline"}


async def test_budget_pauses_llm_calls_before_they_overspend(
    fake_model_client: httpx.AsyncClient, fake_llm: FakeLLMServer
) -> None:
    received = len(fake_llm.requests)
    steps = [{"step_type": "analyze", "input_data": {"instruction": "x" * 4000}}]
    run = await _create(fake_model_client, goal="g", steps=steps, budget_usd="0.000001")
    done = (await fake_model_client.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    assert done["status"] == "awaiting_approval"  # paused for budget, not failed
    assert done["steps"][0]["budget_pause"]["reason"] == "budget"
    assert done["steps"][0]["error"] is None
    assert len(fake_llm.requests) == received  # refused before any request was sent
    cost = (await fake_model_client.get(f"/v1/agent-runs/{run['id']}/cost")).json()
    assert cost["total_cost_usd"] == 0 and cost["budget_usd"] == pytest.approx(0.000001)


async def test_unpriced_model_is_flagged_never_zero(
    settings: Settings, tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    catalog = tmp_path / "unpriced.yaml"
    catalog.write_text(
        "providers:\n"
        f"  fakeai: {{kind: openai, base_url: '{fake_llm.openai_base_url}', api_key_env: null}}\n"
        "models:\n"
        "  - {provider: fakeai, model: mystery-model-9000, tier: medium, context_window: 100000,"
        " max_output_tokens: 4096}\n",
        encoding="utf-8",
    )
    pinned = settings.model_copy(
        update={"models_file": catalog, "model": "fakeai:mystery-model-9000"}
    )
    fake_llm.script(openai_completion("a summary", prompt_tokens=50, completion_tokens=10))
    app = create_app(pinned)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        steps = [{"step_type": "summarize", "input_data": {"inputs": ["some text"]}}]
        run = await _create(http, goal="g", steps=steps)
        done = (await http.post(f"/v1/agent-runs/{run['id']}/execute")).json()
        cost = (await http.get(f"/v1/agent-runs/{run['id']}/cost")).json()
    assert done["status"] == "completed"
    assert cost["has_unpriced_calls"] is True
    assert cost["totals"]["unpriced_calls"] == 1
    assert cost["totals"]["input_tokens"] == 50
