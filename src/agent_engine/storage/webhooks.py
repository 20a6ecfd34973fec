"""The webhook outbox (``webhook_deliveries``): new rows, claiming the due ones, recording each
attempt, listing (always inside the caller's transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.storage.budget_tables import WebhookDelivery

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
DELIVERY_STATUSES = (PENDING, DELIVERED, FAILED)


def delivery_row(
    *,
    event_type: str,
    run_id: uuid.UUID | None,
    url: str,
    payload: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """A new pending delivery, due at once: every column given, as both write paths (a change
    set's insert, a plain insert) need."""
    return {
        "id": uuid.uuid4(),
        "event_type": event_type,
        "run_id": run_id,
        "url": url,
        "payload": payload,
        "status": PENDING,
        "attempts": 0,
        "history": [],
        "next_attempt_at": now,
        "created_at": now,
        "delivered_at": None,
    }


async def insert_deliveries_txn(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert the deliveries ``rows`` (made by :func:`delivery_row`)."""
    if rows:
        await session.execute(insert(WebhookDelivery), list(rows))


@dataclass(frozen=True)
class DueDelivery:
    """A delivery claimed for one attempt: what the sender needs to make it."""

    id: uuid.UUID
    event_type: str
    url: str
    payload: dict[str, Any]
    attempts: int  # attempts made before this one
    history: list[Any]


async def claim_due_txn(
    session: AsyncSession, *, now: datetime, lease_until: datetime, limit: int
) -> list[DueDelivery]:
    """Take up to ``limit`` pending deliveries due at ``now``, oldest due first, and move them
    out of reach until ``lease_until`` (another sender skips them meanwhile; one whose sender
    died is due again then). PostgreSQL skips rows another sender is claiming (SKIP LOCKED);
    SQLite has one writer at a time."""
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = (await session.scalars(query)).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(ids))
        .values(next_attempt_at=lease_until)
        .execution_options(synchronize_session=False)
    )
    return [
        DueDelivery(
            id=row.id,
            event_type=row.event_type,
            url=row.url,
            payload=row.payload,
            attempts=row.attempts,
            history=list(row.history),
        )
        for row in rows
    ]


async def record_attempt_txn(
    session: AsyncSession,
    delivery: DueDelivery,
    attempt: dict[str, Any],
    *,
    status: str,
    next_attempt_at: datetime,
    delivered_at: datetime | None,
) -> bool:
    """Add ``attempt`` to the delivery's history and set its outcome; False (nothing written)
    when another sender recorded an attempt since this one was claimed."""
    result = await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery.id,
            WebhookDelivery.status == PENDING,
            WebhookDelivery.attempts == delivery.attempts,
        )
        .values(
            attempts=delivery.attempts + 1,
            history=[*delivery.history, attempt],
            status=status,
            next_attempt_at=next_attempt_at,
            delivered_at=delivered_at,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def list_deliveries_txn(
    session: AsyncSession,
    *,
    limit: int,
    status: str | None = None,
    run_id: uuid.UUID | None = None,
) -> Sequence[WebhookDelivery]:
    """The most recent deliveries first, optionally of one status or run."""
    query = select(WebhookDelivery)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if run_id is not None:
        query = query.where(WebhookDelivery.run_id == run_id)
    query = query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id).limit(limit)
    return (await session.scalars(query)).all()
