"""The hot path (``engine/hot_path.py`` + ``storage/run_changes.py``) against real databases.

A worker records results and claims the next steps from the state it last committed, guarded by
the run's ``audit_seq``. These tests hold it to its promise: the same end state and audit log as
the locking path, nothing written when the run moved on or when a change is outside what it may
write, and the SQL function writing every column it claims to.
"""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
from agent_engine.engine.hot_path import KnownRuns
from agent_engine.storage.collecting import NeedsDatabase
from agent_engine.storage.run_changes import RunChanges, RunChangeWriter, StepPatch
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.config import Settings
from agent_engine.domain.plan import PlanStep
from agent_engine.domain.retry import RetryPolicy
from agent_engine.engine import hot_path
from agent_engine.engine.approvals import decide_step
from agent_engine.engine.claiming import Claim, take_ready_txn
from agent_engine.engine.context import EngineContext, build_context, lazy_llm
from agent_engine.engine.control import start_run
from agent_engine.engine.runs import CreateRunRequest, cancel_run, create_run, get_run
from agent_engine.engine.settle import settle_run_txn
from agent_engine.engine.stepping import ContinueWith, record_result, run_claimed
from agent_engine.storage import run_changes
from agent_engine.storage.audit import append_event_txn, event_hash, list_events_txn, verify_chain
from agent_engine.storage.database import read_transaction, transaction
from agent_engine.storage.notifications import RunNotice
from agent_engine.storage.runs import get_run_txn, list_open_steps_txn, outputs_of_txn
from agent_engine.storage.tables import AgentRun, Approval, AuditEvent, Step
from agent_engine.storage.types import utcnow
from agent_engine.worker.worker import Worker, WorkerOptions

ACTOR = "test"
LEASE = timedelta(seconds=60)
FINISHED = frozenset({"completed", "failed", "cancelled"})
STUCK_S = 60.0  # only a guard against hanging forever: no test measures time
MIGRATION_0004 = (
    Path(run_changes.__file__).parent / "migrations" / "versions" / "0004_apply_run_changes.py"
)
RUNS = AgentRun.__table__
STEPS = Step.__table__
EVENTS = AuditEvent.__table__

Mutate = Callable[[AsyncSession, AgentRun, list[Step]], Awaitable[Any]]


# --- helpers -------------------------------------------------------------------------------------


@asynccontextmanager
async def engine_context(settings: Settings) -> AsyncIterator[EngineContext]:
    ctx = build_context(settings)
    await ctx.start()  # PostgreSQL: LISTEN, so workers and tests see committed events
    try:
        yield ctx
    finally:
        await ctx.close()


class LockingOnlyRuns(KnownRuns):
    """Known runs whose hot path always declines: every change takes the locking path."""

    async def start_change(self, *args: Any, **kwargs: Any) -> None:
        self.misses += 1
        return None


class RecordingWriter:
    """The real writer, keeping every ``RunChanges`` the hot path asked it to apply and whether
    it was applied."""

    def __init__(self, writer: RunChangeWriter, applied: list[tuple[RunChanges, bool]]) -> None:
        self._writer = writer
        self._applied = applied

    async def apply(self, changes: RunChanges) -> bool:
        applied = await self._writer.apply(changes)
        self._applied.append((changes, applied))
        return applied

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


