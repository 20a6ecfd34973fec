"""The step runner: claim a ready step, execute it outside any transaction, record the result.

The synchronous ``execute`` endpoint and the workers share these three phases. Each phase that
writes is one transaction holding the run's row, so a step change, the run status it implies and
their audit events commit together or not at all.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from agent_engine.domain.canonical import content_hash
from agent_engine.domain.refs import StepReferenceError, resolve_references
from agent_engine.domain.states import RunStatus, StepStatus
from agent_engine.engine.context import EngineContext
from agent_engine.engine.settle import ready_steps, settle_run_txn
from agent_engine.errors import (
    ConflictError,
    EngineError,
    ExecutorError,
    InvalidTransitionError,
    StaleFenceError,
)
from agent_engine.executors.base import ExecutorContext
from agent_engine.llm.base import LLMCallRecord, LLMClient
from agent_engine.storage.database import transaction
from agent_engine.storage.ledger import record_calls_txn
from agent_engine.storage.runs import get_run_txn, get_step_txn, list_steps_txn
from agent_engine.storage.tables import AgentRun, Step
from agent_engine.storage.transitions import move_run_txn, move_step_txn
from agent_engine.storage.types import utcnow

logger = logging.getLogger(__name__)

RUNNABLE_RUN_STATES = (RunStatus.PLANNED, RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL)
LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class Claim:
    """A step taken for execution: the fence it was taken with guards every later write."""

    run_id: uuid.UUID
    step_id: uuid.UUID
    step_number: int
    step_type: str
    fence: int
    resolved_input: dict[str, Any]
    workspace: str | None
    remaining_budget: Any


@dataclass(frozen=True)
class ApprovalNeeded:
    """The next step must be shown to a human first; its preview is computed outside the lock."""

    run_id: uuid.UUID
    step_id: uuid.UUID
    step_number: int
    step_type: str
    resolved_input: dict[str, Any]
    workspace: str | None


@dataclass(frozen=True)
class FailedAtClaim:
    """The step could not even start (a reference that does not resolve); it is recorded failed."""

    step_id: uuid.UUID


class NoReadyStepError(ConflictError):
    code = "no_ready_step"
    title = "No step is ready"


def _outputs(steps: list[Step]) -> dict[int, Any]:
    return {s.step_number: s.output_data for s in steps if s.output_data is not None}


def _resolve(step: Step, steps: list[Step]) -> dict[str, Any]:
    if step.resolved_input is not None:
        return step.resolved_input  # resolved once, recorded, never re-resolved
    try:
        resolved: dict[str, Any] = resolve_references(step.input_data, _outputs(steps))
    except StepReferenceError as exc:
        raise ExecutorError(f"step {step.step_number}: {exc}") from exc
    return resolved


async def claim_next_txn(
    ctx: EngineContext, run_id: str | uuid.UUID, *, owner: str
) -> Claim | ApprovalNeeded | FailedAtClaim:
    """Take the run's next ready step (lowest number), or say it needs approval first."""
    async with transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id, lock=True)
        status = RunStatus(run.status)
        if status not in RUNNABLE_RUN_STATES:
            raise InvalidTransitionError("run", status.value, RunStatus.RUNNING.value)
        if run.options.get("plan_approval") and run.plan_approved_version != run.plan_version:
            raise ConflictError(
                f"run {run.id}: plan version {run.plan_version} is waiting for approval "
                f"(POST /v1/agent-runs/{run.id}/plan/approve)",
                run_id=str(run.id),
            )
        steps = await list_steps_txn(session, run.id)
        ready = ready_steps(steps)
        if not ready:
            raise NoReadyStepError(_why_nothing_ready(run, steps), run_id=str(run.id))
        step = ready[0]
        try:
            resolved = _resolve(step, steps)
        except ExecutorError as exc:
            _start(session, run, step, owner)
            _fail_txn(session, run, step, exc, actor=owner)
            settle_run_txn(session, run, steps, actor=owner)
            return FailedAtClaim(step.id)
        if StepStatus(step.status) is StepStatus.PENDING and step.requires_approval:
            return ApprovalNeeded(
                run.id, step.id, step.step_number, step.step_type, resolved, run.workspace
            )
        step.resolved_input = resolved
        _start(session, run, step, owner)
        remaining = None
        if run.budget_usd is not None:
            remaining = run.budget_usd - run.total_cost_usd
        return Claim(
            run.id,
            step.id,
            step.step_number,
            step.step_type,
            step.fence,
            resolved,
            run.workspace,
            remaining,
        )


def _start(session: Any, run: AgentRun, step: Step, owner: str) -> None:
    if RunStatus(run.status) is RunStatus.PLANNED:
        move_run_txn(session, run, RunStatus.RUNNING, actor=owner)
    step.attempt += 1
    step.fence += 1
    step.lease_owner = owner
    step.lease_expires_at = utcnow() + LEASE
    move_step_txn(session, run, step, StepStatus.RUNNING, actor=owner, fence=step.fence)


async def request_approval(
    ctx: EngineContext, need: ApprovalNeeded, preview: dict[str, Any], *, actor: str
) -> None:
    """Park the step in AWAITING_APPROVAL with exactly what the approver will be shown."""
    async with transaction(ctx.sessions) as session:
        run = await get_run_txn(session, need.run_id, lock=True)
        step = await get_step_txn(session, run.id, need.step_id)
        if StepStatus(step.status) is not StepStatus.PENDING:
            return  # someone else moved it meanwhile; nothing to ask
        step.resolved_input = need.resolved_input
        step.preview = preview
        if RunStatus(run.status) is RunStatus.PLANNED:
            move_run_txn(session, run, RunStatus.RUNNING, actor=actor)
        move_step_txn(
            session,
            run,
            step,
            StepStatus.AWAITING_APPROVAL,
            actor=actor,
            rule=step.approval_rule,
            shown=preview,
        )
        settle_run_txn(session, run, await list_steps_txn(session, run.id), actor=actor)


