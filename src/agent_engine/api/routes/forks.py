"""Forks, comparison, divergence and lineage of runs (``/v1/agent-runs/{id}/…``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from agent_engine.api.access import requires
from agent_engine.api.deps import CurrentPrincipal, Engine
from agent_engine.api.schemas import RunWithSteps, run_with_steps
from agent_engine.domain.principals import Role
from agent_engine.engine.comparison import compare_runs, divergence_report, jsonable
from agent_engine.engine.forks import ForkRequest, fork_run
from agent_engine.engine.lineage import family_tree

router = APIRouter(prefix="/v1/agent-runs", tags=["forks"])


@router.post(
    "/{run_id}/fork",
    status_code=status.HTTP_201_CREATED,
    response_model=RunWithSteps,
    **requires(Role.OPERATOR),
)
async def fork(
    run_id: str,
    body: ForkRequest,
    engine: Engine,
    principal: CurrentPrincipal,
    response: Response,
) -> RunWithSteps:
    """Fork the run from `from_step`: earlier steps are reused (not run, not paid), that step
    gets the override (`input_data`, `model` or `output_data`), later steps run live, or with
    `replay` from the original's records until the first difference. 409 `fork_not_ready`
    when a step before `from_step` has not finished."""
    view = await fork_run(
        engine,
        run_id,
        body,
        actor=principal.name,
        may_loosen_policy=principal.may_auto_approve,
    )
    response.headers["Location"] = f"/v1/agent-runs/{view.run.id}"
    return run_with_steps(view)


@router.get("/{run_id}/compare/{other_id}", **requires(Role.VIEWER))
async def compare(run_id: str, other_id: str, engine: Engine) -> dict[str, Any]:
    """The two runs step by step: per step number what differs in inputs, outputs, models,
    tokens, cost and duration, and the first difference (`a` is the first run, `b` the other)."""
    report: dict[str, Any] = jsonable(await compare_runs(engine, run_id, other_id))
    return report


@router.get("/{run_id}/divergence", **requires(Role.VIEWER))
async def divergence(run_id: str, engine: Engine) -> dict[str, Any]:
    """Each step of a replay or fork against the run it came from: `match`, `diverged` (the
    field, expected and actual) or `not_reached`; 409 `not_a_replay_or_fork` for other runs."""
    report: dict[str, Any] = jsonable(await divergence_report(engine, run_id))
    return report


@router.get("/{run_id}/family", **requires(Role.VIEWER))
async def family(run_id: str, engine: Engine) -> dict[str, Any]:
    """The tree of replays and forks rooted at the original the run descends from."""
    tree: dict[str, Any] = jsonable(await family_tree(engine, run_id))
    return tree
