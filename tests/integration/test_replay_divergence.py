"""A replay of a run whose workspace changed reports divergence at the first step that read the
changed file, naming it and both content hashes, and nowhere earlier; its model call, whose
prompt now differs, fails with ``replay_miss`` instead of reaching the model."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from agent_engine.config import Settings
from tests.fakes.llm_servers import FakeLLMServer
from tests.forking import NOTES, analysis_reply, finished_run, project, run_to_end, serving

OTHER = "unchanged\n"
STEPS = [
    {"step_type": "read_file", "input_data": {"path": "other.txt"}},
    {"step_type": "read_file", "input_data": {"path": "notes.txt"}},
    {
        "step_type": "analyze",
        "input_data": {
            "instruction": "Summarise the notes",
            "inputs": [{"$ref": "steps.2.output.content"}],
        },
    },
]


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


async def test_a_changed_file_diverges_where_it_is_first_read_and_nowhere_earlier(
    api: httpx.AsyncClient, workspace_root: Path, model_server: FakeLLMServer
) -> None:
    workspace = project(workspace_root)
    (workspace / "other.txt").write_text(OTHER, encoding="utf-8")
    original = await finished_run(api, workspace, STEPS)
    changed = "alpha\nBETA CHANGED\n"
    (workspace / "notes.txt").write_text(changed, encoding="utf-8")
    asked = len(model_server.requests)

    made = await api.post(f"/v1/agent-runs/{original['id']}/replay", json={"mode": "hermetic"})
    assert made.status_code == 201, made.text
    replay = await run_to_end(api, made.json()["id"])
    assert len(model_server.requests) == asked  # the changed prompt never reached the model
    analyze = replay["steps"][2]
    assert analyze["status"] == "failed" and analyze["error"]["code"] == "replay_miss"
    paths = [d["path"] for d in analyze["error"]["differences"]]
    assert paths and all(path.startswith("messages[") for path in paths), analyze["error"]

    report = (await api.get(f"/v1/agent-runs/{replay['id']}/divergence")).json()
    first = report["first_divergence"]
    assert first["step_number"] == 2 and first["field"] == "output.sha256"
    assert first["file"] == "notes.txt"
    assert first["expected_sha256"] == hashlib.sha256(NOTES.encode()).hexdigest()
    assert first["actual_sha256"] == hashlib.sha256(changed.encode()).hexdigest()
    assert [row["verdict"] for row in report["steps"]][:2] == ["match", "diverged"]
    assert report["steps"][2]["verdict"] != "match"
