"""``GET /v1/agent-runs/{id}/manifest``: what a run's outcome depended on besides its records."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from agent_engine.api.access import requires
from agent_engine.api.deps import Engine
from agent_engine.domain.principals import Role
from agent_engine.engine.manifest import run_manifest

router = APIRouter(prefix="/v1/agent-runs", tags=["runs"])


@router.get("/{run_id}/manifest", response_model=dict[str, Any], **requires(Role.VIEWER))
async def get_manifest(run_id: str, engine: Engine) -> dict[str, Any]:
    """Engine and executor versions, models with their sampling parameters, routing decisions
    and prices, plan hashes, MCP servers and tool schemas, the approval policy, the workspace,
    and the nondeterminism recorded per step; ``manifest_hash`` is the content hash of the rest."""
    return await run_manifest(engine, run_id)
