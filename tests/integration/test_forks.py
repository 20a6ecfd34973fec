"""What-if forks through the API, with a real OpenAI-compatible model on loopback counting the
requests: steps before ``from_step`` are reused (not asked again, not paid), the step itself gets
its override, and the comparison, the divergence report and the family tree say what happened."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.config import Settings
from tests.backends import one_backend
from tests.fakes.llm_servers import FakeLLMServer
from tests.forking import (
    analysis_reply,
    audit_types,
    finished_run,
    fork,
    four_steps,
    project,
    prompt_of,
    run_to_end,
    serving,
)


@pytest.fixture(scope="module")
def model_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(responder=analysis_reply) as server:
        yield server


@pytest.fixture
async def api(
    settings: Settings, tmp_path: Path, model_server: FakeLLMServer
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings, tmp_path, model_server) as http:
        yield http


@pytest.fixture
def workspace(workspace_root: Path) -> Path:
    return project(workspace_root)


async def test_fork_from_step_3_reuses_steps_1_and_2_and_the_comparison_shows_the_change(
    api: httpx.AsyncClient, workspace: Path, model_server: FakeLLMServer
) -> None:
    original = await finished_run(api, workspace)
    asked_before = len(model_server.requests)
    new_input = {"instruction": "INSTR-C", "inputs": [{"$ref": "steps.2.output.text"}]}
    made = await fork(api, original["id"], from_step=3, input_data=new_input)
    assert made.status_code == 201, made.text
    forked = made.json()
    assert forked["forked_from"] == original["id"] and forked["from_step"] == 3
    assert forked["options"]["fork"]["override"] == "input_data"
    assert [s["status"] for s in forked["steps"]] == [
        "completed",
        "completed",
        "pending",
        "pending",
    ]
    assert [s["reused_from"] for s in forked["steps"]] == [
        original["steps"][0]["id"],
        original["steps"][1]["id"],
        None,
        None,
    ]
    assert model_server.requests[asked_before:] == []  # making the fork asked nothing

    done = await run_to_end(api, forked["id"])
    assert done["status"] == "completed"
    asked = [prompt_of(r) for r in model_server.requests[asked_before:]]
    assert len(asked) == 2  # steps 3 and 4 only: 1 and 2 were not asked again
    assert "INSTR-C" in asked[0] and "INSTR-D" in asked[1]
    assert not any("INSTR-A" in prompt or "INSTR-B" in prompt for prompt in asked)
    # The fork pays for what it ran: steps 3 and 4, not the reused ones.
    costs = [Decimal(str(s["cost_usd"])) for s in done["steps"]]
    assert costs[0] == costs[1] == 0 and costs[2] > 0 and costs[3] > 0
    assert Decimal(str(done["total_cost_usd"])) == costs[2] + costs[3]
    assert Decimal(str(original["steps"][1]["cost_usd"])) > 0
    assert done["steps"][0]["output_hash"] == original["steps"][0]["output_hash"]
    types = await audit_types(api, forked["id"])
    assert types.count("step.reused") == 2 and types.count("step.input_overridden") == 1

    compared = (await api.get(f"/v1/agent-runs/{original['id']}/compare/{forked['id']}")).json()
    verdicts = [row["verdict"] for row in compared["steps"]]
    assert verdicts == ["same", "same", "differs", "differs"]
    step3, step4 = compared["steps"][2], compared["steps"][3]
    assert step3["input"]["first_difference"] == {
        "field": "input_data.instruction",
        "expected": "INSTR-B",
        "actual": "INSTR-C",
    }
    assert step3["output"]["first_difference"]["field"] == "output.text"
    assert step4["input"]["first_difference"]["field"] == "resolved_input.inputs[0]"
    assert step4["differs_in"] == ["input", "output"]
    assert compared["steps"][1]["cost_usd"]["b"] == 0 and compared["steps"][1]["cost_usd"]["a"] > 0
    assert compared["steps"][1]["llm_calls"] == {"a": 1, "b": 0}
    assert compared["first_difference"]["step_number"] == 3
    assert compared["first_difference"]["field"] == "input_data.instruction"

    report = (await api.get(f"/v1/agent-runs/{forked['id']}/divergence")).json()
    assert report["relation"] == "fork" and report["against"] == original["id"]
    assert [row["verdict"] for row in report["steps"]] == ["match", "match", "diverged", "diverged"]
    first = report["first_divergence"]
    assert first["step_number"] == 3 and first["field"] == "input_data.instruction"
    assert (first["expected"], first["actual"]) == ("INSTR-B", "INSTR-C")
    assert report["steps"][3]["field"] == "resolved_input.inputs[0]"
    assert report["verdict"] == "diverged"


async def test_an_output_override_completes_the_step_and_later_steps_read_it(
    api: httpx.AsyncClient, workspace: Path, model_server: FakeLLMServer
) -> None:
    original = await finished_run(api, workspace)
    given = {
        "text": "GIVEN-TEXT",
        "structured": {},
        "model": "by-hand",
        "provider": "person",
        "usage": {},
    }
    made = await fork(api, original["id"], from_step=3, output_data=given)
    assert made.status_code == 201, made.text
    forked = made.json()
    step3 = forked["steps"][2]
    assert step3["status"] == "completed" and step3["output_data"] == given
    assert (
        step3["output_hash"]
        == hashlib.sha256(
            json.dumps(given, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
    )
    assert "step.output_overridden" in await audit_types(api, forked["id"])
    asked_before = len(model_server.requests)
    done = await run_to_end(api, forked["id"])
    assert done["status"] == "completed"
    assert len(model_server.requests) - asked_before == 1  # step 4 alone
    assert done["steps"][3]["resolved_input"]["inputs"] == ["GIVEN-TEXT"]
    assert "GIVEN-TEXT" in prompt_of(model_server.requests[-1])
    report = (await api.get(f"/v1/agent-runs/{forked['id']}/divergence")).json()
    assert report["first_divergence"]["step_number"] == 3
    assert report["first_divergence"]["field"] == "output.text"
    assert report["first_divergence"]["actual"] == "GIVEN-TEXT"


async def test_an_output_override_of_the_last_step_completes_the_fork_at_once(
    api: httpx.AsyncClient, workspace: Path
) -> None:
    original = await finished_run(api, workspace)
    given = {"text": "t", "structured": {}, "model": "m", "provider": "p", "usage": {}}
    made = await fork(api, original["id"], from_step=4, output_data=given)
    assert made.status_code == 201, made.text
    assert made.json()["status"] == "completed"
    assert made.json()["total_cost_usd"] == 0


async def test_a_model_override_pins_the_step_to_that_model(
    api: httpx.AsyncClient, workspace: Path, model_server: FakeLLMServer
) -> None:
    original = await finished_run(api, workspace)
    # The router picks the cheaper small-a for every step of the original.
    assert {s["model"] for s in original["steps"][1:]} == {"fakeai:small-a"}
    made = await fork(api, original["id"], from_step=3, model="fakeai:small-b")
    assert made.status_code == 201, made.text
    asked_before = len(model_server.requests)
    done = await run_to_end(api, made.json()["id"])
    wire_models = [r.body["model"] for r in model_server.requests[asked_before:]]
    assert wire_models == ["small-b", "small-a"]  # step 3 pinned, step 4 routed as before
    assert [s["model"] for s in done["steps"][2:]] == ["fakeai:small-b", "fakeai:small-a"]
    assert "step.model_pinned" in await audit_types(api, done["id"])
    compared = (await api.get(f"/v1/agent-runs/{original['id']}/compare/{done['id']}")).json()
    assert compared["steps"][2]["model"] == {"a": "fakeai:small-a", "b": "fakeai:small-b"}
    assert "model" in compared["steps"][2]["differs_in"]


@one_backend(
    "sqlite",
    "each refusal is decided from the request and the source run's plan before the fork is "
    "written; forks that are written run on both backends above",
)
@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"from_step": 9}, "validation_error", "from_step"),
        ({"from_step": 0}, "validation_error", "from_step"),
        ({"from_step": 3, "input_data": {"instruction": "x", "bogus": 1}}, "invalid_plan", "bogus"),
        ({"from_step": 3, "input_data": {"inputs": []}}, "invalid_plan", "instruction"),
        (
            {"from_step": 3, "output_data": {"structured": {}}},
            "validation_error",
            "output_data.text",
        ),
        ({"from_step": 3, "model": "fakeai:nope"}, "validation_error", "model"),
        (
            {"from_step": 3, "input_data": {"instruction": "x"}, "output_data": {"text": "t"}},
            "validation_error",
            None,
        ),
    ],
)
async def test_a_bad_fork_request_is_refused_naming_the_field(
    api: httpx.AsyncClient,
    workspace: Path,
    body: dict[str, Any],
    code: str,
    field: str | None,
) -> None:
    original = await finished_run(api, workspace)
    refused = await fork(api, original["id"], **body)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["code"] == code
    if field is not None:
        fields = [
            str(e.get("field") or ".".join(map(str, e.get("loc", [])))) for e in problem["errors"]
        ]
        assert any(f == field or f.endswith(field) for f in fields), problem
    runs = (await api.get("/v1/agent-runs")).json()["items"]
    assert len(runs) == 1  # nothing was made


async def test_a_fork_needs_the_steps_it_reuses_finished_and_a_known_run(
    api: httpx.AsyncClient, workspace: Path
) -> None:
    created = await api.post(
        "/v1/agent-runs",
        json={"goal": "g", "workspace": str(workspace), "steps": four_steps()},
    )
    run_id = created.json()["id"]
    early = await fork(api, run_id, from_step=3)
    assert early.status_code == 409 and early.json()["code"] == "fork_not_ready"
    assert early.json()["step_number"] == 1
    first = await fork(api, run_id, from_step=1)  # reuses nothing: always possible
    assert first.status_code == 201, first.text
    missing = await fork(api, "00000000-0000-0000-0000-000000000000", from_step=1)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_a_fork_of_a_run_made_with_plan_approval_waits_for_its_plan_to_be_approved(
    api: httpx.AsyncClient, workspace: Path, model_server: FakeLLMServer
) -> None:
    created = await api.post(
        "/v1/agent-runs",
        json={
            "goal": "g",
            "workspace": str(workspace),
            "steps": four_steps()[:3],
            "plan_approval": True,
        },
    )
    run_id = created.json()["id"]
    assert created.json()["status"] == "awaiting_approval"
    assert (await api.post(f"/v1/agent-runs/{run_id}/plan/approve")).status_code == 200
    original = await run_to_end(api, run_id)
    assert original["status"] == "completed"
    made = await fork(api, run_id, from_step=3, replay=True)
    assert made.status_code == 201, made.text
    forked = made.json()
    assert forked["status"] == "awaiting_approval"
    assert forked["options"]["fork"] == {
        "from_step": 3,
        "override": None,
        "model": None,
        "replay": True,
    }
    asked_before = len(model_server.requests)
    waiting = await api.post(f"/v1/agent-runs/{forked['id']}/execute")
    assert waiting.status_code == 409, waiting.text  # nothing runs before the plan's approval
    assert "waiting for approval" in waiting.json()["detail"]
    assert (await api.post(f"/v1/agent-runs/{forked['id']}/plan/approve")).status_code == 200
    done = await run_to_end(api, forked["id"])
    assert done["status"] == "completed"
    # With `replay`, step 3 asks what the original asked: it is served from the records.
    assert len(model_server.requests) - asked_before == 0
    calls = (await api.get(f"/v1/agent-runs/{forked['id']}/cost")).json()
    assert Decimal(str(done["total_cost_usd"])) == 0, calls


async def test_a_fork_replays_its_reused_steps_from_the_calls_of_the_steps_it_reused(
    api: httpx.AsyncClient, workspace: Path, model_server: FakeLLMServer
) -> None:
    original = await finished_run(api, workspace)
    new_input = {"instruction": "INSTR-C", "inputs": [{"$ref": "steps.2.output.text"}]}
    made = await fork(api, original["id"], from_step=3, input_data=new_input)
    assert made.status_code == 201, made.text
    forked = await run_to_end(api, made.json()["id"])
    assert forked["status"] == "completed"
    asked_before = len(model_server.requests)
    replayed = await api.post(f"/v1/agent-runs/{forked['id']}/replay", json={"mode": "verify"})
    assert replayed.status_code == 201, replayed.text
    done = await run_to_end(api, replayed.json()["id"])
    # Step 2 (reused by the fork, so called by the original) is served from the original's
    # call, steps 3 and 4 from the fork's own: nothing is asked again.
    assert done["status"] == "completed", done["steps"]
    assert len(model_server.requests) == asked_before
    report = (await api.get(f"/v1/agent-runs/{done['id']}/divergence")).json()
    assert report["verdict"] == "match", report
