"""Hermetic replay through the real app and its embedded worker, on SQLite and PostgreSQL, with
a model on a loopback Chat Completions server that counts the requests it receives: a replay
reproduces every step from the records at $0 and sends the model nothing; a request the
original never made fails its step with ``replay_miss``; approvals (of steps and plans) are
replayed; a fork from records goes live from its first miss."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.config import Settings
from agent_engine.domain.plan import Plan
from agent_engine.domain.records import ChangeSet, RunRecord
from agent_engine.domain.states import RunStatus
from agent_engine.domain.transitions import move_run
from agent_engine.engine.plans import insert_plan
from agent_engine.engine.policies import PlanApprovals, inputs_of_run
from agent_engine.engine.settle import refresh_claimable
from tests.fakes.llm_servers import FakeLLMServer
from tests.replay_flow import (
    STORE,
    EchoModel,
    app_client,
    audit,
    calls_of,
    create,
    finish,
    hashes,
    replay,
    reset_workspace,
    sample_copy,
    sample_plan,
)


@pytest.fixture
def model() -> Iterator[tuple[FakeLLMServer, EchoModel]]:
    echo = EchoModel()
    with FakeLLMServer(responder=echo) as server:
        yield server, echo


@pytest.fixture
async def client(
    settings: Settings, model: tuple[FakeLLMServer, EchoModel], tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings, model[0], tmp_path) as (_, http):
        yield http


async def test_hermetic_replay_reproduces_every_step_at_no_cost_without_a_request(
    client: httpx.AsyncClient,
    model: tuple[FakeLLMServer, EchoModel],
    workspace_root: Path,
    database_url: str,
) -> None:
    server, echo = model
    workspace = sample_copy(workspace_root)
    original = await finish(
        client, (await create(client, workspace, steps=sample_plan(command=False)))["id"]
    )
    assert original["status"] == "completed", hashes(original)
    assert echo.asked == ["analyze", "summarize"]
    asked = len(server.requests)
    edited = (workspace / STORE).read_bytes()
    assert b"import os" not in edited and float(original["total_cost_usd"]) > 0

    # Hermetic: the edit really happens again, so the workspace goes back to where it began.
    reset_workspace(workspace)
    created = await replay(client, original["id"])
    assert (created["replay_of"], created["replay_mode"]) == (original["id"], "hermetic")
    assert created["options"]["replay"]["of"] == original["id"]
    again = await finish(client, created["id"], approve=False)

    assert again["status"] == "completed", hashes(again)
    assert hashes(again) == hashes(original)
    assert float(again["total_cost_usd"]) == 0
    assert len(server.requests) == asked  # the provider saw nothing
    assert (workspace / STORE).read_bytes() == edited
    calls = await calls_of(database_url, again["id"])
    originals = await calls_of(database_url, original["id"])
    assert [c.replayed for c in calls] == [True, True]
    assert [(c.provider, c.model, c.input_tokens, c.output_tokens) for c in calls] == [
        (c.provider, c.model, c.input_tokens, c.output_tokens) for c in originals
    ]
    assert [c.request_hash for c in calls] == [c.request_hash for c in originals]
    assert [c.request["replayed_from"] for c in calls] == [str(c.id) for c in originals]
    assert all(c.cost_usd == 0 for c in calls)

    # The edit's approval was the original approver's, replayed without a person.
    events = await audit(client, again["id"])
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["run.created", "run.replay_created"]
    approved = [e for e in events if e["type"] == "step.approved"]
    assert len(approved) == 1 and approved[0]["actor"] == "alice"
    first = await audit(client, original["id"])
    decision_id = events[1]["payload"]["decisions"][0]
    assert approved[0]["payload"]["replayed_from_approval"] == decision_id
    assert any(e["type"] == "step.approved" and e["actor"] == "alice" for e in first)


async def test_a_planned_run_replays_its_planner_call(
    client: httpx.AsyncClient,
    model: tuple[FakeLLMServer, EchoModel],
    workspace_root: Path,
    database_url: str,
) -> None:
    server, echo = model
    echo.plan = [
        {"step_type": "read_file", "input_data": {"path": STORE}},
        {
            "step_type": "analyze",
            "input_data": {"instruction": "Review it", "inputs": [{"$ref": "steps.1.output"}]},
        },
        {"step_type": "summarize", "input_data": {"inputs": [{"$ref": "steps.2.output.text"}]}},
    ]
    workspace = sample_copy(workspace_root)
    original = await finish(client, (await create(client, workspace))["id"])
    assert original["status"] == "completed", hashes(original)
    assert echo.asked == ["plan", "analyze", "summarize"]
    asked = len(server.requests)

    again = await finish(client, (await replay(client, original["id"]))["id"])
    assert again["status"] == "completed", hashes(again)
    assert again["plan_hash"] == original["plan_hash"]
    assert hashes(again) == hashes(original)
    assert len(server.requests) == asked and float(again["total_cost_usd"]) == 0
    calls = await calls_of(database_url, again["id"])
    assert [(c.purpose, c.replayed) for c in calls] == [
        ("plan", True),
        ("step", True),
        ("step", True),
    ]
    plan = (await client.get(f"/v1/agent-runs/{again['id']}/plan")).json()
    assert plan["source"] == "planner" and plan["llm_call_id"] == str(calls[0].id)


async def test_a_changed_prompt_fails_its_step_with_replay_miss_naming_the_fields(
    client: httpx.AsyncClient,
    model: tuple[FakeLLMServer, EchoModel],
    workspace_root: Path,
) -> None:
    server, _ = model
    workspace = sample_copy(workspace_root)
    steps = sample_plan(command=False)[:3]
    original = await finish(client, (await create(client, workspace, steps=steps))["id"])
    assert original["status"] == "completed"
    asked = len(server.requests)

    # The file the analysis reads changed: the analyze request is not the one recorded.
    store = workspace / STORE
    store.write_text(store.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    again = await finish(client, (await replay(client, original["id"]))["id"])

    assert again["status"] == "failed"
    assert [s["status"] for s in again["steps"]] == ["completed", "completed", "failed"]
    assert again["steps"][1]["output_hash"] != original["steps"][1]["output_hash"]
    error = again["steps"][2]["error"]
    assert error["code"] == "replay_miss"
    assert error["step_number"] == 3 and error["purpose"] == "step"
    assert "step 3" in error["message"]
    paths = [d["path"] for d in error["differences"]]
    assert paths and all(p.startswith("messages[") for p in paths), paths
    assert any(
        "# changed" in str(d["actual"]) or "first_difference_at" in d for d in error["differences"]
    )
    assert len(server.requests) == asked  # never a silent live call
    events = await audit(client, again["id"])
    failed = [e for e in events if e["type"] == "step.failed"]
    assert failed and failed[0]["payload"]["error"]["code"] == "replay_miss"


async def test_only_a_finished_run_can_be_replayed(
    client: httpx.AsyncClient, workspace_root: Path
) -> None:
    workspace = sample_copy(workspace_root)
    response = await client.post(
        "/v1/agent-runs",
        json={
            "goal": "waits",
            "workspace": str(workspace),
            "steps": [{"step_type": "read_file", "input_data": {"path": STORE}}],
        },
    )
    run = response.json()
    refused = await client.post(f"/v1/agent-runs/{run['id']}/replay", json={})
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "invalid_transition"
    assert "only a completed or failed run" in refused.json()["detail"]

    missing = await client.post(
        "/v1/agent-runs/00000000-0000-4000-8000-000000000000/replay", json={}
    )
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    bad = await client.post(f"/v1/agent-runs/{run['id']}/replay", json={"mode": "live"})
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"


async def test_a_plan_approval_is_replayed_by_the_original_decision(
    client: httpx.AsyncClient, model: tuple[FakeLLMServer, EchoModel], workspace_root: Path
) -> None:
    server, _ = model
    workspace = sample_copy(workspace_root)
    steps = sample_plan(command=False)[:3]
    created = await create(client, workspace, steps=steps, plan_approval=True)
    assert created["status"] == "awaiting_approval"
    approved = await client.post(
        f"/v1/agent-runs/{created['id']}/plan/approve",
        json={"comment": "plan ok"},
        headers={"X-Actor": "alice"},
    )
    assert approved.status_code == 200, approved.text
    original = await finish(client, created["id"])
    assert original["status"] == "completed", hashes(original)
    asked = len(server.requests)

    again = await finish(client, (await replay(client, original["id"]))["id"], approve=False)
    assert again["status"] == "completed", hashes(again)
    assert hashes(again) == hashes(original) and len(server.requests) == asked
    events = await audit(client, again["id"])
    planned = [e for e in events if e["type"] == "run.planned" and e["payload"].get("decision")]
    assert len(planned) == 1 and planned[0]["actor"] == "alice"
    assert planned[0]["payload"]["comment"] == "plan ok"
    recorded = events[1]["payload"]["decisions"]
    assert planned[0]["payload"]["replayed_from_approval"] in recorded


async def test_a_fork_from_records_replays_until_its_first_miss_then_calls_the_model(
    settings: Settings,
    model: tuple[FakeLLMServer, EchoModel],
    workspace_root: Path,
    tmp_path: Path,
    database_url: str,
) -> None:
    """The client choice forks use: ``forked_from`` with ``options.fork.replay`` is served from
    the records while they match; from its first miss on, every call is live."""
    server, _ = model
    workspace = sample_copy(workspace_root)

    def analyze(instruction: str) -> dict[str, Any]:
        inputs = [{"$ref": "steps.1.output"}]
        return {
            "step_type": "analyze",
            "input_data": {"instruction": instruction, "inputs": inputs},
        }

    read = {"step_type": "read_file", "input_data": {"path": STORE}}
    async with app_client(settings, server, tmp_path) as (app, client):
        steps = [read, analyze("First look"), analyze("Second look"), analyze("Third look")]
        original = await finish(client, (await create(client, workspace, steps=steps))["id"])
        assert original["status"] == "completed"
        asked = len(server.requests)

        # A fork as its builder writes one: the same run, step 3 changed, continuing from records.
        ctx = app.state.engine
        changed = [read, analyze("First look"), analyze("Another look"), analyze("Third look")]
        fork = RunRecord(
            id=uuid.uuid4(),
            goal="fork",
            status=RunStatus.CREATED.value,
            workspace=str(workspace),
            created_by="bob",
            options={"fork": {"replay": True}},
            started=True,
            forked_from=uuid.UUID(original["id"]),
        )
        changes = ChangeSet(fork, [], new_run=True)
        move_run(changes, fork, RunStatus.PLANNING, actor="bob")
        plan = Plan.model_validate({"steps": changed})
        approvals = PlanApprovals(inputs_of_run(fork.options))
        insert_plan(
            changes, fork, plan, ctx.registry, approvals=approvals, actor="bob", source="fork"
        )
        move_run(changes, fork, RunStatus.PLANNED, actor="bob")
        refresh_claimable(fork, changes.steps)
        await ctx.changes.insert(changes)
        forked = await finish(client, str(fork.id))

    assert forked["status"] == "completed", hashes(forked)
    assert len(server.requests) == asked + 2  # steps 3 and 4 went to the model
    calls = await calls_of(database_url, str(fork.id))
    assert [c.replayed for c in calls] == [True, False, False]
    # Step 4 asked what the original asked, but after the miss it is live all the same.
    originals = await calls_of(database_url, original["id"])
    assert calls[2].request_hash == originals[2].request_hash
