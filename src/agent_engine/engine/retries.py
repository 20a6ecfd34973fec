"""A failed attempt: record it, and schedule the next one when the retry policy allows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from agent_engine.domain.clock import utcnow
from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.retry import is_retryable, policy_for
from agent_engine.domain.states import StepStatus
from agent_engine.domain.transitions import move_step
from agent_engine.errors import CancelledError, EngineError


def fail_step(
    changes: ChangeSet, run: RunRecord, step: StepRecord, error: EngineError, *, actor: str
) -> None:
    """RUNNING → FAILED, and back to PENDING (after a backoff) if the policy allows another go."""
    step.error = {"code": error.code, "message": error.detail, **_jsonable(error.data)}
    step.lease_owner = None
    step.lease_expires_at = None
    move_step(changes, run, step, StepStatus.FAILED, actor=actor, error=step.error)
    if isinstance(error, CancelledError):
        return
    policy = policy_for(step.step_type, step.retry_policy, step.max_attempts)
    if step.attempt < policy.max_attempts and is_retryable(error):
        delay = policy.delay_s(step.attempt)
        step.not_before = utcnow() + timedelta(seconds=delay)
        move_step(
            changes,
            run,
            step,
            StepStatus.PENDING,
            actor=actor,
            reason="retry",
            retry_in_s=round(delay, 3),
            next_attempt=step.attempt + 1,
        )


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if isinstance(v, (str, int, float, bool, list, dict))}
