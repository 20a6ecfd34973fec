"""Budget and alert tables: what a budget allows, what it has spent and holds, each call's
reservation, and the webhook deliveries of its alerts (``engine/budgets.py`` explains the rules).

Kept apart from ``tables.py`` (the run's own rows); both share one ``Base`` and one migration
history.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from agent_engine.storage.tables import ZERO, Base
from agent_engine.storage.types import JSONDocument, Money, UTCDateTime, utcnow


class BudgetDefinition(Base):
    """A monthly budget of a project or an API key (a run's own budget lives on the run)."""

    __tablename__ = "budgets"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    scope: Mapped[str] = mapped_column(String(16))  # project | api_key
    subject: Mapped[str] = mapped_column(String(200))  # the project's name, the key's id
    limit_usd: Mapped[Decimal | None] = mapped_column(Money)
    limit_tokens: Mapped[int | None] = mapped_column(BigInteger)
    updated_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("scope", "subject"),
        CheckConstraint("scope IN ('project', 'api_key')", name="scope_known"),
    )


class BudgetCounter(Base):
    """What one budget allows and has used in one period: a run (period ``run``) or a calendar
    month of a project or key (``2026-12``). Reservations move ``reserved_*`` with one
    conditional UPDATE that refuses to pass the limit; settling moves the call to ``spent_*``."""

    __tablename__ = "budget_counters"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    scope: Mapped[str] = mapped_column(String(16))  # run | project | api_key
    subject: Mapped[str] = mapped_column(String(200))
    period: Mapped[str] = mapped_column(String(16))
    limit_usd: Mapped[Decimal | None] = mapped_column(Money)
    limit_tokens: Mapped[int | None] = mapped_column(BigInteger)
    spent_usd: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    spent_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_usd: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    reserved_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # The highest alert threshold (percent) already announced for this period.
    alerted_percent: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("scope", "subject", "period"),
        CheckConstraint("reserved_usd >= 0 AND reserved_tokens >= 0", name="reserved_not_negative"),
    )


class BudgetReservation(Base):
    """One model call's worst-case hold on every budget that applies, and what it settled to.

    ``held`` until the call returns (``settled``) or its holder goes away (``released``: the
    step's lease lapsed or ``expires_at`` passed). The ``llm_calls`` rows a step records name
    their reservation; a settled reservation no row names is spend whose attempt was lost before
    it could record it (its usage is kept here, in ``calls``).
    """

    __tablename__ = "budget_reservations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    step_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    fence: Mapped[int | None] = mapped_column(BigInteger)
    purpose: Mapped[str] = mapped_column(String(32))
    counter_ids: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    amount_usd: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    amount_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # How the worst case was reckoned: the model, prompt tokens and how they were counted.
    estimate: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="held")
    actual_usd: Mapped[Decimal | None] = mapped_column(Money)
    actual_tokens: Mapped[int | None] = mapped_column(BigInteger)
    # The settled calls' usage as reported (provider, model, tokens, cost): enough to put a
    # lost attempt's spend in the ledger.
    calls: Mapped[list[Any] | None] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_budget_reservations_status_expires_at", "status", "expires_at"),
        CheckConstraint("status IN ('held', 'settled', 'released')", name="status_known"),
    )


class WebhookDelivery(Base):
    """One event to POST to a webhook, written in the transaction that made the event (an
    outbox); the sender retries it with backoff and records every attempt."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    event_type: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    history: Mapped[list[Any]] = mapped_column(JSONDocument, default=list)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status_known"),
    )
