"""Approving and rejecting steps that wait for a human."""

from __future__ import annotations

from fastapi import APIRouter

from agent_engine.api.access import requires
from agent_engine.api.deps import Actor, Engine
from agent_engine.api.schemas import ApproveIn, RejectIn, RunWithSteps, run_with_steps
from agent_engine.domain.principals import Role
from agent_engine.engine.approvals import decide_step

router = APIRouter(prefix="/v1/agent-runs/{run_id}/steps/{step_id}", tags=["approvals"])


@router.post("/approve", response_model=RunWithSteps, **requires(Role.APPROVER))
async def approve_step(
    run_id: str, step_id: str, engine: Engine, actor: Actor, body: ApproveIn | None = None
) -> RunWithSteps:
    """Approve a step in `awaiting_approval` (optional comment); 409 if it is not waiting."""
    view = await decide_step(
        engine,
        run_id,
        step_id,
        decision="approved",
        actor=actor,
        comment=body.comment if body else None,
    )
    return run_with_steps(view)


@router.post("/reject", response_model=RunWithSteps, **requires(Role.APPROVER))
async def reject_step(
    run_id: str, step_id: str, body: RejectIn, engine: Engine, actor: Actor
) -> RunWithSteps:
    """Reject a waiting step (reason required): the run fails unless the step is optional."""
    view = await decide_step(
        engine, run_id, step_id, decision="rejected", actor=actor, comment=body.reason
    )
    return run_with_steps(view)
