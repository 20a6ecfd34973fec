"""Budget counters and reservations in the database (``engine/budgets.py`` holds the rules).

Every function here runs inside the caller's transaction. Counters are locked in id order
(``FOR UPDATE`` on PostgreSQL; SQLite's write transactions are serial already) and compared in
``Decimal`` in Python, so the check and the update are one atomic step on both backends and no
money is ever summed as a float.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, and_, exists, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.storage.budget_tables import BudgetCounter, BudgetDefinition, BudgetReservation
from agent_engine.storage.tables import LLMCall, Step

COUNTERS = cast(Table, BudgetCounter.__table__)
RESERVATIONS = cast(Table, BudgetReservation.__table__)
DEFINITIONS = cast(Table, BudgetDefinition.__table__)
STEPS = cast(Table, Step.__table__)
CALLS = cast(Table, LLMCall.__table__)


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)


async def ensure_counter_txn(
    session: AsyncSession,
    *,
    scope: str,
    subject: str,
    period: str,
    limit_usd: Decimal | None,
    limit_tokens: int | None,
    now: datetime,
    replace_limits: bool = False,
) -> uuid.UUID:
    """The id of the counter of ``(scope, subject, period)``, created with the given limits if it
    does not exist yet (``replace_limits``: the limits are set even if it does)."""
    values = {
        "id": uuid.uuid4(),
        "scope": scope,
        "subject": subject,
        "period": period,
        "limit_usd": limit_usd,
        "limit_tokens": limit_tokens,
        "spent_usd": Decimal(0),
        "spent_tokens": 0,
        "reserved_usd": Decimal(0),
        "reserved_tokens": 0,
        "alerted_percent": 0,
        "updated_at": now,
    }
    statement = _insert(session, COUNTERS).values(**values)
    key = ["scope", "subject", "period"]
    if replace_limits:
        statement = statement.on_conflict_do_update(
            index_elements=key,
            set_={"limit_usd": limit_usd, "limit_tokens": limit_tokens, "updated_at": now},
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=key)
    await session.execute(statement)
    found = await session.scalar(
        select(COUNTERS.c.id).where(
            COUNTERS.c.scope == scope, COUNTERS.c.subject == subject, COUNTERS.c.period == period
        )
    )
    assert found is not None  # inserted above, or already there
    return uuid.UUID(str(found))


async def definitions_txn(
    session: AsyncSession, project: str | None, api_key_id: uuid.UUID | None
) -> list[dict[str, Any]]:
    """The monthly budgets defined for ``project`` and for the key ``api_key_id``."""
    wanted = []
    if project is not None:
        wanted.append(and_(DEFINITIONS.c.scope == "project", DEFINITIONS.c.subject == project))
    if api_key_id is not None:
        wanted.append(
            and_(DEFINITIONS.c.scope == "api_key", DEFINITIONS.c.subject == str(api_key_id))
        )
    if not wanted:
        return []
    rows = await session.execute(select(DEFINITIONS).where(or_(*wanted)))
    return [dict(row) for row in rows.mappings()]


async def lock_counters_txn(
    session: AsyncSession, counter_ids: Sequence[uuid.UUID]
) -> list[dict[str, Any]]:
    """The counters, locked in id order (one order for every writer: no deadlock)."""
    rows = await session.execute(
        select(COUNTERS)
        .where(COUNTERS.c.id.in_(list(counter_ids)))
        .order_by(COUNTERS.c.id)
        .with_for_update()
    )
    return [dict(row) for row in rows.mappings()]


async def counters_of_txn(session: AsyncSession, scope: str, subject: str) -> list[dict[str, Any]]:
    """Every period's counter of one budget, newest period first."""
    rows = await session.execute(
        select(COUNTERS)
        .where(COUNTERS.c.scope == scope, COUNTERS.c.subject == subject)
        .order_by(COUNTERS.c.period.desc())
    )
    return [dict(row) for row in rows.mappings()]


async def write_counter_txn(
    session: AsyncSession, counter_id: uuid.UUID, values: dict[str, Any]
) -> None:
    """Store a counter's new figures (computed by the caller under the counter's lock)."""
    await session.execute(update(COUNTERS).where(COUNTERS.c.id == counter_id).values(**values))