def executor_context(
    ctx: EngineContext, run_id: uuid.UUID, step_number: int, workspace: str | None, llm: LLMClient
) -> ExecutorContext:
    from pathlib import Path

    return ExecutorContext(
        run_id=str(run_id),
        step_number=step_number,
        workspace_root=Path(workspace) if workspace else None,
        llm=llm,
        logger=logging.getLogger(f"agent_engine.step.{run_id}.{step_number}"),
        limits=ctx.limits,
    )


@dataclass(frozen=True)
class StepResult:
    output: dict[str, Any] | None
    error: EngineError | None
    calls: list[LLMCallRecord]
    latency_ms: float


async def run_claimed(
    ctx: EngineContext, claim: Claim, prior_outputs: dict[int, Any] | None = None
) -> StepResult:
    """Execute a claimed step. Never raises for the step's own failure: that is a result."""
    executor = ctx.registry[claim.step_type]
    llm = ctx.llm_factory(claim.remaining_budget)
    context = executor_context(ctx, claim.run_id, claim.step_number, claim.workspace, llm)
    context.prior_outputs = prior_outputs or {}
    started = time.perf_counter()
    output: dict[str, Any] | None = None
    error: EngineError | None = None
    try:
        parsed = executor.validate_input(claim.resolved_input)
        result = await executor.execute(parsed, context)
        output = result.model_dump(mode="json")
    except ValidationError as exc:
        error = ExecutorError(f"step {claim.step_number}: resolved input is invalid: {exc}")
    except EngineError as exc:
        error = exc
    except Exception as exc:  # a plugin's bug must fail its step, not the engine
        logger.exception("executor %s crashed", claim.step_type)
        error = ExecutorError(f"executor {claim.step_type} crashed: {type(exc).__name__}: {exc}")
    latency_ms = (time.perf_counter() - started) * 1000
    return StepResult(output, error, list(llm.calls), latency_ms)


def _fail_txn(session: Any, run: AgentRun, step: Step, error: EngineError, *, actor: str) -> None:
    step.error = {"code": error.code, "message": error.detail, **_jsonable(error.data)}
    move_step_txn(session, run, step, StepStatus.FAILED, actor=actor, error=step.error)
    if step.attempt < step.max_attempts and not getattr(error, "permanent", False):
        move_step_txn(session, run, step, StepStatus.PENDING, actor=actor, reason="retry")


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if isinstance(v, (str, int, float, bool, list, dict))}


async def record_result(
    ctx: EngineContext, claim: Claim, result: StepResult, *, actor: str
) -> None:
    """Write the step's result if the claim's fence is still current; the ledger in any case."""
    async with transaction(ctx.sessions) as session:
        run = await get_run_txn(session, claim.run_id, lock=True)
        step = await get_step_txn(session, run.id, claim.step_id, lock=True)
        # Calls that happened cost money whether or not this attempt may still write its result.
        record_calls_txn(session, run, step, result.calls)
        stale = step.fence != claim.fence or StepStatus(step.status) is not StepStatus.RUNNING
        if stale:
            stale_error = StaleFenceError(
                f"step {step.step_number}: attempt with fence {claim.fence} is no longer current "
                f"(fence {step.fence}, status {step.status})",
            )
            if StepStatus(step.status) is StepStatus.CANCELLED:
                return
            raise stale_error
        step.latency_ms = result.latency_ms
        step.lease_owner = None
        step.lease_expires_at = None
        if result.error is None:
            step.output_data = result.output
            step.output_hash = content_hash(result.output)
            move_step_txn(
                session,
                run,
                step,
                StepStatus.COMPLETED,
                actor=actor,
                output_hash=step.output_hash,
                cost_usd=format(step.cost_usd, "f"),
            )
        else:
            _fail_txn(session, run, step, result.error, actor=actor)
        settle_run_txn(session, run, await list_steps_txn(session, run.id), actor=actor)


def _why_nothing_ready(run: AgentRun, steps: list[Step]) -> str:
    busy = [
        f"step {s.step_number} is {s.status}"
        for s in steps
        if StepStatus(s.status) in (StepStatus.RUNNING, StepStatus.AWAITING_APPROVAL)
    ]
    detail = "; ".join(busy) if busy else "no step has all its dependencies completed"
    return f"run {run.id} has no step ready to execute: {detail}"


async def execute_one(ctx: EngineContext, run_id: str, *, actor: str) -> uuid.UUID:
    """Execute the run's next ready step synchronously (or park it for approval); its id."""
    claim = await claim_next_txn(ctx, run_id, owner=actor)
    if isinstance(claim, FailedAtClaim):
        return claim.step_id
    if isinstance(claim, ApprovalNeeded):
        executor = ctx.registry[claim.step_type]
        llm = ctx.llm_factory(None)
        context = executor_context(ctx, claim.run_id, claim.step_number, claim.workspace, llm)
        try:
            preview = await executor.preview(executor.validate_input(claim.resolved_input), context)
        except (EngineError, ValidationError) as exc:
            preview = {"input": claim.resolved_input, "preview_error": str(exc)}
        await request_approval(ctx, claim, preview, actor=actor)
        return claim.step_id
    result = await run_claimed(ctx, claim)
    await record_result(ctx, claim, result, actor=actor)
    return claim.step_id