class RecordingRuns(KnownRuns):
    """Known runs whose hot-path writes (and only those) are recorded in ``applied``."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[tuple[RunChanges, bool]] = []

    async def start_change(self, writer: RunChangeWriter, *args: Any, **kwargs: Any) -> Any:
        recording = cast(RunChangeWriter, RecordingWriter(writer, self.applied))
        return await super().start_change(recording, *args, **kwargs)


@asynccontextmanager
async def running_worker(
    ctx: EngineContext,
    worker_id: str,
    *,
    concurrency: int,
    known: KnownRuns | None = None,
    poll_s: float = 0.05,
    lease_s: float = 30.0,
) -> AsyncIterator[Worker]:
    options = WorkerOptions(
        worker_id=worker_id, concurrency=concurrency, poll_s=poll_s, lease_s=lease_s
    )
    worker = Worker(ctx, options)
    if known is not None:
        worker.known_runs = known
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await task


async def wait_until(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(STUCK_S):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


async def wait_finished(ctx: EngineContext, run_id: uuid.UUID) -> None:
    async def finished() -> bool:
        return (await get_run(ctx, str(run_id))).run.status in FINISHED

    await wait_until(finished)


async def new_run(
    ctx: EngineContext, steps: Sequence[PlanStep], *, goal: str = "hot path", auto_start: bool
) -> uuid.UUID:
    request = CreateRunRequest(goal=goal, steps=list(steps), auto_start=auto_start)
    view = await create_run(ctx, request, actor=ACTOR, idempotency_key=None)
    return view.run.id


def noop(value: Any, *, depends_on: list[int] | None = None, **extra: Any) -> PlanStep:
    fields = {k: v for k, v in extra.items() if k in PlanStep.model_fields}
    inputs = {k: v for k, v in extra.items() if k not in PlanStep.model_fields}
    return PlanStep(
        step_type="noop", input_data={"value": value, **inputs}, depends_on=depends_on, **fields
    )


async def snapshot(ctx: EngineContext, run_id: uuid.UUID) -> dict[str, Any]:
    """Every column of the run, its steps and its audit events, as stored."""
    async with read_transaction(ctx.sessions) as session:
        run = (await session.execute(select(RUNS).where(RUNS.c.id == run_id))).mappings().one()
        steps = (
            await session.execute(
                select(STEPS).where(STEPS.c.run_id == run_id).order_by(STEPS.c.step_number)
            )
        ).mappings()
        events = (
            await session.execute(
                select(EVENTS).where(EVENTS.c.run_id == run_id).order_by(EVENTS.c.seq)
            )
        ).mappings()
        return {
            "run": dict(run),
            "steps": [dict(row) for row in steps],
            "events": [dict(row) for row in events],
        }


async def chain_of(ctx: EngineContext, run_id: uuid.UUID) -> list[AuditEvent]:
    async with read_transaction(ctx.sessions) as session:
        return list(await list_events_txn(session, run_id))


async def remember(ctx: EngineContext, known: KnownRuns, run_id: uuid.UUID) -> None:
    """What a claim round does: read the run and its open steps under its lock, then keep them."""
    async with transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id, lock=True)
        steps = await list_open_steps_txn(session, run.id)
    known.remember(run, steps)


def claim_next(ctx: EngineContext, owner: str = "hot") -> Mutate:
    """State-machine code a worker runs: take the next ready step and settle the run."""

    async def mutate(session: AsyncSession, run: AgentRun, steps: list[Step]) -> list[Any]:
        work = await take_ready_txn(
            ctx, session, run, steps, owner=owner, limit=1, lease=LEASE, llm=lazy_llm(ctx, None)
        )
        settle_run_txn(session, run, steps, actor=owner)
        return work

    return mutate


async def claim_locking(ctx: EngineContext, known: KnownRuns, run_id: uuid.UUID) -> Claim:
    """Claim the run's next step on the locking path (as a claim round does) and remember it."""
    async with transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id, lock=True)
        steps = await list_open_steps_txn(session, run.id)
        work = await claim_next(ctx, "w")(session, run, steps)
    known.remember(run, steps)
    assert len(work) == 1 and isinstance(work[0], Claim)
    return work[0]


def make_event(
    run: dict[str, Any], type: str, payload: dict[str, Any], *, step_id: uuid.UUID | None
) -> dict[str, Any]:
    """The next audit_events row of ``run``'s chain (``run`` as stored), hashed like
    append_event_txn does."""
    seq = run["audit_seq"] + 1
    created_at = utcnow()
    fields: dict[str, Any] = {
        "run_id": run["id"],
        "seq": seq,
        "type": type,
        "step_id": step_id,
        "payload": payload,
        "actor": ACTOR,
        "created_at": created_at,
        "prev_hash": run["audit_head_hash"],
    }
    return {**fields, "hash": event_hash(**fields)}


def load_migration_0004() -> ModuleType:
    spec = importlib.util.spec_from_file_location("migration_0004", MIGRATION_0004)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- 1. equivalence with the locking path ---------------------------------------------------------


def equivalence_plan() -> list[PlanStep]:
    """A chain, a fan-out/fan-in with a retried branch, a reference, an optional failure, and a
    step that waits for a human's approval."""
    retry = RetryPolicy(max_attempts=3, initial_backoff_s=0.0, max_backoff_s=0.0)
    return [
        noop("first"),  # 1
        noop({"n": 2, "nested": [1, 2]}),  # 2 (after 1)
        noop("left", depends_on=[2]),  # 3
        noop("right", depends_on=[2]),  # 4
        noop("flaky", depends_on=[2], fail_attempts=2, retry_policy=retry),  # 5: 3 attempts
        noop("join", depends_on=[3, 4, 5]),  # 6
        noop({"$ref": "steps.4.output.value"}),  # 7: resolving reads → the locking path
        noop("broken", optional=True, fail=True),  # 8: fails for good, optional
        noop("joined", depends_on=[7, 8]),  # 9
        noop("approved", requires_approval=True),  # 10: parked with a preview, then approved
        noop("last"),  # 11
    ]


NOOP_DEFAULTS = {"fail": False, "fail_attempts": 0, "sleep_s": 0.0}
STEP_STATE = (
    "step_number",
    "step_type",
    "status",
    "input_data",
    "resolved_input",
    "output_data",
    "output_hash",
    "preview",
    "attempt",
    "max_attempts",
    "fence",
    "error",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "model",
    "lease_owner",
    "lease_expires_at",
    "not_before",
    "effect_intent",
    "effect_outcome",
    "outcome_unknown",
)
RUN_STATE = (
    "status",
    "error",
    "total_cost_usd",
    "input_tokens",
    "output_tokens",
    "claimable_at",
    "audit_seq",
    "plan_version",
    "started",
)


