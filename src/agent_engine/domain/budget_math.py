"""Budget arithmetic on plain values: does a hold fit, how much room is left, what to say when not.

A counter is a mapping with ``limit_usd``, ``limit_tokens`` (None: no limit of that kind),
``spent_usd``, ``spent_tokens``, ``reserved_usd`` and ``reserved_tokens``. A hold fits when what
is spent, plus what is held, plus the hold stays within every limit — equal to the limit fits.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from agent_engine.domain.money import quantize_money
from agent_engine.domain.records import RunRecord

ZERO = Decimal(0)


@dataclass(frozen=True)
class BudgetSubject:
    """Who a call spends for: a run (with its own budget), a project, an API key."""

    run_id: uuid.UUID | None
    run_budget_usd: Decimal | None
    run_budget_tokens: int | None
    project: str | None
    api_key_id: uuid.UUID | None

    @property
    def may_apply(self) -> bool:
        """Whether any budget could apply (a run's own, or a project's or key's monthly one)."""
        return any(
            value is not None
            for value in (
                self.run_budget_usd,
                self.run_budget_tokens,
                self.project,
                self.api_key_id,
            )
        )


def budget_subject(run: RunRecord) -> BudgetSubject:
    """The budgets the calls of ``run`` count against."""
    return BudgetSubject(run.id, run.budget_usd, run.budget_tokens, run.project, run.api_key_id)


def month_of(moment: datetime) -> str:
    """The calendar-month period (UTC) a call at ``moment`` counts in, e.g. ``2026-12``."""
    return f"{moment.year:04d}-{moment.month:02d}"


def month_bounds(period: str) -> tuple[datetime, datetime]:
    """The first instant of the calendar month ``period`` (``2026-12``) and of the next (UTC)."""
    year, month = (int(part) for part in period.split("-"))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def usd_left(counter: Mapping[str, Any]) -> Decimal | None:
    limit = counter["limit_usd"]
    if limit is None:
        return None
    return quantize_money(limit - counter["spent_usd"] - counter["reserved_usd"])


def tokens_left(counter: Mapping[str, Any]) -> int | None:
    limit = counter["limit_tokens"]
    if limit is None:
        return None
    return int(limit - counter["spent_tokens"] - counter["reserved_tokens"])


def fits(counter: Mapping[str, Any], usd: Decimal, tokens: int) -> bool:
    """Whether a hold of ``usd`` and ``tokens`` fits ``counter``."""
    money = usd_left(counter)
    count = tokens_left(counter)
    return (money is None or usd <= money) and (count is None or tokens <= count)


def refusal(counter: Mapping[str, Any], usd: Decimal, tokens: int) -> dict[str, Any]:
    """What a paused step shows: which budget, its limit, spent, reserved and what was needed."""
    measure = "usd"
    money = usd_left(counter)
    if (money is None or usd <= money) and tokens_left(counter) is not None:
        measure = "tokens"
    return {
        "reason": "budget",
        "scope": counter["scope"],
        "subject": counter["subject"],
        "period": counter["period"],
        "measure": measure,
        "limit_usd": _text(counter["limit_usd"]),
        "spent_usd": _text(counter["spent_usd"]),
        "reserved_usd": _text(counter["reserved_usd"]),
        "needed_usd": _text(usd),
        "limit_tokens": counter["limit_tokens"],
        "spent_tokens": counter["spent_tokens"],
        "reserved_tokens": counter["reserved_tokens"],
        "needed_tokens": tokens,
    }


def _text(value: Decimal | None) -> str | None:
    return format(quantize_money(value), "f") if value is not None else None