async def insert_reservation_txn(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(RESERVATIONS.insert().values(**values))


async def lock_reservation_txn(
    session: AsyncSession, reservation_id: uuid.UUID
) -> dict[str, Any] | None:
    row = await session.execute(
        select(RESERVATIONS).where(RESERVATIONS.c.id == reservation_id).with_for_update()
    )
    found = row.mappings().first()
    return dict(found) if found is not None else None


async def write_reservation_txn(
    session: AsyncSession, reservation_id: uuid.UUID, values: dict[str, Any]
) -> None:
    await session.execute(
        update(RESERVATIONS).where(RESERVATIONS.c.id == reservation_id).values(**values)
    )


async def lapsed_reservations_txn(
    session: AsyncSession, run_id: uuid.UUID | None, now: datetime
) -> list[dict[str, Any]]:
    """Held reservations nobody will settle: past ``expires_at``, or (for ``run_id``'s steps)
    taken by an attempt whose step moved on (another fence, or no longer running). Not locked:
    the caller locks their counters, then each of them (one lock order for every writer)."""
    steps = STEPS
    moved_on = exists().where(
        steps.c.id == RESERVATIONS.c.step_id,
        or_(steps.c.fence != RESERVATIONS.c.fence, steps.c.status != "running"),
    )
    lapsed = RESERVATIONS.c.expires_at < now
    if run_id is not None:
        lapsed = or_(lapsed, and_(RESERVATIONS.c.run_id == run_id, moved_on))
    rows = await session.execute(
        select(RESERVATIONS)
        .where(RESERVATIONS.c.status == "held", lapsed)
        .order_by(RESERVATIONS.c.id)
    )
    return [dict(row) for row in rows.mappings()]


async def ledger_spend_txn(
    session: AsyncSession, scope: str, subject: str, start: datetime, end: datetime
) -> tuple[Decimal, int]:
    """What the ledger holds for a project's or key's calls made in ``[start, end)``: USD
    (summed in Python: SQLite stores money as decimal text) and tokens."""
    column = CALLS.c.project if scope == "project" else CALLS.c.api_key_id
    value: Any = subject
    if scope == "api_key":
        try:
            value = uuid.UUID(subject)
        except ValueError:
            return Decimal(0), 0
    rows = await session.execute(
        select(CALLS.c.cost_usd, CALLS.c.input_tokens, CALLS.c.output_tokens).where(
            column == value, CALLS.c.created_at >= start, CALLS.c.created_at < end
        )
    )
    usd, tokens = Decimal(0), 0
    for cost, inputs, outputs in rows:
        usd += cost or 0
        tokens += inputs + outputs
    return usd, tokens


async def reservation_spend_txn(
    session: AsyncSession, reservation_id: uuid.UUID
) -> tuple[Decimal, int] | None:
    """What the ledger holds for the calls made under one hold: USD and tokens (None: no call
    of it was recorded)."""
    rows = (
        await session.execute(
            select(CALLS.c.cost_usd, CALLS.c.input_tokens, CALLS.c.output_tokens).where(
                CALLS.c.reservation_id == reservation_id
            )
        )
    ).all()
    if not rows:
        return None
    return sum((cost or Decimal(0) for cost, _, _ in rows), Decimal(0)), sum(
        inputs + outputs for _, inputs, outputs in rows
    )


async def upsert_definition_txn(session: AsyncSession, values: dict[str, Any]) -> None:
    """Create or replace the monthly budget of ``(scope, subject)``."""
    statement = (
        _insert(session, DEFINITIONS)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["scope", "subject"],
            set_={
                "limit_usd": values["limit_usd"],
                "limit_tokens": values["limit_tokens"],
                "updated_by": values["updated_by"],
                "updated_at": values["updated_at"],
            },
        )
    )
    await session.execute(statement)


async def list_definitions_txn(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(DEFINITIONS).order_by(DEFINITIONS.c.scope, DEFINITIONS.c.subject)
    )
    return [dict(row) for row in rows.mappings()]


async def delete_definition_txn(session: AsyncSession, scope: str, subject: str) -> bool:
    result = await session.execute(
        DEFINITIONS.delete().where(DEFINITIONS.c.scope == scope, DEFINITIONS.c.subject == subject)
    )
    return bool(getattr(result, "rowcount", 0))
