"""Run and step states and the one transition table for each (DESIGN.md §4)."""

from __future__ import annotations

from enum import StrEnum

from agent_engine.errors import InvalidTransitionError


class RunStatus(StrEnum):
    CREATED = "created"
    PLANNING = "planning"
    PLANNED = "planned"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


R, S = RunStatus, StepStatus

RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    R.CREATED: frozenset({R.PLANNING, R.CANCELLED}),
    # PLANNING → RUNNING: a revision of a running run's plan is written (adaptive planning).
    # PLANNING → AWAITING_APPROVAL: the planner's model call does not fit the budget.
    R.PLANNING: frozenset({R.PLANNED, R.RUNNING, R.FAILED, R.CANCELLED, R.AWAITING_APPROVAL}),
    # PLANNED → AWAITING_APPROVAL: the whole plan waits for a human (plan_approval).
    # PLANNED → PLANNING: re-planning before any step has run.
    R.PLANNED: frozenset({R.RUNNING, R.AWAITING_APPROVAL, R.PLANNING, R.CANCELLED}),
    # RUNNING → PLANNING: an observing step finished and the planner revises the rest.
    R.RUNNING: frozenset({R.AWAITING_APPROVAL, R.PLANNING, R.COMPLETED, R.FAILED, R.CANCELLED}),
    # AWAITING_APPROVAL → FAILED: a required step was rejected.
    # AWAITING_APPROVAL → COMPLETED: the last pending step was an optional one that got rejected.
    # AWAITING_APPROVAL → PLANNED / PLANNING: a waiting plan approved / sent back for a new one.
    R.AWAITING_APPROVAL: frozenset(
        {R.RUNNING, R.PLANNED, R.PLANNING, R.COMPLETED, R.FAILED, R.CANCELLED}
    ),
    # FAILED → RUNNING: resume from the first unfinished step; FAILED → CANCELLED closes it.
    R.FAILED: frozenset({R.RUNNING, R.CANCELLED}),
    R.COMPLETED: frozenset(),
    R.CANCELLED: frozenset(),
}

STEP_TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    S.PENDING: frozenset({S.RUNNING, S.AWAITING_APPROVAL, S.SKIPPED, S.CANCELLED}),
    # AWAITING_APPROVAL → PENDING: the budget a step was paused for was raised (it runs again).
    S.AWAITING_APPROVAL: frozenset({S.APPROVED, S.REJECTED, S.CANCELLED, S.PENDING}),
    # APPROVED → AWAITING_APPROVAL: the input changed since the approval (its receipt is void).
    S.APPROVED: frozenset({S.RUNNING, S.CANCELLED, S.AWAITING_APPROVAL}),
    # RUNNING → PENDING: a worker released the step (shutdown, lost lease) before finishing it.
    # RUNNING → AWAITING_APPROVAL: a side effect's outcome is unknown after a crash, or the
    # step's next model call does not fit its budgets (it waits for a raise).
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.PENDING, S.AWAITING_APPROVAL}),
    # FAILED → PENDING: another attempt (automatic while attempts remain, or by hand).
    S.FAILED: frozenset({S.PENDING, S.SKIPPED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.REJECTED: frozenset(),
    S.SKIPPED: frozenset(),
    S.CANCELLED: frozenset(),
}

TERMINAL_RUN_STATES = frozenset(s for s, nxt in RUN_TRANSITIONS.items() if not nxt)
TERMINAL_STEP_STATES = frozenset(s for s, nxt in STEP_TRANSITIONS.items() if not nxt)
# A step in one of these lets the steps that depend on it become ready.
SATISFIED_STEP_STATES = frozenset({S.COMPLETED, S.SKIPPED})


def check_run_transition(current: RunStatus, target: RunStatus) -> None:
    """Raise :class:`InvalidTransitionError` unless the run table allows ``current → target``."""
    if target not in RUN_TRANSITIONS[current]:
        raise InvalidTransitionError("run", current.value, target.value)


def check_step_transition(current: StepStatus, target: StepStatus) -> None:
    """Raise :class:`InvalidTransitionError` unless the step table allows ``current → target``."""
    if target not in STEP_TRANSITIONS[current]:
        raise InvalidTransitionError("step", current.value, target.value)


# The groups of states the rest of the engine asks about, defined once, beside the tables.
# A run is over (no step of it runs again unless a person resumes it) when terminal or failed.
RUN_OVER_STATES = TERMINAL_RUN_STATES | {R.FAILED}
# A run under way: its steps run or wait for a person (its status follows from theirs).
UNDER_WAY_RUN_STATES = frozenset({R.RUNNING, R.AWAITING_APPROVAL})
# A run whose steps may be started (by a worker or by hand).
RUNNABLE_RUN_STATES = frozenset({R.PLANNED, R.RUNNING, R.AWAITING_APPROVAL})
# Runs a worker looks at: planned by a worker when created (or when its planner's lease lapsed).
CLAIMABLE_RUN_STATES = frozenset({R.CREATED, R.PLANNING}) | RUNNABLE_RUN_STATES
# Steps that may still change: what claiming and settling read.
OPEN_STEP_STATES = frozenset({S.PENDING, S.RUNNING, S.AWAITING_APPROVAL, S.APPROVED})
# Steps that may start now, once their dependencies are satisfied.
STARTABLE_STEP_STATES = frozenset({S.PENDING, S.APPROVED})
# A step in one of these stays there unless a person retries it.
FAILED_FOR_GOOD_STEP_STATES = frozenset({S.FAILED, S.REJECTED})
# Finished: terminal, or failed (for good unless attempts remain); entering one stamps
# the step's completed_at.
FINISHED_STEP_STATES = TERMINAL_STEP_STATES | {S.FAILED}
