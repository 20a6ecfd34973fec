"""Holding and settling in one transaction each: on PostgreSQL one call of
``agent_engine_reserve_v1`` / ``agent_engine_settle_v1`` (``storage/sql/``), on SQLite the same
steps in Python (its write transactions are serial, so they are as atomic). Both take and answer
the same documents; the SQL files describe them."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from agent_engine.domain.budget_math import fits
from agent_engine.domain.budget_thresholds import thresholds_reached
from agent_engine.domain.clock import utcnow
from agent_engine.domain.money import quantize_money
from agent_engine.storage import budgets as store
from agent_engine.storage.database import transaction

# Holds and settles commit asynchronously (synchronous_commit off for their own statement),
# which saves every model call a WAL flush (a few ms on a plain disk). The next durable commit
# flushes them — normally the step's own write, which records the call — and PostgreSQL flushes
# any within wal_writer_delay. So only a crash of PostgreSQL itself can lose one: a lost hold
# loses that attempt's record too (its write came after); a settle lost after the step's write
# leaves the hold "held" with its calls in the ledger, and releasing it once the step has moved
# on settles it from the ledger (engine/budgets.py ``release_lapsed``): the counters never lose
# a recorded spend.
RESERVE_SQL = text(
    "SELECT set_config('synchronous_commit', 'off', true),"
    " CAST(agent_engine_reserve_v1(CAST(:doc AS jsonb)) AS text)"
)
SETTLE_SQL = text(
    "SELECT set_config('synchronous_commit', 'off', true),"
    " CAST(agent_engine_settle_v1(CAST(:doc AS jsonb)) AS text)"
)


async def reserve(
    db: AsyncEngine, sessions: async_sessionmaker[AsyncSession], doc: dict[str, Any]
) -> dict[str, Any]:
    """Hold ``doc["amount_*"]`` on every counter or on none, in a transaction of its own."""
    if db.dialect.name == "postgresql":
        return await _call_alone(db, RESERVE_SQL, doc)
    async with transaction(sessions) as session:
        return await reserve_txn(session, doc)


async def settle(
    db: AsyncEngine, sessions: async_sessionmaker[AsyncSession], doc: dict[str, Any]
) -> dict[str, Any]:
    """Swap a hold for its calls' spend, in a transaction of its own."""
    if db.dialect.name == "postgresql":
        return await _call_alone(db, SETTLE_SQL, doc)
    async with transaction(sessions) as session:
        return await settle_txn(session, doc)


async def _call_alone(db: AsyncEngine, statement: Any, doc: dict[str, Any]) -> dict[str, Any]:
    # One statement is one implicit transaction: no BEGIN and COMMIT round trips.
    async with db.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        row = (await autocommit.execute(statement, {"doc": json.dumps(doc, default=str)})).one()
    return _answer(row[1])


def _answer(raw: str) -> dict[str, Any]:
    # Money comes back as JSON numbers: read them as Decimal, never as float.
    answer: dict[str, Any] = json.loads(raw, parse_float=Decimal)
    return answer


async def reserve_txn(session: AsyncSession, doc: dict[str, Any]) -> dict[str, Any]:
    """SQLite: hold ``doc["amount_*"]`` on every counter or on none, the steps of
    budget_reserve_v1.sql in Python (SQLite's write transactions are serial)."""
    now = utcnow()
    wanted = list(doc["counters"])
    definitions = doc["definitions"]
    api_key = uuid.UUID(definitions["api_key"]) if definitions["api_key"] else None
    for row in await store.definitions_txn(session, definitions["project"], api_key):
        wanted.append({**row, "period": definitions["period"]})
    if not wanted:
        return {"none": True}
    ids = [
        await store.ensure_counter_txn(
            session,
            scope=key["scope"],
            subject=key["subject"],
            period=key["period"],
            limit_usd=_money(key["limit_usd"]),
            limit_tokens=key["limit_tokens"],
            now=now,
        )
        for key in wanted
    ]
    usd = Decimal(doc["amount_usd"])
    tokens = int(doc["amount_tokens"])
    counters = await store.lock_counters_txn(session, ids)
    for counter in counters:
        if not fits(counter, usd, tokens):
            return {"refused": counter}
    for counter in counters:
        await store.write_counter_txn(
            session,
            counter["id"],
            {
                "reserved_usd": quantize_money(counter["reserved_usd"] + usd),
                "reserved_tokens": counter["reserved_tokens"] + tokens,
                "updated_at": now,
            },
        )
    counter_ids = [str(c["id"]) for c in counters]
    await store.insert_reservation_txn(
        session, {**_reservation_values(doc["reservation"]), "counter_ids": counter_ids}
    )
    return {"counter_ids": counter_ids, "fraction_left": _fraction_left(counters, usd)}