def end_state(snap: dict[str, Any]) -> dict[str, Any]:
    """The run and steps without ids, times and actors (which differ between two runs)."""
    run = {key: snap["run"][key] for key in RUN_STATE}
    run["completed"] = snap["run"]["completed_at"] is not None
    steps = []
    for row in snap["steps"]:
        step = {key: row[key] for key in STEP_STATE}
        step["started"] = row["started_at"] is not None
        step["finished"] = row["completed_at"] is not None
        step["timed"] = row["latency_ms"] is not None
        steps.append(step)
    return {"run": run, "steps": steps}


def comparable_events(snap: dict[str, Any], worker_id: str) -> list[tuple[Any, ...]]:
    """(seq, type, step number, payload) with ids and the worker's name replaced by placeholders;
    timestamps, actors and hashes are left out."""
    numbers = {row["id"]: row["step_number"] for row in snap["steps"]}
    names = {str(snap["run"]["id"]): "<run>", worker_id: "<worker>"}
    names.update({str(step_id): f"<step {n}>" for step_id, n in numbers.items()})

    def normal(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: normal(item) for key, item in value.items()}
        if isinstance(value, list):
            return [normal(item) for item in value]
        if isinstance(value, str):
            return names.get(value, value)
        return value

    return [
        (row["seq"], row["type"], numbers.get(row["step_id"]), normal(row["payload"]))
        for row in snap["events"]
    ]


def per_step(events: list[tuple[Any, ...]]) -> dict[Any, list[tuple[Any, ...]]]:
    """Each step's events in order (and the run's own), without the global seq."""
    grouped: dict[Any, list[tuple[Any, ...]]] = {}
    for _seq, type, number, payload in events:
        grouped.setdefault(number, []).append((type, payload))
    return grouped


async def execute_plan(
    ctx: EngineContext, worker_id: str, known: KnownRuns, concurrency: int
) -> tuple[dict[str, Any], Worker]:
    """Run the plan with one worker; the end state and the worker."""
    async with running_worker(ctx, worker_id, concurrency=concurrency, known=known) as worker:
        run_id = await new_run(ctx, equivalence_plan(), goal="equivalence", auto_start=True)

        async def awaits_approval() -> bool:
            status: str = (await snapshot(ctx, run_id))["run"]["status"]
            return status == "awaiting_approval"

        await wait_until(awaits_approval)
        step_10 = (await snapshot(ctx, run_id))["steps"][9]
        assert step_10["status"] == "awaiting_approval"
        await decide_step(
            ctx, str(run_id), str(step_10["id"]), decision="approved", actor="human", comment="ok"
        )
        await wait_finished(ctx, run_id)
        await wait_until(lambda: _idle(worker))
    events = await chain_of(ctx, run_id)
    assert verify_chain(events) == (True, None), worker_id
    return await snapshot(ctx, run_id), worker


async def _idle(worker: Worker) -> bool:
    return worker.inflight == 0


@pytest.mark.parametrize("concurrency", [1, 4], ids=["one-slot", "parallel"])
async def test_hot_path_ends_in_the_same_state_and_audit_log_as_the_locking_path(
    settings: Settings, concurrency: int
) -> None:
    hot_runs = RecordingRuns()
    async with engine_context(settings) as ctx:
        locking, locking_worker = await execute_plan(
            ctx, "locking-worker", LockingOnlyRuns(), concurrency
        )
        hot, hot_worker = await execute_plan(ctx, "hot-worker", hot_runs, concurrency)

    assert hot_worker.known_runs.hits > 0  # the hot path really recorded results
    hot_writes = [ok for _changes, ok in hot_runs.applied]
    assert hot_writes.count(True) == hot_worker.known_runs.hits
    assert locking_worker.known_runs.hits == 0
    hot_events_written = [row["type"] for c, ok in hot_runs.applied if ok for row in c.events]
    assert "step.awaiting_approval" in hot_events_written  # the preview went the hot way too
    if concurrency == 1:
        # With one slot nothing else writes the run while a step runs: the guard never fails.
        assert all(hot_writes)
    # The plan did what it was meant to, so the comparison is not between two broken runs.
    steps = end_state(locking)["steps"]
    assert end_state(locking)["run"]["status"] == "completed"
    assert [s["status"] for s in steps] == ["completed"] * 7 + ["failed"] + ["completed"] * 3
    assert [s["attempt"] for s in steps] == [1, 1, 1, 1, 3, 1, 1, 1, 1, 1, 1]
    assert steps[6]["output_data"] == {"value": "right", "attempt": 1}
    assert steps[9]["preview"] == {"input": {"value": "approved", **NOOP_DEFAULTS}}

    assert end_state(hot) == end_state(locking)
    hot_events = comparable_events(hot, "hot-worker")
    locking_events = comparable_events(locking, "locking-worker")
    if concurrency == 1:
        # One slot: the order of everything is fixed, so the whole logs must be equal.
        assert hot_events == locking_events
    else:
        # Parallel branches finish in any order: each step's (and the run's) history is equal.
        assert len(hot_events) == len(locking_events)
        assert per_step(hot_events) == per_step(locking_events)
        for events in (hot_events, locking_events):
            # Steps 3, 4 and 5 were all claimed before any of them finished: they ran in parallel.
            kinds = [(kind, number) for _seq, kind, number, _payload in events]
            last_start = max(kinds.index(("step.running", n)) for n in (3, 4, 5))
            first_end = min(
                i for i, (kind, n) in enumerate(kinds) if n in (3, 4, 5) and kind != "step.running"
            )
            assert last_start < first_end


