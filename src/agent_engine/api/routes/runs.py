"""``/v1/agent-runs``: create, read, list, execute, cancel, audit and cost."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status

from agent_engine.api.access import requires
from agent_engine.api.deps import Actor, CurrentPrincipal, Engine, Gate
from agent_engine.api.schemas import (
    AuditEventOut,
    AuditOut,
    CancelIn,
    ExecuteOut,
    RunOut,
    RunPage,
    RunWithSteps,
    StepOut,
    run_with_steps,
)
from agent_engine.domain.adaptive import revision_due
from agent_engine.domain.principals import Role
from agent_engine.domain.states import RunStatus
from agent_engine.engine import control, costs, runs
from agent_engine.engine.manual import execute_one
from agent_engine.engine.planner import plan_run
from agent_engine.engine.run_requests import CreateRunRequest
from agent_engine.errors import InputValidationError
from agent_engine.storage.audit import verify_chain

router = APIRouter(prefix="/v1/agent-runs", tags=["runs"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=RunWithSteps,
    **requires(
        Role.OPERATOR,
        responses={
            200: {"model": RunWithSteps, "description": "Idempotent replay: the run made first"}
        },
    ),
)
async def create_run(
    body: CreateRunRequest,
    request: Request,
    engine: Engine,
    guard: Gate,
    principal: CurrentPrincipal,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200, min_length=1)] = None,
) -> RunWithSteps:
    """Create a run from a goal, optionally with an explicit plan (`steps`); 429
    `too_many_runs` when the key already has its maximum of runs in flight."""
    async with guard.admission.admit(principal.name):
        view = await runs.create_run(
            engine,
            body,
            actor=principal.name,
            idempotency_key=idempotency_key,
            # Only a key holding the policy privilege may free steps from approval itself.
            may_loosen_policy=principal.may_auto_approve,
            api_key_id=principal.key_id,
            trace_carrier=request.headers,  # a caller's traceparent: the run joins its trace
        )
    if view.replayed:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/agent-runs/{view.run.id}"
    return run_with_steps(view)


def _parse_statuses(raw: list[str]) -> list[RunStatus]:
    statuses: list[RunStatus] = []
    for item in raw:
        for name in item.split(","):
            try:
                statuses.append(RunStatus(name.strip().lower()))
            except ValueError:
                raise InputValidationError(
                    f"unknown status {name!r}; one of {[s.value for s in RunStatus]}",
                    errors=[{"field": "status", "message": f"unknown status {name!r}"}],
                ) from None
    return statuses


@router.get("", response_model=RunPage, **requires(Role.VIEWER))
async def list_runs(
    engine: Engine,
    status_filter: Annotated[list[str], Query(alias="status")] = [],  # noqa: B006
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    forked_from: Annotated[uuid.UUID | None, Query(description="Only forks of this run")] = None,
    replay_of: Annotated[uuid.UUID | None, Query(description="Only replays of this run")] = None,
) -> RunPage:
    """Runs, newest first, filtered by status (repeat or comma-separate) and lineage,
    cursor-paginated."""
    page, next_cursor = await runs.list_runs(
        engine,
        statuses=_parse_statuses(status_filter),
        cursor=cursor,
        limit=limit,
        forked_from=forked_from,
        replay_of=replay_of,
    )
    return RunPage(items=[RunOut.model_validate(r) for r in page], next_cursor=next_cursor)


@router.get("/{run_id}", response_model=RunWithSteps, **requires(Role.VIEWER))
async def get_run(run_id: str, engine: Engine) -> RunWithSteps:
    """The run with its steps."""
    return run_with_steps(await runs.get_run(engine, run_id))


@router.get("/{run_id}/steps", response_model=list[StepOut], **requires(Role.VIEWER))
async def list_steps(run_id: str, engine: Engine) -> list[StepOut]:
    """The run's steps in plan order."""
    return [StepOut.model_validate(s) for s in await runs.list_steps(engine, run_id)]


@router.post("/{run_id}/execute", response_model=ExecuteOut, **requires(Role.OPERATOR))
async def execute_next(run_id: str, engine: Engine, actor: Actor) -> ExecuteOut:
    """Execute the next ready step synchronously; a CREATED run with no steps is planned first.

    A step that needs approval is not run: it moves to `awaiting_approval` with its preview.
    """
    view = await runs.get_run(engine, run_id)
    status = view.run.status
    # A run left planning without a revision due (its planner's call waited for budget, or its
    # planner's lease lapsed) is planned again here.
    resume = status == RunStatus.PLANNING and revision_due(view.run) is None
    if status == RunStatus.CREATED or resume:
        await plan_run(engine, run_id, actor=actor, resume=resume)
        view = await runs.get_run(engine, run_id)
        if view.run.status != RunStatus.PLANNED:
            return ExecuteOut(**run_with_steps(view).model_dump(), executed_step_id=None)
    step_id = await execute_one(engine, run_id, actor=actor)
    view = await runs.get_run(engine, run_id)
    return ExecuteOut(**run_with_steps(view).model_dump(), executed_step_id=step_id)


@router.post("/{run_id}/cancel", response_model=RunWithSteps, **requires(Role.OPERATOR))
async def cancel_run(
    run_id: str, engine: Engine, actor: Actor, body: CancelIn | None = None
) -> RunWithSteps:
    """Cancel the run and all its unfinished steps."""
    view = await runs.cancel_run(engine, run_id, actor=actor, reason=body.reason if body else None)
    return run_with_steps(view)


@router.get("/{run_id}/audit", response_model=AuditOut, **requires(Role.VIEWER))
async def get_audit(
    run_id: str,
    engine: Engine,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> AuditOut:
    """The run's hash-chained audit events and whether the chain verifies."""
    events = await runs.list_audit(engine, run_id, after_seq=after_seq, limit=limit)
    valid, first_bad = verify_chain(events) if after_seq == 0 else (True, None)
    view_id = events[0].run_id if events else (await runs.get_run(engine, run_id)).run.id
    return AuditOut(
        run_id=view_id,
        events=[AuditEventOut.model_validate(e) for e in events],
        chain_valid=valid,
        first_invalid_seq=first_bad,
    )


@router.get("/{run_id}/cost", **requires(Role.VIEWER))
async def get_cost(run_id: str, engine: Engine) -> dict[str, Any]:
    """Totals and breakdowns of the run's LLM cost, from the ledger."""
    summary: dict[str, Any] = _jsonable_money(await costs.cost_summary(engine, run_id))
    return summary


def _jsonable_money(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _jsonable_money(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable_money(v) for v in value]
    return value


@router.post("/{run_id}/start", response_model=RunWithSteps, **requires(Role.OPERATOR))
async def start_run(run_id: str, engine: Engine, actor: Actor) -> RunWithSteps:
    """Hand the run to the workers, which plan it if needed and run it to completion."""
    return run_with_steps(await control.start_run(engine, run_id, actor=actor))


@router.post("/{run_id}/resume", response_model=RunWithSteps, **requires(Role.OPERATOR))
async def resume_run(run_id: str, engine: Engine, actor: Actor) -> RunWithSteps:
    """Resume a failed run from its first unfinished step (failed steps get another attempt)."""
    return run_with_steps(await control.resume_run(engine, run_id, actor=actor))


@router.post(
    "/{run_id}/steps/{step_id}/retry", response_model=RunWithSteps, **requires(Role.OPERATOR)
)
async def retry_step(run_id: str, step_id: str, engine: Engine, actor: Actor) -> RunWithSteps:
    """Retry a failed step by hand."""
    return run_with_steps(await control.retry_step(engine, run_id, step_id, actor=actor))
