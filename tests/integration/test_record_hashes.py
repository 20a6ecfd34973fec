"""Every recorded hash recomputes from what the engine serves and stores, by the recipe in
docs/determinism.md (on SQLite and PostgreSQL): resolved inputs, outputs, the plan, LLM requests
and responses, file bytes, commands and their results — and the doc's own snippet does it."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
from sqlalchemy import select

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.engine.context import build_context
from agent_engine.storage.tables import LLMCall

DOC = Path(__file__).resolve().parents[2] / "docs" / "determinism.md"
SOURCE = "def add(a, b):\n    return a + b\n"


def jcs_sha256(document: Any) -> str:
    return hashlib.sha256(rfc8785.dumps(document)).hexdigest()


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


async def finished_run(api: httpx.AsyncClient, workspace_root: Path) -> httpx.Response:
    workspace = workspace_root / "hashes"
    workspace.mkdir()
    (workspace / "calc.py").write_text(SOURCE, encoding="utf-8")
    steps = [
        {"step_type": "read_file", "input_data": {"path": "calc.py"}},
        {"step_type": "run_command", "input_data": {"argv": ["python3", "-c", "print(1 + 1)"]}},
        {
            "step_type": "summarize",
            "input_data": {"inputs": [{"$ref": "steps.1.output.content"}]},
        },
    ]
    body = {"goal": "hash everything", "workspace": str(workspace), "steps": steps}
    created = await api.post("/v1/agent-runs", json=body)
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    for _ in range(6):
        executed = await api.post(f"/v1/agent-runs/{run_id}/execute")
        assert executed.status_code == 200, executed.text
        run = executed.json()
        waiting = [s for s in run["steps"] if s["status"] == "awaiting_approval"]
        for step in waiting:
            approved = await api.post(
                f"/v1/agent-runs/{run_id}/steps/{step['id']}/approve",
                headers={"X-Actor": "reviewer"},
            )
            assert approved.status_code == 200, approved.text
        if run["status"] == "completed":
            break
    response = await api.get(f"/v1/agent-runs/{run_id}")
    assert response.json()["status"] == "completed", response.text
    return response


async def test_each_steps_hashes_recompute_from_the_api(
    api: httpx.AsyncClient, workspace_root: Path
) -> None:
    run = (await finished_run(api, workspace_root)).json()
    read, command, summary = run["steps"]
    for step in run["steps"]:
        assert step["output_hash"] == jcs_sha256(step["output_data"])
        assert step["input_hash"] == jcs_sha256(step["resolved_input"])
    # The resolved input, not the plan's: the $ref is replaced by the file's text.
    assert summary["resolved_input"] == {"inputs": [SOURCE]}
    assert summary["input_hash"] != jcs_sha256(summary["input_data"])

    assert read["output_data"]["sha256"] == hashlib.sha256(SOURCE.encode()).hexdigest()

    out = command["output_data"]
    assert out["stdout"] == "2\n" and out["exit_code"] == 0
    assert out["cwd"] == "." and out["env_keys"] == sorted(out["env_keys"])
    assert "PATH" in out["env_keys"] and out["started_at"].endswith("+00:00")
    ran = {"argv": out["argv"], "cwd": ".", "env_keys": out["env_keys"], "stdin": None}
    assert out["command_hash"] == jcs_sha256(ran)
    fields = (
        "exit_code",
        "stdout",
        "stderr",
        "stdout_truncated",
        "stderr_truncated",
        "stdout_bytes",
        "stderr_bytes",
        "killed",
        "timed_out",
    )
    assert out["result_hash"] == jcs_sha256({name: out[name] for name in fields})

    plan = (await api.get(f"/v1/agent-runs/{run['id']}/plan", params={"version": 1})).json()
    assert plan["plan_hash"] == run["plan_hash"] == jcs_sha256(plan["document"])


async def test_llm_requests_and_responses_hash_as_stored(
    api: httpx.AsyncClient, workspace_root: Path, settings: Settings
) -> None:
    run = (await finished_run(api, workspace_root)).json()
    ctx = build_context(settings)
    try:
        async with ctx.sessions() as session:
            calls = (
                await session.scalars(select(LLMCall).where(LLMCall.run_id == uuid.UUID(run["id"])))
            ).all()
    finally:
        await ctx.close()
    assert calls, "the summary asked the model"
    for call in calls:
        assert call.response is not None
        assert call.response_hash == jcs_sha256(call.response)
        asked = {k: v for k, v in call.request.items() if k != "wire"}
        assert call.request_hash == jcs_sha256(asked)


def test_the_docs_recipe_is_the_one_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "RFC 8785" in text and "AGENT_ENGINE_BLOB_THRESHOLD_BYTES" in text
    assert re.search(r"```python\n.*?record_hash", text, re.DOTALL)


async def test_the_docs_snippet_recomputes_a_real_runs_hashes(
    api: httpx.AsyncClient, workspace_root: Path
) -> None:
    response = await finished_run(api, workspace_root)
    snippet = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert snippet is not None
    namespace: dict[str, Any] = {"response_text": response.text}
    exec(compile(snippet.group(1), str(DOC), "exec"), namespace)  # raises if a hash differs
    assert (
        namespace["record_hash"](response.json()["steps"][0]["output_data"])
        == (response.json()["steps"][0]["output_hash"])
    )
