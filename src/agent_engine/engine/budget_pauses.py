"""Pausing for budget and resuming when it is raised (never failing for budget).

A step whose next model call does not fit a budget moves RUNNING → AWAITING_APPROVAL with
``budget_pause`` saying which budget, what is spent and reserved and what the call needed; the
calls it made before are in the ledger as usual. Raising the budget moves every such step of the
run back — to APPROVED if it needed an approval it already had, else to PENDING — and the run
goes on from there; cancelling the run ends it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent_engine.domain.clock import utcnow
from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.states import RunStatus, StepStatus
from agent_engine.domain.transitions import move_run, move_step
from agent_engine.errors import EngineError


def pause_for_budget(
    changes: ChangeSet, run: RunRecord, step: StepRecord, error: EngineError, *, actor: str
) -> None:
    """RUNNING → AWAITING_APPROVAL (reason ``budget``), showing what did not fit."""
    shown: dict[str, Any] = {"reason": "budget", **_jsonable(error.data), "message": error.detail}
    step.budget_pause = shown
    step.lease_owner = None
    step.lease_expires_at = None
    move_step(
        changes, run, step, StepStatus.AWAITING_APPROVAL, actor=actor, reason="budget", budget=shown
    )


def pause_run_for_budget(
    changes: ChangeSet, run: RunRecord, message: str, data: dict[str, Any], *, actor: str
) -> None:
    """PLANNING → AWAITING_APPROVAL (reason ``budget``): the planner's call did not fit."""
    shown: dict[str, Any] = {"reason": "budget", **_jsonable(data), "message": message}
    run.budget_pause = shown
    run.claimable_at = None
    move_run(changes, run, RunStatus.AWAITING_APPROVAL, actor=actor, reason="budget", budget=shown)


def paused_for_budget(steps: Sequence[StepRecord]) -> list[StepRecord]:
    """The steps waiting for a budget raise."""
    return [
        s for s in steps if s.status == StepStatus.AWAITING_APPROVAL and s.budget_pause is not None
    ]


def resume_after_raise(
    changes: ChangeSet, run: RunRecord, steps: Sequence[StepRecord], *, actor: str
) -> list[int]:
    """Send every step paused for budget back to run (and a run whose planning was paused back
    to planning); the step numbers."""
    if run.budget_pause is not None and run.status == RunStatus.AWAITING_APPROVAL:
        run.budget_pause = None
        move_run(changes, run, RunStatus.PLANNING, actor=actor, reason="budget raised")
        run.claimable_at = utcnow()
    resumed = []
    for step in paused_for_budget(steps):
        # A step that needed approval only ran once approved: it keeps that approval.
        target = StepStatus.APPROVED if step.requires_approval else StepStatus.PENDING
        step.budget_pause = None
        move_step(changes, run, step, target, actor=actor, reason="budget raised")
        resumed.append(step.step_number)
    return resumed


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if isinstance(v, str | int | float | bool | None)}
