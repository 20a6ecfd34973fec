"""What the cost and savings tests share: the app over a catalog of priced models on a loopback
Chat Completions server, steps that call the model, and the run's ledger rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.engine.context import EngineContext
from agent_engine.storage.database import read_transaction
from agent_engine.storage.ledger import list_calls_txn
from agent_engine.storage.tables import LLMCall
from tests.fakes.llm_servers import FakeLLMServer


def priced_models(folder: Path, base_url: str, extra: str = "") -> Path:
    """A medium model at $1/$2 and a small one at $0.1/$0.2 per million tokens (both on the
    fake server), plus ``extra`` YAML model lines."""
    path = folder / "models.yaml"
    path.write_text(
        "providers:\n"
        f"  fakeai: {{kind: openai, base_url: '{base_url}', api_key_env: null, timeout_s: 20}}\n"
        "models:\n"
        "  - {provider: fakeai, model: coder-1, tier: medium, context_window: 128000,"
        " max_output_tokens: 8192, prices: {input: 1, output: 2},"
        " capabilities: {json: true, structured_output: json_schema}}\n"
        "  - {provider: fakeai, model: mini-1, tier: small, context_window: 128000,"
        " max_output_tokens: 8192, prices: {input: 0.1, output: 0.2},"
        " capabilities: {json: true, structured_output: json_schema}}\n" + extra,
        encoding="utf-8",
    )
    return path


@asynccontextmanager
async def priced_app(
    settings: Settings, server: FakeLLMServer, tmp_path: Path, *, extra: str = "", **update: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app (no worker: steps run through ``execute``) on the priced catalog, and a client."""
    llm_factory = update.pop("llm_factory", None)
    configured = settings.model_copy(
        update={"models_file": priced_models(tmp_path, server.openai_base_url, extra), **update}
    )
    app = create_app(configured, llm_factory=llm_factory)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield app, http


def summarize(text: str, instruction: str = "Summarize") -> dict[str, Any]:
    """A step that asks the model for a summary of ``text`` (the same text: the same request)."""
    return {"step_type": "summarize", "input_data": {"inputs": [text], "instruction": instruction}}


async def run_steps(
    client: httpx.AsyncClient, steps: list[dict[str, Any]], **options: Any
) -> dict[str, Any]:
    """Create a run of ``steps`` and execute them one by one; the run as it ends."""
    created = await client.post("/v1/agent-runs", json={"goal": "costs", "steps": steps, **options})
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    for _ in steps:
        executed = await client.post(f"/v1/agent-runs/{run_id}/execute")
        assert executed.status_code == 200, executed.text
    run = await client.get(f"/v1/agent-runs/{run_id}")
    body: dict[str, Any] = run.json()
    return body


async def ledger_rows(ctx: EngineContext, run_id: str) -> list[LLMCall]:
    """The run's ``llm_calls`` rows, oldest first."""
    async with read_transaction(ctx.sessions) as session:
        return list(await list_calls_txn(session, uuid.UUID(run_id)))
