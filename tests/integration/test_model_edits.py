"""Model-written edits through the API: propose_edit → edit_file by $ref waits for approval with
the exact diff and applies it; a file changed in between is a stale_edit; a scripted model on
loopback HTTP whose answers are refused gets the errors back, and every call is recorded."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from tests.fakes.llm_servers import FakeLLMServer, openai_completion

SOURCE = "def add(a, b):\n    return a - b\n"
FIXED = "def add(a, b):\n    return a + b\n"
INSTRUCTION = "Replace `return a - b` with `return a + b`"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def workspace(workspace_root: Path) -> Path:
    target = workspace_root / "calc"
    target.mkdir()
    (target / "calc.py").write_text(SOURCE)
    return target


def edit_plan(instruction: str = INSTRUCTION, **propose: Any) -> list[dict[str, Any]]:
    return [
        {
            "step_type": "propose_edit",
            "input_data": {"instruction": instruction, "files": ["calc.py"], **propose},
        },
        {"step_type": "edit_file", "input_data": {"$ref": "steps.1.output.edit"}},
    ]


async def create(client: httpx.AsyncClient, workspace: Path, steps: list[Any]) -> dict[str, Any]:
    body = {"goal": "Fix add", "workspace": str(workspace), "steps": steps}
    response = await client.post("/v1/agent-runs", json=body)
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    return run


async def execute(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await client.post(f"/v1/agent-runs/{run_id}/execute")
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


async def step_events(client: httpx.AsyncClient, run: dict[str, Any], number: int) -> list[str]:
    step_id = run["steps"][number - 1]["id"]
    audit = (await client.get(f"/v1/agent-runs/{run['id']}/audit")).json()
    assert audit["chain_valid"] is True
    return [e["type"] for e in audit["events"] if e["step_id"] == step_id]


async def test_proposed_edit_waits_for_approval_with_its_exact_diff_and_approval_applies_it(
    client: httpx.AsyncClient, workspace: Path
) -> None:
    run = await create(client, workspace, edit_plan())
    proposed = await execute(client, run["id"])
    first = proposed["steps"][0]
    assert first["status"] == "completed"
    output = first["output_data"]
    assert output["base_sha256"] == sha(SOURCE.encode())
    assert output["edit"]["expected_sha256"] == output["base_sha256"]
    assert (workspace / "calc.py").read_text() == SOURCE

    waiting = await execute(client, run["id"])
    second = waiting["steps"][1]
    assert waiting["status"] == "awaiting_approval" and second["status"] == "awaiting_approval"
    assert second["preview"]["diff"] == output["preview_diff"]
    assert second["preview"]["before_sha256"] == output["base_sha256"]
    assert second["preview"]["after_sha256"] == sha(FIXED.encode())
    assert (workspace / "calc.py").read_text() == SOURCE  # nothing happens before a person says so

    url = f"/v1/agent-runs/{run['id']}/steps/{second['id']}/approve"
    approved = await client.post(url, json={"comment": "ok"}, headers={"X-Actor": "reviewer"})
    assert approved.status_code == 200
    done = await execute(client, run["id"])
    assert done["status"] == "completed"
    assert done["steps"][1]["output_data"]["diff"] == output["preview_diff"]
    assert (workspace / "calc.py").read_text() == FIXED
    audit = (await client.get(f"/v1/agent-runs/{run['id']}/audit")).json()["events"]
    decision = next(e for e in audit if e["type"] == "step.approved")
    assert decision["payload"]["shown"]["diff"] == output["preview_diff"]
    cost = (await client.get(f"/v1/agent-runs/{run['id']}/cost")).json()
    by_step = {entry["step_number"]: entry for entry in cost["by_step"]}
    assert by_step[1]["calls"] == 1 and 2 not in by_step  # the model was asked once, by step 1


async def test_file_changed_after_the_proposal_fails_the_edit_as_stale_before_anyone_waits(
    client: httpx.AsyncClient, workspace: Path
) -> None:
    run = await create(client, workspace, edit_plan())
    output = (await execute(client, run["id"]))["steps"][0]["output_data"]
    changed = SOURCE + "# changed by someone else\n"
    (workspace / "calc.py").write_text(changed)
    failed = await execute(client, run["id"])
    assert failed["status"] == "failed"
    error = failed["steps"][1]["error"]
    assert error["code"] == "stale_edit"
    assert error["expected_sha256"] == output["base_sha256"]
    assert error["actual_sha256"] == sha(changed.encode())
    assert "step.awaiting_approval" not in await step_events(client, failed, 2)
    assert (workspace / "calc.py").read_text() == changed

    # Retrying the edit alone re-reads the same proposal, made on the old content: still stale.
    step_id = failed["steps"][1]["id"]
    retried = await client.post(f"/v1/agent-runs/{run['id']}/steps/{step_id}/retry")
    assert retried.status_code == 200
    again = await execute(client, run["id"])
    assert again["steps"][1]["error"]["code"] == "stale_edit"
    assert (workspace / "calc.py").read_text() == changed


async def test_file_changed_after_approval_fails_the_edit_as_stale(
    client: httpx.AsyncClient, workspace: Path
) -> None:
    run = await create(client, workspace, edit_plan())
    await execute(client, run["id"])
    waiting = await execute(client, run["id"])
    step_id = waiting["steps"][1]["id"]
    approve = await client.post(f"/v1/agent-runs/{run['id']}/steps/{step_id}/approve")
    assert approve.status_code == 200
    (workspace / "calc.py").write_text("")  # emptied: an empty file is not what the model saw
    failed = await execute(client, run["id"])
    assert failed["status"] == "failed"
    assert failed["steps"][1]["error"]["code"] == "stale_edit"
    assert failed["steps"][1]["error"]["actual_sha256"] == sha(b"")
    assert (workspace / "calc.py").read_text() == ""


async def test_edit_of_a_file_that_appears_after_the_proposal_is_stale(
    client: httpx.AsyncClient, workspace: Path
) -> None:
    steps = [
        {
            "step_type": "propose_edit",
            "input_data": {"instruction": "Create it:\n```\nhello\n```", "files": ["new.txt"]},
        },
        {"step_type": "edit_file", "input_data": {"$ref": "steps.1.output.edit"}},
    ]
    run = await create(client, workspace, steps)
    output = (await execute(client, run["id"]))["steps"][0]["output_data"]
    assert output["base_exists"] is False and output["operation"] == "write"
    (workspace / "new.txt").write_text("someone else's\n")
    failed = await execute(client, run["id"])
    assert failed["steps"][1]["error"]["code"] == "stale_edit"
    assert (workspace / "new.txt").read_text() == "someone else's\n"


async def test_plan_with_a_ref_to_a_field_propose_edit_does_not_have_is_refused(
    client: httpx.AsyncClient, workspace: Path
) -> None:
    steps = edit_plan()
    steps[1]["input_data"] = {"$ref": "steps.1.output.patch"}
    body = {"goal": "g", "workspace": str(workspace), "steps": steps}
    response = await client.post("/v1/agent-runs", json=body)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_plan"
    assert "has no 'patch'" in response.json()["detail"]


# --- a scripted OpenAI-compatible model on loopback ------------------------------------------


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
async def model_client(
    settings: Settings, tmp_path: Path, fake_llm: FakeLLMServer
) -> AsyncIterator[httpx.AsyncClient]:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(
        "providers:\n"
        f"  fakeai: {{kind: openai, base_url: '{fake_llm.openai_base_url}', api_key_env: null,"
        " timeout_s: 5}\n"
        "models:\n"
        "  - {provider: fakeai, model: editor-x, tier: medium, context_window: 100000,"
        " max_output_tokens: 8192, prices: {input: 1, output: 2}}\n",
        encoding="utf-8",
    )
    pinned = settings.model_copy(update={"models_file": catalog, "model": "fakeai:editor-x"})
    app = create_app(pinned)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


def answer(**fields: Any) -> str:
    edit = {"path": "calc.py", "operation": "replace", "rationale": "add must add"}
    edit.update({name: fields.get(name) for name in ("old", "new", "content", "diff")})
    edit.update({k: v for k, v in fields.items() if k in ("path", "operation")})
    return json.dumps(edit)


async def test_refused_answers_go_back_to_the_model_and_each_call_is_recorded(
    model_client: httpx.AsyncClient, fake_llm: FakeLLMServer, workspace: Path
) -> None:
    fake_llm.script(
        openai_completion("Sure! I will fix it.", prompt_tokens=1000, completion_tokens=100),
        openai_completion(answer(path="../calc.py", old="a - b", new="a + b")),
        openai_completion(answer(old="return a - b", new="return a + b")),
    )
    sent = len(fake_llm.requests)
    run = await create(model_client, workspace, edit_plan("Make add add"))
    done = await execute(model_client, run["id"])
    step = done["steps"][0]
    assert step["status"] == "completed", step["error"]
    assert step["output_data"]["attempts"] == 3
    requests = fake_llm.requests[sent:]
    assert len(requests) == 3
    # The provider could not read JSON in the first answer, so only the errors go back; the
    # second answer was read, so it goes back too, with why it was refused.
    second = requests[1].body["messages"]
    assert second[-2]["role"] == "user" and "### Editable file: calc.py" in second[-2]["content"]
    assert "not valid JSON" in second[-1]["content"]
    third = requests[2].body["messages"]
    assert third[-2]["role"] == "assistant" and "../calc.py" in third[-2]["content"]
    assert "'..' component" in third[-1]["content"]
    assert "### Editable file: calc.py" in third[1]["content"]
    cost = (await model_client.get(f"/v1/agent-runs/{run['id']}/cost")).json()
    assert cost["by_step"][0]["step_number"] == 1 and cost["by_step"][0]["calls"] == 3
    assert cost["consistent"] is True


async def test_answers_that_never_validate_fail_the_step_with_all_errors_and_their_cost(
    model_client: httpx.AsyncClient, fake_llm: FakeLLMServer, workspace: Path
) -> None:
    fake_llm.script(
        *(
            openai_completion(answer(old="return a * b", new="x"), prompt_tokens=1000)
            for _ in range(2)
        )
    )
    run = await create(model_client, workspace, edit_plan("Make add add", max_attempts=2))
    failed = await execute(model_client, run["id"])
    assert failed["status"] == "failed"
    error = failed["steps"][0]["error"]
    assert error["code"] == "invalid_edit"
    assert [a["attempt"] for a in error["attempts"]] == [1, 2]
    assert all("matches 0 times" in a["errors"][0] for a in error["attempts"])
    assert failed["steps"][1]["status"] != "completed"
    assert (workspace / "calc.py").read_text() == SOURCE
    cost = (await model_client.get(f"/v1/agent-runs/{run['id']}/cost")).json()
    assert cost["totals"]["calls"] == 2
    # 2 × (1000 input at $1/M + 5 output at $2/M): the refused answers are paid for, and shown
    assert cost["total_cost_usd"] == pytest.approx(0.00202)


async def test_optional_stale_edit_lets_the_run_go_on(
    client: httpx.AsyncClient, workspace: Path
) -> None:
    steps = edit_plan()
    steps[1]["optional"] = True
    steps.append({"step_type": "noop", "input_data": {"value": "after"}})
    run = await create(client, workspace, steps)
    await execute(client, run["id"])
    (workspace / "calc.py").write_text("changed\n")
    state = await execute(client, run["id"])
    assert state["steps"][1]["error"]["code"] == "stale_edit"
    done = await execute(client, run["id"])
    assert done["status"] == "completed"
    assert [s["status"] for s in done["steps"]] == ["completed", "failed", "completed"]


async def test_a_model_planner_chains_propose_edit_to_edit_file_from_the_catalog(
    model_client: httpx.AsyncClient, fake_llm: FakeLLMServer, workspace: Path
) -> None:
    plan = {
        "steps": [
            {"step_type": "read_file", "input_data": {"path": "calc.py"}},
            {
                "step_type": "propose_edit",
                "input_data": {
                    "instruction": "Make add add",
                    "files": [{"$ref": "steps.1.output.path"}],
                    "inputs": [{"$ref": "steps.1.output"}],
                },
            },
            {"step_type": "edit_file", "input_data": {"$ref": "steps.2.output.edit"}},
        ],
        "rationale": "read, propose, apply",
    }
    fake_llm.script(
        openai_completion(json.dumps(plan)),
        openai_completion(answer(old="return a - b", new="return a + b")),
    )
    sent = len(fake_llm.requests)
    body = {"goal": "Fix add so that it adds", "workspace": str(workspace)}
    run = (await model_client.post("/v1/agent-runs", json=body)).json()
    state = await execute(model_client, run["id"])  # plans, then reads
    for _ in range(3):
        if state["status"] != "running":
            break
        state = await execute(model_client, run["id"])
    assert state["status"] == "awaiting_approval"
    assert [s["status"] for s in state["steps"]] == ["completed", "completed", "awaiting_approval"]
    assert "+    return a + b" in state["steps"][2]["preview"]["diff"]
    planning = fake_llm.requests[sent].body["messages"]
    assert '"$ref": "steps.<n>.output.edit"' in planning[0]["content"]
    assert '"step_type": "propose_edit"' in planning[1]["content"]
    assert "steps.N.output.edit" in planning[1]["content"]  # the catalog's description
