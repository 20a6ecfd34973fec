"""``POST /v1/agent-runs/{id}/replay``: a new run that replays a finished one from its records."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from agent_engine.api.access import requires
from agent_engine.api.deps import Actor, Engine
from agent_engine.api.schemas import RunWithSteps, run_with_steps
from agent_engine.domain.principals import Role
from agent_engine.engine.replay import ReplayRequest, replay_run

router = APIRouter(prefix="/v1/agent-runs", tags=["replay"])


@router.post(
    "/{run_id}/replay",
    status_code=status.HTTP_201_CREATED,
    response_model=RunWithSteps,
    **requires(Role.OPERATOR),
)
async def replay(
    run_id: str,
    engine: Engine,
    actor: Actor,
    response: Response,
    body: ReplayRequest | None = None,
) -> RunWithSteps:
    """Replay a completed or failed run: a new run (`replay_of`) with its plan, approval
    decisions and policy, every model call served from the original's records ($0, no
    provider called; a request with no record fails its step with `replay_miss`). `mode`
    `verify` also serves side-effecting steps from records instead of acting. 409 for a run
    not finished."""
    request = body or ReplayRequest()
    view = await replay_run(engine, run_id, request.mode, actor=actor)
    response.headers["Location"] = f"/v1/agent-runs/{view.run.id}"
    return run_with_steps(view)
