"""Handing runs to the workers, retrying a failed step by hand, and resuming a failed run."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.states import TERMINAL_RUN_STATES, RunStatus, StepStatus
from agent_engine.engine.context import EngineContext
from agent_engine.engine.runs import RunView
from agent_engine.engine.settle import refresh_claimable, settle_run_txn
from agent_engine.errors import ConflictError, InvalidTransitionError
from agent_engine.storage.audit import append_event_txn
from agent_engine.storage.database import transaction
from agent_engine.storage.runs import get_run_txn, get_step_txn, list_steps_txn
from agent_engine.storage.tables import AgentRun, Step
from agent_engine.storage.transitions import move_run_txn, move_step_txn


async def start_run(ctx: EngineContext, run_id: str, *, actor: str) -> RunView:
    """Hand the run to the workers (they plan it first if it has no plan). Idempotent."""
    async with transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id, lock=True)
        if (
            RunStatus(run.status) in TERMINAL_RUN_STATES
            or RunStatus(run.status) is RunStatus.FAILED
        ):
            raise InvalidTransitionError(
                "run",
                run.status,
                RunStatus.RUNNING.value,
                detail=f"run {run.id} is '{run.status}' and cannot be started",
            )
        steps = await list_steps_txn(session, run.id)
        if not run.started:
            run.started = True
            append_event_txn(session, run, "run.started", {"status": run.status}, actor=actor)
        refresh_claimable(run, steps)
        return RunView(run, steps)


def _reopen_step(
    session: AsyncSession, run: AgentRun, step: Step, *, actor: str, reason: str
) -> None:
    # A step retried by hand gets one more attempt than it has used, whatever its policy said.
    step.max_attempts = max(step.max_attempts, step.attempt + 1)
    step.not_before = None
    step.resolved_input = None  # re-resolve: the inputs it references may have been redone
    move_step_txn(session, run, step, StepStatus.PENDING, actor=actor, reason=reason)


async def retry_step(ctx: EngineContext, run_id: str, step_id: str, *, actor: str) -> RunView:
    """Put a FAILED step back to PENDING; a run that failed because of it runs again."""
    async with transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id, lock=True)
        step = await get_step_txn(session, run.id, step_id)
        if RunStatus(run.status) in TERMINAL_RUN_STATES:
            raise InvalidTransitionError(
                "run",
                run.status,
                RunStatus.RUNNING.value,
                detail=f"run {run.id} is '{run.status}': its steps can no longer be retried",
            )
        if StepStatus(step.status) is not StepStatus.FAILED:
            raise InvalidTransitionError("step", step.status, StepStatus.PENDING.value)
        _reopen_step(session, run, step, actor=actor, reason="retried by hand")
        if RunStatus(run.status) is RunStatus.FAILED:
            run.error = None
            move_run_txn(session, run, RunStatus.RUNNING, actor=actor, reason="step retried")
        steps = await list_steps_txn(session, run.id)
        settle_run_txn(session, run, steps, actor=actor)
        return RunView(run, steps)


async def resume_run(ctx: EngineContext, run_id: str, *, actor: str) -> RunView:
    """Resume a FAILED run from its first unfinished step: its failed steps get another attempt.

    A run that failed because a human rejected a step is not resumable (that was a decision).
    """
    async with transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id, lock=True)
        steps = await list_steps_txn(session, run.id)
        if RunStatus(run.status) is not RunStatus.FAILED:
            raise InvalidTransitionError("run", run.status, RunStatus.RUNNING.value)
        if not steps:
            raise ConflictError(f"run {run.id} failed before it had a plan; create a new run")
        rejected = [
            s for s in steps if StepStatus(s.status) is StepStatus.REJECTED and not s.optional
        ]
        if rejected:
            raise ConflictError(
                f"run {run.id} failed because step {rejected[0].step_number} was rejected; "
                "a rejection is not undone by resuming",
                run_id=str(run.id),
            )
        for step in steps:
            if StepStatus(step.status) is StepStatus.FAILED and not step.optional:
                _reopen_step(session, run, step, actor=actor, reason="run resumed")
        run.error = None
        move_run_txn(session, run, RunStatus.RUNNING, actor=actor, reason="resumed")
        settle_run_txn(session, run, steps, actor=actor)
        return RunView(run, steps)
