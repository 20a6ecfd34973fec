"""API keys over HTTP: made by an admin and shown once, stored hashed, listed without secrets,
revoked (refused at once by the process that revoked them), and the key's name as the actor."""

from __future__ import annotations

import sqlalchemy as sa

from agent_engine.config import Settings
from agent_engine.domain.principals import Role
from agent_engine.storage.database import create_engine
from tests.keys import authed_app, bearer


async def test_an_admin_makes_a_key_that_is_shown_once_and_stored_only_as_a_hash(
    settings: Settings,
) -> None:
    async with authed_app(settings) as authed:
        admin = bearer(await authed.key("root", Role.ADMIN))
        made = await authed.http.post(
            "/v1/api-keys", json={"name": "ci-bot", "role": "operator"}, headers=admin
        )
        assert made.status_code == 201, made.text
        body = made.json()
        token = body["key"]
        assert token.startswith(f"ae_{body['prefix']}_")
        assert body["role"] == "operator" and body["created_by"] == "root"
        assert body["may_auto_approve"] is False
        listed = (await authed.http.get("/v1/api-keys", headers=admin)).json()
        assert [k["name"] for k in listed] == ["root", "ci-bot"]
        assert all("key" not in k and "secret_hash" not in k for k in listed)
        assert listed[0]["may_auto_approve"] is True  # admin keys hold the policy privilege
        runs = await authed.http.get("/v1/agent-runs", headers=bearer(token))
        assert runs.status_code == 200
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(sa.text("SELECT * FROM api_keys"))).mappings().all()
    finally:
        await engine.dispose()
    secret = token.split("_", 2)[2]
    stored = " ".join(str(value) for row in rows for value in row.values())
    assert secret not in stored and token not in stored
    assert len({row["salt"] for row in rows}) == 2  # a salt of its own per key


async def test_a_duplicate_name_is_409_and_an_unknown_role_422(settings: Settings) -> None:
    async with authed_app(settings) as authed:
        admin = bearer(await authed.key("root", Role.ADMIN))
        again = await authed.http.post(
            "/v1/api-keys", json={"name": "root", "role": "viewer"}, headers=admin
        )
        assert again.status_code == 409 and again.json()["code"] == "api_key_name_taken"
        boss = await authed.http.post(
            "/v1/api-keys", json={"name": "x", "role": "boss"}, headers=admin
        )
        assert boss.status_code == 422 and boss.json()["code"] == "validation_error"
        bad_name = await authed.http.post(
            "/v1/api-keys", json={"name": "two words", "role": "viewer"}, headers=admin
        )
        assert bad_name.status_code == 422
        assert bad_name.headers["content-type"].startswith("application/problem+json")


async def test_a_revoked_key_is_refused_at_once_and_its_name_stays_taken(
    settings: Settings,
) -> None:
    # A long cache TTL: only the revocation itself can make this process forget the key.
    async with authed_app(settings, auth_cache_ttl_s=300) as authed:
        admin = bearer(await authed.key("root", Role.ADMIN))
        token = await authed.key("temp", Role.VIEWER)
        assert (await authed.http.get("/v1/agent-runs", headers=bearer(token))).status_code == 200
        revoked = await authed.http.delete("/v1/api-keys/temp", headers=admin)
        assert revoked.status_code == 200 and revoked.json()["revoked_by"] == "root"
        refused = await authed.http.get("/v1/agent-runs", headers=bearer(token))
        assert refused.status_code == 401 and refused.json()["code"] == "unauthenticated"
        twice = await authed.http.delete("/v1/api-keys/temp", headers=admin)
        assert twice.status_code == 409
        unknown = await authed.http.delete("/v1/api-keys/nobody", headers=admin)
        assert unknown.status_code == 404
        reuse = await authed.http.post(
            "/v1/api-keys", json={"name": "temp", "role": "viewer"}, headers=admin
        )
        assert reuse.status_code == 409


async def test_a_key_revoked_by_another_process_is_refused_once_the_cache_ttl_is_over(
    settings: Settings,
) -> None:
    async with (
        authed_app(settings, auth_cache_ttl_s=0) as uncached,
        authed_app(settings, auth_cache_ttl_s=300) as cached,
    ):
        token = await uncached.key("shared", Role.VIEWER)
        for app in (uncached, cached):
            assert (await app.http.get("/v1/agent-runs", headers=bearer(token))).status_code == 200
        await uncached.guard.keys.revoke("shared", actor="test")  # "another process"
        gone = await uncached.http.get("/v1/agent-runs", headers=bearer(token))
        believed = await cached.http.get("/v1/agent-runs", headers=bearer(token))
    assert gone.status_code == 401
    assert believed.status_code == 200  # within its TTL, the other process still believes it


async def test_with_auth_on_the_actor_is_the_key_name_and_x_actor_is_ignored(
    settings: Settings,
) -> None:
    async with authed_app(settings) as authed:
        token = await authed.key("ops-1", Role.OPERATOR)
        headers = {**bearer(token), "X-Actor": "somebody-else"}
        run = await authed.http.post(
            "/v1/agent-runs",
            json={"goal": "g", "steps": [{"step_type": "noop", "input_data": {}}]},
            headers=headers,
        )
        assert run.status_code == 201, run.text
        assert run.json()["created_by"] == "ops-1"
        run_id = run.json()["id"]
        await authed.http.post(f"/v1/agent-runs/{run_id}/execute", headers=headers)
        audit = (await authed.http.get(f"/v1/agent-runs/{run_id}/audit", headers=headers)).json()
    actors = {event["actor"] for event in audit["events"]}
    assert actors == {"ops-1"}
