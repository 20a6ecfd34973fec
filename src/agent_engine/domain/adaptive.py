"""Adaptive planning as values: a run's bounds (recorded in its options at creation) and where
its revision loop stands (``RunRecord.adaptive``), with the rule for when the planner is asked.

The loop state is a small JSON document, replaced whole on every change:
``{"revisions": n, "due_after": step number | None, "closed": reason | None}``.
``due_after`` set means the run waits in PLANNING for a revision; ``closed`` means no more
revisions are asked (``max_replans``, ``goal_met``, ``budget``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.states import RunStatus
from agent_engine.domain.transitions import move_run

ADAPTIVE = "adaptive"
FIXED = "fixed"


@dataclass(frozen=True)
class AdaptiveBounds:
    """What the run's creator asked for: ``max_steps`` over all plan versions (every step row
    the run ever has, superseded ones included) and ``max_replans`` revisions."""

    max_steps: int
    max_replans: int


def bounds_of(run: RunRecord) -> AdaptiveBounds | None:
    """The run's adaptive bounds, or None for a fixed-plan run."""
    options = run.options
    if options.get("planning") != ADAPTIVE:
        return None
    return AdaptiveBounds(int(options["max_steps"]), int(options["max_replans"]))


def loop_state(run: RunRecord) -> dict[str, Any]:
    """The run's loop state (a fresh one before the first ask)."""
    return dict(run.adaptive or {"revisions": 0, "due_after": None, "closed": None})


def revision_due(run: RunRecord) -> int | None:
    """The step after which a revision is due (the run then waits in PLANNING), if any."""
    if run.adaptive is None:
        return None
    due = run.adaptive.get("due_after")
    return int(due) if due is not None else None


def asks_after(run: RunRecord, observes: bool) -> bool:
    """Whether a step that just completed makes the run ask for a revision: the run is
    adaptive, the step observes, the loop is still open and revisions remain."""
    bounds = bounds_of(run)
    if not observes or bounds is None:
        return False
    state = loop_state(run)
    return (
        state.get("closed") is None
        and state.get("due_after") is None
        and int(state.get("revisions", 0)) < bounds.max_replans
    )


def update_loop(run: RunRecord, **changes: Any) -> None:
    """Replace the run's loop state with ``changes`` applied (records see replaced JSON only)."""
    run.adaptive = {**loop_state(run), **changes}


def ask_for_revision(changes: ChangeSet, run: RunRecord, step: StepRecord, *, actor: str) -> None:
    """The observing ``step`` just completed: the run waits in PLANNING, claiming none of its
    steps, until a revision (or the planner's "the rest stands") is written."""
    update_loop(run, due_after=step.step_number)
    run.claimable_at = None  # a step's lease no more: the next refresh makes it claimable now
    move_run(
        changes,
        run,
        RunStatus.PLANNING,
        actor=actor,
        reason="revision",
        after_step=step.step_number,
    )
