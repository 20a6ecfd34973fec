"""Handing a claimed step back: a worker that stops before a step finished releases it."""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError

from agent_engine import metrics
from agent_engine.domain.states import StepStatus
from agent_engine.domain.transitions import move_step
from agent_engine.engine.claiming import Claim
from agent_engine.engine.context import EngineContext
from agent_engine.engine.fences import claimed_step
from agent_engine.engine.locking import change_run
from agent_engine.engine.settle import settle_run
from agent_engine.errors import EngineError, StaleFenceError

logger = logging.getLogger(__name__)


async def release_step(ctx: EngineContext, claim: Claim, *, actor: str) -> None:
    """RUNNING → PENDING, so another worker takes the step at once (nothing when the claim is no
    longer ours; a database error is logged, and the lease then lapses)."""
    try:
        async with change_run(ctx, claim.run_id) as locked:
            changes = locked.changes
            step = claimed_step(changes, claim)
            step.lease_owner = None
            step.lease_expires_at = None
            move_step(
                changes,
                changes.run,
                step,
                StepStatus.PENDING,
                actor=actor,
                reason="worker shutdown",
                fence=claim.fence,
            )
            settle_run(changes, changes.run, changes.steps, actor=actor)
        metrics.HAND_BACKS.inc()
    except StaleFenceError:
        return  # no longer ours: nothing to hand back
    except (DBAPIError, EngineError, OSError) as exc:
        logger.error("could not release step %s: %s", claim.step_id, exc)