# --- 2. the guard ---------------------------------------------------------------------------------


@pytest.mark.parametrize("elsewhere", ["nothing", "started", "cancelled"])
async def test_known_state_is_not_written_once_the_run_moved_on(
    settings: Settings, elsewhere: str
) -> None:
    known = RecordingRuns()
    async with engine_context(settings) as ctx:
        run_id = await new_run(ctx, [noop(1), noop(2)], auto_start=False)
        await remember(ctx, known, run_id)
        seq_known = known.get(run_id).run.audit_seq  # type: ignore[union-attr]
        if elsewhere == "started":
            await start_run(ctx, str(run_id), actor="someone else")
        elif elsewhere == "cancelled":
            await cancel_run(ctx, str(run_id), actor="someone else", reason="changed my mind")
        before = await snapshot(ctx, run_id)

        written, result = await known.change(ctx.run_changes, run_id, claim_next(ctx))
        after = await snapshot(ctx, run_id)
        # Asking again goes straight to the locking path, without even trying to write.
        again = None if written else await known.change(ctx.run_changes, run_id, claim_next(ctx))

    assert len(known.applied) == 1
    if elsewhere == "nothing":  # the control: with the run unchanged the change is written
        assert written and result is not None and len(result) == 1
        assert known.applied[0][1] is True
        assert [row["status"] for row in after["steps"]] == ["running", "pending"]
        assert after["run"]["audit_seq"] > before["run"]["audit_seq"]
        assert known.get(run_id) is not None and known.hits == 1
        return
    assert before["run"]["audit_seq"] > seq_known  # the run did move
    assert (written, result) == (False, None)
    assert known.applied[0][1] is False  # the writer was asked, and refused
    assert after == before  # not a column, not an event
    assert known.get(run_id) is None  # the stale state is dropped
    assert again == (False, None)
    assert known.misses == 2 and known.hits == 0


def claim_changes(snap: dict[str, Any], *, expected_seq: int, fence: int) -> RunChanges:
    """What claiming step 1 writes: run and step columns and the step.running event."""
    run, step = snap["run"], snap["steps"][0]
    now = utcnow()
    event = make_event(
        run,
        "step.running",
        {"step_number": 1, "from": "pending", "to": "running", "attempt": 1},
        step_id=step["id"],
    )
    values = {
        "status": "running",
        "claimable_at": None,
        "audit_seq": event["seq"],
        "audit_head_hash": event["hash"],
        "updated_at": now,
    }
    patch = StepPatch(
        step["id"],
        fence,
        {
            "status": "running",
            "attempt": step["attempt"] + 1,
            "fence": step["fence"] + 1,
            "lease_owner": "hot",
            "lease_expires_at": now + LEASE,
            "started_at": now,
        },
    )
    return RunChanges(run["id"], expected_seq, values, [patch], [event])


@pytest.mark.parametrize("stale", ["nothing", "audit_seq", "fence"])
async def test_writer_refuses_changes_computed_from_a_stale_state(
    settings: Settings, stale: str
) -> None:
    async with engine_context(settings) as ctx:
        run_id = await new_run(ctx, [noop(1), noop(2)], auto_start=False)
        computed_from = await snapshot(ctx, run_id)
        seq, fence = computed_from["run"]["audit_seq"], computed_from["steps"][0]["fence"]
        if stale == "audit_seq":
            await start_run(ctx, str(run_id), actor="someone else")  # an audited change
            changes = claim_changes(computed_from, expected_seq=seq, fence=fence)
        elif stale == "fence":  # the run is as computed, but the step is not
            changes = claim_changes(computed_from, expected_seq=seq, fence=fence + 1)
        else:
            changes = claim_changes(computed_from, expected_seq=seq, fence=fence)
        before = await snapshot(ctx, run_id)
        applied = await ctx.run_changes.apply(changes)
        after = await snapshot(ctx, run_id)

    if stale == "nothing":  # the control: the same changes on a current state are written
        assert applied is True
        assert after["run"]["audit_seq"] == seq + 1 and after["run"]["status"] == "running"
        assert after["steps"][0]["fence"] == fence + 1
        assert [e["type"] for e in after["events"]][-1] == "step.running"
        return
    assert applied is False
    assert after == before


