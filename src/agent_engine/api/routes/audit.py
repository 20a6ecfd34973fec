"""``/v1/agent-runs``: verify a run's audit, export it as a bundle, import a bundle."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, status

from agent_engine.api.access import requires
from agent_engine.api.deps import Actor, Engine
from agent_engine.domain.principals import Role
from agent_engine.engine import audit_checks, bundles

router = APIRouter(prefix="/v1/agent-runs", tags=["audit"])


@router.get("/{run_id}/audit/verify", **requires(Role.VIEWER))
async def verify_audit(run_id: str, engine: Engine) -> dict[str, Any]:
    """Recompute the run's chain and every row it covers (step inputs and outputs, approvals,
    plan versions, LLM calls), check its length and head against the run and its signature:
    `valid`, `events`, `first_broken` (seq, kind, step_number, detail) and `signature`."""
    return await audit_checks.verify_run_chain(engine, run_id)


@router.get("/{run_id}/export", **requires(Role.VIEWER))
async def export_run(run_id: str, engine: Engine) -> dict[str, Any]:
    """The run as one self-contained bundle (run, plan versions, steps, LLM calls, approvals,
    audit events, referenced blobs), which `agent-engine audit verify --bundle` checks offline."""
    return await bundles.export_bundle(engine, run_id)


@router.post(
    "/import",
    status_code=status.HTTP_201_CREATED,
    **requires(Role.ADMIN, responses={409: {"description": "The run exists already"}}),
)
async def import_run(
    engine: Engine, actor: Actor, bundle: dict[str, Any] = Body(...)
) -> dict[str, Any]:
    """Load an exported bundle: verified first (422 `audit_invalid` naming the first broken
    link), its rows inserted unchanged (409 if the run exists here)."""
    return await bundles.import_bundle(engine, bundle, actor=actor)
