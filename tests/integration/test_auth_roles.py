"""Every route declares its least role; with auth on, each refuses the roles below it (403) and
callers without a valid key (401). The routes come from the app's own OpenAPI spec."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from agent_engine.api.access import PUBLIC, ROLE_FIELD, check_declared_roles, requires
from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.domain.principals import Role
from tests.keys import authed_app, bearer

PUBLIC_PATHS = {"/healthz", "/readyz"}
# Endpoints that stream until the client leaves: checked for refusals only (an accepted request
# would not end through the in-process transport).
ENDLESS = {("get", "/v1/events")}
EXPECTED_ROLES = {
    ("post", "/v1/agent-runs"): Role.OPERATOR,
    ("get", "/v1/agent-runs/{run_id}"): Role.VIEWER,
    ("post", "/v1/agent-runs/{run_id}/steps/{step_id}/approve"): Role.APPROVER,
    ("post", "/v1/agent-runs/{run_id}/plan/approve"): Role.APPROVER,
    ("post", "/v1/agent-runs/{run_id}/execute"): Role.OPERATOR,
    ("post", "/v1/agent-runs/{run_id}/fork"): Role.OPERATOR,
    ("get", "/v1/agent-runs/{run_id}/divergence"): Role.VIEWER,
    ("get", "/v1/costs"): Role.VIEWER,
    ("post", "/v1/api-keys"): Role.ADMIN,
    ("delete", "/v1/api-keys/{name}"): Role.ADMIN,
    ("post", "/v1/chat/completions"): Role.OPERATOR,
    ("get", "/v1/webhook-deliveries"): Role.ADMIN,
    ("get", "/metrics"): Role.VIEWER,
    ("get", "/v1/workers"): Role.VIEWER,
}


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)


async def _call(
    http: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> httpx.Response:
    # No body: the role is checked before the body is validated, so a refusal is all we see.
    return await http.request(method.upper(), path, headers=headers)


def _assert_refused(response: httpx.Response, status: int, code: str, where: str) -> None:
    assert response.status_code == status, f"{where}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/problem+json"), where
    assert response.json()["code"] == code, where
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer", where


async def test_every_route_refuses_each_role_below_its_own_and_callers_without_a_key(
    settings: Settings,
) -> None:
    async with authed_app(settings) as authed:
        tokens = {role: await authed.key(f"key-{role.value}", role) for role in Role}
        revoked = await authed.key("gone", Role.ADMIN)
        await authed.guard.keys.revoke("gone", actor="test")
        spec = (await authed.http.get("/openapi.json")).json()
        operations = _operations(spec)
        assert len(operations) >= 20  # the walk sees the whole API, not an empty spec
        seen: dict[tuple[str, str], Role] = {}
        for method, path, operation in operations:
            where = f"{method.upper()} {path}"
            declared = operation.get(ROLE_FIELD)
            assert declared is not None, f"{where} declares no role"
            if declared == PUBLIC:
                assert path in PUBLIC_PATHS, f"{where} is public but should not be"
                response = await _call(authed.http, method, path, {})
                assert response.status_code not in (401, 403), where
                continue
            role = Role(declared)
            seen[(method, path)] = role
            target = _concrete(path)
            _assert_refused(
                await _call(authed.http, method, target, {}), 401, "unauthenticated", where
            )
            for bad in ("ae_000000000000_nope", "not-a-key", revoked):
                response = await _call(authed.http, method, target, bearer(bad))
                _assert_refused(response, 401, "unauthenticated", f"{where} with {bad[:8]}…")
            for weaker in role.below():
                response = await _call(authed.http, method, target, bearer(tokens[weaker]))
                _assert_refused(response, 403, "forbidden", f"{where} as {weaker.value}")
                assert response.json()["required_role"] == role.value
            if (method, path) in ENDLESS:
                continue
            for enough in (r for r in Role if r >= role):
                response = await _call(authed.http, method, target, bearer(tokens[enough]))
                assert response.status_code not in (401, 403), f"{where} as {enough.value}"
    for route, role in EXPECTED_ROLES.items():
        assert seen[route] is role, route


async def test_with_auth_off_no_route_asks_for_a_key_and_x_actor_names_the_actor(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post(
        "/v1/agent-runs",
        json={"goal": "g", "steps": [{"step_type": "noop", "input_data": {}}]},
        headers={"X-Actor": "dana"},
    )
    assert created.status_code == 201
    assert created.json()["created_by"] == "dana"
    keys = await client.get("/v1/api-keys")  # admin-only, and everyone is admin with auth off
    assert keys.status_code == 200 and keys.json() == []


async def test_with_auth_off_a_client_from_another_machine_is_refused(settings: Settings) -> None:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as http,
    ):
        refused = await http.get("/v1/agent-runs")
        health = await http.get("/healthz")
    _assert_refused(refused, 401, "unauthenticated", "remote client")
    assert "loopback" in refused.json()["detail"]
    assert health.status_code == 200


def _app_with(route_kwargs: dict[str, Any]) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/extra", **route_kwargs)
    async def extra() -> dict[str, str]:
        return {}

    return app


@pytest.mark.parametrize(
    "route_kwargs",
    [
        pytest.param({}, id="no declaration"),
        pytest.param({"openapi_extra": {ROLE_FIELD: "viewer"}}, id="recorded but not enforced"),
        pytest.param(
            {**requires(Role.ADMIN), "openapi_extra": {ROLE_FIELD: "viewer"}},
            id="recorded role differs from the enforced one",
        ),
    ],
)
def test_an_app_with_a_route_that_declares_no_role_is_refused(route_kwargs: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError, match="GET /v1/extra declares no role"):
        check_declared_roles(_app_with(route_kwargs), unlisted_public=frozenset())


def test_a_declared_route_passes_the_check() -> None:
    check_declared_roles(_app_with(requires(Role.VIEWER)), unlisted_public=frozenset())