# --- 3. refusals ----------------------------------------------------------------------------------


async def test_the_hot_paths_session_refuses_reads_and_other_rows_but_collects_events(
    settings: Settings,
) -> None:
    """Whatever session the hot path hands to state-machine code refuses to read or to add rows,
    and collects the audit events, which are then written with the changes."""

    async def probe(session: AsyncSession, run: AgentRun, steps: list[Step]) -> str:
        for call in (
            lambda: session.execute(select(AgentRun)),
            lambda: session.scalars(select(AgentRun)),
            lambda: session.scalar(select(AgentRun.id)),
            lambda: session.get(AgentRun, run.id),
            lambda: session.flush(),
            lambda: session.refresh(run),
            lambda: session.merge(run),
            lambda: session.delete(steps[0]),
            lambda: outputs_of_txn(session, run.id),  # what resolving a reference does
        ):
            with pytest.raises(NeedsDatabase):
                await call()
        other = AuditEvent(run_id=run.id, seq=99, type="x", payload={}, actor=ACTOR, hash="h")
        for row in (AgentRun(id=uuid.uuid4()), Step(), Approval(), other):
            with pytest.raises(NeedsDatabase):
                session.add(row)
        assert not session.sync_session.new  # nothing in a unit of work either
        append_event_txn(session, run, "test.probed", {"probed": True}, actor=ACTOR)
        return "probed"

    async with engine_context(settings) as ctx:
        run_id = await new_run(ctx, [noop(1)], auto_start=False)
        known = KnownRuns()
        await remember(ctx, known, run_id)
        before = await snapshot(ctx, run_id)
        assert await known.change(ctx.run_changes, run_id, probe) == (True, "probed")
        after = await snapshot(ctx, run_id)
        chain = await chain_of(ctx, run_id)

    assert after["events"][:-1] == before["events"]
    event = after["events"][-1]
    assert (event["seq"], event["type"], event["payload"]) == (
        before["run"]["audit_seq"] + 1,
        "test.probed",
        {"probed": True},
    )
    assert after["run"]["audit_seq"] == event["seq"]
    assert after["run"]["audit_head_hash"] == event["hash"]
    assert after["steps"] == before["steps"]
    assert verify_chain(chain) == (True, None)


@pytest.mark.parametrize(
    ("run_values", "step_values", "within"),
    [
        ({"status": "running", "audit_seq": 2}, {"status": "running", "fence": 1}, True),
        ({name: None for name in run_changes.RUN_COLUMNS}, {}, True),
        ({}, {name: None for name in run_changes.STEP_COLUMNS}, True),
        ({"goal": "rewritten"}, {}, False),
        ({"metadata": {"k": "v"}}, {}, False),
        ({"status": "running", "plan_version": 2}, {}, False),
        ({"status": "running"}, {"input_data": {}}, False),
        ({"status": "running"}, {"status": "running", "depends_on": []}, False),
        ({}, {"run_id": uuid.uuid4()}, False),
    ],
)
def test_within_hot_columns_only_for_listed_columns(
    run_values: dict[str, Any], step_values: dict[str, Any], within: bool
) -> None:
    steps = [StepPatch(uuid.uuid4(), 0, {"status": "running"}), StepPatch(uuid.uuid4(), 1, {})]
    steps.append(StepPatch(uuid.uuid4(), 0, step_values))
    changes = RunChanges(uuid.uuid4(), 1, run_values, steps)
    assert changes.within_hot_columns() is within


async def _set_goal(session: AsyncSession, run: AgentRun, steps: list[Step]) -> None:
    run.goal = "rewritten"


async def _set_metadata(session: AsyncSession, run: AgentRun, steps: list[Step]) -> None:
    run.metadata_ = {"rewritten": True}


async def _set_step_input(session: AsyncSession, run: AgentRun, steps: list[Step]) -> None:
    steps[1].input_data = {"value": "rewritten"}


async def _set_depends_on(session: AsyncSession, run: AgentRun, steps: list[Step]) -> None:
    steps[1].depends_on = []


async def _read(session: AsyncSession, run: AgentRun, steps: list[Step]) -> None:
    await outputs_of_txn(session, run.id)


async def _add_approval(session: AsyncSession, run: AgentRun, steps: list[Step]) -> None:
    session.add(Approval(run_id=run.id, step_id=steps[1].id, decision="approved", actor=ACTOR))


async def _nothing_else(session: AsyncSession, run: AgentRun, steps: list[Step]) -> None:
    return None


