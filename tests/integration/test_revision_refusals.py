"""Bad revision answers from a model on the wire (an OpenAI-compatible server on loopback), on
both backends: an answer that is not JSON, or one that plans an edit of a path outside the
workspace, is refused and fed back, each answer a recorded call; three refusals fail the run
with ``revision_failed`` and the last reason, and nothing is written."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.llm.base import ChatMessage
from agent_engine.llm.prompts import detect_task
from tests.fakes.llm_servers import FakeLLMServer, ReceivedRequest, Reply, openai_completion

SOURCE = "def add(a, b):\n    return a - b\n"
CONTINUE = {"decision": "continue", "steps": [], "rationale": "the rest stands"}


class RevisionScript:
    """Answers each revision request with the next scripted text (then ``continue``); remembers
    the messages of every revision request, and refuses to answer anything else."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[list[dict[str, str]]] = []

    def __call__(self, received: ReceivedRequest) -> Reply:
        messages = received.body["messages"]
        task = detect_task([ChatMessage(role=m["role"], content=m["content"]) for m in messages])
        assert task == "revise", f"only revisions are asked here, not {task}"
        self.asked.append(messages)
        text = self.answers.pop(0) if self.answers else json.dumps(CONTINUE)
        return openai_completion(text, prompt_tokens=800, completion_tokens=40)


@pytest.fixture
def script() -> RevisionScript:
    return RevisionScript()


@pytest.fixture
def fake_llm(script: RevisionScript) -> Iterator[FakeLLMServer]:
    with FakeLLMServer(responder=script) as server:
        yield server


@pytest.fixture
def workspace(workspace_root: Path) -> Path:
    target = workspace_root / "calc"
    target.mkdir()
    (target / "calc.py").write_text(SOURCE)
    return target


@pytest.fixture
async def http(
    settings: Settings, tmp_path: Path, fake_llm: FakeLLMServer
) -> AsyncIterator[httpx.AsyncClient]:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(
        "providers:\n"
        f"  fakeai: {{kind: openai, base_url: '{fake_llm.openai_base_url}', api_key_env: null,"
        " timeout_s: 5}\n"
        "models:\n"
        "  - {provider: fakeai, model: planner-x, tier: large, context_window: 100000,"
        " max_output_tokens: 8192, prices: {input: 1, output: 2}}\n",
        encoding="utf-8",
    )
    pinned = settings.model_copy(update={"models_file": catalog, "model": "fakeai:planner-x"})
    app = create_app(pinned)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield client


async def start(http: httpx.AsyncClient, workspace: Path) -> dict[str, Any]:
    """An adaptive run whose explicit plan reads the file, then would do a no-op; the read
    asks the model for a revision, in the request that ran it."""
    body = {
        "goal": "Fix add",
        "workspace": str(workspace),
        "planning": "adaptive",
        "steps": [
            {"step_type": "read_file", "input_data": {"path": "calc.py"}},
            {"step_type": "noop", "input_data": {"value": "after"}},
        ],
    }
    created = await http.post("/v1/agent-runs", json=body)
    assert created.status_code == 201, created.text
    response = await http.post(f"/v1/agent-runs/{created.json()['id']}/execute")
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def errors_fed_back(messages: list[dict[str, str]]) -> str:
    last = messages[-1]
    assert last["role"] == "user" and "### Validation errors" in last["content"], last
    return last["content"]


async def test_revision_answers_that_are_not_json_fail_the_run_after_three_recorded_calls(
    http: httpx.AsyncClient, script: RevisionScript, workspace: Path
) -> None:
    script.answers += ["Sure, I will keep the plan.", "{'decision': 'continue'", "[]"]
    failed = await start(http, workspace)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "revision_failed", failed["error"]
    assert failed["error"]["after_step"] == 1
    assert [s["status"] for s in failed["steps"]] == ["completed", "pending"]
    assert failed["plan_version"] == 1 and failed["adaptive"]["closed"] == "revision_failed"
    assert len(script.asked) == 3
    assert "not valid JSON" in errors_fed_back(script.asked[1])
    cost = (await http.get(f"/v1/agent-runs/{failed['id']}/cost")).json()
    assert cost["by_step_type"]["revision"]["calls"] == 3
    assert cost["total_cost_usd"] == pytest.approx(3 * (800 * 1 + 40 * 2) / 1_000_000)
    audit = (await http.get(f"/v1/agent-runs/{failed['id']}/audit")).json()
    assert audit["chain_valid"] is True
    assert [e["type"] for e in audit["events"]][-1] == "run.failed"
    assert not [e for e in audit["events"] if e["type"] == "plan.revised"]


async def test_revision_planning_an_edit_outside_the_workspace_is_refused_and_told(
    http: httpx.AsyncClient, script: RevisionScript, workspace: Path
) -> None:
    escape = {
        "decision": "revise",
        "steps": [
            {
                "step_type": "propose_edit",
                "input_data": {"instruction": "fix it", "files": ["../outside.py"]},
            },
            {"step_type": "edit_file", "input_data": {"$ref": "steps.3.output.edit"}},
        ],
        "rationale": "edit a file next door",
    }
    absolute = json.loads(json.dumps(escape))
    absolute["steps"][0]["input_data"]["files"] = ["/etc/passwd"]
    script.answers += [json.dumps(escape), json.dumps(absolute), json.dumps(CONTINUE)]
    kept = await start(http, workspace)
    # Refused twice, told why each time; the third answer keeps the plan, which runs on.
    assert len(script.asked) == 3
    assert "files.0" in errors_fed_back(script.asked[1])
    assert "files.0" in errors_fed_back(script.asked[2])
    assert kept["status"] == "running" and kept["plan_version"] == 1
    assert [s["step_type"] for s in kept["steps"]] == ["read_file", "noop"]
    done = (await http.post(f"/v1/agent-runs/{kept['id']}/execute")).json()
    assert done["status"] == "completed"
    assert not (workspace.parent / "outside.py").exists()
    assert (workspace / "calc.py").read_text() == SOURCE
    cost = (await http.get(f"/v1/agent-runs/{kept['id']}/cost")).json()
    assert cost["by_step_type"]["revision"]["calls"] == 3
    audit = (await http.get(f"/v1/agent-runs/{kept['id']}/audit")).json()["events"]
    assert [e["type"] for e in audit if e["type"].startswith("plan.")] == [
        "plan.recorded",
        "plan.kept",
    ]
