"""``/v1/webhook-deliveries``: every alert sent to the webhook, with each attempt (admin)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from agent_engine.api.access import requires
from agent_engine.api.deps import Engine
from agent_engine.domain.principals import Role
from agent_engine.engine.webhooks import DeliveryInfo, list_deliveries

router = APIRouter(prefix="/v1/webhook-deliveries", tags=["webhooks"])


class Attempt(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None = Field(description="The receiver's answer; null when none came")
    error: str | None = Field(description="Why no answer came (timeout, connection refused)")
    duration_ms: float


class DeliveryOut(BaseModel):
    id: uuid.UUID
    webhook_id: str = Field(description="The `webhook-id` header: the same at every attempt")
    event_type: str
    run_id: uuid.UUID | None
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    history: list[Attempt]
    payload: dict[str, Any] = Field(description="The body POSTed (as compact, sorted JSON)")
    created_at: datetime
    next_attempt_at: datetime | None = Field(description="When a pending delivery is next tried")
    delivered_at: datetime | None

    @classmethod
    def of(cls, info: DeliveryInfo) -> DeliveryOut:
        return cls.model_validate(info.__dict__)


class DeliveryList(BaseModel):
    items: list[DeliveryOut]


@router.get("", response_model=DeliveryList, **requires(Role.ADMIN))
async def get_deliveries(
    engine: Engine,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    run_id: Annotated[uuid.UUID | None, Query(description="Only this run's alerts")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DeliveryList:
    """The most recent deliveries first, each with every attempt (time, answer, duration)."""
    found = await list_deliveries(engine, limit=limit, status=status, run_id=run_id)
    return DeliveryList(items=[DeliveryOut.of(info) for info in found])
