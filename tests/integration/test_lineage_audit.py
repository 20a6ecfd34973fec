"""Replays and forks keep an audit chain that verifies: reused steps, replayed model calls and
approvals applied from records are all covered by the events their runs append."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.config import Settings
from tests.fakes.llm_servers import FakeLLMServer
from tests.forking import analysis_reply, finished_run, fork, project, run_to_end, serving


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


async def verified(api: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    answer = await api.get(f"/v1/agent-runs/{run_id}/audit/verify")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_a_fork_that_reuses_steps_verifies_and_so_does_its_original(
    api: httpx.AsyncClient, workspace_root: Path
) -> None:
    original = await finished_run(api, project(workspace_root))
    new_input = {"instruction": "INSTR-C", "inputs": [{"$ref": "steps.2.output.text"}]}
    made = await fork(api, original["id"], from_step=3, input_data=new_input)
    assert made.status_code == 201, made.text
    forked = await run_to_end(api, made.json()["id"])
    assert forked["status"] == "completed"
    assert [s["reused_from"] is not None for s in forked["steps"]] == [True, True, False, False]
    for run_id in (original["id"], forked["id"]):
        report = await verified(api, run_id)
        assert report["valid"] is True and report["first_broken"] is None, report


async def test_a_fork_served_from_records_verifies(
    api: httpx.AsyncClient, workspace_root: Path, model_server: FakeLLMServer
) -> None:
    original = await finished_run(api, project(workspace_root))
    asked = len(model_server.requests)
    made = await fork(api, original["id"], from_step=2, replay=True)
    assert made.status_code == 201, made.text
    forked = await run_to_end(api, made.json()["id"])
    assert forked["status"] == "completed"
    assert len(model_server.requests) == asked  # every call was served from the records
    report = await verified(api, forked["id"])
    assert report["valid"] is True and report["first_broken"] is None, report


@pytest.mark.parametrize("mode", ["hermetic", "verify"])
async def test_a_replay_verifies_in_either_mode(
    api: httpx.AsyncClient, workspace_root: Path, mode: str
) -> None:
    original = await finished_run(api, project(workspace_root))
    made = await api.post(f"/v1/agent-runs/{original['id']}/replay", json={"mode": mode})
    assert made.status_code == 201, made.text
    replay = await run_to_end(api, made.json()["id"])  # the test app runs no worker
    assert replay["status"] == "completed", replay
    report = await verified(api, replay["id"])
    assert report["valid"] is True and report["first_broken"] is None, report
