"""What schemathesis found, kept as plain tests: the spec documents every refusal the routes
give, as problem+json, including the 400 for a body that is not UTF-8 text."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from tests.integration.test_api_validation import assert_problem

PROBLEM = "application/problem+json"
METHODS = {"get", "post", "put", "patch", "delete"}
# OpenAI's wire format: the endpoint's own 400s are OpenAI error objects (application/json); the
# edge's 400 (a body that is not UTF-8) stays a problem.
OPENAI_WIRE = {("post", "/v1/chat/completions")}


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    spec = create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]
    return [
        (method, path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


@pytest.mark.parametrize(("method", "path", "operation"), _operations())
def test_every_operation_documents_its_problems_as_problem_json(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    expected = {"400", "413", "422", "500", "503"}
    if "{run_id}" in path:
        expected |= {"404", "409"}
    responses = operation["responses"]
    assert expected <= set(responses), (method, path)
    for status in expected:
        content = responses[status]["content"]
        if (method, path) in OPENAI_WIRE and status == "400":
            assert set(content) == {PROBLEM, "application/json"}, (method, path, status)
        else:
            assert list(content) == [PROBLEM], (method, path, status)
        assert content[PROBLEM]["schema"]["required"] == [
            "type",
            "title",
            "status",
            "detail",
            "code",
        ]


@pytest.mark.parametrize("path", ["cancel", "plan/approve"])
async def test_a_body_that_is_not_utf8_is_a_documented_400_problem(
    client: httpx.AsyncClient, path: str
) -> None:
    run = (await client.post("/v1/agent-runs", json={"goal": "g"})).json()
    response = await client.post(
        f"/v1/agent-runs/{run['id']}/{path}",
        content=b'{"comment": "\xc3\x28"}',  # not UTF-8: found by schemathesis
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 400, "bad_request")


async def test_an_idempotent_replay_is_a_documented_200(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "same"}
    first = await client.post("/v1/agent-runs", json={"goal": "g"}, headers=headers)
    again = await client.post("/v1/agent-runs", json={"goal": "g"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    create = (await client.get("/openapi.json")).json()["paths"]["/v1/agent-runs"]["post"]
    documented = create["responses"]["200"]["content"]["application/json"]["schema"]
    assert documented == {"$ref": "#/components/schemas/RunWithSteps"}
