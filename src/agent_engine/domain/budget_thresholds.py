"""Budget alert thresholds: which percentages of a budget a settle has newly reached.

A counter (``budget_counters``) remembers the highest threshold already announced
(``alerted_percent``); a threshold is announced once per counter and period, when the spend
reaches it (exactly 50 % counts as reaching 50 %). A counter with both a USD and a token limit is
as used as its more used measure: the one a further call would hit first.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from typing import Literal

DEFAULT_THRESHOLDS: tuple[int, ...] = (50, 80, 100)
Measure = Literal["usd", "tokens"]


def check_thresholds(values: Iterable[int]) -> tuple[int, ...]:
    """``values`` as thresholds if each is an integer percent in 1..100 and they ascend strictly;
    else ValueError saying what is wrong."""
    thresholds = tuple(values)
    for value in thresholds:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
            raise ValueError(f"threshold {value!r} is not an integer percent from 1 to 100")
    if any(later <= earlier for earlier, later in pairwise(thresholds)):
        raise ValueError(f"thresholds must ascend, each once: {list(thresholds)}")
    return thresholds


def thresholds_reached(
    limit: Decimal | int | None,
    spent: Decimal | int,
    alerted_percent: int,
    thresholds: Sequence[int],
) -> list[int]:
    """The thresholds above ``alerted_percent`` that ``spent`` reaches against ``limit``, in
    ascending order (0→85 % of the limit with 50, 80, 100 gives [50, 80]).

    No limit: none. A limit of 0 allows nothing, so every threshold is reached once anything is
    spent (nothing is reached while nothing is).
    """
    if limit is None:
        return []
    if limit <= 0:
        return [t for t in thresholds if t > alerted_percent] if spent > 0 else []
    # Exact: spent / limit >= t / 100, without dividing.
    return [t for t in thresholds if t > alerted_percent and spent * 100 >= limit * t]


@dataclass(frozen=True)
class CounterState:
    """A budget counter as a settle left it (the columns of ``budget_counters`` that matter),
    and the run whose call moved it (None for a call outside any run)."""

    counter_id: str
    scope: str  # run | project | api_key
    subject: str
    period: str
    limit_usd: Decimal | None
    limit_tokens: int | None
    spent_usd: Decimal
    spent_tokens: int
    alerted_percent: int
    run_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Crossing:
    """One threshold a counter newly reached: what to announce."""

    counter_id: str
    scope: str  # run | project | api_key
    subject: str
    period: str
    threshold_percent: int
    spent_usd: Decimal
    # None only when the counter has a token limit alone (``measure`` is then "tokens").
    limit_usd: Decimal | None
    run_id: uuid.UUID | None
    measure: Measure = "usd"  # the limit that reached the threshold
    spent_tokens: int = 0
    limit_tokens: int | None = None


def crossings(counter: CounterState, thresholds: Sequence[int]) -> list[Crossing]:
    """The thresholds ``counter`` newly reached, each as a ``Crossing`` naming the measure that
    reached it (USD when both did). The caller stores :func:`alerted_after` of them on the
    counter in the same transaction, so no threshold is announced twice."""
    alerted = counter.alerted_percent
    by_usd = set(thresholds_reached(counter.limit_usd, counter.spent_usd, alerted, thresholds))
    by_tokens = set(
        thresholds_reached(counter.limit_tokens, counter.spent_tokens, alerted, thresholds)
    )
    found: list[Crossing] = []
    for threshold in sorted(by_usd | by_tokens):
        measure: Measure = "usd" if threshold in by_usd else "tokens"
        found.append(
            Crossing(
                counter_id=counter.counter_id,
                scope=counter.scope,
                subject=counter.subject,
                period=counter.period,
                threshold_percent=threshold,
                spent_usd=counter.spent_usd,
                limit_usd=counter.limit_usd,
                run_id=counter.run_id,
                measure=measure,
                spent_tokens=counter.spent_tokens,
                limit_tokens=counter.limit_tokens,
            )
        )
    return found


def alerted_after(alerted_percent: int, found: Sequence[Crossing]) -> int:
    """The counter's ``alerted_percent`` once ``found`` are announced."""
    return max([alerted_percent, *(crossing.threshold_percent for crossing in found)])


def alerted_for_new_limit(
    limit_usd: Decimal | None,
    limit_tokens: int | None,
    spent_usd: Decimal,
    spent_tokens: int,
    thresholds: Sequence[int],
) -> int:
    """What ``alerted_percent`` becomes when a budget's limit changes: the highest threshold the
    spend already reaches under the new limit (raising a budget re-arms the thresholds above the
    spend; the ones below it are not announced again)."""
    reached = thresholds_reached(limit_usd, spent_usd, 0, thresholds) + thresholds_reached(
        limit_tokens, spent_tokens, 0, thresholds
    )
    return max(reached, default=0)
