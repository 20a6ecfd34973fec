"""Creating, reading, listing and cancelling runs."""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from agent_engine.access_errors import MaxStepsExceededError
from agent_engine.domain.adaptive import ADAPTIVE
from agent_engine.domain.approval_policy import (
    ApprovalInputs,
)
from agent_engine.domain.canonical import content_hash
from agent_engine.domain.plan import Plan
from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.states import TERMINAL_STEP_STATES, RunStatus, StepStatus
from agent_engine.domain.transitions import append_event, move_run, move_step
from agent_engine.engine.context import EngineContext
from agent_engine.engine.locking import change_run
from agent_engine.engine.plan_estimates import (
    check_estimate,
    estimate_plan,
    warn_over_budget,
)
from agent_engine.engine.plans import insert_plan, validate_plan
from agent_engine.engine.policies import (
    PlanApprovals,
    plan_approvals,
    refuse_loosening,
    run_options,
)
from agent_engine.engine.request_limits import check_metadata, check_plan, check_strings
from agent_engine.engine.run_requests import CreateRunRequest
from agent_engine.engine.settle import refresh_claimable
from agent_engine.errors import IdempotencyConflictError, InputValidationError
from agent_engine.executors.mcp_servers import refresh_listings
from agent_engine.executors.mcp_tool import servers_named
from agent_engine.executors.workspace_roots import check_workspace_root
from agent_engine.storage.audit import list_events_txn
from agent_engine.storage.changes import DuplicateRowError
from agent_engine.storage.database import read_transaction
from agent_engine.storage.runs import (
    find_run_by_idempotency_key_txn,
    get_run_txn,
    list_runs_txn,
    load_run_txn,
    load_steps_txn,
)
from agent_engine.storage.tables import AgentRun, AuditEvent
from agent_engine.tracing import new_run_trace, tracing_active


@dataclass(frozen=True)
class RunView:
    run: RunRecord
    steps: list[StepRecord]
    replayed: bool = False  # an idempotent retry returned the run created earlier


def _plan_from_request(request: CreateRunRequest) -> Plan | None:
    if request.steps is None:
        return None
    try:
        return Plan(steps=request.steps)
    except ValueError as exc:
        raise InputValidationError(str(exc)) from exc


def _planning_options(
    ctx: EngineContext, request: CreateRunRequest, plan: Plan | None
) -> dict[str, Any]:
    """The planning part of the run's options, bounds resolved; 422 on bounds that make no
    sense (given to a fixed-plan run, over the server's limits, under the explicit plan)."""
    if request.planning != ADAPTIVE:
        given = [n for n in ("max_steps", "max_replans") if getattr(request, n) is not None]
        if given:
            raise InputValidationError(
                f"{' and '.join(given)} apply only to runs with planning 'adaptive'",
                errors=[{"field": name, "message": "needs planning 'adaptive'"} for name in given],
            )
        return {}  # fixed: the options of a run as before adaptive planning existed
    settings = ctx.settings
    ceiling = ctx.request_limits.max_plan_steps
    max_steps = request.max_steps or min(settings.adaptive_default_max_steps, ceiling)
    if max_steps > ceiling:
        raise InputValidationError(
            f"max_steps {max_steps} is over the server's {ceiling} (AGENT_ENGINE_MAX_PLAN_STEPS)",
            errors=[{"field": "max_steps", "message": f"at most {ceiling}"}],
        )
    if plan is not None and len(plan.steps) > max_steps:
        raise MaxStepsExceededError(
            f"the plan has {len(plan.steps)} steps, more than max_steps {max_steps}",
            limit="max_steps",
            maximum=max_steps,
            errors=[{"field": "steps", "message": f"at most {max_steps} (max_steps)"}],
        )
    max_replans = request.max_replans
    if max_replans is None:
        max_replans = min(settings.adaptive_default_max_replans, settings.adaptive_max_replans)
    if max_replans > settings.adaptive_max_replans:
        raise InputValidationError(
            f"max_replans {max_replans} is over the server's {settings.adaptive_max_replans} "
            "(AGENT_ENGINE_ADAPTIVE_MAX_REPLANS)",
            errors=[
                {"field": "max_replans", "message": f"at most {settings.adaptive_max_replans}"}
            ],
        )
    return {"planning": ADAPTIVE, "max_steps": max_steps, "max_replans": max_replans}


def _check_limits(ctx: EngineContext, request: CreateRunRequest) -> None:
    """Refuse a request over the server's configured limits (the plan's are checked with it)."""
    check_metadata(request.metadata, ctx.request_limits)
    policy = request.approval_policy.model_dump(mode="json")
    check_strings({"metadata": request.metadata, "approval_policy": policy}, ctx.request_limits)


