"""The one path for state changes: check the transition table, change the record, and append the
hash-chained audit event to the same change set (so both are written together or not at all)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from agent_engine.domain.canonical import content_hash
from agent_engine.domain.clock import utcnow
from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.states import (
    FINISHED_STEP_STATES,
    RUN_OVER_STATES,
    RunStatus,
    StepStatus,
    check_run_transition,
    check_step_transition,
)


def event_hash(
    *,
    run_id: uuid.UUID,
    seq: int,
    type: str,
    step_id: uuid.UUID | None,
    payload: dict[str, Any],
    actor: str,
    created_at: datetime,
    prev_hash: str | None,
) -> str:
    """The chained hash of one event; a verifier recomputes it from the stored columns."""
    return content_hash(
        {
            "run_id": str(run_id),
            "seq": seq,
            "type": type,
            "step_id": str(step_id) if step_id else None,
            "payload": payload,
            "actor": actor,
            "created_at": created_at.isoformat(),
            "prev_hash": prev_hash,
        }
    )


def append_event(
    changes: ChangeSet,
    run: RunRecord,
    type: str,
    payload: dict[str, Any],
    *,
    actor: str,
    step_id: uuid.UUID | None = None,
) -> None:
    """Add the next event of ``run``'s chain. The write that stores it is guarded by the run's
    version, so no other writer can have appended in between: ``seq`` stays gap-free."""
    if changes.uncovered_calls:
        # The event covers the LLM calls its change set recorded (their request and response
        # hashes), so a verifier can tell a changed or added call row.
        payload = {**payload, "llm_calls": changes.uncovered_calls}
        changes.uncovered_calls = []
    seq = run.audit_seq + 1
    created_at = utcnow()
    digest = event_hash(
        run_id=run.id,
        seq=seq,
        type=type,
        step_id=step_id,
        payload=payload,
        actor=actor,
        created_at=created_at,
        prev_hash=run.audit_head_hash,
    )
    changes.add(
        "audit_events",
        {
            "run_id": run.id,
            "seq": seq,
            "type": type,
            "step_id": step_id,
            "payload": payload,
            "actor": actor,
            "created_at": created_at,
            "prev_hash": run.audit_head_hash,
            "hash": digest,
        },
    )
    run.audit_seq = seq
    run.audit_head_hash = digest


def move_run(
    changes: ChangeSet, run: RunRecord, target: RunStatus, *, actor: str, **details: Any
) -> None:
    """Move ``run`` to ``target`` and record ``run.<target>`` in its audit chain.

    Raises ``InvalidTransitionError`` (nothing changed) when the table forbids the move.
    """
    current = RunStatus(run.status)
    check_run_transition(current, target)
    now = utcnow()
    run.status = target.value
    run.updated_at = now
    if target in RUN_OVER_STATES:
        run.completed_at = now
    elif current is RunStatus.FAILED:
        run.completed_at = None  # resumed
    payload: dict[str, Any] = {"from": current.value, "to": target.value}
    payload.update({k: v for k, v in details.items() if v is not None})
    append_event(changes, run, f"run.{target.value}", payload, actor=actor)


def move_step(
    changes: ChangeSet,
    run: RunRecord,
    step: StepRecord,
    target: StepStatus,
    *,
    actor: str,
    **details: Any,
) -> None:
    """Move ``step`` to ``target`` and record ``step.<target>`` in its run's audit chain."""
    current = StepStatus(step.status)
    check_step_transition(current, target)
    now = utcnow()
    step.status = target.value
    if target is StepStatus.RUNNING:
        step.started_at = now
        step.completed_at = None
    elif target in FINISHED_STEP_STATES:
        step.completed_at = now
    run.updated_at = now
    payload: dict[str, Any] = {
        "step_number": step.step_number,
        "step_type": step.step_type,
        "from": current.value,
        "to": target.value,
        "attempt": step.attempt,
    }
    payload.update({k: v for k, v in details.items() if v is not None})
    append_event(changes, run, f"step.{target.value}", payload, actor=actor, step_id=step.id)
