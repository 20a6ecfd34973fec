"""The one write path (``storage/changes.py``) against real databases: a change set is written
whole or not at all, guarded by the run's version; every column goes through unchanged; change
sets ready together share one write; heartbeats move versions too; a step's model calls are
written with its result."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from agent_engine.config import Settings
from agent_engine.domain.clock import utcnow
from agent_engine.domain.records import ChangeSet, StepRecord, approval_row
from agent_engine.domain.states import StepStatus
from agent_engine.domain.transitions import append_event, move_step
from agent_engine.engine.claiming import lease_until
from agent_engine.engine.control import start_run
from agent_engine.engine.ledger import record_calls
from agent_engine.engine.stepping import record_result, run_claimed
from agent_engine.errors import StaleFenceError
from agent_engine.llm.base import (
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMClient,
    Usage,
)
from agent_engine.router.client import build_llm_client
from agent_engine.storage.audit import verify_chain
from agent_engine.storage.claims import extend_leases_txn
from agent_engine.storage.database import read_transaction, transaction
from agent_engine.storage.tables import Base
from tests.engines import (
    BatchLog,
    chain_of,
    claim_locking,
    engine_context,
    load_changes,
    new_run,
    noop,
    running_worker,
    snapshot,
    statements,
    wait_finished,
)

PLUS_TWO = timezone(timedelta(hours=2))
NOT_SET_BY_A_DECISION = {"id", "version", "audit_seq", "audit_head_hash"}  # key, guard, chain
# Written once, with the new run or step (its lineage, its chain's signature), never decided on.
NOT_SET_BY_A_DECISION |= {"audit_signature", "audit_key_id"}
NOT_SET_BY_A_DECISION |= {"replay_of", "forked_from", "from_step", "replay_mode"}
# Set by retention (storage/retention.py), outside the state machine, on finished runs only.
NOT_SET_BY_A_DECISION |= {"payloads_pruned_at"}
STEP_SET_AT_CREATION = {"id", "run_id", "reused_from"}


def call_record(cost: str = "0.000123456") -> LLMCallRecord:
    return LLMCallRecord(
        provider="offline",
        model="offline-1",
        request={"messages": [{"role": "user", "content": "hi"}]},
        request_hash="cd" * 32,
        response={"text": "hello"},
        usage=Usage(input_tokens=7, output_tokens=5),
        cost_usd=Decimal(cost),
        price_source="test",
        latency_ms=2.0,
    )


async def count(ctx: Any, table: str, run_id: uuid.UUID) -> int:
    rows = Base.metadata.tables[table]
    async with read_transaction(ctx.sessions) as session:
        query = select(func.count()).select_from(rows).where(rows.c.run_id == run_id)
        return int(await session.scalar(query) or 0)


# --- every column goes through unchanged ----------------------------------------------------------


def new_run_values() -> dict[str, Any]:
    return {
        "goal": '{"looks": "like json"}',  # text stays text
        "status": "running",
        "created_by": "someone else",
        "workspace": "/elsewhere",
        "plan_version": 7,
        "plan_hash": "ef" * 32,
        "plan_approved_version": 6,
        "budget_usd": Decimal("99.000000001"),
        "budget_tokens": 2**40,
        "total_cost_usd": Decimal("12.345678901"),
        "input_tokens": 9_007_199_254_740_993,  # beyond a double's exact integers
        "output_tokens": 42,
        "error": {"code": "boom", "nested": {"list": [1, "two", None], "flag": False}},
        "metadata": {"k": ["v", 1.5]},
        "options": {"plan_approval": True, "approval_policy": {"rules": []}},
        "adaptive": {"revisions": 2, "due_after": 7, "closed": None},
        "idempotency_key": "key-1",
        "request_hash": "01" * 32,
        "started": True,
        "max_parallel": 9,
        "claimable_at": datetime(2031, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "audit_signature": "5a" * 64,
        "audit_key_id": "key-2031",
        "replay_of": uuid.UUID(int=7),
        "forked_from": uuid.UUID(int=8),
        "from_step": 3,
        "replay_mode": "verify",
        "project": "project-x",
        "api_key_id": uuid.UUID(int=10),
        "budget_pause": {"reason": "budget", "needed_usd": "0.5"},
        "trace_id": "4b" * 16,
        "trace_span_id": "0f" * 8,
        "trace_parent_span_id": "a3" * 8,
        "trace_sampled": False,
        "created_at": datetime(2030, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        "updated_at": datetime(2031, 1, 2, 5, 4, 5, 1, tzinfo=PLUS_TWO),
        "completed_at": datetime(2031, 2, 3, 4, 5, 6, 789012, tzinfo=UTC),
    }


def new_step_values(step: StepRecord) -> dict[str, Any]:
    return {
        "step_number": step.step_number + 10,
        "step_type": "read_file",
        "status": "running",
        "input_data": {"path": "x", "list": [1, {"a": None}]},
        "resolved_input": {"value": "resolved", "list": [1, 2.5, "x"]},
        "output_data": {"value": {"deep": [None, True]}, "attempt": 3},
        "preview": {"shown": "to a human"},
        "depends_on": [3, 1],
        "optional": True,
        "idempotent": False,
        "requires_approval": True,
        "approval_rule": "null",  # text that reads as JSON null stays text
        "attempt": step.attempt + 3,
        "max_attempts": step.max_attempts + 6,
        "input_hash": "23" * 32,
        "output_hash": "ab" * 32,
        "cost_usd": Decimal("0.000000001"),
        "input_tokens": 11,
        "output_tokens": 12,
        "model": "some-provider/some-model",
        "latency_ms": 12.25,
        "error": {"code": "transient_error", "message": "once"},
        "lease_owner": "owner-x",
        "lease_expires_at": datetime(2031, 3, 4, 5, 6, 7, 123456, tzinfo=UTC),
        "fence": step.fence + 5,
        "not_before": datetime(2031, 3, 4, 7, 6, 7, 654321, tzinfo=PLUS_TWO),
        "retry_policy": {"max_attempts": 4, "initial_backoff_s": 0.5},
        "effect_intent": {"attempt": 3, "fence": 5, "argv": ["echo", "hi"]},
        "effect_outcome": {"attempt": 3, "ok": True},
        "outcome_unknown": True,
        "created_at": datetime(2030, 1, 1, 0, 0, 0, 2, tzinfo=UTC),
        "started_at": datetime(2031, 3, 4, 5, 0, 0, 1, tzinfo=UTC),
        "completed_at": datetime(2031, 3, 4, 5, 59, 59, 999999, tzinfo=UTC),
        "reused_from": uuid.UUID(int=9),
        "approved_input_hash": "ef" * 32,
        "budget_pause": {"reason": "budget", "spent_usd": "0.25", "nested": [1, None]},
    }


def _same_type(stored: Any, value: Any) -> bool:
    # asyncpg returns its own subclass of uuid.UUID for uuid columns.
    if isinstance(value, uuid.UUID):
        return isinstance(stored, uuid.UUID)
    return type(stored) is type(value)


async def test_a_change_set_writes_every_column_unchanged(settings: Settings) -> None:
    """On PostgreSQL through ``agent_engine_apply_changes_v3``; on SQLite, Core statements."""
    async with engine_context(settings) as ctx:
        run_id = await new_run(ctx, [noop(1), noop(2)], auto_start=False)
        before = await snapshot(ctx, run_id)
        changes = await load_changes(ctx, run_id)
        run, step = changes.run, changes.steps[0]
        run_values, step_values = new_run_values(), new_step_values(step)
        # A new column needs a value here (ids say what a row is; the rest the write keeps).
        assert set(run_values) | NOT_SET_BY_A_DECISION == set(run.row())
        assert set(step_values) | STEP_SET_AT_CREATION == set(step.row())
        for name, value in run_values.items():
            assert getattr(run, name) != value, name  # new values: reading them back proves a write
            setattr(run, name, value)
        for name, value in step_values.items():
            assert getattr(step, name) != value, name
            setattr(step, name, value)
        append_event(changes, run, "test.everything", {"n": 1, "d": {"x": [1]}}, actor="t")
        assert await ctx.changes.apply(changes) is True
        assert (run.changes(), step.changes()) == ({}, {})  # written: nothing pending any more
        after = await snapshot(ctx, run_id)
        chain = await chain_of(ctx, run_id)

    expected_run = {**before["run"], **run_values, "version": before["run"]["version"] + 1}
    expected_run.update(audit_seq=run.audit_seq, audit_head_hash=run.audit_head_hash)
    for name, value in expected_run.items():
        assert after["run"][name] == value, name
        assert _same_type(after["run"][name], value), name
    stored = {row["id"]: row for row in after["steps"]}
    expected_step = {**before["steps"][0], **step_values}
    for name, value in expected_step.items():
        assert stored[step.id][name] == value, name
        assert _same_type(stored[step.id][name], value), name
    other = before["steps"][1]
    assert stored[other["id"]] == other  # a step not in the changes is untouched
    (written,) = after["events"][len(before["events"]) :]
    assert (written["type"], written["payload"]) == ("test.everything", {"n": 1, "d": {"x": [1]}})
    assert verify_chain(chain) == (True, None)


# --- the guard ------------------------------------------------------------------------------------


async def decision(ctx: Any, run_id: uuid.UUID) -> ChangeSet:
    """A change set touching everything a write can: the run, a step, an event, a ledger row and
    an approval."""
    changes = await load_changes(ctx, run_id)
    run, step = changes.run, changes.steps[0]
    step.attempt, step.fence, step.lease_owner = 1, 1, "w"
    move_step(changes, run, step, StepStatus.RUNNING, actor="w")
    record_calls(changes, run, step, [call_record()])
    changes.add(
        "approvals",
        approval_row(
            run_id=run.id,
            step_id=step.id,
            decision="approved",
            actor="human",
            comment=None,
            shown={},
            attempt=1,
        ),
    )
    return changes


@pytest.mark.parametrize("stale", [False, True], ids=["current", "stale"])
@pytest.mark.parametrize("how", ["apply", "apply_in"])
async def test_a_change_set_with_a_stale_version_writes_nothing(
    settings: Settings, stale: bool, how: str
) -> None:
    async with engine_context(settings) as ctx:
        run_id = await new_run(ctx, [noop(1), noop(2)], auto_start=False)
        changes = await decision(ctx, run_id)
        if stale:
            await start_run(ctx, str(run_id), actor="someone else")  # the run moves on
        before = await snapshot(ctx, run_id)
        if how == "apply":
            applied = await ctx.changes.apply(changes)
        else:
            async with transaction(ctx.sessions) as session:
                (applied,) = await ctx.changes.apply_in(session, [changes])
        after = await snapshot(ctx, run_id)
        approvals = await count(ctx, "approvals", run_id)

    if not stale:  # the control: the same change set on the current version is written whole
        assert applied is True
        assert after["run"]["version"] == before["run"]["version"] + 1
        assert after["steps"][0]["status"] == "running"
        # The LLM call was recorded after the step's event: its own event covers it.
        assert [e["type"] for e in after["events"]][-2:] == ["step.running", "llm.recorded"]
        assert len(after["calls"]) == 1 and approvals == 1
        assert after["run"]["total_cost_usd"] == Decimal("0.000123456")
        return
    assert applied is False
    assert after == before  # no run change, no step change, no event, no ledger row
    assert after["calls"] == [] and approvals == 0
    assert changes.run.changes() != {}  # not saved: the caller decides again from the database


async def test_a_change_of_a_step_of_another_run_is_refused_whole(
    settings: Settings, request: pytest.FixtureRequest
) -> None:
    async with engine_context(settings) as ctx:
        mine = await new_run(ctx, [noop(1)], auto_start=False)
        theirs = await new_run(ctx, [noop(1)], auto_start=False)
        changes = await load_changes(ctx, mine)
        foreign = (await load_changes(ctx, theirs)).steps[0]
        changes.steps.append(foreign)
        foreign.status = "running"
        append_event(changes, changes.run, "test.touched", {}, actor="t")
        before = [await snapshot(ctx, mine), await snapshot(ctx, theirs)]
        with pytest.raises(DBAPIError):
            await ctx.changes.apply(changes)
        after = [await snapshot(ctx, mine), await snapshot(ctx, theirs)]
    assert after == before


# --- group commit ---------------------------------------------------------------------------------


async def test_change_sets_ready_together_share_one_write_each_guarded_on_its_own(
    settings: Settings,
) -> None:
    BatchLog.batches = []
    async with engine_context(settings, writer=BatchLog) as ctx:
        runs = [await new_run(ctx, [noop(n)], auto_start=False) for n in range(3)]
        sets = [await load_changes(ctx, run_id) for run_id in runs]
        for changes in sets:
            append_event(changes, changes.run, "test.touched", {}, actor="t")
        await start_run(ctx, str(runs[1]), actor="someone else")  # the second one is stale
        BatchLog.batches = []
        with statements(ctx) as seen:
            applied = await asyncio.gather(*(ctx.changes.apply(c) for c in sets))
        after = [await snapshot(ctx, run_id) for run_id in runs]

    assert applied == [True, False, True]
    # The first went alone; the two that came while it was in flight went together.
    assert BatchLog.batches == [1, 2]
    if settings.database_url.startswith("postgresql"):
        assert [s for s in seen if "agent_engine_apply_changes_v3" in s] == seen
        assert len(seen) == 2
    else:
        assert seen.count("BEGIN IMMEDIATE") == 2
    touched = [[e["type"] for e in snap["events"]].count("test.touched") for snap in after]
    assert touched == [1, 0, 1]


# --- heartbeats -----------------------------------------------------------------------------------


async def test_a_heartbeat_bumps_the_version_of_each_run_whose_steps_it_extends(
    settings: Settings,
) -> None:
    async with engine_context(settings) as ctx:
        both = await new_run(ctx, [noop(1), noop(2, depends_on=[])], auto_start=True)
        one = await new_run(ctx, [noop(1)], auto_start=True)
        claims = await claim_locking(ctx, both, limit=2) + await claim_locking(ctx, one)
        assert len(claims) == 3
        versions = {run: (await snapshot(ctx, run))["run"]["version"] for run in (both, one)}
        until = lease_until(utcnow(), timedelta(hours=1))
        async with transaction(ctx.sessions) as session:
            stranger = await extend_leases_txn(
                session, "intruder", {c.step_id: c.fence for c in claims}, until
            )
        unmoved = {run: (await snapshot(ctx, run))["run"]["version"] for run in (both, one)}
        fences = {c.step_id: c.fence for c in claims}
        async with transaction(ctx.sessions) as session:
            held = await extend_leases_txn(session, "w", fences, until)
        moved = {run: await snapshot(ctx, run) for run in (both, one)}

    assert stranger == set() and unmoved == versions  # not the owner: nothing written
    assert held == {c.step_id for c in claims}
    # One bump per run, however many of its steps the heartbeat extends.
    assert {run: snap["run"]["version"] for run, snap in moved.items()} == {
        run: version + 1 for run, version in versions.items()
    }
    assert {s["lease_expires_at"] for snap in moved.values() for s in snap["steps"]} == {until}


# --- a step's model calls are written with its result ---------------------------------------------

PRICE = Decimal("0.001000001")


class PricedCalls(LLMClient):
    """The real (offline) client, whose calls are priced: costs that add up to something."""

    def __init__(self, inner: LLMClient) -> None:
        self._inner = inner

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        return await self._inner.complete(request)

    @property
    def calls(self) -> list[LLMCallRecord]:
        return [c.model_copy(update={"cost_usd": PRICE}) for c in self._inner.calls]


def analyze(text: str, **extra: Any) -> Any:
    return noop(None, step_type="analyze", **extra).model_copy(
        update={"input_data": {"instruction": "Find risky calls", "inputs": [text]}}
    )


async def test_an_analyze_steps_model_calls_are_written_with_its_result(
    settings: Settings,
) -> None:
    BatchLog.writes = []

    def priced(budget: Decimal | None) -> LLMClient:
        return PricedCalls(build_llm_client(settings, remaining_budget_usd=budget))

    plan = [
        analyze("def f(x):\n    return eval(x)\n"),
        analyze("import os\nos.system('ls')\n", depends_on=[]),
        noop("after", depends_on=[1, 2]),
    ]
    async with (
        engine_context(settings, writer=BatchLog, llm_factory=priced) as ctx,
        running_worker(ctx, concurrency=2),
    ):
        run_id = await new_run(ctx, plan, auto_start=True)
        final = await wait_finished(ctx, run_id)

    assert final["run"]["status"] == "completed", final["steps"]
    calls, steps = final["calls"], {s["id"]: s for s in final["steps"]}
    assert sorted(steps[c["step_id"]]["step_number"] for c in calls) == [1, 2]
    run = final["run"]
    assert run["total_cost_usd"] == sum(c["cost_usd"] for c in calls) == 2 * PRICE
    assert run["input_tokens"] == sum(c["input_tokens"] for c in calls) > 0
    assert run["output_tokens"] == sum(c["output_tokens"] for c in calls) > 0
    for call in calls:
        step = steps[call["step_id"]]
        assert step["cost_usd"] == call["cost_usd"]
        assert step["started_at"] <= call["created_at"] <= step["completed_at"]
        # The one write holding the ledger row holds the step's result and its audit event.
        (write,) = [
            w
            for w in BatchLog.writes
            for table, rows in w.inserts
            if table == "llm_calls" and any(row["id"] == call["id"] for row in rows)
        ]
        events = [row for table, rows in write.inserts if table == "audit_events" for row in rows]
        assert any(e["type"] == "step.completed" and e["step_id"] == step["id"] for e in events)
        (result,) = [values for step_id, values in write.step_values if step_id == step["id"]]
        assert result["status"] == "completed" and result["cost_usd"] == PRICE
        assert write.run_values["total_cost_usd"] in (PRICE, 2 * PRICE)


async def test_the_model_calls_of_an_attempt_that_lost_its_claim_stay_in_the_ledger(
    settings: Settings, request: pytest.FixtureRequest
) -> None:
    """Calls that happened cost money whether or not their attempt may still record its result
    (``decide_result``'s promise)."""

    def priced(budget: Decimal | None) -> LLMClient:
        return PricedCalls(build_llm_client(settings, remaining_budget_usd=budget))

    async with engine_context(settings, llm_factory=priced) as ctx:
        run_id = await new_run(ctx, [analyze("x = 1\n")], auto_start=True)
        # A lease already over when it is taken: the next claim finds it lapsed.
        (lapsed,) = await claim_locking(ctx, run_id, owner="slow", lease=timedelta(seconds=-5))
        result = await run_claimed(ctx, lapsed)
        assert result is not None and len(result.calls) == 1
        (taken,) = await claim_locking(ctx, run_id, owner="other")
        assert (taken.step_id, taken.fence) == (lapsed.step_id, 2)
        with contextlib.suppress(StaleFenceError):  # refused, one way or another
            await record_result(ctx, lapsed, result, actor="slow")
        final = await snapshot(ctx, run_id)
    (step,) = final["steps"]
    assert (step["status"], step["lease_owner"], step["fence"]) == ("running", "other", 2)
    assert step["output_data"] is None  # the stale result itself is not recorded
    assert [c["step_id"] for c in final["calls"]] == [lapsed.step_id]
    assert final["calls"][0]["cost_usd"] == final["run"]["total_cost_usd"] == PRICE
