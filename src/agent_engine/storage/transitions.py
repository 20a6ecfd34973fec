"""The one path for state changes: check the transition table, change, audit — one transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.states import (
    TERMINAL_RUN_STATES,
    RunStatus,
    StepStatus,
    check_run_transition,
    check_step_transition,
)
from agent_engine.storage.audit import append_event_txn
from agent_engine.storage.tables import AgentRun, Step
from agent_engine.storage.types import utcnow

_FINISHING = frozenset(
    {
        StepStatus.COMPLETED,
        StepStatus.FAILED,
        StepStatus.SKIPPED,
        StepStatus.REJECTED,
        StepStatus.CANCELLED,
    }
)


def move_run_txn(
    session: AsyncSession,
    run: AgentRun,
    target: RunStatus,
    *,
    actor: str,
    **details: Any,
) -> None:
    """Move ``run`` to ``target`` and record ``run.<target>`` in its audit chain.

    Raises ``InvalidTransitionError`` (nothing changed) when the table forbids the move.
    """
    current = RunStatus(run.status)
    check_run_transition(current, target)
    now = utcnow()
    run.status = target.value
    run.updated_at = now
    if target in TERMINAL_RUN_STATES or target is RunStatus.FAILED:
        run.completed_at = now
    elif current is RunStatus.FAILED:
        run.completed_at = None  # resumed
    payload: dict[str, Any] = {"from": current.value, "to": target.value}
    payload.update({k: v for k, v in details.items() if v is not None})
    append_event_txn(session, run, f"run.{target.value}", payload, actor=actor)


def move_step_txn(
    session: AsyncSession,
    run: AgentRun,
    step: Step,
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
    elif target in _FINISHING:
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
    append_event_txn(session, run, f"step.{target.value}", payload, actor=actor, step_id=step.id)
