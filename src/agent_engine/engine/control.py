"""Handing runs to the workers, retrying a failed step by hand, and resuming a failed run."""

from __future__ import annotations

from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.states import RUN_OVER_STATES, TERMINAL_RUN_STATES, RunStatus, StepStatus
from agent_engine.domain.transitions import append_event, move_run, move_step
from agent_engine.engine.context import EngineContext
from agent_engine.engine.locking import change_run
from agent_engine.engine.runs import RunView
from agent_engine.engine.settle import refresh_claimable, settle_run
from agent_engine.errors import ConflictError, InvalidTransitionError
from agent_engine.tracing import new_span_id


async def start_run(ctx: EngineContext, run_id: str, *, actor: str) -> RunView:
    """Hand the run to the workers (they plan it first if it has no plan). Idempotent."""
    async with change_run(ctx, run_id) as locked:
        changes = locked.changes
        run = changes.run
        if RunStatus(run.status) in RUN_OVER_STATES:
            raise InvalidTransitionError(
                "run",
                run.status,
                RunStatus.RUNNING.value,
                detail=f"run {run.id} is '{run.status}' and cannot be started",
            )
        if not run.started:
            run.started = True
            append_event(changes, run, "run.started", {"status": run.status}, actor=actor)
        refresh_claimable(run, changes.steps)
    return RunView(run, changes.steps)


def _reopen_step(
    changes: ChangeSet, run: RunRecord, step: StepRecord, *, actor: str, reason: str
) -> None:
    # A step retried by hand gets one more attempt than it has used, whatever its policy said.
    step.max_attempts = max(step.max_attempts, step.attempt + 1)
    step.not_before = None
    step.resolved_input = None  # re-resolve: the inputs it references may have been redone
    move_step(changes, run, step, StepStatus.PENDING, actor=actor, reason=reason)


def _new_run_span(run: RunRecord) -> None:
    """A failed run going on: its span was emitted when it failed, so what follows hangs from
    a new one (emitted at its next end) in the same trace."""
    if run.trace_span_id is not None:
        run.trace_span_id = new_span_id()


async def retry_step(ctx: EngineContext, run_id: str, step_id: str, *, actor: str) -> RunView:
    """Put a FAILED step back to PENDING; a run that failed because of it runs again."""
    async with change_run(ctx, run_id) as locked:
        changes = locked.changes
        run = changes.run
        step = locked.step(step_id)
        if RunStatus(run.status) in TERMINAL_RUN_STATES:
            raise InvalidTransitionError(
                "run",
                run.status,
                RunStatus.RUNNING.value,
                detail=f"run {run.id} is '{run.status}': its steps can no longer be retried",
            )
        if StepStatus(step.status) is not StepStatus.FAILED:
            raise InvalidTransitionError("step", step.status, StepStatus.PENDING.value)
        _reopen_step(changes, run, step, actor=actor, reason="retried by hand")
        if RunStatus(run.status) is RunStatus.FAILED:
            run.error = None
            _new_run_span(run)
            move_run(changes, run, RunStatus.RUNNING, actor=actor, reason="step retried")
        settle_run(changes, run, changes.steps, actor=actor)
    return RunView(run, changes.steps)


async def resume_run(ctx: EngineContext, run_id: str, *, actor: str) -> RunView:
    """Resume a FAILED run from its first unfinished step: its failed steps get another attempt.

    A run that failed because a human rejected a step is not resumable (that was a decision).
    """
    async with change_run(ctx, run_id) as locked:
        changes = locked.changes
        run, steps = changes.run, changes.steps
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
                _reopen_step(changes, run, step, actor=actor, reason="run resumed")
        run.error = None
        _new_run_span(run)
        move_run(changes, run, RunStatus.RUNNING, actor=actor, reason="resumed")
        settle_run(changes, run, steps, actor=actor)
    return RunView(run, steps)
