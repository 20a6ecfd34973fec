"""What the replay proofs share: a model on a loopback Chat Completions server that answers each
request from what it asks (and counts them), a models file naming it, and the calls a user makes
to run a run to its end (approving as ``alice``) and to replay it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.llm.base import ChatMessage
from agent_engine.llm.prompts import detect_task
from agent_engine.storage.database import create_engine
from agent_engine.storage.tables import LLMCall
from tests.fakes.llm_servers import FakeLLMServer, ReceivedRequest, Reply, openai_completion

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sample_workspace"
TERMINAL = {"completed", "failed", "cancelled"}
STORE = "inventory/store.py"


@dataclass
class EchoModel:
    """Answers a plan request with ``plan`` and any other request with an answer made from a
    digest of its messages: the same request always gets the same answer, another request
    another one. ``asked`` lists each request's task."""

    plan: list[dict[str, Any]] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def __call__(self, received: ReceivedRequest) -> Reply:
        messages = [
            ChatMessage(role=m["role"], content=m["content"]) for m in received.body["messages"]
        ]
        task = detect_task(messages) or "text"
        self.asked.append(task)
        digest = hashlib.sha256(json.dumps(received.body["messages"]).encode()).hexdigest()[:12]
        if task == "plan":
            value: Any = {"steps": self.plan, "rationale": f"plan {digest}"}
        elif received.body.get("response_format") is not None:
            value = {"report": f"# Report {digest}", "summary": f"seen {digest}", "findings": []}
        else:
            return openai_completion(f"Summary {digest}", prompt_tokens=300, completion_tokens=40)
        return openai_completion(json.dumps(value), prompt_tokens=900, completion_tokens=80)


def models_file(folder: Path, base_url: str) -> Path:
    """One priced OpenAI-compatible model on the fake server, structured output by json_schema."""
    path = folder / "models.yaml"
    path.write_text(
        "providers:\n"
        f"  fakeai: {{kind: openai, base_url: '{base_url}', api_key_env: null, timeout_s: 20}}\n"
        "models:\n"
        "  - {provider: fakeai, model: coder-1, tier: medium, context_window: 128000,"
        " max_output_tokens: 8192, prices: {input: 1, output: 2},"
        " capabilities: {json: true, structured_output: json_schema}}\n",
        encoding="utf-8",
    )
    return path


def sample_copy(root: Path, name: str = "inventory") -> Path:
    """A fresh copy of the sample workspace under ``root``."""
    target = root / name
    shutil.copytree(SAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    return target


def reset_workspace(workspace: Path) -> None:
    """Put the sample workspace back as it was before any run touched it."""
    shutil.rmtree(workspace)
    shutil.copytree(
        SAMPLE, workspace, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache")
    )


async def finish(
    client: httpx.AsyncClient, run_id: str, *, approve: bool = True, limit: int = 600
) -> dict[str, Any]:
    """Wait until the run ends, approving (as ``alice``) every step that waits for a person."""
    for _ in range(limit):
        response = await client.get(f"/v1/agent-runs/{run_id}")
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        if run["status"] in TERMINAL:
            return run
        waiting = [s for s in run["steps"] if s["status"] == "awaiting_approval"]
        if waiting and approve:
            decided = await client.post(
                f"/v1/agent-runs/{run_id}/steps/{waiting[0]['id']}/approve",
                json={"comment": f"ok step {waiting[0]['step_number']}"},
                headers={"X-Actor": "alice"},
            )
            assert decided.status_code == 200, decided.text
            continue
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish: {run['status']}")


async def replay(client: httpx.AsyncClient, run_id: str, mode: str = "hermetic") -> dict[str, Any]:
    """POST the replay; the new run as created."""
    response = await client.post(
        f"/v1/agent-runs/{run_id}/replay", json={"mode": mode}, headers={"X-Actor": "bob"}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def calls_of(database_url: str, run_id: str) -> list[LLMCall]:
    """The run's ``llm_calls`` rows, oldest first."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(LLMCall.__table__)
                .where(LLMCall.run_id == uuid.UUID(run_id))
                .order_by(LLMCall.created_at, LLMCall.attempt)
            )
            return list(rows.all())  # type: ignore[arg-type]
    finally:
        await engine.dispose()


def hashes(run: dict[str, Any]) -> list[tuple[int, str, str, str | None]]:
    """(number, type, status, output hash) of every step."""
    return [(s["step_number"], s["step_type"], s["status"], s["output_hash"]) for s in run["steps"]]


@asynccontextmanager
async def app_client(
    settings: Settings, server: FakeLLMServer, tmp_path: Path, **update: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its embedded worker, the model on ``server``, and the test interpreter
    allowed as a command; and a client of it."""
    configured = settings.model_copy(
        update={
            "embedded_worker": True,
            "models_file": models_file(tmp_path, server.openai_base_url),
            "command_allowlist": [sys.executable],
            **update,
        }
    )
    app = create_app(configured)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield app, http


def sample_plan(*, command: bool) -> list[dict[str, Any]]:
    """The sample workspace's story: list, read, analyze, edit, (test,) summarize."""
    steps: list[dict[str, Any]] = [
        {"step_type": "list_files", "input_data": {"patterns": ["**/*.py"]}},
        {"step_type": "read_file", "input_data": {"path": STORE}},
        {
            "step_type": "analyze",
            "input_data": {
                "instruction": "Find problems in the store module",
                "inputs": [{"$ref": "steps.1.output"}, {"$ref": "steps.2.output"}],
            },
        },
        {
            "step_type": "edit_file",
            "input_data": {
                "path": STORE,
                "operation": "replace",
                "old": "import json\nimport os\n",
                "new": "import json\n",
            },
        },
    ]
    last = [{"$ref": "steps.3.output.text"}, {"$ref": "steps.4.output.diff"}]
    if command:
        steps.append(
            {
                "step_type": "run_command",
                "input_data": {
                    "argv": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
                },
            }
        )
        last = [{"$ref": "steps.3.output.text"}, {"$ref": "steps.5.output.stdout"}]
    steps.append({"step_type": "summarize", "input_data": {"inputs": last}})
    return steps


async def create(client: httpx.AsyncClient, workspace: Path, **body: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/agent-runs",
        json={"goal": "Tidy the store module", "workspace": str(workspace), "auto_start": True}
        | body,
    )
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    return run


async def audit(client: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    body = (await client.get(f"/v1/agent-runs/{run_id}/audit")).json()
    assert body["chain_valid"] is True
    events: list[dict[str, Any]] = body["events"]
    return events
