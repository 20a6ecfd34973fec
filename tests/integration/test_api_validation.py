"""Bad input: every refusal is a problem+json with a stable type, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.backends import one_backend
from tests.conftest import noop_plan

PROBLEM = "application/problem+json"
QUOTED_NAME = "property name enclosed in double quotes"
REFUSED_ON_READING = one_backend(
    "sqlite", "the request is refused while it is read, before the database is asked anything"
)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].startswith("https://") and body["title"] and body["detail"]
    return body


@REFUSED_ON_READING
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "goal"),
        ({"goal": ""}, "goal"),
        ({"goal": 5}, "goal"),
        ({"goal": "x", "budget_usd": -1}, "budget_usd"),
        ({"goal": "x", "budget_usd": "lots"}, "budget_usd"),
        ({"goal": "x", "steps": []}, "steps"),
        ({"goal": "x", "steps": [{"input_data": {}}]}, "steps.0.step_type"),
        ({"goal": "x", "unexpected": 1}, "unexpected"),
        ({"goal": "x", "metadata": [1]}, "metadata"),
    ],
)
async def test_invalid_bodies_list_the_fields(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(
        await client.post("/v1/agent-runs", json=body), 422, "validation_error"
    )
    assert field in [e["field"] for e in problem["errors"]]


@REFUSED_ON_READING
@pytest.mark.parametrize(
    ("content", "line", "column", "reason"),
    [
        (b'{"goal": "x" "y"}', 1, 14, "Expecting ',' delimiter"),
        (b'{\n  "goal": "x",\n  oops\n}', 3, 3, f"Expecting {QUOTED_NAME}"),
        (b"{not json", 1, 2, f"Expecting {QUOTED_NAME}"),
    ],
)
async def test_malformed_json_names_line_column_and_reason(
    client: httpx.AsyncClient, content: bytes, line: int, column: int, reason: str
) -> None:
    response = await client.post(
        "/v1/agent-runs", content=content, headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 422, "validation_error")
    assert problem["detail"] == f"invalid JSON at line {line}, column {column}: {reason}"
    assert problem["errors"] == [
        {"field": "body", "line": line, "column": column, "message": reason, "type": "json_invalid"}
    ]


async def test_unknown_step_type_is_refused_at_creation_naming_the_step(
    client: httpx.AsyncClient,
) -> None:
    steps = [*noop_plan(1), {"step_type": "teleport", "input_data": {}}]
    problem = assert_problem(
        await client.post("/v1/agent-runs", json={"goal": "x", "steps": steps}), 422, "invalid_plan"
    )
    assert problem["errors"][0] == {
        "step_number": 2,
        "field": "step_type",
        "message": problem["errors"][0]["message"],
    }
    assert "teleport" in problem["detail"]


async def test_step_input_refused_by_the_executor_model_names_step_and_field(
    client: httpx.AsyncClient,
) -> None:
    steps = [{"step_type": "noop", "input_data": {"fail": "not-a-bool", "bogus": 1}}]
    problem = assert_problem(
        await client.post("/v1/agent-runs", json={"goal": "x", "steps": steps}), 422, "invalid_plan"
    )
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {"fail", "bogus"}
    assert all(e["step_number"] == 1 for e in problem["errors"])


@pytest.mark.parametrize(
    ("steps", "fragment"),
    [
        ([{"step_type": "noop", "depends_on": [1]}], "depends_on"),
        ([*noop_plan(1), {"step_type": "noop", "depends_on": [3]}], "depends_on"),
        (
            [
                {"step_type": "noop", "input_data": {"value": {"$ref": "steps.2.output"}}},
                *noop_plan(1),
            ],
            "step 2",
        ),
        ([{"step_type": "noop", "input_data": {"value": {"$ref": "nonsense"}}}], "malformed"),
        (
            [
                *noop_plan(2),
                {
                    "step_type": "noop",
                    "depends_on": [1],
                    "input_data": {"value": {"$ref": "steps.2.output"}},
                },
            ],
            "does not depend",
        ),
    ],
)
async def test_bad_dependencies_and_references_are_refused(
    client: httpx.AsyncClient, steps: list[dict[str, Any]], fragment: str
) -> None:
    response = await client.post("/v1/agent-runs", json={"goal": "x", "steps": steps})
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]


async def test_idempotency_key_returns_the_same_run_or_409(client: httpx.AsyncClient) -> None:
    body = {"goal": "once", "steps": noop_plan(1)}
    headers = {"Idempotency-Key": "key-1"}
    first = await client.post("/v1/agent-runs", json=body, headers=headers)
    second = await client.post("/v1/agent-runs", json=body, headers=headers)
    assert first.status_code == 201 and second.status_code == 200
    assert second.headers["idempotent-replayed"] == "true"
    assert first.json()["id"] == second.json()["id"]
    other = await client.post("/v1/agent-runs", json={"goal": "other"}, headers=headers)
    problem = assert_problem(other, 409, "idempotency_key_reused")
    assert problem["run_id"] == first.json()["id"]
    listed = (await client.get("/v1/agent-runs")).json()["items"]
    assert len(listed) == 1


@REFUSED_ON_READING
async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/agent-runs", json={"goal": "x" * 2_000_000})
    assert_problem(response, 413, "payload_too_large")


@REFUSED_ON_READING
async def test_oversized_chunked_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 65_536

    response = await client.post(
        "/v1/agent-runs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "payload_too_large")


async def test_reject_requires_a_reason(client: httpx.AsyncClient) -> None:
    run = (await client.post("/v1/agent-runs", json={"goal": "x", "steps": noop_plan(1)})).json()
    step_id = run["steps"][0]["id"]
    response = await client.post(f"/v1/agent-runs/{run['id']}/steps/{step_id}/reject", json={})
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["field"] == "reason"


@REFUSED_ON_READING
async def test_bad_list_parameters_are_422(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/agent-runs?status=bogus"), 422, "validation_error")
    assert_problem(await client.get("/v1/agent-runs?limit=0"), 422, "validation_error")
    assert_problem(await client.get("/v1/agent-runs?cursor=%%%"), 422, "validation_error")


@REFUSED_ON_READING
async def test_bad_actor_header_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/agent-runs", json={"goal": "x"}, headers={"X-Actor": "a" * 300}
    )
    assert_problem(response, 422, "validation_error")


@REFUSED_ON_READING
async def test_wrong_method_is_a_405_problem(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v1/agent-runs")
    assert response.status_code == 405
    assert response.headers["content-type"].startswith(PROBLEM)
