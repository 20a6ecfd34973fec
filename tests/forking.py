"""A real OpenAI-compatible model on loopback that counts requests, an app on a model catalog
of two models, and the steps of the fork tests (tests/integration/test_forks*.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from tests.fakes.llm_servers import FakeLLMServer, ReceivedRequest, Reply, openai_completion

NOTES = "alpha\nbeta\n"


def prompt_of(request: ReceivedRequest) -> str:
    """The user messages of a Chat Completions request, as one text."""
    return "\n".join(m["content"] for m in request.body["messages"] if m["role"] == "user")


def analysis_reply(request: ReceivedRequest) -> Reply:
    """An analysis that depends on the whole prompt (and never repeats its instruction)."""
    digest = hashlib.sha256(prompt_of(request).encode()).hexdigest()[:12]
    answer = {"report": f"analysis {digest}", "findings": []}
    return openai_completion(json.dumps(answer), prompt_tokens=100, completion_tokens=10)


def write_catalog(path: Path, server: FakeLLMServer) -> Path:
    """Two models on ``server``: small-a (cheaper, what the router picks) and small-b."""
    path.write_text(
        "providers:\n"
        f"  fakeai: {{kind: openai, base_url: '{server.openai_base_url}', api_key_env: null,"
        " timeout_s: 5}\n"
        "models:\n"
        "  - {provider: fakeai, model: small-a, tier: medium, context_window: 100000,"
        " max_output_tokens: 8192, prices: {input: 1, output: 2}}\n"
        "  - {provider: fakeai, model: small-b, tier: medium, context_window: 100000,"
        " max_output_tokens: 8192, prices: {input: 3, output: 4}}\n",
        encoding="utf-8",
    )
    return path


@asynccontextmanager
async def serving(
    settings: Settings, tmp_path: Path, server: FakeLLMServer
) -> AsyncIterator[httpx.AsyncClient]:
    """The app (lifespan entered) on the catalog of ``server``, and a client."""
    configured = settings.model_copy(
        update={"models_file": write_catalog(tmp_path / "models.yaml", server)}
    )
    app = create_app(configured)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


def project(workspace_root: Path) -> Path:
    """A workspace holding notes.txt."""
    folder = workspace_root / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text(NOTES, encoding="utf-8")
    return folder


def four_steps() -> list[dict[str, Any]]:
    """Read notes.txt, then three analyses, each of the one before (A, B, D)."""
    return [
        {"step_type": "read_file", "input_data": {"path": "notes.txt"}},
        {
            "step_type": "analyze",
            "input_data": {
                "instruction": "INSTR-A",
                "inputs": [{"$ref": "steps.1.output.content"}],
            },
        },
        {
            "step_type": "analyze",
            "input_data": {"instruction": "INSTR-B", "inputs": [{"$ref": "steps.2.output.text"}]},
        },
        {
            "step_type": "analyze",
            "input_data": {"instruction": "INSTR-D", "inputs": [{"$ref": "steps.3.output.text"}]},
        },
    ]


async def run_to_end(api: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """Execute the run's ready steps one by one until none is left."""
    for _ in range(10):
        answer = await api.post(f"/v1/agent-runs/{run_id}/execute")
        assert answer.status_code == 200, answer.text
        if (
            answer.json()["status"] in ("completed", "failed")
            or not answer.json()["executed_step_id"]
        ):
            break
    run: dict[str, Any] = (await api.get(f"/v1/agent-runs/{run_id}")).json()
    return run


async def finished_run(
    api: httpx.AsyncClient, workspace: Path, steps: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A run of ``steps`` (default: ``four_steps``) executed to completion."""
    created = await api.post(
        "/v1/agent-runs",
        json={
            "goal": "look at the notes",
            "workspace": str(workspace),
            "steps": steps or four_steps(),
        },
    )
    assert created.status_code == 201, created.text
    run = await run_to_end(api, created.json()["id"])
    assert run["status"] == "completed", run
    return run


async def fork(api: httpx.AsyncClient, run_id: str, **body: Any) -> httpx.Response:
    """POST the fork request ``body`` for run ``run_id``."""
    return await api.post(f"/v1/agent-runs/{run_id}/fork", json=body)


async def audit_types(api: httpx.AsyncClient, run_id: str) -> list[str]:
    """The types of the run's audit events, in order."""
    events = (await api.get(f"/v1/agent-runs/{run_id}/audit")).json()["events"]
    return [event["type"] for event in events]
