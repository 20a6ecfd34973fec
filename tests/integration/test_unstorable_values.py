"""Values no database can store (NaN, infinities, NUL, lone surrogates) are refused where they
enter: a 422 for a request, a failed step for an executor's output. Never a database error, and
never a stored value that differs from what was hashed."""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar

import httpx
import pytest
from pydantic import BaseModel

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.domain.canonical import canonical_json, wire_json
from agent_engine.engine.context import build_context
from agent_engine.engine.manual import execute_one
from agent_engine.engine.runs import CreateRunRequest, create_run, get_run
from agent_engine.executors.base import Executor, ExecutorContext
from agent_engine.executors.noop import NOOP
from agent_engine.executors.registry import ExecutorRegistry


def test_canonical_json_refuses_what_json_cannot_write() -> None:
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="not representable"):
            canonical_json({"x": [1, value]})


def test_wire_json_writes_what_the_standard_library_reads_back() -> None:
    document = {
        "big": 10**30,  # beyond orjson's 64 bits: written by the standard library instead
        "nested": {"list": [1, 2.5, "ü", None, True]},
        1: "an integer key, written as text like json.dumps does",
    }
    assert json.loads(wire_json(document)) == json.loads(json.dumps(document))
    assert json.loads(wire_json({"n": 2**63 - 1}))["n"] == 2**63 - 1


@pytest.fixture
async def client(settings: Settings) -> Any:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"goal":"g","steps":[{"step_type":"noop","input_data":{"value":NaN}}]}', "value"),
        (b'{"goal":"g","metadata":{"score":[1,Infinity]},"steps":null}', "score.1"),
        (b'{"goal":"g","steps":[{"step_type":"noop","input_data":{"v":-Infinity}}]}', "v"),
    ],
)
async def test_a_request_holding_nan_or_infinity_is_a_clear_422(
    client: httpx.AsyncClient, body: bytes, where: str
) -> None:
    response = await client.post(
        "/v1/agent-runs", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert where in response.text and "finite" in response.text
    assert (await client.get("/v1/agent-runs")).json()["items"] == []  # nothing was stored


class OddOutput(BaseModel):
    # Typed fields: pydantic's JSON dump turns NaN held in an ``Any`` into None, not in a float.
    number: float | None = None
    text: str | None = None


class OddInput(BaseModel):
    kind: str


class OddExecutor(Executor[OddInput, OddOutput]):
    """Returns a value that cannot be stored."""

    name: ClassVar[str] = "odd"
    input_model = OddInput
    output_model = OddOutput
    values: ClassVar[dict[str, dict[str, Any]]] = {
        "nan": {"number": math.nan},
        "inf": {"number": -math.inf},
        "nul": {"text": "a\x00b"},
    }

    async def execute(self, input: OddInput, context: ExecutorContext) -> OddOutput:
        return OddOutput(**self.values[input.kind])


@pytest.mark.parametrize("kind", sorted(OddExecutor.values))
async def test_an_output_that_cannot_be_stored_fails_its_step_clearly(
    settings: Settings, kind: str
) -> None:
    ctx = build_context(settings, registry=ExecutorRegistry([NOOP, OddExecutor()]))
    try:
        request = CreateRunRequest.model_validate(
            {"goal": "g", "steps": [{"step_type": "odd", "input_data": {"kind": kind}}]}
        )
        view = await create_run(ctx, request, actor="t", idempotency_key=None)
        await execute_one(ctx, str(view.run.id), actor="t")
        done = await get_run(ctx, str(view.run.id))
    finally:
        await ctx.close()
    (step,) = done.steps
    assert (step.status, done.run.status) == ("failed", "failed")
    assert step.output_data is None
    field = next(iter(OddExecutor.values[kind]))
    assert f"output {field} cannot be stored" in step.error["message"]
