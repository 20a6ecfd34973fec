"""Which runs are served from records, and how a miss ends: a replay fails, a fork made with
``replay: true`` goes live; a replayed decision applies only to what its approver saw."""

from __future__ import annotations

import uuid

from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.states import RunStatus, StepStatus
from agent_engine.engine.replay_approvals import apply_recorded_decision
from agent_engine.engine.replay_calls import replay_source

ORIGINAL = uuid.uuid4()


def run(**fields: object) -> RunRecord:
    return RunRecord(
        id=uuid.uuid4(), goal="g", status=RunStatus.RUNNING.value, created_by="bob", **fields
    )  # type: ignore[arg-type]


def test_a_replay_is_served_from_its_original_and_a_miss_fails() -> None:
    source = replay_source(run(replay_of=ORIGINAL, replay_mode="verify"))
    assert source is not None
    assert (source.run_id, source.on_miss, source.verify) == (ORIGINAL, "fail", True)
    hermetic = replay_source(run(replay_of=ORIGINAL, replay_mode="hermetic"))
    assert hermetic is not None and not hermetic.verify


def test_a_fork_from_records_goes_live_on_a_miss_and_other_runs_call_the_model() -> None:
    fork = replay_source(run(forked_from=ORIGINAL, options={"fork": {"replay": True}}))
    assert fork is not None and (fork.run_id, fork.on_miss, fork.verify) == (
        ORIGINAL,
        "live",
        False,
    )
    assert replay_source(run(forked_from=ORIGINAL, options={"fork": {"replay": False}})) is None
    assert replay_source(run()) is None


def waiting_step(run_id: uuid.UUID) -> StepRecord:
    return StepRecord(
        id=uuid.uuid4(),
        run_id=run_id,
        step_number=2,
        step_type="edit_file",
        status=StepStatus.AWAITING_APPROVAL.value,
        input_data={},
    )


def replay_with(decision: str, shown: dict[str, object]) -> RunRecord:
    recorded = {
        "approval_id": "a-1",
        "step_number": 2,
        "attempt": 0,
        "decision": decision,
        "actor": "alice",
        "comment": "fine",
        "shown": shown,
    }
    return run(replay_of=ORIGINAL, options={"replay": {"decisions": [recorded]}})


def test_a_recorded_decision_is_applied_as_its_approver_made_it() -> None:
    replay = replay_with("rejected", {"diff": "-a\n+b"})
    step = waiting_step(replay.id)
    changes = ChangeSet(replay, [step])
    assert apply_recorded_decision(changes, replay, step, {"diff": "-a\n+b"})
    assert step.status == StepStatus.REJECTED
    (approval,) = [row for table, row in changes.rows if table == "approvals"]
    assert (approval["actor"], approval["decision"]) == ("alice", "rejected")
    (event,) = changes.events()
    assert event["type"] == "step.rejected" and event["actor"] == "alice"
    assert event["payload"]["replayed_from_approval"] == "a-1"


def test_a_decision_made_on_another_preview_is_withheld() -> None:
    replay = replay_with("approved", {"diff": "-a\n+b"})
    step = waiting_step(replay.id)
    changes = ChangeSet(replay, [step])
    assert not apply_recorded_decision(changes, replay, step, {"diff": "-a\n+c"})
    assert step.status == StepStatus.AWAITING_APPROVAL
    assert [e["type"] for e in changes.events()] == ["replay.approval_withheld"]
    assert not [row for table, row in changes.rows if table == "approvals"]