@pytest.mark.parametrize(
    ("extra", "reaches_writer"),
    [
        (_nothing_else, True),  # the control
        (_set_goal, False),
        (_set_metadata, False),
        (_set_step_input, False),
        (_set_depends_on, False),
        (_read, False),
        (_add_approval, False),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)).strip("_"),
)
async def test_a_change_the_hot_path_may_not_make_is_not_written(
    settings: Settings, extra: Mutate, reaches_writer: bool
) -> None:
    known = RecordingRuns()
    async with engine_context(settings) as ctx:
        run_id = await new_run(ctx, [noop(1), noop(2)], auto_start=True)
        await remember(ctx, known, run_id)
        claim = claim_next(ctx)

        async def mutate(session: AsyncSession, run: AgentRun, steps: list[Step]) -> Any:
            work = await claim(session, run, steps)  # a legitimate change first
            await extra(session, run, steps)
            return work

        before = await snapshot(ctx, run_id)
        written, _result = await known.change(ctx.run_changes, run_id, mutate)
        after = await snapshot(ctx, run_id)

    if reaches_writer:
        assert written is True and [ok for _c, ok in known.applied] == [True]
        assert after["steps"][0]["status"] == "running"
        return
    assert written is False
    assert known.applied == []  # refused before a single round trip
    assert after == before
    assert known.get(run_id) is None


# --- 4. the column lists -------------------------------------------------------------------------


def test_column_lists_agree_with_migration_0004_and_the_models() -> None:
    migration = load_migration_0004()
    assert frozenset(migration.RUN_COLUMNS) == run_changes.RUN_COLUMNS
    assert frozenset(migration.STEP_COLUMNS) == run_changes.STEP_COLUMNS
    assert tuple(migration.EVENT_COLUMNS) == run_changes.EVENT_COLUMNS
    for names in (migration.RUN_COLUMNS, migration.STEP_COLUMNS, migration.EVENT_COLUMNS):
        assert len(set(names)) == len(names)
    assert set(RUNS.c.keys()) >= run_changes.RUN_COLUMNS
    assert set(STEPS.c.keys()) >= run_changes.STEP_COLUMNS
    assert set(EVENTS.c.keys()) >= set(run_changes.EVENT_COLUMNS)
    # What a run or a step *is* never changes on the hot path.
    assert not {"id", "goal", "options", "plan_version", "started"} & run_changes.RUN_COLUMNS
    assert not {"id", "run_id", "input_data", "depends_on"} & run_changes.STEP_COLUMNS
    # The hot path's own idea of column names (attribute key → column) is the table's.
    assert set(hot_path._RUN_COLUMNS.values()) == set(RUNS.c.keys())
    assert set(hot_path._STEP_COLUMNS.values()) == set(STEPS.c.keys())
    assert set(hot_path.ALWAYS_WRITTEN) <= {
        key for key, name in hot_path._RUN_COLUMNS.items() if name in run_changes.RUN_COLUMNS
    }


async def test_listed_columns_exist_in_the_migrated_database(settings: Settings) -> None:
    async with engine_context(settings) as ctx, ctx.db.connect() as connection:
        found = await connection.run_sync(
            lambda sync: {
                table: {column["name"] for column in sa_inspect(sync).get_columns(table)}
                for table in ("agent_runs", "steps", "audit_events")
            }
        )
    assert found["agent_runs"] >= run_changes.RUN_COLUMNS
    assert found["steps"] >= run_changes.STEP_COLUMNS
    assert found["audit_events"] >= set(run_changes.EVENT_COLUMNS)


PLUS_TWO = timezone(timedelta(hours=2))


