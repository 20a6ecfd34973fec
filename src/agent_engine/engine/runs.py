"""Creating, reading, listing and cancelling runs."""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ConfigDict, Field

from agent_engine.domain.approval_policy import ApprovalPolicy
from agent_engine.domain.canonical import content_hash
from agent_engine.domain.plan import Plan, PlanStep
from agent_engine.domain.states import TERMINAL_STEP_STATES, RunStatus, StepStatus
from agent_engine.domain.text import StorableModel
from agent_engine.engine.claiming import NewRunClaim
from agent_engine.engine.context import EngineContext
from agent_engine.engine.plans import insert_plan_txn, validate_plan
from agent_engine.engine.settle import refresh_claimable
from agent_engine.errors import IdempotencyConflictError, InputValidationError
from agent_engine.executors.workspace import check_workspace_root
from agent_engine.storage.audit import append_event_txn, list_events_txn, take_notices
from agent_engine.storage.collecting import CollectingSession
from agent_engine.storage.database import read_transaction, transaction
from agent_engine.storage.run_changes import DuplicateRowError, fill_defaults
from agent_engine.storage.runs import (
    find_run_by_idempotency_key_txn,
    get_run_txn,
    list_runs_txn,
    list_steps_txn,
)
from agent_engine.storage.tables import AgentRun, AuditEvent, PlanVersion, Step
from agent_engine.storage.transitions import move_run_txn, move_step_txn

MAX_GOAL_CHARS = 20_000


class CreateRunRequest(StorableModel):
    """The body of ``POST /v1/agent-runs``."""

    model_config = ConfigDict(extra="forbid")

    goal: str = Field(min_length=1, max_length=MAX_GOAL_CHARS)
    workspace: str | None = Field(default=None, min_length=1, max_length=4096)
    steps: list[PlanStep] | None = Field(default=None, min_length=1, max_length=500)
    budget_usd: Decimal | None = Field(default=None, ge=0, max_digits=20, decimal_places=9)
    budget_tokens: int | None = Field(default=None, ge=0)
    metadata: dict[str, Any] = Field(default_factory=dict)
    approval_policy: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    plan_approval: bool = False
    auto_start: bool = False
    max_parallel: int = Field(default=4, ge=1, le=64)


@dataclass(frozen=True)
class RunView:
    run: AgentRun
    steps: list[Step]
    replayed: bool = False  # an idempotent retry returned the run created earlier


def _plan_from_request(request: CreateRunRequest) -> Plan | None:
    if request.steps is None:
        return None
    try:
        return Plan(steps=request.steps)
    except ValueError as exc:
        raise InputValidationError(str(exc)) from exc


async def create_run(
    ctx: EngineContext, request: CreateRunRequest, *, actor: str, idempotency_key: str | None
) -> RunView:
    """Create a run; with explicit steps it is PLANNED at once, else CREATED (planned later).

    The same ``Idempotency-Key`` with the same body returns the first run; with another body → 409.
    """
    request_hash = content_hash(request.model_dump(mode="json"))
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
    plan = _plan_from_request(request)
    if plan is not None:
        validate_plan(plan, ctx.registry, has_workspace=workspace is not None)
    new = _new_run(ctx, request, plan, workspace, actor, idempotency_key, request_hash)
    # An in-process worker may claim the run's first steps in this very write.
    local = ctx.hand_off
    taken = await local.claim_new(new.run, new.steps) if local is not None else None
    if taken is not None:
        new = new.claimed(taken)
    written = False
    try:
        await ctx.run_changes.insert_run(new.rows, new.audit_rows)
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
    ctx.publish_locally(take_notices(new.announced))
    return RunView(new.run, new.steps)


@dataclass(frozen=True)
class _NewRun:
    """A new run's rows, built by the usual state-machine code, to be written in one round trip."""

    run: AgentRun
    steps: list[Step]
    rows: list[object]  # run, plan version, steps
    audit_rows: list[dict[str, Any]]
    announced: dict[str, Any]  # the session's info: its notifications

    def claimed(self, taken: NewRunClaim) -> _NewRun:
        """The same run with its first steps claimed (``taken`` holds claimed copies)."""
        swap: dict[int, object] = {id(self.run): taken.run}
        swap.update({id(old): new for old, new in zip(self.steps, taken.steps, strict=True)})
        return _NewRun(
            run=taken.run,
            steps=taken.steps,
            rows=[swap.get(id(row), row) for row in self.rows],
            audit_rows=self.audit_rows + taken.collected.audit_rows,
            announced=taken.collected.info,
        )


