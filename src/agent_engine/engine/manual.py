"""Stepping a run by hand: ``POST /v1/agent-runs/{id}/execute`` runs its next ready step now,
in the request, through the same decisions and writes as a worker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta

from agent_engine import metrics
from agent_engine.domain.adaptive import bounds_of, revision_due
from agent_engine.domain.clock import utcnow
from agent_engine.domain.records import RunRecord, StepRecord
from agent_engine.domain.states import RUNNABLE_RUN_STATES, RunStatus, StepStatus
from agent_engine.engine.claiming import Claim, Parked, lease_until, take_ready
from agent_engine.engine.context import EngineContext, lazy_llm
from agent_engine.engine.locking import change_run
from agent_engine.engine.revisions import revise_run
from agent_engine.engine.settle import plan_awaits_approval, settle_run
from agent_engine.engine.stepping import record_result, run_claimed
from agent_engine.errors import ConflictError, InvalidTransitionError
from agent_engine.storage.claims import extend_leases_txn
from agent_engine.storage.database import transaction


class NoReadyStepError(ConflictError):
    code = "no_ready_step"
    title = "No step is ready"


def check_runnable(run: RunRecord) -> None:
    """Refuse to start steps of a run that is not running, or whose plan awaits approval."""
    status = RunStatus(run.status)
    if status not in RUNNABLE_RUN_STATES:
        raise InvalidTransitionError("run", status.value, RunStatus.RUNNING.value)
    if plan_awaits_approval(run):
        raise ConflictError(
            f"run {run.id}: plan version {run.plan_version} is waiting for approval "
            f"(POST /v1/agent-runs/{run.id}/plan/approve)",
            run_id=str(run.id),
        )


def _why_nothing_ready(run: RunRecord, steps: list[StepRecord]) -> str:
    busy = [
        f"step {s.step_number} is {s.status}"
        for s in steps
        if s.status in (StepStatus.RUNNING, StepStatus.AWAITING_APPROVAL)
    ]
    waiting = [
        f"step {s.step_number} retries at {s.not_before.isoformat()}"
        for s in steps
        if s.not_before is not None and s.status == StepStatus.PENDING
    ]
    detail = "; ".join(busy + waiting) or "no step has all its dependencies completed"
    return f"run {run.id} has no step ready to execute: {detail}"


async def execute_one(ctx: EngineContext, run_id: str, *, actor: str) -> uuid.UUID:
    """Execute the run's next ready step synchronously (or park it for approval); its id."""
    llm = lazy_llm(ctx, None)
    lease = timedelta(seconds=ctx.settings.worker_lease_s)
    work: list[Claim | Parked] = []
    for _ in range(2):  # a revision left due (adaptive planning) is made first, in the request
        async with change_run(ctx, run_id) as locked:
            changes = locked.changes
            run = changes.run
            revising = RunStatus(run.status) is RunStatus.PLANNING and revision_due(run) is not None
            if not revising:
                check_runnable(run)
                work = await take_ready(
                    ctx, changes, locked.read, owner=actor, limit=1, lease=lease, llm=llm
                )
                if not work:
                    detail = _why_nothing_ready(run, changes.steps)
                    raise NoReadyStepError(detail, run_id=str(run.id))
                settle_run(changes, run, changes.steps, actor=actor)
        if not revising:
            break
        await revise_run(ctx, run_id, actor=actor)
    else:
        check_runnable(run)  # still waiting for its revision: refused as any run not running
    adaptive = bounds_of(run) is not None
    item = work[0]
    if isinstance(item, Parked):
        return item.step_id
    # The synchronous path heartbeats too, so a long command is never taken for abandoned.
    heartbeat = asyncio.create_task(_keep_lease(ctx, item, actor, lease))
    try:
        result = await run_claimed(ctx, item)
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
    if result is not None:
        await record_result(ctx, item, result, actor=actor)
        metrics.observe_step(item.step_type, result.error is not None, result.latency_ms)
        if adaptive and ctx.registry[item.step_type].observes:
            # By hand, the revision the step may have made due is made before answering.
            await revise_run(ctx, str(item.run_id), actor=actor)
    return item.step_id


async def _keep_lease(ctx: EngineContext, claim: Claim, owner: str, lease: timedelta) -> None:
    while True:
        await asyncio.sleep(lease.total_seconds() / 3)
        async with transaction(ctx.sessions) as session:
            await extend_leases_txn(
                session, owner, {claim.step_id: claim.fence}, lease_until(utcnow(), lease)
            )
