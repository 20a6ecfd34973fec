"""Reading what the ledger adds up to: a run's budget counter, and totals of ``llm_calls``
grouped in SQL by day, model, step type, project and key, on both backends.

Money is summed exactly: PostgreSQL sums its NUMERIC column; SQLite keeps money as decimal text
with nine places (``storage/types.py`` ``Money``), so it sums the text read as a count of
billionths of a dollar (an integer) instead of letting SQLite add floats.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import BigInteger, String, case, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from agent_engine.domain.money import quantize_money
from agent_engine.storage.budget_tables import BudgetCounter
from agent_engine.storage.tables import LLMCall, Step

Grouping = Literal["day", "model", "step_type", "project", "key"]
GROUPINGS: tuple[Grouping, ...] = ("day", "model", "step_type", "project", "key")
NANO = Decimal("0.000000001")
MONEY_FIELDS = ("cost_usd", "saved_by_cache_usd", "saved_by_routing_usd")
COUNT_FIELDS = (
    "calls",
    "cached_calls",
    "unpriced_calls",
    "estimated_calls",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


async def run_counter_txn(session: AsyncSession, run_id: uuid.UUID) -> BudgetCounter | None:
    """The run's own budget counter (scope ``run``, period ``run``), if it has one."""
    query = select(BudgetCounter).where(
        BudgetCounter.scope == "run",
        BudgetCounter.subject == str(run_id),
        BudgetCounter.period == "run",
    )
    found: BudgetCounter | None = (await session.scalars(query)).first()
    return found


@dataclass(frozen=True)
class CostQuery:
    """Which calls to add up (dates are UTC days, both ends included) and how to group them."""

    group_by: tuple[Grouping, ...] = ()
    since: date | None = None
    until: date | None = None
    project: str | None = None


def _money_sum(column: Any, dialect: str) -> ColumnElement[Any]:
    if dialect == "sqlite":
        # '0.001200000' -> 1200000 billionths: exact integer addition.
        return func.coalesce(func.sum(cast(func.replace(column, ".", ""), BigInteger)), 0)
    return func.coalesce(func.sum(column), 0)


def _day(dialect: str) -> ColumnElement[Any]:
    if dialect == "sqlite":
        return func.substr(cast(LLMCall.created_at, String), 1, 10)  # stored as UTC ISO text
    return cast(func.date(func.timezone("UTC", LLMCall.created_at)), String)


def _group_columns(dialect: str) -> dict[Grouping, Any]:
    return {
        "day": _day(dialect),
        "model": LLMCall.provider + literal(":") + LLMCall.model,
        "step_type": func.coalesce(Step.step_type, LLMCall.purpose),
        "project": LLMCall.project,
        "key": LLMCall.api_key_id,  # a uuid, written as text by _row (backends differ in SQL)
    }


def _flag(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((condition, 1), else_=0))


async def cost_totals_txn(session: AsyncSession, query: CostQuery) -> list[dict[str, Any]]:
    """One row per group (one row in all without grouping): calls, tokens, cost and savings,
    ordered by the group's values."""
    dialect = session.bind.dialect.name if session.bind is not None else "postgresql"
    columns = _group_columns(dialect)
    groups = [columns[name].label(name) for name in query.group_by]
    saving_cache = case((LLMCall.saving == "cache", LLMCall.saved_usd), else_=None)
    saving_routing = case((LLMCall.saving == "routing", LLMCall.saved_usd), else_=None)
    statement = select(
        *groups,
        func.count().label("calls"),
        _flag(LLMCall.cached.is_(True)).label("cached_calls"),
        _flag(LLMCall.priced.is_(False)).label("unpriced_calls"),
        _flag(LLMCall.usage_estimated.is_(True)).label("estimated_calls"),
        *(
            func.coalesce(func.sum(cast(getattr(LLMCall, name), BigInteger)), 0).label(name)
            for name in COUNT_FIELDS[4:]
        ),
        _money_sum(LLMCall.cost_usd, dialect).label("cost_usd"),
        _money_sum(saving_cache, dialect).label("saved_by_cache_usd"),
        _money_sum(saving_routing, dialect).label("saved_by_routing_usd"),
    ).select_from(LLMCall)
    if "step_type" in query.group_by:
        statement = statement.outerjoin(Step, Step.id == LLMCall.step_id)
    statement = statement.where(*_filters(query))
    if groups:
        statement = statement.group_by(*groups).order_by(*groups)
    rows = (await session.execute(statement)).mappings().all()
    return [_row(row, query.group_by, dialect) for row in rows]


def _filters(query: CostQuery) -> list[ColumnElement[bool]]:
    """Dates as ranges of ``created_at`` (its index serves them on both backends)."""
    found: list[ColumnElement[bool]] = []
    if query.since is not None:
        found.append(LLMCall.created_at >= _midnight(query.since))
    if query.until is not None:
        found.append(LLMCall.created_at < _midnight(query.until + timedelta(days=1)))
    if query.project is not None:
        found.append(LLMCall.project == query.project)
    return found


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _row(row: Any, group_by: Sequence[Grouping], dialect: str) -> dict[str, Any]:
    out: dict[str, Any] = {name: row[name] for name in group_by}
    if out.get("key") is not None:
        out["key"] = str(out["key"])
    for name in COUNT_FIELDS:
        out[name] = int(row[name] or 0)
    for name in MONEY_FIELDS:
        value = Decimal(row[name] or 0)
        out[name] = quantize_money(value * NANO if dialect == "sqlite" else value)
    return out
