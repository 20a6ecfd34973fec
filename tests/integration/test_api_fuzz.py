"""No input can produce a 500: arbitrary JSON at every endpoint that takes a body or a query."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.apps import app_on_loop, database_for
from tests.databases import PostgresServer

ACCEPTABLE = {200, 201, 404, 409, 413, 422}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),  # includes NUL and lone surrogates
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
step_like = st.fixed_dictionaries(
    {"step_type": st.sampled_from(["noop", "read_file", "edit_file", "run_command", "x"])},
    optional={
        "input_data": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
        "depends_on": st.lists(st.integers(-3, 5), max_size=3),
        "requires_approval": json_values,
        "optional": st.booleans(),
    },
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"goal": st.one_of(st.text(max_size=40), json_values)},
        optional={
            "steps": st.lists(step_like, max_size=3) | json_values,
            "budget_usd": st.one_of(
                st.floats(allow_nan=False, allow_infinity=False), st.integers(), st.text(max_size=5)
            ),
            "metadata": json_values,
            "workspace": st.text(max_size=20),
            "approval_policy": json_values,
            "plan_approval": json_values,
        },
    ),
)


async def _probe(client: httpx.AsyncClient, body: Any, text: str) -> None:
    responses = [
        await client.post("/v1/agent-runs", json=body),
        await client.post("/v1/agent-runs", json={"goal": "g"}, headers={"X-Actor": text[:50]})
        if text.isascii() and "\n" not in text and "\r" not in text
        else await client.get("/healthz"),
        await client.get("/v1/agent-runs", params={"status": text, "cursor": text}),
        await client.get(f"/v1/agent-runs/{uuid.uuid4()}/plan", params={"version": text}),
    ]
    created = responses[0]
    if created.status_code == 201:
        run_id = created.json()["id"]
        for path in ("cancel", "execute", "resume", "plan/approve"):
            responses.append(await client.post(f"/v1/agent-runs/{run_id}/{path}", json=body))
        step = created.json()["steps"][0]["id"] if created.json()["steps"] else uuid.uuid4()
        responses.append(
            await client.post(f"/v1/agent-runs/{run_id}/steps/{step}/reject", json=body)
        )
    for response in responses:
        assert response.status_code in ACCEPTABLE, (response.status_code, response.text)
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_arbitrary_input_never_gives_a_500(
    backend: str, tmp_path: Path, sqlite_template: Path, postgres_server: PostgresServer | None
) -> None:
    with (
        database_for(backend, tmp_path, sqlite_template, postgres_server) as url,
        app_on_loop(url, tmp_path) as (runner, client),
    ):

        @hypothesis_settings(
            max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
        )
        @given(body=bodies, text=st.text(max_size=20))
        def check(body: Any, text: str) -> None:
            runner.run(_probe(client, body, text))

        check()


@pytest.mark.parametrize(
    "raw",
    [
        b"1e400",
        b'{"goal": "g", "budget_usd": 1e400}',
        b'{"goal": "g", "budget_usd": NaN}',
        b'{"goal": "\\u0000"}',
        b'{"goal": "\\ud800"}',
        b"[" * 5000 + b"]" * 5000,
        b"\xff\xfe",
    ],
)
async def test_hostile_raw_bodies_are_refused_cleanly(
    client: httpx.AsyncClient, raw: bytes
) -> None:
    response = await client.post(
        "/v1/agent-runs", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] in ("validation_error", "json_too_deep")
