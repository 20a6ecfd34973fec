"""The webhook sender: POST every pending delivery of the outbox, signed as Standard Webhooks
ask, retried with exponential backoff and jitter, every attempt recorded (docs/webhooks.md).

A delivery is claimed in a short transaction (a lease: its ``next_attempt_at`` moves past the
attempt's longest time), POSTed outside any transaction, and its outcome recorded in another:
no database transaction stays open while a receiver answers. A sender that dies mid-attempt
leaves the delivery due again when the lease ends, sent again with the same ``webhook-id`` (a
receiver that has seen the id may drop the repeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.clock import utcnow
from agent_engine.domain.webhook_signing import secret_bytes, signed_headers
from agent_engine.engine.context import EngineContext
from agent_engine.storage.database import read_transaction, transaction
from agent_engine.storage.webhooks import (
    DELIVERED,
    FAILED,
    PENDING,
    DueDelivery,
    claim_due_txn,
    list_deliveries_txn,
    record_attempt_txn,
)

logger = logging.getLogger(__name__)

BATCH = 20  # deliveries one round attempts (concurrently)
FIRST_RETRY_S = 30.0
MAX_RETRY_S = 3600.0
LEASE_MARGIN_S = 30.0  # beyond the request timeout, before a claimed delivery is due again
MAX_ERROR_CHARS = 300
Clock = Callable[[], datetime]


def retry_delay_s(failed_attempts: int, rng: random.Random | None = None) -> float:
    """Seconds before the next attempt after ``failed_attempts`` (1-based) failed: exponential
    from 30 s, at most an hour, with "equal jitter" (half fixed, half random) so that retries
    of many deliveries spread out yet never come at once."""
    ceiling = min(MAX_RETRY_S, FIRST_RETRY_S * 2.0 ** (failed_attempts - 1))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def message_id(delivery_id: uuid.UUID) -> str:
    """The delivery's ``webhook-id``: the same for every attempt."""
    return f"msg_{delivery_id.hex}"


