"""Request limits: each refusal is a 422 naming its setting and value, and the value just under
each limit is accepted. Nesting depth first: a deep document is refused at the door instead of
being stored and then failing every read of its run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from tests.conftest import noop_plan
from tests.integration.test_api_validation import assert_problem

ClientMaker = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def nested(depth: int) -> Any:
    """A value ``depth`` containers deep: ``nested(1) == {}``."""
    value: Any = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.fixture
def make_client(database_url: str, workspace_root: Path) -> ClientMaker:
    """A client of the app with some settings changed."""

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings(
            database_url=database_url,
            auto_migrate=False,
            embedded_worker=False,
            workspace_roots=[workspace_root],
            _env_file=None,  # type: ignore[call-arg]
            **overrides,
        )
        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
        ):
            yield http

    return make


def assert_limit(response: httpx.Response, code: str, setting: str, maximum: int) -> None:
    problem = assert_problem(response, 422, code)
    assert problem["limit"] == setting
    assert problem["maximum"] == maximum
    assert setting in problem["detail"]


async def assert_readable(client: httpx.AsyncClient, run_id: str) -> None:
    for path in ("", "/steps", "/audit", "/cost"):
        response = await client.get(f"/v1/agent-runs/{run_id}{path}")
        assert response.status_code == 200, (path, response.text)
    assert (await client.get("/v1/agent-runs")).status_code == 200


@pytest.mark.parametrize("depth", [252, 255, 300])
async def test_deep_metadata_is_refused_not_stored(client: httpx.AsyncClient, depth: int) -> None:
    response = await client.post("/v1/agent-runs", json={"goal": "g", "metadata": nested(depth)})
    assert_limit(response, "json_too_deep", "AGENT_ENGINE_MAX_JSON_DEPTH", 64)
    assert response.json()["errors"][0]["field"] == "body"
    assert (await client.get("/v1/agent-runs")).json()["items"] == []


@pytest.mark.parametrize("depth", [252, 255])
async def test_deep_step_input_is_refused_not_stored(client: httpx.AsyncClient, depth: int) -> None:
    # Before the limit, 252 levels were stored and then the run's audit and plan answered 500.
    steps = [{"step_type": "noop", "input_data": {"value": nested(depth)}}]
    response = await client.post("/v1/agent-runs", json={"goal": "g", "steps": steps})
    assert_limit(response, "json_too_deep", "AGENT_ENGINE_MAX_JSON_DEPTH", 64)
    assert (await client.get("/v1/agent-runs")).json()["items"] == []


async def test_body_exactly_at_the_depth_limit_is_stored_and_readable(
    client: httpx.AsyncClient,
) -> None:
    # The body, the step list, the step, input_data and value: 4 levels around nested(60).
    steps = [{"step_type": "noop", "input_data": {"value": nested(60)}}]
    created = await client.post("/v1/agent-runs", json={"goal": "g", "steps": steps})
    assert created.status_code == 201, created.text
    await assert_readable(client, created.json()["id"])
    assert (await client.get(f"/v1/agent-runs/{created.json()['id']}/plan")).status_code == 200
    deeper = [{"step_type": "noop", "input_data": {"value": nested(61)}}]
    response = await client.post("/v1/agent-runs", json={"goal": "g", "steps": deeper})
    assert_limit(response, "json_too_deep", "AGENT_ENGINE_MAX_JSON_DEPTH", 64)


async def test_brackets_inside_strings_do_not_count(client: httpx.AsyncClient) -> None:
    text = '[{"\\"' * 500
    created = await client.post("/v1/agent-runs", json={"goal": text, "metadata": {text: text}})
    assert created.status_code == 201, created.text
    assert created.json()["goal"] == text


async def test_depth_limit_is_configurable(make_client: ClientMaker) -> None:
    async with make_client(max_json_depth=8) as client:
        ok = await client.post("/v1/agent-runs", json={"goal": "g", "metadata": nested(7)})
        assert ok.status_code == 201, ok.text
        deep = await client.post("/v1/agent-runs", json={"goal": "g", "metadata": nested(8)})
        assert_limit(deep, "json_too_deep", "AGENT_ENGINE_MAX_JSON_DEPTH", 8)
        # Every route's body, not only the creation's.
        run_id = ok.json()["id"]
        cancel = await client.post(f"/v1/agent-runs/{run_id}/cancel", json=nested(9))
        assert_limit(cancel, "json_too_deep", "AGENT_ENGINE_MAX_JSON_DEPTH", 8)


async def test_plan_steps_limit(make_client: ClientMaker) -> None:
    async with make_client(max_plan_steps=3) as client:
        ok = await client.post("/v1/agent-runs", json={"goal": "g", "steps": noop_plan(3)})
        assert ok.status_code == 201, ok.text
        over = await client.post("/v1/agent-runs", json={"goal": "g", "steps": noop_plan(4)})
        assert_limit(over, "too_many_steps", "AGENT_ENGINE_MAX_PLAN_STEPS", 3)


async def test_default_plan_steps_limit_is_500(client: httpx.AsyncClient) -> None:
    over = await client.post("/v1/agent-runs", json={"goal": "g", "steps": noop_plan(501)})
    assert_limit(over, "too_many_steps", "AGENT_ENGINE_MAX_PLAN_STEPS", 500)


async def test_metadata_keys_limit_counts_every_level(make_client: ClientMaker) -> None:
    async with make_client(max_metadata_keys=3) as client:
        ok = await client.post(
            "/v1/agent-runs", json={"goal": "g", "metadata": {"a": {"b": 1}, "c": [{}]}}
        )
        assert ok.status_code == 201, ok.text
        over = await client.post(
            "/v1/agent-runs", json={"goal": "g", "metadata": {"a": {"b": 1, "c": 2}, "d": 1}}
        )
        assert_limit(over, "too_many_metadata_keys", "AGENT_ENGINE_MAX_METADATA_KEYS", 3)


@pytest.mark.parametrize(
    "metadata",
    [
        {"note": "é" * 1025},
        {"k" * 1025: 1},
        {"list": [{"deep": "x" * 1025}]},
    ],
)
async def test_metadata_string_length_limit(
    make_client: ClientMaker, metadata: dict[str, Any]
) -> None:
    async with make_client(max_string_chars=1024) as client:
        ok = await client.post(
            "/v1/agent-runs", json={"goal": "g", "metadata": {"k" * 1024: "é" * 1024}}
        )
        assert ok.status_code == 201, ok.text
        over = await client.post("/v1/agent-runs", json={"goal": "g", "metadata": metadata})
        assert_limit(over, "string_too_long", "AGENT_ENGINE_MAX_STRING_CHARS", 1024)
        assert over.json()["errors"][0]["field"].startswith("metadata.")


async def test_approval_policy_strings_are_limited_too(make_client: ClientMaker) -> None:
    policy = {"rules": [{"step_type": "x" * 1025, "action": "require_approval"}]}
    async with make_client(max_string_chars=1024) as client:
        over = await client.post("/v1/agent-runs", json={"goal": "g", "approval_policy": policy})
        assert_limit(over, "string_too_long", "AGENT_ENGINE_MAX_STRING_CHARS", 1024)


async def test_step_input_size_limit(make_client: ClientMaker) -> None:
    # {"value":"…"} is 12 bytes around the string; é is two bytes in UTF-8.
    def step(text: str) -> list[dict[str, Any]]:
        return [{"step_type": "noop", "input_data": {"value": text}}]

    async with make_client(max_step_input_bytes=1024) as client:
        ok = await client.post("/v1/agent-runs", json={"goal": "g", "steps": step("é" * 506)})
        assert ok.status_code == 201, ok.text
        over = await client.post("/v1/agent-runs", json={"goal": "g", "steps": step("é" * 507)})
        assert_limit(over, "step_input_too_large", "AGENT_ENGINE_MAX_STEP_INPUT_BYTES", 1024)
        assert over.json()["errors"][0]["step_number"] == 1


async def test_oversized_body_names_its_setting(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/agent-runs", json={"goal": "x" * 2_000_000})
    problem = assert_problem(response, 413, "payload_too_large")
    assert problem["limit"] == "AGENT_ENGINE_MAX_BODY_BYTES"
    assert problem["maximum"] == 1_048_576
