"""Deriving a run's status from its steps after any step changes (one rule for every path)."""

from __future__ import annotations

from collections.abc import Sequence

from agent_engine.domain.clock import utcnow
from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.states import (
    FAILED_FOR_GOOD_STEP_STATES,
    FINISHED_STEP_STATES,
    SATISFIED_STEP_STATES,
    STARTABLE_STEP_STATES,
    TERMINAL_RUN_STATES,
    UNDER_WAY_RUN_STATES,
    RunStatus,
    StepStatus,
)
from agent_engine.domain.transitions import move_run

# An optional step that failed or was rejected lets its dependents proceed too: the run
# "continues without it" (a reference to its output then fails loudly).


# A step that stays FAILED has failed for good: when its policy allows another attempt, the same
# transaction that records the failure moves it back to PENDING.


# Status columns hold the enums' string values; StrEnum members compare and hash as those strings,
# so the checks below test the column directly (these run for every step on every record).


def is_satisfied(step: StepRecord) -> bool:
    status = step.status
    return status in SATISFIED_STEP_STATES or (
        step.optional and status in FAILED_FOR_GOOD_STEP_STATES
    )


def is_finished(step: StepRecord) -> bool:
    """Terminal, or failed for good."""
    return step.status in FINISHED_STEP_STATES


def ready_steps(steps: Sequence[StepRecord]) -> list[StepRecord]:
    """Steps that may run now: pending or approved, with every dependency satisfied.

    ``steps`` may hold only the run's open steps (see ``load_steps_txn``): a dependency
    that is not among them has finished, and in a run that has not failed that means satisfied.
    """
    by_number = {step.step_number: step for step in steps}
    ready = []
    for step in steps:  # a plain loop: this runs for every open step on every record
        if step.status not in STARTABLE_STEP_STATES:
            continue
        for dependency in step.depends_on:
            other = by_number.get(dependency)
            if other is not None and not is_satisfied(other):
                break
        else:
            ready.append(step)
    return ready


def plan_awaits_approval(run: RunRecord) -> bool:
    """A run created with ``plan_approval`` whose current plan version no human approved yet."""
    return bool(run.options.get("plan_approval")) and run.plan_approved_version != run.plan_version


def refresh_claimable(run: RunRecord, steps: Sequence[StepRecord]) -> None:
    """Keep ``run.claimable_at`` (what workers look for) equal to when its next step is ready."""
    if not run.started or run.status in TERMINAL_RUN_STATES:
        run.claimable_at = None
        return
    if run.status == RunStatus.CREATED:
        # A worker plans it; a plan that then waits for approval is not claimable (below).
        run.claimable_at = utcnow()
        return
    if run.status == RunStatus.PLANNING:
        # A revision is due: a worker takes the run to revise it, keeping its lease if one has.
        run.claimable_at = run.claimable_at or utcnow()
        return
    if plan_awaits_approval(run):
        run.claimable_at = None
        return
    moments = [step.not_before or utcnow() for step in ready_steps(steps)]
    expiries = [
        s.lease_expires_at
        for s in steps
        if s.status == StepStatus.RUNNING and s.lease_expires_at is not None
    ]
    candidates = moments + expiries
    run.claimable_at = min(candidates) if candidates else None


def blocking_failure(steps: Sequence[StepRecord]) -> StepRecord | None:
    """The first required step that failed for good or was rejected."""
    for step in steps:
        if step.optional:
            continue
        if step.status in FAILED_FOR_GOOD_STEP_STATES:
            return step
    return None


def settle_run(
    changes: ChangeSet, run: RunRecord, steps: Sequence[StepRecord], *, actor: str
) -> None:
    """Move the run to the status its steps imply, and refresh what workers may claim."""
    settle_status(changes, run, steps, actor=actor)
    refresh_claimable(run, steps)


def settle_status(
    changes: ChangeSet, run: RunRecord, steps: Sequence[StepRecord], *, actor: str
) -> None:
    """Move the run to the status its steps imply: failed, completed, waiting or running."""
    status = RunStatus(run.status)
    if status not in UNDER_WAY_RUN_STATES or run.budget_pause is not None:
        return  # (a run whose planning waits for budget has no steps to follow)
    # One pass for the three questions (this runs twice on every record): the first required
    # step that failed for good (as ``blocking_failure``), whether all finished, whether any waits.
    failed: StepRecord | None = None
    finished = True
    waiting = False
    for step in steps:
        step_status = step.status
        if step_status in FINISHED_STEP_STATES:
            if failed is None and step_status in FAILED_FOR_GOOD_STEP_STATES and not step.optional:
                failed = step
        else:
            finished = False
            waiting = waiting or step_status == StepStatus.AWAITING_APPROVAL
    if failed is not None:
        move_run(
            changes,
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
        move_run(changes, run, RunStatus.COMPLETED, actor=actor)
        return
    if waiting and status is RunStatus.RUNNING:
        move_run(changes, run, RunStatus.AWAITING_APPROVAL, actor=actor)
    elif not waiting and status is RunStatus.AWAITING_APPROVAL and not plan_awaits_approval(run):
        # A revised plan waiting for its approval keeps the run waiting, whatever its steps do.
        move_run(changes, run, RunStatus.RUNNING, actor=actor)
