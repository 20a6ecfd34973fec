"""``/v1/policies``: the server's named approval policies, as runs choose them by name."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from agent_engine.api.access import requires
from agent_engine.api.deps import Engine
from agent_engine.domain.approval_policy import NamedPolicy
from agent_engine.domain.principals import Role
from agent_engine.engine.policies import list_policies

router = APIRouter(prefix="/v1/policies", tags=["policies"])


class PolicyList(BaseModel):
    items: list[NamedPolicy]


@router.get("", response_model=PolicyList, **requires(Role.VIEWER))
async def get_policies(engine: Engine) -> PolicyList:
    """Every named policy with its rules, by name; a run picks one with `policy`."""
    return PolicyList(items=list_policies(engine.policies))
