"""Budget alert thresholds: each is announced once per counter, when the spend reaches it."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from agent_engine.domain.budget_thresholds import (
    DEFAULT_THRESHOLDS,
    CounterState,
    alerted_after,
    alerted_for_new_limit,
    check_thresholds,
    crossings,
    thresholds_reached,
)

D = Decimal
RUN = uuid.uuid4()


def counter(**changes: object) -> CounterState:
    values: dict[str, object] = {
        "counter_id": "c1",
        "scope": "run",
        "subject": str(RUN),
        "period": "run",
        "limit_usd": D("1.000000000"),
        "limit_tokens": None,
        "spent_usd": D("0"),
        "spent_tokens": 0,
        "alerted_percent": 0,
        "run_id": RUN,
    }
    values.update(changes)
    return CounterState(**values)  # type: ignore[arg-type]


def test_jumping_from_nothing_to_85_percent_reaches_50_and_80() -> None:
    assert thresholds_reached(D("1"), D("0.85"), 0, DEFAULT_THRESHOLDS) == [50, 80]


def test_exactly_half_the_limit_reaches_50() -> None:
    assert thresholds_reached(D("0.04"), D("0.02"), 0, DEFAULT_THRESHOLDS) == [50]
    assert thresholds_reached(D("0.04"), D("0.019999999"), 0, DEFAULT_THRESHOLDS) == []


def test_one_call_past_every_threshold_reaches_them_all() -> None:
    assert thresholds_reached(D("0.04"), D("0.05"), 0, DEFAULT_THRESHOLDS) == [50, 80, 100]


def test_a_threshold_already_alerted_is_never_reached_again() -> None:
    assert thresholds_reached(D("1"), D("0.9"), 80, DEFAULT_THRESHOLDS) == []
    assert thresholds_reached(D("1"), D("1"), 80, DEFAULT_THRESHOLDS) == [100]
    assert thresholds_reached(D("1"), D("2"), 100, DEFAULT_THRESHOLDS) == []


def test_settles_in_sequence_announce_each_threshold_once() -> None:
    alerted, announced = 0, []
    for spent in ("0.3", "0.5", "0.6", "0.81", "0.99", "1.0", "1.0"):
        found = crossings(counter(spent_usd=D(spent), alerted_percent=alerted), DEFAULT_THRESHOLDS)
        announced += [c.threshold_percent for c in found]
        alerted = alerted_after(alerted, found)
    assert announced == [50, 80, 100]
    assert alerted == 100


def test_no_limit_reaches_nothing() -> None:
    assert thresholds_reached(None, D("1000"), 0, DEFAULT_THRESHOLDS) == []
    assert crossings(counter(limit_usd=None, spent_usd=D("5")), DEFAULT_THRESHOLDS) == []


def test_a_limit_of_zero_is_reached_only_once_something_is_spent() -> None:
    assert thresholds_reached(D("0"), D("0"), 0, DEFAULT_THRESHOLDS) == []
    assert thresholds_reached(D("0"), D("0.000000001"), 0, DEFAULT_THRESHOLDS) == [50, 80, 100]


def test_token_limit_reaches_thresholds_the_usd_limit_does_not() -> None:
    state = counter(
        limit_usd=D("10"), spent_usd=D("1"), limit_tokens=1000, spent_tokens=850, run_id=None
    )
    found = crossings(state, DEFAULT_THRESHOLDS)
    assert [(c.threshold_percent, c.measure) for c in found] == [(50, "tokens"), (80, "tokens")]
    assert found[0].spent_tokens == 850 and found[0].limit_tokens == 1000
    assert found[0].run_id is None and found[0].limit_usd == D("10")


def test_usd_names_a_threshold_both_measures_reach() -> None:
    state = counter(spent_usd=D("0.6"), limit_tokens=100, spent_tokens=90)
    found = crossings(state, DEFAULT_THRESHOLDS)
    assert [(c.threshold_percent, c.measure) for c in found] == [(50, "usd"), (80, "tokens")]


def test_crossing_names_its_counter_and_spend() -> None:
    (found,) = crossings(counter(spent_usd=D("0.500000000")), [50])
    assert (found.counter_id, found.scope, found.period) == ("c1", "run", "run")
    assert (found.spent_usd, found.limit_usd, found.run_id) == (D("0.5"), D("1"), RUN)


def test_raising_a_limit_rearms_only_the_thresholds_above_the_spend() -> None:
    # $0.9 of $1 spent (50 and 80 announced), the limit raised to $3: 30 % used.
    assert alerted_for_new_limit(D("3"), None, D("0.9"), 0, DEFAULT_THRESHOLDS) == 0
    # raised to $1.5: 60 % used, 50 stays announced, 80 and 100 are armed again.
    assert alerted_for_new_limit(D("1.5"), None, D("0.9"), 0, DEFAULT_THRESHOLDS) == 50
    assert alerted_for_new_limit(None, 100, D("0"), 100, DEFAULT_THRESHOLDS) == 100


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([50, 50], "ascend"),
        ([80, 50], "ascend"),
        ([0, 50], "from 1 to 100"),
        ([50, 101], "from 1 to 100"),
        ([True], "from 1 to 100"),
    ],
)
def test_thresholds_must_be_ascending_percents(values: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_thresholds(values)


def test_valid_thresholds_are_kept() -> None:
    assert check_thresholds([1, 25, 100]) == (1, 25, 100)
