"""Approval receipts: an approval binds to the hash of the step's exact resolved input; when the
input the step would run differs at claim time (a re-plan, a fork, a revision, an earlier output
changed), the approval no longer applies and the step waits for a person again."""

from __future__ import annotations

from typing import Any

from agent_engine.domain.audit_cover import resolved_input_hash
from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.transitions import append_event


def receipt_holds(step: StepRecord, resolved: dict[str, Any]) -> bool:
    """Whether the approval of ``step`` still applies to ``resolved`` (the input it would run).
    A step approved without a receipt (an outcome-unknown re-run, an older row) holds."""
    bound = step.approved_input_hash
    return bound is None or bound == resolved_input_hash(resolved)


def void_receipt(
    changes: ChangeSet, run: RunRecord, step: StepRecord, resolved: dict[str, Any], *, actor: str
) -> None:
    """Record that the approval of ``step`` no longer applies (``approval.invalidated``, naming
    the approved and the current input hash); the caller parks the step for approval again.

    The new decision is one attempt number on (one decision per step attempt): the attempts the
    step may still make are unchanged."""
    append_event(
        changes,
        run,
        "approval.invalidated",
        {
            "step_number": step.step_number,
            "approved_input_hash": step.approved_input_hash,
            "input_hash": resolved_input_hash(resolved),
            "attempt": step.attempt,
        },
        actor=actor,
        step_id=step.id,
    )
    step.approved_input_hash = None
    step.attempt += 1
    step.max_attempts += 1