def _fraction_left(counters: list[dict[str, Any]], usd: Decimal) -> Decimal | None:
    """The smallest share of a USD limit left once ``usd`` is held (None: no USD limit)."""
    shares = []
    for counter in counters:
        limit = counter["limit_usd"]
        if limit is None:
            continue
        left = limit - counter["spent_usd"] - counter["reserved_usd"] - usd
        shares.append(max(left / limit, Decimal(0)) if limit > 0 else Decimal(0))
    return min(shares) if shares else None


def _money(value: Any) -> Decimal | None:
    return Decimal(str(value)) if value is not None else None


def _reservation_values(row: dict[str, Any]) -> dict[str, Any]:
    from datetime import datetime

    values = dict(row)
    for name in ("id", "run_id", "step_id"):
        if values.get(name) is not None:
            values[name] = uuid.UUID(str(values[name]))
    for name in ("created_at", "expires_at"):
        values[name] = datetime.fromisoformat(str(values[name]))
    values["amount_usd"] = Decimal(str(values["amount_usd"]))
    return values


async def settle_txn(session: AsyncSession, doc: dict[str, Any]) -> dict[str, Any]:
    """SQLite: swap the hold for the actual spend and move each counter's alerted_percent, the
    steps of budget_settle_v1.sql in Python."""
    now = utcnow()
    ids = sorted(uuid.UUID(i) for i in doc["counter_ids"])
    counters = await store.lock_counters_txn(session, ids)
    hold = await store.lock_reservation_txn(session, uuid.UUID(doc["reservation_id"]))
    if hold is None or hold["status"] == "settled":
        return {"settled": False}
    usd = Decimal(doc["actual_usd"])
    tokens = int(doc["actual_tokens"])
    thresholds = [int(t) for t in doc["thresholds"]]
    moved = []
    for counter in counters:
        after = dict(counter)
        if hold["status"] == "held":
            after["reserved_usd"] = quantize_money(counter["reserved_usd"] - hold["amount_usd"])
            after["reserved_tokens"] = counter["reserved_tokens"] - hold["amount_tokens"]
        after["spent_usd"] = quantize_money(counter["spent_usd"] + usd)
        after["spent_tokens"] = counter["spent_tokens"] + tokens
        reached = thresholds_reached(
            after["limit_usd"], after["spent_usd"], counter["alerted_percent"], thresholds
        ) + thresholds_reached(
            after["limit_tokens"], after["spent_tokens"], counter["alerted_percent"], thresholds
        )
        after["alerted_percent"] = max([counter["alerted_percent"], *reached])
        after["updated_at"] = now
        await store.write_counter_txn(
            session, counter["id"], {k: v for k, v in after.items() if k != "id"}
        )
        moved.append({**after, "alerted_before": counter["alerted_percent"]})
    await store.write_reservation_txn(
        session,
        hold["id"],
        {
            "status": "settled",
            "actual_usd": usd,
            "actual_tokens": tokens,
            "calls": doc["calls"],
            "settled_at": now,
        },
    )
    return {"settled": True, "counters": moved}
