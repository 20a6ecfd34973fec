"""Deriving a run's status from its steps after any step changes (one rule for every path)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.states import (
    SATISFIED_STEP_STATES,
    TERMINAL_RUN_STATES,
    TERMINAL_STEP_STATES,
    RunStatus,
    StepStatus,
)
from agent_engine.storage.tables import AgentRun, Step
from agent_engine.storage.transitions import move_run_txn
from agent_engine.storage.types import utcnow

# Steps in these states let their dependents proceed. An optional step that failed or was rejected
# counts too: the run "continues without it" (a reference to its output then fails loudly).
_FAILED_FOR_GOOD = frozenset({StepStatus.FAILED, StepStatus.REJECTED})
_FINISHED = TERMINAL_STEP_STATES | {StepStatus.FAILED}
_STARTABLE = frozenset({StepStatus.PENDING, StepStatus.APPROVED})


# A step that stays FAILED has failed for good: when its policy allows another attempt, the same
# transaction that records the failure moves it back to PENDING.


# Status columns hold the enums' string values; StrEnum members compare and hash as those strings,
# so the checks below test the column directly (these run for every step on every record).


def is_satisfied(step: Step) -> bool:
    status = step.status
    return status in SATISFIED_STEP_STATES or (step.optional and status in _FAILED_FOR_GOOD)


def is_finished(step: Step) -> bool:
    """Terminal, or failed for good."""
    return step.status in _FINISHED


def ready_steps(steps: Sequence[Step]) -> list[Step]:
    """Steps that may run now: pending or approved, with every dependency satisfied.

    ``steps`` may hold only the run's open steps (see ``list_open_steps_txn``): a dependency
    that is not among them has finished, and in a run that has not failed that means satisfied.
    """
    by_number = {step.step_number: step for step in steps}
    ready = []
    for step in steps:  # a plain loop: this runs for every open step on every record
        if step.status not in _STARTABLE:
            continue
        for dependency in step.depends_on:
            other = by_number.get(dependency)
            if other is not None and not is_satisfied(other):
                break
        else:
            ready.append(step)
    return ready


def plan_awaits_approval(run: AgentRun) -> bool:
    """A run created with ``plan_approval`` whose current plan version no human approved yet."""
    return bool(run.options.get("plan_approval")) and run.plan_approved_version != run.plan_version


def refresh_claimable(run: AgentRun, steps: Sequence[Step]) -> None:
    """Keep ``run.claimable_at`` (what workers look for) equal to when its next step is ready."""
    if not run.started or run.status in TERMINAL_RUN_STATES or plan_awaits_approval(run):
        run.claimable_at = None
        return
    if run.status == RunStatus.CREATED:
        run.claimable_at = utcnow()  # a worker plans it
        return
    moments = [step.not_before or utcnow() for step in ready_steps(steps)]
    expiries = [
        s.lease_expires_at
        for s in steps
        if s.status == StepStatus.RUNNING and s.lease_expires_at is not None
    ]
    candidates = moments + expiries
    run.claimable_at = min(candidates) if candidates else None


def blocking_failure(steps: Sequence[Step]) -> Step | None:
    """The first required step that failed for good or was rejected."""
    for step in steps:
        if step.optional:
            continue
        if step.status in _FAILED_FOR_GOOD:
            return step
    return None


def settle_run_txn(
    session: AsyncSession, run: AgentRun, steps: Sequence[Step], *, actor: str
) -> None:
    """Move the run to the status its steps imply, and refresh what workers may claim."""
    settle_status_txn(session, run, steps, actor=actor)
    refresh_claimable(run, steps)


def settle_status_txn(
    session: AsyncSession, run: AgentRun, steps: Sequence[Step], *, actor: str
) -> None:
    """Move the run to the status its steps imply: failed, completed, waiting or running."""
    status = RunStatus(run.status)
    if status not in (RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL):
        return
    # One pass for the three questions (this runs twice on every record): the first required
    # step that failed for good (as ``blocking_failure``), whether all finished, whether any waits.
    failed: Step | None = None
    finished = True
    waiting = False
    for step in steps:
        step_status = step.status
        if step_status in _FINISHED:
            if failed is None and step_status in _FAILED_FOR_GOOD and not step.optional:
                failed = step
        else:
            finished = False
            waiting = waiting or step_status == StepStatus.AWAITING_APPROVAL
    if failed is not None:
        move_run_txn(
            session,
            run,
            RunStatus.FAILED,
            actor=actor,
            reason=f"step {failed.step_number} ({failed.step_type}) {failed.status}",
        )
        run.error = {
            "step_number": failed.step_number,
            "step_status": failed.status,
            "error": failed.error,
        }
        return
    if finished:
        move_run_txn(session, run, RunStatus.COMPLETED, actor=actor)
        return
    if waiting and status is RunStatus.RUNNING:
        move_run_txn(session, run, RunStatus.AWAITING_APPROVAL, actor=actor)
    elif not waiting and status is RunStatus.AWAITING_APPROVAL:
        move_run_txn(session, run, RunStatus.RUNNING, actor=actor)
