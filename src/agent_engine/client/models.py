"""Models of the answers the API gives as plain JSON objects (the rest are the API's own
``agent_engine.api.schemas`` models, re-exported here)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from agent_engine.api.schemas import (
    AuditEventOut,
    AuditOut,
    ExecuteOut,
    Health,
    Money,
    PlanOut,
    RunOut,
    RunPage,
    RunWithSteps,
    StepOut,
)

__all__ = [
    "AuditEventOut",
    "AuditOut",
    "ExecuteOut",
    "Health",
    "PlanOut",
    "RunBudget",
    "RunEvent",
    "RunOut",
    "RunPage",
    "RunWithSteps",
    "StepOut",
]


class RunBudget(BaseModel):
    """The answer to a budget change: the run's new limits, what it spent, and the steps that
    were paused for budget and go on."""

    model_config = ConfigDict(extra="allow")

    run_id: uuid.UUID
    status: str
    budget_usd: Money | None
    budget_tokens: int | None
    spent_usd: Money
    resumed_steps: list[int]


class RunEvent(BaseModel):
    """One event of a run's stream (an audit event): ``seq`` orders a run's events and is the
    id to resume after; a completed step's event carries its ``output``."""

    model_config = ConfigDict(extra="allow")

    id: int
    seq: int
    run_id: uuid.UUID
    step_id: uuid.UUID | None
    type: str
    actor: str
    created_at: datetime
    payload: dict[str, Any]
    hash: str
    output: dict[str, Any] | None = None
