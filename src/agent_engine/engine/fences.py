"""Whether an attempt still owns its step: every write about a claimed step carries the fence
it was claimed with, and a stale fence is refused."""

from __future__ import annotations

from agent_engine.domain.records import ChangeSet, StepRecord
from agent_engine.domain.states import StepStatus
from agent_engine.engine.claiming import Claim
from agent_engine.errors import StaleFenceError


def claimed_step(changes: ChangeSet, claim: Claim) -> StepRecord:
    """The claimed step, or StaleFenceError if the claim is no longer ours."""
    step = changes.step(claim.step_id)
    if step is None:
        raise StaleFenceError(f"step {claim.step_id} no longer exists")
    check_fence(step, claim)
    return step


def check_fence(step: StepRecord, claim: Claim) -> None:
    """Refuse a write from an attempt that no longer owns the step (a newer fence, or gone)."""
    if step.fence != claim.fence or step.status != StepStatus.RUNNING:
        raise StaleFenceError(
            f"step {step.step_number}: attempt with fence {claim.fence} is no longer current "
            f"(fence {step.fence}, status {step.status})",
            step_id=str(step.id),
        )
