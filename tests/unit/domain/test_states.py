"""The transition tables themselves."""

from __future__ import annotations

import pytest

from agent_engine.domain.states import (
    RUN_TRANSITIONS,
    STEP_TRANSITIONS,
    TERMINAL_RUN_STATES,
    TERMINAL_STEP_STATES,
    RunStatus,
    StepStatus,
    check_run_transition,
    check_step_transition,
)
from agent_engine.errors import InvalidTransitionError


def _reachable(table: dict, start: object) -> set[object]:  # type: ignore[type-arg]
    seen, frontier = {start}, [start]
    while frontier:
        for nxt in table[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return seen


def test_every_state_has_a_row_and_is_reachable() -> None:
    assert set(RUN_TRANSITIONS) == set(RunStatus)
    assert set(STEP_TRANSITIONS) == set(StepStatus)
    assert _reachable(RUN_TRANSITIONS, RunStatus.CREATED) == set(RunStatus)
    assert _reachable(STEP_TRANSITIONS, StepStatus.PENDING) == set(StepStatus)


def test_terminal_states() -> None:
    assert {RunStatus.COMPLETED, RunStatus.CANCELLED} == TERMINAL_RUN_STATES
    assert {
        StepStatus.COMPLETED,
        StepStatus.REJECTED,
        StepStatus.SKIPPED,
        StepStatus.CANCELLED,
    } == TERMINAL_STEP_STATES


def test_any_non_terminal_run_can_be_cancelled() -> None:
    for status in set(RunStatus) - TERMINAL_RUN_STATES:
        check_run_transition(status, RunStatus.CANCELLED)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (RunStatus.CREATED, RunStatus.RUNNING),
        (RunStatus.COMPLETED, RunStatus.RUNNING),
        (RunStatus.CANCELLED, RunStatus.PLANNING),
        (RunStatus.PLANNED, RunStatus.COMPLETED),
    ],
)
def test_illegal_run_transition_names_both_states(current: RunStatus, target: RunStatus) -> None:
    with pytest.raises(InvalidTransitionError) as info:
        check_run_transition(current, target)
    assert info.value.data == {
        "entity": "run",
        "current_state": current.value,
        "attempted_state": target.value,
    }
    assert current.value in info.value.detail and target.value in info.value.detail
    assert info.value.http_status == 409


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (StepStatus.PENDING, StepStatus.APPROVED),
        (StepStatus.PENDING, StepStatus.COMPLETED),
        (StepStatus.AWAITING_APPROVAL, StepStatus.RUNNING),
        (StepStatus.COMPLETED, StepStatus.PENDING),
        (StepStatus.REJECTED, StepStatus.APPROVED),
    ],
)
def test_illegal_step_transition_is_refused(current: StepStatus, target: StepStatus) -> None:
    with pytest.raises(InvalidTransitionError):
        check_step_transition(current, target)


def test_a_running_run_may_go_back_to_planning_for_a_revision_and_on_again() -> None:
    # Adaptive planning: an observing step finished (RUNNING → PLANNING), the revision is
    # written (PLANNING → RUNNING). A finished run is never revised.
    check_run_transition(RunStatus.RUNNING, RunStatus.PLANNING)
    check_run_transition(RunStatus.PLANNING, RunStatus.RUNNING)
    for over in (RunStatus.COMPLETED, RunStatus.CANCELLED, RunStatus.FAILED):
        with pytest.raises(InvalidTransitionError):
            check_run_transition(over, RunStatus.PLANNING)
