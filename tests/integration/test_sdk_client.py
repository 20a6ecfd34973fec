"""The typed client against the real app in-process (ASGI, SQLite: the client only speaks HTTP):
every method answers with the API's own models, every error family is its own exception."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import agent_engine.access_errors as access_errors
import agent_engine.errors as engine_errors
from agent_engine import client as sdk
from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.domain.principals import Role
from agent_engine.errors import EngineError
from tests.databases import clone_sqlite
from tests.keys import authed_app
from tests.processes import free_port
from tests.sandboxing import INTERPRETER_PATHS, TEST_SANDBOX

GATED = [
    {"step_type": "noop", "input_data": {"value": 1}},
    {"step_type": "noop", "input_data": {"value": 2}, "requires_approval": True},
    {"step_type": "noop", "input_data": {"value": {"$ref": "steps.2.output.value"}}},
]


@pytest.fixture
def settings(tmp_path: Path, sqlite_template: Path) -> Settings:
    root = tmp_path / "workspaces"
    root.mkdir()
    return Settings(
        database_url=clone_sqlite(sqlite_template, tmp_path),
        auto_migrate=False,
        embedded_worker=False,
        workspace_roots=[root],
        sandbox_read_only_paths=list(INTERPRETER_PATHS),
        sandbox=TEST_SANDBOX,
        _env_file=None,  # type: ignore[call-arg]
    )


@asynccontextmanager
async def engine_client(settings: Settings, **kwargs: Any) -> AsyncIterator[sdk.AsyncEngineClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with sdk.AsyncEngineClient("http://t", transport=transport, **kwargs) as client:
            yield client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[sdk.AsyncEngineClient]:
    async with engine_client(settings, actor="alice") as made:
        yield made


async def _finished(client: sdk.AsyncEngineClient, run_id: str) -> sdk.RunWithSteps:
    """Execute steps by hand (no worker) until the run stops moving."""
    for _ in range(10):
        run = await client.get_run(run_id)
        if run.status in ("completed", "failed", "cancelled", "awaiting_approval"):
            return run
        await client.execute(run_id)
    raise AssertionError("the run never finished")


async def test_runs_are_created_read_listed_and_paged_as_the_apis_models(
    client: sdk.AsyncEngineClient,
) -> None:
    made = [
        await client.create_run(f"goal {n}", steps=[{"step_type": "noop", "input_data": {}}])
        for n in range(3)
    ]
    assert isinstance(made[0], sdk.RunWithSteps) and made[0].status == "planned"
    run = await client.get_run(str(made[0].id))
    assert run.goal == "goal 0" and run.steps[0].step_type == "noop"
    page = await client.list_runs(limit=2)
    assert [r.goal for r in page.items] == ["goal 2", "goal 1"] and page.next_cursor
    assert [r.goal async for r in client.iter_runs(page_size=1)] == ["goal 2", "goal 1", "goal 0"]
    assert [r.goal async for r in client.iter_runs(status="completed")] == []
    steps = await client.steps(str(run.id))
    assert isinstance(steps[0], sdk.StepOut) and steps[0].step_number == 1
    cost = await client.cost(str(run.id))
    assert cost["run_id"] == str(run.id) and cost["spent_usd"] == 0
    assert (await client.health()).status == "ok"
    again = await client.create_run("same", idempotency_key="k-1", steps=GATED[:1])
    assert (await client.create_run("same", idempotency_key="k-1", steps=GATED[:1])).id == again.id


async def test_a_gated_run_is_executed_approved_and_its_events_stream_to_the_end(
    client: sdk.AsyncEngineClient, settings: Settings, sqlite_template: Path, tmp_path: Path
) -> None:
    run = await client.create_run("gated", steps=GATED)
    run_id = str(run.id)
    waiting = await _finished(client, run_id)
    assert waiting.status == "awaiting_approval"
    step = waiting.steps[1]
    assert step.status == "awaiting_approval"
    with pytest.raises(sdk.InvalidTransition) as refused:
        await client.approve(run_id, str(waiting.steps[2].id))
    assert refused.value.status == 409 and refused.value.code == "invalid_transition"
    approved = await client.approve(run_id, str(step.id), comment="fine")
    assert approved.steps[1].status == "approved"
    done = await _finished(client, run_id)
    assert done.status == "completed"

    events = [event async for event in client.events(run_id)]
    assert all(isinstance(e, sdk.RunEvent) for e in events)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert "step.approved" in {e.type for e in events} and events[-1].type == "run.completed"
    later = [e.seq async for e in client.events(run_id, after=events[-3].seq)]
    assert later == [e.seq for e in events[-2:]]
    assert (await client.wait(run_id)).status == "completed"

    audit = await client.audit(run_id)
    assert audit.chain_valid and len(audit.events) == len(events)
    assert (await client.verify_audit(run_id))["valid"] is True
    assert (await client.plan(run_id)).version == 1
    bundle = await client.export_run(run_id)
    with pytest.raises(sdk.Conflict):
        await client.import_run(bundle)
    elsewhere = settings.model_copy(
        update={"database_url": clone_sqlite(sqlite_template, tmp_path)}
    )
    async with engine_client(elsewhere) as other:
        imported = await other.import_run(bundle)
        assert imported["run_id"] == run_id and imported["events"] == len(events)
        assert (await other.get_run(run_id)).status == "completed"
        costs = (await other.raw("GET", "/v1/costs", params={"format": "csv"})).text
        assert costs.startswith("calls,")
    bundle["audit_events"][1]["payload"] = {"changed": True}
    with pytest.raises(sdk.AuditInvalid):
        await client.import_run(bundle)


async def test_reject_cancel_retry_resume_and_budget_change(client: sdk.AsyncEngineClient) -> None:
    run_id = str((await client.create_run("to reject", steps=GATED)).id)
    waiting = await _finished(client, run_id)
    rejected = await client.reject(run_id, str(waiting.steps[1].id), "no")
    assert rejected.status == "failed" and rejected.steps[1].status == "rejected"
    with pytest.raises(sdk.Conflict):
        await client.retry_step(run_id, str(rejected.steps[0].id))

    other = str((await client.create_run("to cancel", steps=GATED, budget_usd="1.5")).id)
    changed = await client.change_budget(other, reason="more", budget_usd="2.25")
    assert isinstance(changed, sdk.RunBudget) and str(changed.budget_usd) == "2.25"
    assert (
        await client.change_budget(other, reason="none", budget_tokens=None)
    ).budget_tokens is None
    assert (await client.start(other)).status in ("created", "planned", "running")
    cancelled = await client.cancel(other, reason="enough")
    assert cancelled.status == "cancelled"
    with pytest.raises(sdk.RunFinished):
        await client.change_budget(other, reason="late", budget_usd="3")
    with pytest.raises(sdk.Conflict):
        await client.resume(other)


async def test_replay_fork_compare_divergence_and_family(client: sdk.AsyncEngineClient) -> None:
    plan = [{"step_type": "noop", "input_data": {"value": n}} for n in (1, 2)]
    original = await _finished(client, str((await client.create_run("o", steps=plan)).id))
    run_id = str(original.id)
    replay = await client.replay(run_id, mode="verify")
    assert replay.replay_of == original.id and replay.replay_mode == "verify"
    fork = await client.fork(run_id, 2, input_data={"value": 3})
    assert fork.forked_from == original.id and fork.from_step == 2
    fork_done = await _finished(client, str(fork.id))
    assert fork_done.status == "completed"
    compared = await client.compare(run_id, str(fork.id))
    assert [row["verdict"] for row in compared["steps"]] == ["same", "differs"]
    divergence = await client.divergence(str(fork.id))
    assert divergence["first_divergence"]["step_number"] == 2
    family = await client.family(run_id)
    assert family["root"]["id"] == run_id and family["size"] == 3
    kinds = sorted(child["kind"] for child in family["root"]["children"])
    assert kinds == ["fork", "replay"]
    with pytest.raises(sdk.Conflict) as not_derived:
        await client.divergence(run_id)
    assert not_derived.value.code == "not_a_replay_or_fork"


async def test_plan_approval_is_decided_through_the_client(client: sdk.AsyncEngineClient) -> None:
    made = await client.create_run("p", steps=GATED[:1], plan_approval=True)
    assert made.status == "awaiting_approval"
    with pytest.raises(sdk.Conflict):
        await client.execute(str(made.id))
    assert (await client.approve_plan(str(made.id), comment="ok")).status == "planned"
    second = await client.create_run("p2", steps=GATED[:1], plan_approval=True)
    assert (await client.reject_plan(str(second.id), "no")).status == "failed"


async def test_refusals_raise_their_family_with_code_status_detail_and_fields(
    client: sdk.AsyncEngineClient,
) -> None:
    with pytest.raises(sdk.NotFound) as missing:
        await client.get_run("00000000-0000-0000-0000-000000000000")
    assert missing.value.status == 404 and missing.value.code == "not_found"
    assert "run" in missing.value.detail
    with pytest.raises(sdk.ValidationFailed) as invalid:
        await client.create_run("", steps=[{"step_type": "noop"}])
    assert invalid.value.status == 422 and "goal" in {e["field"] for e in invalid.value.errors}
    with pytest.raises(sdk.ValidationFailed) as bad_plan:
        await client.create_run("g", steps=[{"step_type": "no_such_step", "input_data": {}}])
    assert bad_plan.value.code == "invalid_plan"
    with pytest.raises(sdk.ValidationFailed):
        await client.list_runs(status="sleeping")
    with pytest.raises(sdk.EngineAPIError) as caught:
        [event async for event in client.events("nope")]
    assert isinstance(caught.value, sdk.NotFound | sdk.ValidationFailed)


async def test_keys_roles_and_rate_limits_raise_unauthorized_forbidden_and_rate_limited(
    settings: Settings,
) -> None:
    async with authed_app(settings, rate_limit_per_s=0.001, rate_limit_burst=2) as authed:
        viewer = await authed.key("viewer", Role.VIEWER)
        transport = httpx.ASGITransport(app=authed.app)
        async with sdk.AsyncEngineClient("http://t", api_key="", transport=transport) as anonymous:
            with pytest.raises(sdk.Unauthorized) as unknown:
                await anonymous.list_runs()
            assert unknown.value.code == "unauthenticated"
        async with sdk.AsyncEngineClient("http://t", api_key=viewer, transport=transport) as client:
            with pytest.raises(sdk.Forbidden):
                await client.create_run("g", steps=GATED[:1])
            with pytest.raises(sdk.RateLimited) as limited:
                for _ in range(3):
                    await client.list_runs()
            assert limited.value.status == 429 and limited.value.retry_after
            assert limited.value.retry_after > 0


async def test_a_server_that_is_not_there_is_engine_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with sdk.AsyncEngineClient(url) as client:
        with pytest.raises(sdk.EngineUnreachable) as unreachable:
            await client.get_run("x")
    assert url in str(unreachable.value)
    with sdk.EngineClient(url) as sync_client, pytest.raises(sdk.EngineUnreachable):
        sync_client.list_runs()


def _engine_errors() -> Iterator[type[EngineError]]:
    for module in (engine_errors, access_errors):
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, EngineError) and value.__module__ == module.__name__:
                yield value


EXPECTED_FAMILY = {
    400: sdk.BadRequest,
    401: sdk.Unauthorized,
    403: sdk.Forbidden,
    404: sdk.NotFound,
    409: sdk.Conflict,
    413: sdk.PayloadTooLarge,
    422: sdk.Unprocessable,
    429: sdk.RateLimited,
    500: sdk.ServerError,
    502: sdk.ServerError,
}


@pytest.mark.parametrize("error", list(_engine_errors()), ids=lambda e: e.code)
def test_every_engine_error_maps_to_the_family_of_its_status(error: type[EngineError]) -> None:
    body = {**_problem_of(error), "extra_field": 7}
    raised = sdk.errors.error_from_problem(error.http_status, body, "4")
    assert isinstance(raised, EXPECTED_FAMILY[error.http_status])
    assert (raised.code, raised.status, raised.extra_field) == (error.code, error.http_status, 7)
    if isinstance(raised, sdk.RateLimited):
        assert raised.retry_after == 4.0


def _problem_of(error: type[EngineError]) -> dict[str, Any]:
    return {
        "type": f"https://agent-engine.dev/problems/{error.code}",
        "title": error.title,
        "status": error.http_status,
        "detail": "d",
        "code": error.code,
    }


def test_typed_families_by_code() -> None:
    for code, family in [
        ("invalid_transition", sdk.InvalidTransition),
        ("run_finished", sdk.RunFinished),
        ("budget_below_spent", sdk.BudgetBelowSpent),
        ("four_eyes", sdk.FourEyes),
        ("too_many_runs", sdk.TooManyRuns),
        ("audit_invalid", sdk.AuditInvalid),
        ("validation_error", sdk.ValidationFailed),
    ]:
        assert type(sdk.errors.error_from_problem(400, {"code": code, "detail": "d"})) is family
    not_json = sdk.errors.error_from_problem(502, None)
    assert isinstance(not_json, sdk.ServerError) and not_json.code == "http_502"