def new_run_values(run: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "running",
        "error": {"code": "boom", "nested": {"list": [1, "two", None], "flag": False}},
        "total_cost_usd": Decimal("12.345678901"),
        "input_tokens": 9_007_199_254_740_993,  # beyond a double's exact integers
        "output_tokens": 42,
        "claimable_at": datetime(2031, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "audit_seq": event["seq"],
        "audit_head_hash": event["hash"],
        "updated_at": datetime(2031, 1, 2, 5, 4, 5, 1, tzinfo=PLUS_TWO),
        "completed_at": datetime(2031, 2, 3, 4, 5, 6, 789012, tzinfo=UTC),
    }


def new_step_values(step: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "running",
        "resolved_input": {"value": "resolved", "list": [1, 2.5, "x"]},
        "output_data": {"value": {"deep": [None, True]}, "attempt": 3},
        "preview": {"shown": "to a human"},
        "attempt": step["attempt"] + 3,
        "max_attempts": step["max_attempts"] + 6,
        "output_hash": "ab" * 32,
        "cost_usd": Decimal("0.000000001"),
        "input_tokens": 11,
        "output_tokens": 12,
        "model": "some-provider/some-model",
        "latency_ms": 12.25,
        "error": {"code": "transient_error", "message": "once"},
        "lease_owner": "owner-x",
        "lease_expires_at": datetime(2031, 3, 4, 5, 6, 7, 123456, tzinfo=UTC),
        "fence": step["fence"] + 5,
        "not_before": datetime(2031, 3, 4, 7, 6, 7, 654321, tzinfo=PLUS_TWO),
        "effect_intent": {"attempt": 3, "fence": 5, "argv": ["echo", "hi"]},
        "effect_outcome": {"attempt": 3, "ok": True},
        "outcome_unknown": True,
        "started_at": datetime(2031, 3, 4, 5, 0, 0, 1, tzinfo=UTC),
        "completed_at": datetime(2031, 3, 4, 5, 59, 59, 999999, tzinfo=UTC),
    }


async def test_apply_writes_every_listed_column(settings: Settings) -> None:
    """On PostgreSQL this is the SQL function of migration 0004; on SQLite, Core statements."""
    async with engine_context(settings) as ctx:
        run_id = await new_run(ctx, [noop(1), noop(2)], auto_start=False)
        before = await snapshot(ctx, run_id)
        run, step = before["run"], before["steps"][0]
        event = make_event(run, "test.everything", {"n": 1, "d": {"x": [1]}}, step_id=step["id"])
        run_values, step_values = new_run_values(run, event), new_step_values(step)
        assert set(run_values) == run_changes.RUN_COLUMNS  # a new column needs a value here
        assert set(step_values) == run_changes.STEP_COLUMNS
        for name, value in run_values.items():
            assert run[name] != value, name  # every value is new, so reading it back proves a write
        for name, value in step_values.items():
            assert step[name] != value, name

        patch = StepPatch(step["id"], step["fence"], step_values)
        changes = RunChanges(run_id, run["audit_seq"], run_values, [patch], [event])
        assert changes.within_hot_columns()
        assert await ctx.run_changes.apply(changes) is True
        after = await snapshot(ctx, run_id)
        chain = await chain_of(ctx, run_id)

    for name in (column.name for column in RUNS.c):
        expected = run_values.get(name, run[name])
        assert after["run"][name] == expected, name
        assert type(after["run"][name]) is type(expected), name
    for name in (column.name for column in STEPS.c):
        expected = step_values.get(name, step[name])
        assert after["steps"][0][name] == expected, name
        assert type(after["steps"][0][name]) is type(expected), name
    assert after["steps"][1] == before["steps"][1]  # a step not in the changes is untouched
    written = after["events"][-1]
    for name in run_changes.EVENT_COLUMNS:
        assert written[name] == event[name], name
    assert after["events"][:-1] == before["events"]
    assert verify_chain(chain) == (True, None)


# --- 5. own writes are no news --------------------------------------------------------------------


async def notices_until(
    wakeups: asyncio.Queue[str], run_id: uuid.UUID, last: Callable[[RunNotice], bool]
) -> list[RunNotice]:
    """The run's notifications as they arrive, up to and including the one ``last`` accepts."""
    notices: list[RunNotice] = []
    async with asyncio.timeout(STUCK_S):
        while not notices or not last(notices[-1]):
            notice = RunNotice.parse(await wakeups.get())
            assert notice is not None
            if notice.run_id == run_id:
                notices.append(notice)
    return notices


async def test_the_hot_paths_commit_is_announced_once_with_the_state_after_it(
    settings: Settings,
) -> None:
    async with engine_context(settings) as ctx:
        worker = Worker(ctx, WorkerOptions(worker_id="w", concurrency=1))
        known = worker.known_runs
        run_id = await new_run(ctx, [noop(1), noop(2), noop(3)], auto_start=True)
        async with ctx.notifier.subscribe() as wakeups:
            claim = await claim_locking(ctx, known, run_id)
            claimed_at = (await snapshot(ctx, run_id))["run"]["audit_seq"]
            # The claim's own notification (PostgreSQL's may come late): nothing after it yet.
            await notices_until(wakeups, run_id, lambda notice: notice.seq == claimed_at)
            result = await run_claimed(ctx, claim)
            assert result is not None
            then = ContinueWith(
                owner="w", limit=1, lease=LEASE, llm=lazy_llm(ctx, None), known=known
            )
            following = await record_result(ctx, claim, result, actor="w", then=then)
            assert known.hits == 1  # recorded (and step 2 claimed) by the hot path
            stored = await snapshot(ctx, run_id)
            # A later commit by someone else: its notification comes after any of ours.
            await cancel_run(ctx, str(run_id), actor="someone else", reason="barrier")
            notices = await notices_until(wakeups, run_id, lambda n: n.status == "cancelled")

    written = stored["events"][claimed_at:]
    assert [c.step_number for c in following] == [2]
    assert [e["type"] for e in written] == ["step.completed", "step.running"]
    seqs = [e["seq"] for e in written]
    assert seqs == list(range(claimed_at + 1, claimed_at + 1 + len(written)))
    # The hot path's commit was announced once (PostgreSQL: the trigger; SQLite: on_committed),
    # with the run's state after it.
    mine, cancelled = notices
    assert (mine.seq, mine.status) == (seqs[-1], "running")
    assert stored["run"]["claimable_at"] is not None  # step 2's lease
    assert mine.claimable_at == pytest.approx(stored["run"]["claimable_at"].timestamp(), abs=1e-5)
    assert cancelled.seq > seqs[-1]
    # What the worker makes of such a notice, its own or not: a step claimable now is work (a
    # retry's short backoff may have ended while the write that scheduled it committed), a
    # later moment sets a timer, nothing claimable is no work.
    now = RunNotice(run_id, mine.seq, mine.status, claimable_at=0.0)
    assert worker._on_event(now.payload()) is True
    assert worker._on_event(mine.payload()) is False  # step 2's lease ends later
    assert worker._timer is not None
    idle = RunNotice(run_id, mine.seq, "awaiting_approval", claimable_at=None)
    assert worker._on_event(idle.payload()) is False


# --- 6. a cancel while a step runs ----------------------------------------------------------------


async def test_cancel_while_a_step_runs_makes_the_hot_path_fall_back(settings: Settings) -> None:
    known = RecordingRuns()
    async with engine_context(settings) as ctx:
        run_id = await new_run(ctx, [noop("slow", sleep_s=600), noop("never")], auto_start=True)
        async with running_worker(ctx, "w", concurrency=2, known=known) as worker:

            async def first_step_running() -> bool:
                status: str = (await snapshot(ctx, run_id))["steps"][0]["status"]
                return status == "running"

            await wait_until(first_step_running)
            seq_running = (await snapshot(ctx, run_id))["run"]["audit_seq"]
            view = await cancel_run(ctx, str(run_id), actor="human", reason="stop")
            assert view.run.status == "cancelled"
            seq_cancelled = view.run.audit_seq

            async def result_handled() -> bool:
                return bool(known.applied) and worker.inflight == 0

            await wait_until(result_handled)  # the noop saw the cancel and its result came back
        final = await snapshot(ctx, run_id)
        chain = await chain_of(ctx, run_id)

    # The hot path tried to record from the state before the cancel, and the guard refused it.
    attempts = [(c.run_id, c.expected_seq, ok) for c, ok in known.applied]
    assert attempts == [(run_id, seq_running, False)]
    assert worker.known_runs.hits == 0 and worker.known_runs.get(run_id) is None
    assert final["run"]["status"] == "cancelled"
    assert [s["status"] for s in final["steps"]] == ["cancelled", "cancelled"]
    never = final["steps"][1]
    assert (never["attempt"], never["fence"], never["started_at"]) == (0, 0, None)
    assert final["steps"][0]["output_data"] is None  # the late result did not land
    # Nothing was written after the cancel: its events are the last of the chain.
    assert final["run"]["audit_seq"] == seq_cancelled
    assert [e["type"] for e in final["events"]][seq_running:] == [
        "run.cancelled",
        "step.cancelled",
        "step.cancelled",
    ]
    assert not any(
        e["type"] == "step.running" and e["step_id"] == never["id"] for e in final["events"]
    )
    assert verify_chain(chain) == (True, None)


# --- 7. a retry the worker scheduled itself -------------------------------------------------------


async def test_a_retry_scheduled_by_the_hot_path_wakes_its_own_worker(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's own write is no news, except that it may have scheduled a retry for later:
    that must still wake it when the backoff ends. Its poll interval and leases are an hour
    here, so nothing else can wake it before the test's guard against hanging gives up."""
    monkeypatch.setattr(RetryPolicy, "delay_s", lambda self, failed_attempt, rng=None: 0.2)
    retry = RetryPolicy(max_attempts=2, initial_backoff_s=0.2, max_backoff_s=0.2)
    known = RecordingRuns()
    async with engine_context(settings) as ctx:
        plan = [noop("flaky", fail_attempts=1, retry_policy=retry), noop("after")]
        run_id = await new_run(ctx, plan, auto_start=True)
        async with running_worker(ctx, "w", concurrency=1, known=known, poll_s=3600, lease_s=3600):
            await wait_finished(ctx, run_id)
        final = await snapshot(ctx, run_id)

    assert final["run"]["status"] == "completed"
    assert [(s["status"], s["attempt"]) for s in final["steps"]] == [
        ("completed", 2),
        ("completed", 1),
    ]
    retried = [e for e in final["events"] if e["type"] == "step.pending"]
    assert [e["payload"]["retry_in_s"] for e in retried] == [0.2]
    # The failure and the retry's schedule went through the hot path.
    scheduled = [
        ok
        for changes, ok in known.applied
        if any(row["type"] == "step.pending" for row in changes.events)
    ]
    assert scheduled == [True]
