"""A run's plan: versions, diffs, re-planning and the decision on a plan waiting for approval."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from agent_engine.api.access import requires
from agent_engine.api.deps import Actor, Engine
from agent_engine.api.schemas import PlanDecisionIn, PlanOut, RejectIn, RunWithSteps, run_with_steps
from agent_engine.domain.principals import Role
from agent_engine.engine import plan_versions, runs
from agent_engine.engine.planner import plan_run

router = APIRouter(prefix="/v1/agent-runs/{run_id}/plan", tags=["plans"])


@router.get("", response_model=PlanOut, **requires(Role.VIEWER))
async def get_plan(
    run_id: str, engine: Engine, version: Annotated[int | None, Query(ge=1)] = None
) -> PlanOut:
    """A version of the run's plan (default: the latest) with its hash and cost estimates."""
    return PlanOut.model_validate(await plan_versions.get_plan(engine, run_id, version))


@router.get("/diff", **requires(Role.VIEWER))
async def diff_plan(
    run_id: str,
    engine: Engine,
    from_version: Annotated[int, Query(alias="from", ge=1)],
    to_version: Annotated[int, Query(alias="to", ge=1)],
) -> dict[str, Any]:
    """What changed between two plan versions."""
    return await plan_versions.diff_plans(engine, run_id, from_version, to_version)


@router.post("/replan", response_model=RunWithSteps, **requires(Role.OPERATOR))
async def replan(run_id: str, engine: Engine, actor: Actor) -> RunWithSteps:
    """Make a new plan version for a run whose steps have not started."""
    await plan_run(engine, run_id, actor=actor, replan=True)
    return run_with_steps(await runs.get_run(engine, run_id))


@router.post("/approve", response_model=RunWithSteps, **requires(Role.APPROVER))
async def approve_plan(
    run_id: str, engine: Engine, actor: Actor, body: PlanDecisionIn | None = None
) -> RunWithSteps:
    """Approve the plan a `plan_approval` run is waiting on; the run becomes `planned`."""
    view = await plan_versions.decide_plan(
        engine, run_id, decision="approved", actor=actor, comment=body.comment if body else None
    )
    return run_with_steps(view)


@router.post("/reject", response_model=RunWithSteps, **requires(Role.APPROVER))
async def reject_plan(run_id: str, body: RejectIn, engine: Engine, actor: Actor) -> RunWithSteps:
    """Reject the waiting plan (reason required); the run fails."""
    view = await plan_versions.decide_plan(
        engine, run_id, decision="rejected", actor=actor, comment=body.reason
    )
    return run_with_steps(view)
