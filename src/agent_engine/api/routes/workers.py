"""``/v1/workers``: which workers are alive, and what each is running."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from agent_engine.api.access import requires
from agent_engine.api.deps import Engine
from agent_engine.api.schemas import WorkerList, WorkerOut
from agent_engine.domain.principals import Role
from agent_engine.engine.workers import list_workers

router = APIRouter(prefix="/v1/workers", tags=["workers"])


@router.get("", response_model=WorkerList, **requires(Role.VIEWER))
async def get_workers(engine: Engine) -> WorkerList:
    """Workers seen lately, most recently alive first: host, slots, last heartbeat, whether it
    is within its lease, and how many running steps it holds."""
    found = await list_workers(engine)
    return WorkerList(items=[WorkerOut(**asdict(worker)) for worker in found])