async def create_run(
    ctx: EngineContext,
    request: CreateRunRequest,
    *,
    actor: str,
    idempotency_key: str | None,
    may_loosen_policy: bool = False,
    api_key_id: uuid.UUID | None = None,
    trace_carrier: Mapping[str, str] | None = None,
) -> RunView:
    """Create a run; with explicit steps it is PLANNED at once, else CREATED (planned later).
    With tracing on, the run's span continues the ``traceparent`` in ``trace_carrier`` (the
    request's headers) or starts a trace.

    The same ``Idempotency-Key`` with the same body returns the first run; with another body → 409.
    A run whose own rules or flags would loosen its named policy is refused (403) unless
    ``may_loosen_policy`` (the creator holds the policy privilege).
    """
    _check_limits(ctx, request)
    # A fixed-plan request hashes as it did before adaptive planning's fields existed.
    unset = {"planning", "max_steps", "max_replans"} if request.planning == "fixed" else set()
    unset |= {"project"} if request.project is None else set()
    unset |= {"over_budget"} if request.over_budget == "warn" else set()
    unset |= {"response_cache"} if not request.response_cache else set()
    request_hash = content_hash(request.model_dump(mode="json", exclude=unset))
    if idempotency_key is not None:
        existing = await _find_idempotent(ctx, idempotency_key, request_hash)
        if existing is not None:
            return existing
    workspace = None
    if request.workspace is not None:
        root = await asyncio.to_thread(
            check_workspace_root, request.workspace, ctx.settings.workspace_roots
        )
        workspace = str(root)
    inputs = ApprovalInputs(
        ctx.policies.get(request.policy), request.approval_policy, may_loosen_policy
    )
    plan = _plan_from_request(request)
    planning = _planning_options(ctx, request, plan)
    approvals = PlanApprovals(inputs)
    estimates: list[Decimal | None] | None = None
    warning: dict[str, Any] | None = None
    if plan is not None:
        check_plan(plan, ctx.request_limits)
        # MCP servers not listed yet (down at start-up) are tried again before their tools are
        # checked and their approval defaults decided.
        await refresh_listings(ctx.limits.mcp_servers, servers_named(plan.steps))
        validate_plan(plan, ctx.registry, has_workspace=workspace is not None, limits=ctx.limits)
        approvals = await plan_approvals(inputs, plan, ctx.limits, workspace)
        estimates = await estimate_plan(ctx, plan)
        warning = check_estimate(estimates, request.budget_usd, refuse=request.over_budget)
    refuse_loosening(approvals.loosenings(plan.steps if plan else [], ctx.registry))
    changes = _new_run(
        ctx,
        request,
        plan,
        approvals,
        workspace,
        actor,
        idempotency_key,
        request_hash,
        planning,
        estimates,
    )
    if warning is not None:
        warn_over_budget(changes, warning)
    changes.run.api_key_id = api_key_id  # its monthly budget applies too
    if tracing_active():
        for column, value in new_run_trace(trace_carrier).columns().items():
            setattr(changes.run, column, value)
    # An in-process worker may claim the run's first steps in this very write.
    local = ctx.hand_off
    taken = await local.claim_new(changes) if local is not None else None
    written = False
    written_changes = taken or changes
    try:
        await ctx.changes.insert(written_changes)
        written = True
    except DuplicateRowError:
        # Lost a race with a concurrent request carrying the same key: answer with its run.
        if idempotency_key is None:
            raise
        existing = await _find_idempotent(ctx, idempotency_key, request_hash)
        if existing is None:
            raise
        return existing
    finally:
        if taken is not None and local is not None:
            local.started(taken, written=written)
    # As written (claimed, when the worker took it); the worker went on with copies.
    return RunView(written_changes.run, written_changes.steps)


