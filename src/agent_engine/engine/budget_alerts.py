"""Announcing budget thresholds: an audit event on the run whose call reached one (which every
SSE subscriber of the run sees), and, with a webhook configured, a delivery in the outbox,
written in the same transaction as the event (docs/webhooks.md).

The delivery is a row of the run's change set (``webhook_deliveries`` is one of the tables the
one write path inserts into), so the event and its delivery commit together or not at all.
A threshold reached by a call outside any run (a project's or key's budget, through the
OpenAI-compatible endpoint) has no chain to join: it gets its delivery alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from agent_engine.config import Settings
from agent_engine.domain.budget_thresholds import Crossing
from agent_engine.domain.clock import utcnow
from agent_engine.domain.records import ChangeSet
from agent_engine.domain.transitions import append_event
from agent_engine.engine.context import EngineContext
from agent_engine.engine.locking import change_run
from agent_engine.engine.webhooks import envelope
from agent_engine.storage.database import transaction
from agent_engine.storage.webhooks import delivery_row, insert_deliveries_txn

THRESHOLD_REACHED = "budget.threshold_reached"
ACTOR = "budget"


def alert_payload(crossing: Crossing) -> dict[str, Any]:
    """The event's payload: which budget, which threshold, spent against what limit (money as
    decimal strings, exact)."""
    payload: dict[str, Any] = {
        "counter_id": crossing.counter_id,
        "scope": crossing.scope,
        "subject": crossing.subject,
        "period": crossing.period,
        "threshold_percent": crossing.threshold_percent,
        "measure": crossing.measure,
        "spent_usd": str(crossing.spent_usd),
        "limit_usd": None if crossing.limit_usd is None else str(crossing.limit_usd),
    }
    if crossing.measure == "tokens" or crossing.limit_tokens is not None:
        payload["spent_tokens"] = crossing.spent_tokens
        payload["limit_tokens"] = crossing.limit_tokens
    return payload


def _delivery(settings: Settings, crossing: Crossing, data: dict[str, Any]) -> dict[str, Any]:
    assert settings.webhook_url is not None
    now = utcnow()
    return delivery_row(
        event_type=THRESHOLD_REACHED,
        run_id=crossing.run_id,
        url=settings.webhook_url,
        payload=envelope(THRESHOLD_REACHED, data, now),
        now=now,
    )


def add_announcements(
    changes: ChangeSet, crossings: Sequence[Crossing], settings: Settings
) -> None:
    """Add to ``changes`` (the change set of the crossings' run) one ``budget.threshold_reached``
    event per crossing and, with a webhook URL configured, its delivery."""
    run = changes.run
    for crossing in crossings:
        payload = alert_payload(crossing)
        append_event(changes, run, THRESHOLD_REACHED, payload, actor=ACTOR)
        if settings.webhook_url is not None:
            data = {**payload, "run_id": str(run.id), "audit_seq": run.audit_seq}
            changes.add("webhook_deliveries", _delivery(settings, crossing, data))


async def announce(ctx: EngineContext, crossings: Sequence[Crossing]) -> None:
    """Announce ``crossings`` (made by ``domain/budget_thresholds.crossings``): per run, one
    transaction with the events and their deliveries; the crossings of no run, one with their
    deliveries (none without a webhook). No crossings: nothing is done."""
    if not crossings:
        return
    by_run: dict[uuid.UUID | None, list[Crossing]] = {}
    for crossing in crossings:
        by_run.setdefault(crossing.run_id, []).append(crossing)
    for run_id, group in by_run.items():
        if run_id is None:
            await _announce_without_run(ctx, group)
            continue
        async with change_run(ctx, run_id, open_steps=True) as locked:
            add_announcements(locked.changes, group, ctx.settings)


async def _announce_without_run(ctx: EngineContext, crossings: Sequence[Crossing]) -> None:
    settings = ctx.settings
    if settings.webhook_url is None:
        return
    rows = [_delivery(settings, crossing, {**alert_payload(crossing)}) for crossing in crossings]
    async with transaction(ctx.sessions) as session:
        await insert_deliveries_txn(session, rows)
