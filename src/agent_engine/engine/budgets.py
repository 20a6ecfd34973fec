"""Budgets that hold: a worst-case reservation before every model call, settled after.

Which budgets apply to a call: its run's (``budget_usd`` / ``budget_tokens``), and this calendar
month's budget of the run's project and of the API key that created it (``budgets`` rows). Each
has a counter (``budget_counters``) of what was spent and what is held. Reserving locks the
counters in id order and adds the call's worst case to every one of them only if it fits all of
them — one transaction, so fifty concurrent calls against room for ten make exactly ten holds.
Settling swaps the hold for the actual cost; a step's settle runs beside the write of its
result, not before it (``engine/budget_settles.py``). A hold whose holder went away (the step's
lease lapsed, or the hold expired) is released the next time a reservation would not fit
without it — settled from the ledger instead when its calls were recorded.
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

from agent_engine import metrics
from agent_engine.domain.budget_math import (
    BudgetSubject,
    month_of,
    refusal,
)
from agent_engine.domain.budget_thresholds import (
    CounterState,
    Crossing,
    crossings,
)
from agent_engine.domain.clock import utcnow
from agent_engine.domain.money import quantize_money
from agent_engine.engine.budget_alerts import announce
from agent_engine.engine.context import EngineContext
from agent_engine.errors import BudgetExceededError, EngineError
from agent_engine.llm.base import LLMCallRecord
from agent_engine.storage import budget_writes as writes
from agent_engine.storage import budgets as store
from agent_engine.storage.database import transaction

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
    run_id: uuid.UUID | None = None
    # The smallest share of a USD budget left once held (None: no USD budget applies).
    fraction_left: float | None = None


@dataclass(frozen=True)
class _CounterKey:
    scope: str
    subject: str
    period: str
    limit_usd: Decimal | None
    limit_tokens: int | None


def _run_keys(subject: BudgetSubject) -> list[_CounterKey]:
    """The run's own counter, if the run has a budget."""
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
    return keys


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
) -> Reservation | None:
    """Hold ``amount_usd`` and ``amount_tokens`` against every budget of ``subject`` at once
    (None: no budget applies, nothing is held).

    Raises BudgetExceededError, holding nothing, when the hold does not fit one of them (after
    releasing holds nobody will settle); its data says which budget and by how much."""
    now = utcnow()
    usd = quantize_money(amount_usd)
    reservation_id = uuid.uuid4()
    doc: dict[str, Any] = {
        "counters": [_counter_key(key) for key in _run_keys(subject)],
        "definitions": {
            "project": subject.project,
            "api_key": str(subject.api_key_id) if subject.api_key_id else None,
            "period": month_of(now),
        },
        "amount_usd": format(usd, "f"),
        "amount_tokens": amount_tokens,
        "reservation": {
            "id": str(reservation_id),
            "run_id": str(subject.run_id) if subject.run_id else None,
            "step_id": str(step_id) if step_id else None,
            "attempt": attempt,
            "fence": fence,
            "purpose": purpose,
            "estimate": estimate,
            "amount_usd": format(usd, "f"),
            "amount_tokens": amount_tokens,
            "status": "held",
        },
    }

    async def try_reserve() -> dict[str, Any]:
        # Stamped at each try: a hold that fits only on a later try took effect then, and its
        # time is what says, afterwards, which holds were held together.
        held_at = utcnow()
        doc["reservation"]["created_at"] = held_at.isoformat()
        doc["reservation"]["expires_at"] = (held_at + _hold_lifetime(ctx)).isoformat()
        return await writes.reserve(ctx.db, ctx.sessions, doc)

    answer = await try_reserve()
    if "refused" in answer and ctx.settles.pending():
        # Calls this process finished may still hold their worst case: settle them first.
        await ctx.settles.wait()
        answer = await try_reserve()
    if "refused" in answer and await release_lapsed(ctx, subject.run_id):
        answer = await try_reserve()
    if "none" in answer:
        return None
    if "refused" in answer:
        metrics.BUDGET_REFUSALS.inc()
        shown = refusal(_counter(answer["refused"]), usd, amount_tokens)
        raise BudgetExceededError(_refusal_text(shown), **shown)
    metrics.BUDGET_RESERVATIONS.inc()
    ids = tuple(uuid.UUID(i) for i in answer["counter_ids"])
    left = answer.get("fraction_left")
    fraction = float(left) if left is not None else None
    return Reservation(str(reservation_id), usd, amount_tokens, ids, subject.run_id, fraction)


def _counter_key(key: _CounterKey) -> dict[str, Any]:
    return {
        "scope": key.scope,
        "subject": key.subject,
        "period": key.period,
        "limit_usd": format(key.limit_usd, "f") if key.limit_usd is not None else None,
        "limit_tokens": key.limit_tokens,
    }


def _counter(row: dict[str, Any]) -> dict[str, Any]:
    """A counter as either backend answered it, with exact Decimal money."""
    money = ("limit_usd", "spent_usd", "reserved_usd")
    return {k: (Decimal(str(v)) if k in money and v is not None else v) for k, v in row.items()}


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
    """Release holds nobody will settle (see ``lapsed_reservations_txn``); how many.

    A hold whose calls are in the ledger (its step recorded them, but its settle was lost) is
    settled at what the ledger says instead, so the counters keep every recorded spend."""
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
            spend = await store.reservation_spend_txn(session, hold["id"])
            usd, tokens = spend if spend is not None else (None, None)
            _take_off(counters, hold, actual_usd=usd, actual_tokens=tokens, now=now)
            ending: dict[str, Any] = {"status": "released", "settled_at": now}
            if spend is not None:
                # Settled, not released: a settle arriving late then writes nothing twice.
                ending.update(status="settled", actual_usd=usd, actual_tokens=tokens)
            await store.write_reservation_txn(session, hold["id"], ending)
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
    doc = {
        "reservation_id": reservation.id,
        "counter_ids": [str(i) for i in sorted(reservation.counter_ids)],
        "actual_usd": format(usd, "f"),
        "actual_tokens": sum(r.usage.total_tokens for r in records),
        "calls": [_usage_of(r) for r in records],
        "thresholds": list(ctx.settings.budget_alert_thresholds),
    }
    answer = await writes.settle(ctx.db, ctx.sessions, doc)
    if not answer["settled"]:
        return
    found: list[Crossing] = []
    for row in answer["counters"]:
        counter = _counter(row)
        # The stored alerted_percent moved with the spend, under the counter's lock: these are
        # the thresholds this settle, and no other, reached.
        state = _state({**counter, "alerted_percent": counter["alerted_before"]}, reservation)
        found.extend(crossings(state, ctx.settings.budget_alert_thresholds))
    try:
        await announce(ctx, found)
    except (EngineError, SQLAlchemyError) as exc:
        # The spend is settled; an alert that could not be written is logged, not raised
        # into the call that spent it.
        logger.warning("budget alerts %s not announced: %s", found, exc)


def _state(counter: dict[str, Any], reservation: Reservation) -> CounterState:
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
        run_id=reservation.run_id,
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