def body_of(payload: dict[str, Any]) -> bytes:
    """The bytes POSTed (and signed) for ``payload``: compact JSON with sorted keys, the same
    at every attempt."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def envelope(event_type: str, data: dict[str, Any], at: datetime) -> dict[str, Any]:
    """An event as Standard Webhooks payloads look: its type, when it happened, its data."""
    return {"type": event_type, "timestamp": at.isoformat(), "data": data}


@dataclass(frozen=True)
class Outcome:
    """One attempt's result, as recorded in the delivery's history."""

    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def record(self, attempt: int) -> dict[str, Any]:
        return {
            "attempt": attempt,
            "at": self.at.isoformat(),
            "status_code": self.status_code,
            "error": self.error,
            "duration_ms": round(self.duration_ms, 3),
        }


async def _attempt(
    client: httpx.AsyncClient, key: bytes, delivery: DueDelivery, clock: Clock
) -> Outcome:
    body = body_of(delivery.payload)
    at = clock()
    headers = signed_headers(key, message_id(delivery.id), int(at.timestamp()), body)
    headers["content-type"] = "application/json"
    started = time.perf_counter()
    try:
        response = await client.post(delivery.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        return Outcome(at, None, error, (time.perf_counter() - started) * 1000)
    return Outcome(at, response.status_code, None, (time.perf_counter() - started) * 1000)


async def deliver_due(
    ctx: EngineContext,
    *,
    client: httpx.AsyncClient | None = None,
    clock: Clock = utcnow,
    rng: random.Random | None = None,
) -> int:
    """Make one attempt at each delivery that is due (up to ``BATCH``) and record it; the
    number attempted. ``clock`` and ``rng`` decide when retries fall due (tests pass their own)."""
    settings = ctx.settings
    if settings.webhook_secret is None:
        return 0
    key = secret_bytes(settings.webhook_secret.get_secret_value())
    now = clock()
    lease_until = now + timedelta(seconds=settings.webhook_timeout_s + LEASE_MARGIN_S)
    async with transaction(ctx.sessions) as session:
        due = await claim_due_txn(session, now=now, lease_until=lease_until, limit=BATCH)
    if not due:
        return 0
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(_client(settings.webhook_timeout_s))
        outcomes = await asyncio.gather(*(_attempt(client, key, d, clock) for d in due))
    async with transaction(ctx.sessions) as session:
        for delivery, outcome in zip(due, outcomes, strict=True):
            await _record(session, delivery, outcome, settings.webhook_max_attempts, rng)
    return len(due)


async def _record(
    session: AsyncSession,
    delivery: DueDelivery,
    outcome: Outcome,
    max_attempts: int,
    rng: random.Random | None,
) -> None:
    attempts = delivery.attempts + 1
    if outcome.delivered:
        status, delivered_at, due_at = DELIVERED, outcome.at, outcome.at
    elif attempts >= max_attempts:
        status, delivered_at, due_at = FAILED, None, outcome.at
    else:
        status, delivered_at = PENDING, None
        due_at = outcome.at + timedelta(seconds=retry_delay_s(attempts, rng))
    recorded = await record_attempt_txn(
        session,
        delivery,
        outcome.record(attempts),
        status=status,
        next_attempt_at=due_at,
        delivered_at=delivered_at,
    )
    if not recorded:
        logger.warning("webhook delivery %s: attempt %d not recorded", delivery.id, attempts)
    elif status == FAILED:
        logger.warning("webhook delivery %s failed after %d attempts", delivery.id, attempts)


def _client(timeout_s: float) -> httpx.AsyncClient:
    # Redirects are not followed: the signature is for the configured URL.
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), follow_redirects=False)


async def run_sender(ctx: EngineContext, stop: asyncio.Event) -> None:
    """Deliver what falls due until ``stop`` is set: a round whenever the last one had work,
    else every ``webhook_poll_s``. A round the database or the network breaks is logged and
    the next one tries again."""
    poll_s = ctx.settings.webhook_poll_s
    async with _client(ctx.settings.webhook_timeout_s) as client:
        while not stop.is_set():
            attempted = 0
            try:
                attempted = await deliver_due(ctx, client=client)
            except DBAPIError as exc:  # the database refused or went away: the rows stay
                logger.warning("webhook delivery round failed: %s", exc.orig)
            except Exception:  # the sender outlives one bad round; the outbox keeps the rows
                logger.exception("webhook delivery round failed")
            if attempted:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)


def start_sender(ctx: EngineContext, stop: asyncio.Event) -> asyncio.Task[None] | None:
    """Start the sender in the background when a webhook URL is configured (else None); it
    ends after ``stop`` is set, within one request's timeout."""
    if ctx.settings.webhook_url is None:
        return None
    return asyncio.create_task(run_sender(ctx, stop), name="webhook-sender")


@dataclass(frozen=True)
class DeliveryInfo:
    """A delivery as the API lists it (what was sent and every attempt)."""

    id: uuid.UUID
    webhook_id: str
    event_type: str
    run_id: uuid.UUID | None
    url: str
    status: str
    attempts: int
    history: list[Any]
    payload: dict[str, Any]
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None


async def list_deliveries(
    ctx: EngineContext,
    *,
    limit: int = 50,
    status: str | None = None,
    run_id: uuid.UUID | None = None,
) -> list[DeliveryInfo]:
    """The most recent deliveries first (``status``, ``run_id``: only those)."""
    async with read_transaction(ctx.sessions) as session:
        rows = await list_deliveries_txn(session, limit=limit, status=status, run_id=run_id)
        return [
            DeliveryInfo(
                id=row.id,
                webhook_id=message_id(row.id),
                event_type=row.event_type,
                run_id=row.run_id,
                url=row.url,
                status=row.status,
                attempts=row.attempts,
                history=list(row.history),
                payload=row.payload,
                created_at=row.created_at,
                next_attempt_at=row.next_attempt_at if row.status == PENDING else None,
                delivered_at=row.delivered_at,
            )
            for row in rows
        ]
