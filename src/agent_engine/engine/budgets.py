"""Budgets that hold: a worst-case reservation before every model call, settled after.

Which budgets apply to a call: its run's (``budget_usd`` / ``budget_tokens``), and this calendar
month's budget of the run's project and of the API key that created it (``budgets`` rows). Each
has a counter (``budget_counters``) of what was spent and what is held. Reserving locks the
counters in id order and adds the call's worst case to every one of them only if it fits all of
them — one transaction, so fifty concurrent calls against room for ten make exactly ten holds.
Settling swaps the hold for the actual cost. A hold whose holder went away (the step's lease
lapsed, or the hold expired) is released the next time a reservation would not fit without it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from agent_engine.domain.budget_math import (
    BudgetSubject,
    Room,
    fits,
    month_of,
    refusal,
    room_of,
)
from agent_engine.domain.budget_thresholds import (
    CounterState,
    Crossing,
    alerted_after,
    crossings,
)
from agent_engine.domain.clock import utcnow
from agent_engine.domain.money import quantize_money
from agent_engine.engine.budget_alerts import announce
from agent_engine.engine.context import EngineContext
from agent_engine.errors import BudgetExceededError, EngineError
from agent_engine.llm.base import LLMCallRecord
from agent_engine.storage import budgets as store
from agent_engine.storage.database import read_transaction, transaction

logger = logging.getLogger(__name__)
ZERO = Decimal(0)
RUN_PERIOD = "run"


@dataclass(frozen=True)
class Reservation:
    """A held worst case: what it holds and on which counters."""

    id: str
    usd: Decimal
    tokens: int
    counter_ids: tuple[uuid.UUID, ...]


@dataclass(frozen=True)
class _CounterKey:
    scope: str
    subject: str
    period: str
    limit_usd: Decimal | None
    limit_tokens: int | None


async def _keys(
    session: Any, subject: BudgetSubject, now: datetime, *, definitions: bool = True
) -> list[_CounterKey]:
    keys = []
    if subject.run_id is not None and (
        subject.run_budget_usd is not None or subject.run_budget_tokens is not None
    ):
        keys.append(
            _CounterKey(
                "run",
                str(subject.run_id),
                RUN_PERIOD,
                subject.run_budget_usd,
                subject.run_budget_tokens,
            )
        )
    if definitions and (subject.project is not None or subject.api_key_id is not None):
        period = month_of(now)
        for row in await store.definitions_txn(session, subject.project, subject.api_key_id):
            keys.append(
                _CounterKey(
                    row["scope"], row["subject"], period, row["limit_usd"], row["limit_tokens"]
                )
            )
    return keys


async def room(ctx: EngineContext, subject: BudgetSubject) -> Room | None:
    """What the budgets of ``subject`` still allow now (None: no budget applies)."""
    now = utcnow()
    async with read_transaction(ctx.sessions) as session:
        keys = await _keys(session, subject, now)
        if not keys:
            return None
        counters = []
        for key in keys:
            stored = await store.counters_of_txn(session, key.scope, key.subject)
            current = next((c for c in stored if c["period"] == key.period), None)
            counters.append(current if current is not None else _fresh(key))
    return room_of(counters)


def _fresh(key: _CounterKey) -> dict[str, Any]:
    return {
        "scope": key.scope,
        "subject": key.subject,
        "period": key.period,
        "limit_usd": key.limit_usd,
        "limit_tokens": key.limit_tokens,
        "spent_usd": ZERO,
        "spent_tokens": 0,
        "reserved_usd": ZERO,
        "reserved_tokens": 0,
    }


async def reserve(
    ctx: EngineContext,
    subject: BudgetSubject,
    *,
    amount_usd: Decimal,
    amount_tokens: int,
    purpose: str,
    estimate: dict[str, Any],
    step_id: uuid.UUID | None = None,
    attempt: int = 0,
    fence: int | None = None,
) -> Reservation:
    """Hold ``amount_usd`` and ``amount_tokens`` against every budget of ``subject`` at once.

    Raises BudgetExceededError, holding nothing, when the hold does not fit one of them (after
    releasing holds nobody will settle); its data says which budget and by how much."""
    hold = _Hold(
        subject=subject,
        usd=quantize_money(amount_usd),
        tokens=amount_tokens,
        values={
            "run_id": subject.run_id,
            "step_id": step_id,
            "attempt": attempt,
            "fence": fence,
            "purpose": purpose,
            "estimate": estimate,
        },
    )
    made = await _try_reserve(ctx, hold)
    if isinstance(made, dict) and await release_lapsed(ctx, subject.run_id):
        made = await _try_reserve(ctx, hold)
    if isinstance(made, dict):
        raise BudgetExceededError(_refusal_text(made), **made)
    return made


@dataclass(frozen=True)
class _Hold:
    subject: BudgetSubject
    usd: Decimal
    tokens: int
    values: dict[str, Any]


async def _try_reserve(ctx: EngineContext, hold: _Hold) -> Reservation | dict[str, Any]:
    """The reservation, or (holding nothing) what the first budget it does not fit shows."""
    now = utcnow()
    async with transaction(ctx.sessions) as session:
        keys = await _keys(session, hold.subject, now)
        ids = [
            await store.ensure_counter_txn(
                session,
                scope=key.scope,
                subject=key.subject,
                period=key.period,
                limit_usd=key.limit_usd,
                limit_tokens=key.limit_tokens,
                now=now,
            )
            for key in keys
        ]
        counters = await store.lock_counters_txn(session, ids)
        for counter in counters:
            if not fits(counter, hold.usd, hold.tokens):
                return refusal(counter, hold.usd, hold.tokens)
        for counter in counters:
            await store.write_counter_txn(
                session,
                counter["id"],
                {
                    "reserved_usd": quantize_money(counter["reserved_usd"] + hold.usd),
                    "reserved_tokens": counter["reserved_tokens"] + hold.tokens,
                    "updated_at": now,
                },
            )
        reservation_id = uuid.uuid4()
        await store.insert_reservation_txn(
            session,
            {
                **hold.values,
                "id": reservation_id,
                "counter_ids": [str(i) for i in ids],
                "amount_usd": hold.usd,
                "amount_tokens": hold.tokens,
                "status": "held",
                "created_at": now,
                "expires_at": now + _hold_lifetime(ctx),
            },
        )
    return Reservation(str(reservation_id), hold.usd, hold.tokens, tuple(ids))


def _hold_lifetime(ctx: EngineContext) -> timedelta:
    # Longer than any call can take with its retries and fallbacks; a step's hold is released
    # sooner, when its lease lapses.
    return timedelta(seconds=max(600.0, 8 * ctx.settings.llm_timeout_s))


def _refusal_text(shown: dict[str, Any]) -> str:
    where = f"{shown['scope']} {shown['subject']}"
    if shown["scope"] != "run":
        where += f" ({shown['period']})"
    if shown["measure"] == "tokens":
        return (
            f"the {where} token budget of {shown['limit_tokens']} has "
            f"{shown['spent_tokens']} spent and {shown['reserved_tokens']} reserved; "
            f"this call may need {shown['needed_tokens']}"
        )
    return (
        f"the {where} budget of ${shown['limit_usd']} has ${shown['spent_usd']} spent and "
        f"${shown['reserved_usd']} reserved; this call may cost up to ${shown['needed_usd']}"
    )


async def release_lapsed(ctx: EngineContext, run_id: uuid.UUID | None) -> int:
    """Release holds nobody will settle (see ``lapsed_reservations_txn``); how many."""
    now = utcnow()
    async with transaction(ctx.sessions) as session:
        candidates = await store.lapsed_reservations_txn(session, run_id, now)
        if not candidates:
            return 0
        # One lock order for every writer: counters (by id), then reservations.
        ids = sorted({uuid.UUID(i) for hold in candidates for i in hold["counter_ids"]})
        counters = {c["id"]: c for c in await store.lock_counters_txn(session, ids)}
        released = 0
        for candidate in candidates:
            hold = await store.lock_reservation_txn(session, candidate["id"])
            if hold is None or hold["status"] != "held":
                continue  # settled meanwhile
            _take_off(counters, hold, actual_usd=None, actual_tokens=None, now=now)
            await store.write_reservation_txn(
                session, hold["id"], {"status": "released", "settled_at": now}
            )
            released += 1
        for counter in counters.values():
            await store.write_counter_txn(session, counter["id"], _figures(counter, now))
    return released


def _figures(counter: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "reserved_usd": counter["reserved_usd"],
        "reserved_tokens": counter["reserved_tokens"],
        "spent_usd": counter["spent_usd"],
        "spent_tokens": counter["spent_tokens"],
        "updated_at": now,
    }


def _take_off(
    counters: dict[uuid.UUID, dict[str, Any]],
    hold: dict[str, Any],
    *,
    actual_usd: Decimal | None,
    actual_tokens: int | None,
    now: datetime,
) -> None:
    """Take ``hold`` off its counters (if it is still held) and add what was spent, in place."""
    for key in hold["counter_ids"]:
        counter = counters.get(uuid.UUID(key))
        if counter is None:
            continue
        if hold["status"] == "held":
            counter["reserved_usd"] = quantize_money(counter["reserved_usd"] - hold["amount_usd"])
            counter["reserved_tokens"] -= hold["amount_tokens"]
        if actual_usd is not None:
            counter["spent_usd"] = quantize_money(counter["spent_usd"] + actual_usd)
        if actual_tokens is not None:
            counter["spent_tokens"] += actual_tokens


async def settle(
    ctx: EngineContext, reservation: Reservation, records: Sequence[LLMCallRecord]
) -> None:
    """Replace the hold by what ``records`` cost (a hold released meanwhile still gets its
    spend: the calls were made), then announce the alert thresholds the spend reached."""
    usd = quantize_money(sum((r.cost_usd for r in records if r.cost_usd is not None), ZERO))
    tokens = sum(r.usage.total_tokens for r in records)
    now = utcnow()
    found: list[Crossing] = []
    async with transaction(ctx.sessions) as session:
        locked = await store.lock_counters_txn(session, sorted(reservation.counter_ids))
        counters = {c["id"]: c for c in locked}
        hold = await store.lock_reservation_txn(session, uuid.UUID(reservation.id))
        if hold is None or hold["status"] == "settled":
            return
        _take_off(counters, hold, actual_usd=usd, actual_tokens=tokens, now=now)
        for counter in counters.values():
            reached = crossings(
                _state(counter, hold["run_id"]), ctx.settings.budget_alert_thresholds
            )
            # Stored with the spend, under the counter's lock: no threshold is announced twice.
            counter["alerted_percent"] = alerted_after(counter["alerted_percent"], reached)
            found.extend(reached)
            await store.write_counter_txn(
                session,
                counter["id"],
                {**_figures(counter, now), "alerted_percent": counter["alerted_percent"]},
            )
        await store.write_reservation_txn(
            session,
            hold["id"],
            {
                "status": "settled",
                "actual_usd": usd,
                "actual_tokens": tokens,
                "calls": [_usage_of(r) for r in records],
                "settled_at": now,
            },
        )
    try:
        await announce(ctx, found)
    except (EngineError, SQLAlchemyError) as exc:
        # The spend is settled; an alert that could not be written is logged, not raised
        # into the call that spent it.
        logger.warning("budget alerts %s not announced: %s", found, exc)


def _state(counter: dict[str, Any], run_id: uuid.UUID | None) -> CounterState:
    return CounterState(
        counter_id=str(counter["id"]),
        scope=counter["scope"],
        subject=counter["subject"],
        period=counter["period"],
        limit_usd=counter["limit_usd"],
        limit_tokens=counter["limit_tokens"],
        spent_usd=counter["spent_usd"],
        spent_tokens=counter["spent_tokens"],
        alerted_percent=counter["alerted_percent"],
        run_id=run_id,
    )


def _usage_of(record: LLMCallRecord) -> dict[str, Any]:
    """What the reservation keeps of a call: enough to account for it if its step never
    records it."""
    return {
        "provider": record.provider,
        "model": record.model,
        "request_hash": record.request_hash,
        "attempt": record.attempt,
        "usage": record.usage.model_dump(mode="json"),
        "cost_usd": format(record.cost_usd, "f") if record.cost_usd is not None else None,
        "error": record.error,
    }