def _new_run(
    ctx: EngineContext,
    request: CreateRunRequest,
    plan: Plan | None,
    workspace: str | None,
    actor: str,
    idempotency_key: str | None,
    request_hash: str,
) -> _NewRun:
    session = CollectingSession(accepts=(AgentRun, PlanVersion, Step))
    run = AgentRun(
        id=uuid.uuid4(),
        goal=request.goal,
        status=RunStatus.CREATED.value,
        workspace=workspace,
        budget_usd=request.budget_usd,
        budget_tokens=request.budget_tokens,
        total_cost_usd=Decimal(0),
        input_tokens=0,
        output_tokens=0,
        created_by=actor,
        metadata_=request.metadata,
        options={
            "approval_policy": request.approval_policy.model_dump(mode="json"),
            "plan_approval": request.plan_approval,
            "auto_start": request.auto_start,
        },
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        started=request.auto_start,
        max_parallel=request.max_parallel,
        audit_seq=0,
        plan_version=0,
    )
    session.add(run)
    append_event_txn(
        session,
        run,
        "run.created",
        {"goal": request.goal, "workspace": workspace, "request_hash": request_hash},
        actor=actor,
    )
    steps: list[Step] = []
    if plan is not None:
        move_run_txn(session, run, RunStatus.PLANNING, actor=actor, reason="explicit plan")
        steps = insert_plan_txn(
            session,
            run,
            plan,
            ctx.registry,
            policy=request.approval_policy,
            actor=actor,
            source="explicit",
        )
        move_run_txn(session, run, RunStatus.PLANNED, actor=actor)
        if request.plan_approval:
            move_run_txn(
                session,
                run,
                RunStatus.AWAITING_APPROVAL,
                actor=actor,
                reason="plan approval",
            )
    refresh_claimable(run, steps)
    for row in session.added:
        fill_defaults(row)  # as written: what a worker claiming it at once works from
    return _NewRun(run, steps, session.added, session.audit_rows, session.info)


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
        return RunView(run, await list_steps_txn(session, run.id), replayed=True)


async def get_run(ctx: EngineContext, run_id: str) -> RunView:
    async with read_transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id)
        return RunView(run, await list_steps_txn(session, run.id))


def encode_cursor(run: AgentRun) -> str:
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
    ctx: EngineContext, *, statuses: Sequence[RunStatus], cursor: str | None, limit: int
) -> tuple[Sequence[AgentRun], str | None]:
    """One page of runs, newest first, and the cursor of the next page (None at the end)."""
    after = decode_cursor(cursor) if cursor else None
    async with read_transaction(ctx.sessions) as session:
        runs = await list_runs_txn(
            session, statuses=[s.value for s in statuses], after=after, limit=limit + 1
        )
    page = runs[:limit]
    next_cursor = encode_cursor(page[-1]) if len(runs) > limit else None
    return page, next_cursor


async def list_steps(ctx: EngineContext, run_id: str) -> list[Step]:
    async with read_transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id)
        return await list_steps_txn(session, run.id)


async def cancel_run(ctx: EngineContext, run_id: str, *, actor: str, reason: str | None) -> RunView:
    """Cancel the run and every step that has not finished, in one transaction."""
    async with transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id, lock=True)
        move_run_txn(session, run, RunStatus.CANCELLED, actor=actor, reason=reason)
        steps = await list_steps_txn(session, run.id)
        for step in steps:
            if StepStatus(step.status) not in TERMINAL_STEP_STATES:
                move_step_txn(session, run, step, StepStatus.CANCELLED, actor=actor, reason=reason)
                step.lease_owner = None
                step.lease_expires_at = None
        refresh_claimable(run, steps)
        return RunView(run, steps)


async def list_audit(
    ctx: EngineContext, run_id: str, *, after_seq: int, limit: int
) -> Sequence[AuditEvent]:
    async with read_transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id)
        return await list_events_txn(session, run.id, after_seq=after_seq, limit=limit)