def _new_run(
    ctx: EngineContext,
    request: CreateRunRequest,
    plan: Plan | None,
    approvals: PlanApprovals,
    workspace: str | None,
    actor: str,
    idempotency_key: str | None,
    request_hash: str,
    planning: dict[str, Any],
    estimates: list[Decimal | None] | None = None,
) -> ChangeSet:
    """The new run's change set: the run, its plan and steps, and their audit events."""
    run = RunRecord(
        id=uuid.uuid4(),
        goal=request.goal,
        status=RunStatus.CREATED.value,
        workspace=workspace,
        budget_usd=request.budget_usd,
        budget_tokens=request.budget_tokens,
        project=request.project,
        created_by=actor,
        metadata=request.metadata,
        options={
            **run_options(approvals.inputs),
            "plan_approval": request.plan_approval,
            "auto_start": request.auto_start,
            "four_eyes": request.four_eyes,
            **planning,
            **({"response_cache": True} if request.response_cache else {}),
        },
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        started=request.auto_start,
        max_parallel=request.max_parallel,
    )
    changes = ChangeSet(run, [], new_run=True)
    append_event(
        changes,
        run,
        "run.created",
        {
            "goal": request.goal,
            "workspace": workspace,
            "request_hash": request_hash,
            "policy": approvals.inputs.server.model_dump(mode="json"),
            "may_loosen_policy": approvals.inputs.may_loosen,
            **({"planning": planning} if planning else {}),
        },
        actor=actor,
    )
    if plan is not None:
        move_run(changes, run, RunStatus.PLANNING, actor=actor, reason="explicit plan")
        insert_plan(
            changes,
            run,
            plan,
            ctx.registry,
            approvals=approvals,
            actor=actor,
            source="explicit",
            step_estimates=estimates,
        )
        move_run(changes, run, RunStatus.PLANNED, actor=actor)
        if request.plan_approval:
            move_run(changes, run, RunStatus.AWAITING_APPROVAL, actor=actor, reason="plan approval")
    refresh_claimable(run, changes.steps)
    return changes


async def _find_idempotent(ctx: EngineContext, key: str, request_hash: str) -> RunView | None:
    async with read_transaction(ctx.sessions) as session:
        run = await find_run_by_idempotency_key_txn(session, key)
        if run is None:
            return None
        if run.request_hash != request_hash:
            raise IdempotencyConflictError(
                f"Idempotency-Key {key!r} was used for a different request (run {run.id})",
                run_id=str(run.id),
            )
        record = await load_run_txn(session, run.id)
        return RunView(record, await load_steps_txn(session, run.id), replayed=True)


async def get_run(ctx: EngineContext, run_id: str) -> RunView:
    async with read_transaction(ctx.sessions) as session:
        run = await load_run_txn(session, run_id)
        return RunView(run, await load_steps_txn(session, run.id))


def encode_cursor(run: AgentRun | RunRecord) -> str:
    raw = f"{run.created_at.isoformat()}|{run.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, run_id = raw.split("|")
        return datetime.fromisoformat(created_at), uuid.UUID(run_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InputValidationError(
            "cursor is not one this server issued", errors=[{"field": "cursor"}]
        ) from None


async def list_runs(
    ctx: EngineContext,
    *,
    statuses: Sequence[RunStatus],
    cursor: str | None,
    limit: int,
    forked_from: uuid.UUID | None = None,
    replay_of: uuid.UUID | None = None,
) -> tuple[Sequence[RunRecord], str | None]:
    """One page of runs, newest first, and the cursor of the next page (None at the end);
    only the forks or replays of a run when ``forked_from`` or ``replay_of`` is given."""
    after = decode_cursor(cursor) if cursor else None
    async with read_transaction(ctx.sessions) as session:
        runs = await list_runs_txn(
            session,
            statuses=[s.value for s in statuses],
            after=after,
            limit=limit + 1,
            forked_from=forked_from,
            replay_of=replay_of,
        )
    page = runs[:limit]
    next_cursor = encode_cursor(page[-1]) if len(runs) > limit else None
    return page, next_cursor


async def list_steps(ctx: EngineContext, run_id: str) -> list[StepRecord]:
    async with read_transaction(ctx.sessions) as session:
        run = await load_run_txn(session, run_id)
        return await load_steps_txn(session, run.id)


async def cancel_run(ctx: EngineContext, run_id: str, *, actor: str, reason: str | None) -> RunView:
    """Cancel the run and every step that has not finished, in one write."""
    async with change_run(ctx, run_id) as locked:
        changes = locked.changes
        run = changes.run
        move_run(changes, run, RunStatus.CANCELLED, actor=actor, reason=reason)
        for step in changes.steps:
            if StepStatus(step.status) not in TERMINAL_STEP_STATES:
                move_step(changes, run, step, StepStatus.CANCELLED, actor=actor, reason=reason)
                step.lease_owner = None
                step.lease_expires_at = None
        refresh_claimable(run, changes.steps)
    return RunView(run, changes.steps)


async def list_audit(
    ctx: EngineContext, run_id: str, *, after_seq: int, limit: int
) -> Sequence[AuditEvent]:
    async with read_transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id)
        return await list_events_txn(session, run.id, after_seq=after_seq, limit=limit)
