"""Depth past the door: what steps record (resolved references, executor outputs, the
planner's plans) is held to the same depth limit, and a deep document stored before the limit
existed no longer makes the reads of its run fail."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from sqlalchemy import update

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.engine.context import EngineContext
from agent_engine.executors.base import Executor, ExecutorContext
from agent_engine.executors.registry import ExecutorRegistry, load_registry
from agent_engine.storage.tables import AgentRun, Step
from tests.fakes.llm_servers import FakeLLMServer, openai_completion
from tests.integration.test_api_limits import assert_readable, nested


class DeepInput(BaseModel):
    depth: int = 100


class DeepOutput(BaseModel):
    structured: dict[str, Any]


class DeepExecutor(Executor[DeepInput, DeepOutput]):
    """Answers with a document as deep as asked (as a model's structured answer might)."""

    name = "deep"
    input_model = DeepInput
    output_model = DeepOutput

    async def execute(self, input: DeepInput, context: ExecutorContext) -> DeepOutput:
        return DeepOutput(structured=nested(input.depth))


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[EngineContext, httpx.AsyncClient]]:
    registry = ExecutorRegistry([*load_registry().values(), DeepExecutor()])
    app = create_app(settings, registry=registry)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield app.state.engine, http


async def _run(client: httpx.AsyncClient, steps: list[dict[str, Any]]) -> str:
    created = await client.post("/v1/agent-runs", json={"goal": "g", "steps": steps})
    assert created.status_code == 201, created.text
    run_id: str = created.json()["id"]
    return run_id


async def _step(client: httpx.AsyncClient, run_id: str, number: int) -> dict[str, Any]:
    steps = (await client.get(f"/v1/agent-runs/{run_id}/steps")).json()
    step: dict[str, Any] = steps[number - 1]
    return step


def _wrapped(depth: int, inner: Any) -> Any:
    for _ in range(depth):
        inner = {"a": inner}
    return inner


async def test_references_that_stack_past_the_limit_fail_the_step(settings: Settings) -> None:
    # Each part is 45 levels deep in the body, under the limit; resolved, step 2's input would
    # be 82 levels deep (40 of its own around step 1's 41-level output).
    steps = [
        {"step_type": "noop", "input_data": {"value": nested(40)}},
        {"step_type": "noop", "input_data": {"value": _wrapped(39, {"$ref": "steps.1.output"})}},
    ]
    async with serving(settings) as (_, client):
        run_id = await _run(client, steps)
        await client.post(f"/v1/agent-runs/{run_id}/execute")
        await client.post(f"/v1/agent-runs/{run_id}/execute")
        failed = await _step(client, run_id, 2)
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "document_too_deep"
        assert "AGENT_ENGINE_MAX_JSON_DEPTH" in failed["error"]["message"]
        assert failed["resolved_input"] is None
        await assert_readable(client, run_id)


@pytest.mark.parametrize("depth", [64, 300])  # 300: past what the serializer itself can dump
async def test_an_output_deeper_than_the_limit_fails_its_step(
    settings: Settings, depth: int
) -> None:
    async with serving(settings) as (_, client):
        run_id = await _run(client, [{"step_type": "deep", "input_data": {"depth": depth}}])
        await client.post(f"/v1/agent-runs/{run_id}/execute")
        failed = await _step(client, run_id, 1)
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "document_too_deep"
        assert failed["output_data"] is None
        await assert_readable(client, run_id)


async def test_an_output_at_the_limit_is_recorded(settings: Settings) -> None:
    async with serving(settings) as (_, client):
        # {"structured": nested(63)} is 64 levels deep.
        run_id = await _run(client, [{"step_type": "deep", "input_data": {"depth": 63}}])
        await client.post(f"/v1/agent-runs/{run_id}/execute")
        done = await _step(client, run_id, 1)
        assert done["status"] == "completed", done["error"]
        assert done["output_data"]["structured"] == nested(63)
        await assert_readable(client, run_id)


async def test_a_stored_document_too_deep_to_serve_is_read_as_a_marker(
    settings: Settings,
) -> None:
    # As a database written before the depth limit may hold: the run's reads still answer.
    async with serving(settings) as (ctx, client):
        run_id = await _run(client, [{"step_type": "noop", "input_data": {"value": 1}}])
        deep = nested(300)
        async with ctx.sessions() as session, session.begin():
            await session.execute(
                update(AgentRun)
                .where(AgentRun.id == uuid.UUID(run_id))
                .values(metadata_=deep, version=AgentRun.version + 1)
            )
            await session.execute(
                update(Step).where(Step.run_id == uuid.UUID(run_id)).values(output_data=deep)
            )
        await assert_readable(client, run_id)
        run = (await client.get(f"/v1/agent-runs/{run_id}")).json()
        for document in (run["metadata"], run["steps"][0]["output_data"]):
            assert "deeper than 200 levels" in document["unreadable"]
            assert len(document["sha256"]) == 64


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def _pinned(settings: Settings, tmp_path: Path, fake_llm: FakeLLMServer, **extra: Any) -> Settings:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(
        "providers:\n"
        f"  fakeai: {{kind: openai, base_url: '{fake_llm.openai_base_url}', api_key_env: null,"
        " timeout_s: 5}\n"
        "models:\n"
        "  - {provider: fakeai, model: planner-x, tier: medium, context_window: 100000,"
        " max_output_tokens: 4096, prices: {input: 1, output: 2}}\n",
        encoding="utf-8",
    )
    return settings.model_copy(
        update={"models_file": catalog, "model": "fakeai:planner-x", **extra}
    )


def _summaries(count: int, inputs: list[Any]) -> str:
    step = {"step_type": "summarize", "input_data": {"instruction": "sum up", "inputs": inputs}}
    return json.dumps({"steps": [step] * count, "rationale": "r"})


@pytest.mark.parametrize(
    ("answer", "setting"),
    [
        (_summaries(3, []), "AGENT_ENGINE_MAX_PLAN_STEPS"),
        (_summaries(1, [nested(100)]), "AGENT_ENGINE_MAX_JSON_DEPTH"),
    ],
)
async def test_the_planners_plan_is_held_to_the_same_limits(
    settings: Settings, tmp_path: Path, fake_llm: FakeLLMServer, answer: str, setting: str
) -> None:
    fake_llm.script(*(openai_completion(answer) for _ in range(3)))
    async with serving(_pinned(settings, tmp_path, fake_llm, max_plan_steps=2)) as (_, client):
        created = await client.post("/v1/agent-runs", json={"goal": "Summarize"})
        run_id = created.json()["id"]
        failed = (await client.post(f"/v1/agent-runs/{run_id}/execute")).json()
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "planning_failed"
        assert setting in failed["error"]["message"]
        assert failed["steps"] == []
        # The model was told why, and asked again.
        assert setting in fake_llm.requests[-1].body["messages"][-1]["content"]
        await assert_readable(client, run_id)


async def test_a_plan_answer_too_deep_to_parse_fails_planning_cleanly(
    settings: Settings, tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    # Deeper than the JSON parser's recursion allows: it must not escape as a 500.
    fake_llm.script(*(openai_completion("[" * 100_000 + "]" * 100_000) for _ in range(3)))
    async with serving(_pinned(settings, tmp_path, fake_llm)) as (_, client):
        created = await client.post("/v1/agent-runs", json={"goal": "Summarize"})
        run_id = created.json()["id"]
        response = await client.post(f"/v1/agent-runs/{run_id}/execute")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "failed"
        assert response.json()["error"]["code"] == "planning_failed"
        await assert_readable(client, run_id)
