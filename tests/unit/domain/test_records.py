"""Records and change sets: what a decision changed is exactly what gets written, and every row
builder gives every column of its table (a new column cannot be forgotten by one of them)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from agent_engine.domain.plan import Plan, PlanStep
from agent_engine.domain.records import (
    ChangeSet,
    RunRecord,
    StepRecord,
    approval_row,
    copy_changes,
)
from agent_engine.domain.transitions import append_event
from agent_engine.engine.ledger import record_calls
from agent_engine.engine.plans import insert_plan
from agent_engine.engine.policies import PlanApprovals, inputs_of_run
from agent_engine.executors.registry import load_registry
from agent_engine.llm.base import LLMCallRecord, Usage
from agent_engine.storage.changes import INSERT_ORDER, prepare
from agent_engine.storage.tables import Base


def columns(table: str) -> set[str]:
    return {column.name for column in Base.metadata.tables[table].columns}


def new_run(**fields: Any) -> RunRecord:
    return RunRecord(id=uuid.uuid4(), goal="g", status="created", created_by="t", **fields)


def new_step(run: RunRecord, number: int = 1, **fields: Any) -> StepRecord:
    return StepRecord(
        id=uuid.uuid4(),
        run_id=run.id,
        step_number=number,
        step_type="noop",
        status="pending",
        input_data={"value": number},
        **fields,
    )


def call_record(cost: str | None = "0.25", error: str | None = None) -> LLMCallRecord:
    return LLMCallRecord(
        provider="offline",
        model="offline-1",
        request={"messages": []},
        request_hash="ab" * 32,
        response={"text": "ok"} if error is None else None,
        usage=Usage(input_tokens=10, output_tokens=3),
        cost_usd=Decimal(cost) if cost is not None else None,
        latency_ms=1.5,
        error=error,
    )


# --- Tracked: what counts as a change -------------------------------------------------------------


def test_a_new_record_has_no_changes() -> None:
    assert new_run().changes() == {}
    assert new_step(new_run()).changes() == {}


def test_assigning_an_equal_value_is_no_change() -> None:
    run = new_run(metadata={"k": [1, 2]}, total_cost_usd=Decimal("1.50"))
    run.status = "created"
    run.metadata = {"k": [1, 2]}  # another object, an equal value
    run.total_cost_usd = Decimal("1.5")  # equal as a number
    run.workspace = None
    assert run.changes() == {}


def test_assigning_a_different_value_is_a_change_with_the_latest_value() -> None:
    run = new_run()
    run.status = "planning"
    run.status = "planned"
    run.audit_seq += 1
    assert run.changes() == {"status": "planned", "audit_seq": 1}
    run.status = "created"  # back to what was stored: still written (it was assigned)
    assert run.changes()["status"] == "created"


def test_saved_clears_the_changes_and_later_assignments_count_again() -> None:
    step = new_step(new_run())
    step.status = "running"
    step.fence = 1
    step.saved()
    assert step.changes() == {}
    step.fence = 1
    assert step.changes() == {}
    step.fence = 2
    assert step.changes() == {"fence": 2}


def test_a_copy_is_independent_of_its_original() -> None:
    run = new_run()
    run.status = "planning"
    twin = run.copy()
    assert twin is not run and twin.changes() == {"status": "planning"}  # pending changes too
    twin.status = "planned"
    twin.goal = "other"
    assert (run.status, run.goal) == ("planning", "g")
    assert run.changes() == {"status": "planning"}
    run.saved()
    assert run.changes() == {}
    assert twin.changes() == {"status": "planned", "goal": "other"}


def test_a_copied_change_set_is_independent_of_its_original() -> None:
    run = new_run()
    step = new_step(run)
    changes = ChangeSet(run, [step])
    append_event(changes, run, "run.created", {}, actor="t")
    copied = copy_changes(changes)
    copied.steps[0].status = "running"
    append_event(copied, copied.run, "step.running", {}, actor="t")
    assert step.status == "pending" and step.changes() == {}
    assert [row["type"] for row in changes.events()] == ["run.created"]
    assert [row["type"] for row in copied.events()] == ["run.created", "step.running"]
    assert run.audit_seq == 1 and copied.run.audit_seq == 2
    assert copied.expected_version == changes.expected_version


# --- ChangeSet ------------------------------------------------------------------------------------


def test_a_change_set_expects_the_version_its_run_had_when_it_was_made() -> None:
    run = new_run(version=7)
    changes = ChangeSet(run, [])
    assert changes.is_empty()
    run.version = 9
    assert changes.expected_version == 7


def test_a_change_set_is_empty_until_something_changes_or_is_added() -> None:
    run = new_run()
    step = new_step(run)
    assert ChangeSet(run, [step]).is_empty()
    step.status = "running"
    assert not ChangeSet(run, [step]).is_empty()
    step.saved()
    with_row = ChangeSet(run, [step])
    with_row.add("approvals", {"id": uuid.uuid4()})
    assert not with_row.is_empty()
    with_step = ChangeSet(run, [])
    with_step.add_step(new_step(run, 2))
    assert not with_step.is_empty()
    assert [s.step_number for s in with_step.steps] == [2]  # a new step is one of the run's
    assert with_step.step(with_step.steps[0].id) is with_step.steps[0]
    assert with_step.step(uuid.uuid4()) is None


# --- prepare: the write a change set becomes -----------------------------------------------------


def test_prepare_bumps_the_version_and_writes_only_what_changed() -> None:
    run = new_run(version=4)
    changed, untouched = new_step(run, 1), new_step(run, 2)
    changes = ChangeSet(run, [changed, untouched])
    changed.status = "running"
    append_event(changes, run, "step.running", {"n": 1}, actor="t", step_id=changed.id)
    write = prepare(changes)
    assert write.expected_version == 4 and run.version == 5
    assert write.run_values == {
        "version": 5,
        "audit_seq": 1,
        "audit_head_hash": run.audit_head_hash,
    }
    assert write.step_values == [(changed.id, {"status": "running"})]
    assert [table for table, _rows in write.inserts] == ["audit_events"]


def test_prepare_of_a_new_run_inserts_every_row_in_foreign_key_order() -> None:
    run = new_run()
    changes = ChangeSet(run, [], new_run=True)
    step = new_step(run)
    changes.add("audit_events", {"seq": 1})
    changes.add("approvals", {"id": 1})
    changes.add("plans", {"id": 2})
    changes.add_step(step)
    changes.add("llm_calls", {"id": 3})
    write = prepare(changes)
    assert write.expected_version is None and write.run_values == {}
    assert write.step_values == []  # a new step is inserted, never updated
    tables = [table for table, _rows in write.inserts]
    assert tables == [t for t in INSERT_ORDER if t in tables]
    assert tables == ["agent_runs", "steps", "llm_calls", "plans", "approvals", "audit_events"]
    assert write.inserts[0][1] == [run.row()]
    assert write.inserts[1][1] == [step.row()]


# --- row builders give exactly their table's columns ---------------------------------------------


def test_run_and_step_records_are_exactly_the_rows_of_their_tables() -> None:
    run = new_run()
    assert set(run.row()) == columns(RunRecord.TABLE) == columns("agent_runs")
    assert set(new_step(run).row()) == columns(StepRecord.TABLE) == columns("steps")


def test_an_audit_event_row_has_every_column_but_the_generated_ones() -> None:
    run = new_run()
    changes = ChangeSet(run, [])
    append_event(changes, run, "run.created", {}, actor="t")
    ((table, row),) = changes.rows
    assert table == "audit_events"
    assert set(row) == columns("audit_events") - {"id", "xact_id"}


def test_an_approval_row_has_every_column_of_approvals() -> None:
    row = approval_row(
        run_id=uuid.uuid4(),
        step_id=None,
        decision="approved",
        actor="t",
        comment=None,
        shown={},
        attempt=1,
    )
    assert set(row) == columns("approvals")


@pytest.mark.parametrize("with_step", [True, False], ids=["step", "plan"])
def test_a_ledger_row_has_every_column_of_llm_calls(with_step: bool) -> None:
    run = new_run()
    step = new_step(run) if with_step else None
    changes = ChangeSet(run, [step] if step else [])
    rows = record_calls(changes, run, step, [call_record(), call_record(cost=None, error="boom")])
    assert [table for table, _row in changes.rows] == ["llm_calls", "llm_calls"]
    assert all(set(row) == columns("llm_calls") for row in rows)
    # The totals move by the priced calls only; an unpriced call is flagged, not counted as 0.
    assert run.total_cost_usd == Decimal("0.25") and (run.input_tokens, run.output_tokens) == (
        20,
        6,
    )
    assert [row["priced"] for row in rows] == [True, False]
    if step is not None:
        assert step.cost_usd == Decimal("0.25") and step.model == "offline:offline-1"


def test_a_plan_version_row_has_every_column_of_plans() -> None:
    run = new_run()
    changes = ChangeSet(run, [], new_run=True)
    plan = Plan(steps=[PlanStep(step_type="noop", input_data={"value": 1})])
    approvals = PlanApprovals(inputs_of_run({}))
    steps = insert_plan(
        changes, run, plan, load_registry(), approvals=approvals, actor="t", source="explicit"
    )
    plans = [row for table, row in changes.rows if table == "plans"]
    assert len(plans) == 1 and set(plans[0]) == columns("plans")
    assert [set(step.row()) for step in steps] == [columns("steps")]
    assert changes.new_steps == steps


def test_stored_row_is_the_record_the_constructor_makes_with_nothing_changed() -> None:
    run = new_run(metadata={"k": 1}, project="p")
    step = new_step(run, 2, output_data={"ok": True})
    for original in (run, step):
        stored = type(original).stored(original.row())
        assert stored.row() == original.row()
        assert stored.changes() == {}
    stored_run = RunRecord.stored(run.row())
    stored_run.status = "planned"  # assignments after reading are tracked as before
    assert stored_run.changes() == {"status": "planned"}


def test_stored_partial_row_goes_through_the_constructor() -> None:
    some = {"id": uuid.uuid4(), "goal": "g", "status": "created", "created_by": "t"}
    run = RunRecord.stored(some)
    assert run.plan_version == 0  # the field's default
    assert run.changes() == {}
    with pytest.raises(TypeError):
        RunRecord.stored({**some, "no_such_column": 1})
