"""The worker's known-runs path (``worker/known_runs.py``) against real databases.

A worker records results and claims the next steps on the records it last wrote, in one write
guarded by the run's version. These tests hold it to its promise: the same end state and audit
log as deciding under the run's lock, no read when nothing changed, nothing written when anything
else changed the run meanwhile (an approval, a cancel, another worker, a heartbeat) and then the
result recorded under the lock with the right final state, and a write whose answer was lost
recognised as committed by its last audit event.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from agent_engine import metrics
from agent_engine.config import Settings
from agent_engine.domain.clock import utcnow
from agent_engine.domain.plan import PlanStep
from agent_engine.domain.records import ChangeSet
from agent_engine.domain.retry import RetryPolicy
from agent_engine.engine.approvals import decide_step
from agent_engine.engine.claiming import lease_until
from agent_engine.engine.context import lazy_llm
from agent_engine.engine.runs import cancel_run
from agent_engine.engine.stepping import ContinueWith, decide_result, record_result, run_claimed
from agent_engine.errors import ConflictError
from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.noop import NoopExecutor, NoopInput, NoopOutput
from agent_engine.storage.audit import verify_chain
from agent_engine.storage.changes import ChangeWriter, Write
from agent_engine.storage.claims import extend_leases_txn
from agent_engine.storage.database import read_transaction, transaction
from agent_engine.storage.notifications import RunNotice
from agent_engine.storage.runs import RUNS, load_steps_txn
from agent_engine.worker.known_runs import KnownRuns
from agent_engine.worker.worker import Worker, WorkerOptions
from tests.engines import (
    LEASE,
    STUCK_S,
    Gate,
    LockingOnlyRuns,
    WatchedRuns,
    chain_of,
    claim_locking,
    claim_next,
    engine_context,
    new_run,
    noop,
    registry_with,
    remember,
    running_worker,
    snapshot,
    statements,
    stored_outputs,
    wait_finished,
    wait_until,
)
from tests.run_comparison import (
    each_step_recorded_once,
    end_state,
    equivalence_plan,
    execute_plan,
    same_history,
)

# --- 1. equivalence with deciding under the lock --------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 4], ids=["one-slot", "parallel"])
async def test_known_runs_end_in_the_same_state_and_audit_log_as_the_locking_path(
    settings: Settings, concurrency: int
) -> None:
    known = WatchedRuns()
    async with engine_context(settings) as ctx:
        locking, locking_worker = await execute_plan(
            ctx, "locking-worker", LockingOnlyRuns(), concurrency
        )
        hot, hot_worker = await execute_plan(ctx, "hot-worker", known, concurrency)

    assert hot_worker.known_runs.hits > 0  # results really were recorded on known records
    writes = [attempt.applied for attempt in known.attempts]
    assert writes.count(True) == hot_worker.known_runs.hits
    assert locking_worker.known_runs.hits == 0
    written = [e["type"] for a in known.attempts if a.applied for e in a.events]
    assert "step.awaiting_approval" in written  # the preview was taken on known records too
    assert "step.completed" in written and "step.pending" in written  # and a retry
    if concurrency == 1:
        # With one slot nothing but the human's approval writes the run while a step runs, and
        # the claim round after it hands fresh records back: no guarded write is refused.
        assert all(writes)
    plan = equivalence_plan()
    assert len(end_state(locking)["steps"]) == len(plan)
    assert end_state(hot) == end_state(locking)
    same_history(hot, locking, concurrency)


# --- 2. nothing read, one write -------------------------------------------------------------------


async def test_a_result_on_unchanged_records_is_written_without_a_single_read(
    settings: Settings,
) -> None:
    async with engine_context(settings) as ctx:
        run_id = await new_run(ctx, [noop(1), noop(2), noop(3)], auto_start=True)
        known = KnownRuns()
        (claim,) = await claim_locking(ctx, run_id)
        await remember(ctx, known, run_id)
        result = await run_claimed(ctx, claim)
        assert result is not None
        then = ContinueWith(owner="w", limit=1, lease=LEASE, llm=lazy_llm(ctx, None))

        async def decide(changes: ChangeSet) -> Any:
            read = stored_outputs(ctx, run_id)
            return await decide_result(ctx, changes, read, claim, result, actor="w", then=then)

        with statements(ctx) as known_path:
            written, following = await known.change(ctx.changes, ctx.sessions, run_id, decide)
        assert written is True and known.hits == 1
        assert [c.step_number for c in following.claims] == [2]
        second = await run_claimed(ctx, following.claims[0])
        assert second is not None
        # The control: the same kind of result recorded under the lock reads the run first.
        with statements(ctx) as locking_path:
            await record_result(ctx, following.claims[0], second, actor="w", then=then)
        after = await snapshot(ctx, run_id)

    assert [s["status"] for s in after["steps"]] == ["completed", "completed", "running"]
    reads = [s for s in known_path if s.upper().startswith("SELECT")]
    if settings.database_url.startswith("postgresql"):
        # One statement, one implicit transaction: the write function, nothing else.
        assert len(known_path) == 1 and "agent_engine_apply_changes_v3" in known_path[0]
        assert reads == known_path
    else:
        assert known_path[0] == "BEGIN IMMEDIATE"
        assert reads == []
        assert all(s.startswith(("UPDATE", "INSERT")) for s in known_path[1:])
        assert any(s.startswith("UPDATE agent_runs") for s in known_path)
    assert any("FROM agent_runs" in s for s in locking_path)  # the listener sees reads


# --- 3. the guard ---------------------------------------------------------------------------------


def approval_plan() -> list[PlanStep]:
    """Step 1 runs, step 2 waits for a human, step 3 is ready for whoever takes it."""
    return [noop(1), noop(2, depends_on=[], requires_approval=True), noop(3, depends_on=[])]


async def change_meanwhile(ctx: Any, run_id: uuid.UUID, meanwhile: str, claim: Any) -> None:
    """What someone else does to the run after the worker last wrote it."""
    before = (await snapshot(ctx, run_id))["steps"]
    if meanwhile == "approved":
        await decide_step(
            ctx, str(run_id), str(before[1]["id"]), decision="approved", actor="human", comment=None
        )
    elif meanwhile == "cancelled":
        await cancel_run(ctx, str(run_id), actor="human", reason="changed my mind")
    elif meanwhile == "another_worker":
        (taken,) = await claim_locking(ctx, run_id, owner="other")
        assert taken.step_number == 3
    elif meanwhile == "heartbeat":
        async with transaction(ctx.sessions) as session:
            held = await extend_leases_txn(
                session, "w", {claim.step_id: claim.fence}, lease_until(utcnow(), LEASE)
            )
        assert held == {claim.step_id}


@pytest.mark.parametrize(
    "meanwhile", ["nothing", "approved", "cancelled", "another_worker", "heartbeat"]
)
async def test_known_records_are_not_written_once_the_run_moved_on(
    settings: Settings, meanwhile: str
) -> None:
    known = WatchedRuns()
    async with engine_context(settings) as ctx:
        run_id = await new_run(ctx, approval_plan(), auto_start=True)
        claims = await claim_locking(ctx, run_id, limit=2)  # step 1 runs, step 2 waits
        assert [c.step_number for c in claims] == [1]
        version_known = (await remember(ctx, known, run_id)).run.version
        await change_meanwhile(ctx, run_id, meanwhile, claims[0])
        before = await snapshot(ctx, run_id)
        written, result = await known.change(ctx.changes, ctx.sessions, run_id, claim_next(ctx))
        after = await snapshot(ctx, run_id)
        # Asking again goes straight to the lock, without even trying to write.
        again = await known.change(ctx.changes, ctx.sessions, run_id, claim_next(ctx))

    if meanwhile == "nothing":  # the control: with the run unchanged the change is written
        assert written and [c.step_number for c in result] == [3]
        assert [a.applied for a in known.attempts] == [True, True]  # and again, on its records
        assert after["run"]["version"] == before["run"]["version"] + 1
        assert after["steps"][2]["status"] == "running"
        assert known.hits == 2
        return
    assert before["run"]["version"] > version_known  # the run did move
    assert (written, result) == (False, None)
    assert [(a.expected_version, a.applied) for a in known.attempts] == [(version_known, False)]
    assert after == before  # not a column, not an event
    assert again == (False, None)
    assert known.misses == 2 and known.hits == 0


async def test_a_decision_that_fails_writes_nothing_and_forgets_the_run(
    settings: Settings,
) -> None:
    known = WatchedRuns()
    async with engine_context(settings) as ctx:
        run_id = await new_run(ctx, [noop(1), noop(2)], auto_start=True)
        await remember(ctx, known, run_id)
        before = await snapshot(ctx, run_id)

        async def decide(changes: ChangeSet) -> None:
            await claim_next(ctx)(changes)  # records changed, an event added...
            raise ConflictError("...and then the decision is refused")

        outcome = await known.change(ctx.changes, ctx.sessions, run_id, decide)
        after = await snapshot(ctx, run_id)
        retried = await known.change(ctx.changes, ctx.sessions, run_id, claim_next(ctx))

    assert outcome == (False, None) and retried == (False, None)
    assert known.attempts == []  # refused before a single round trip
    assert after == before
    assert known.misses == 2


# --- 4. a change meanwhile: the result goes under the lock ----------------------------------------


async def gated_run(ctx: Any, plan: list[PlanStep], gate: Gate) -> uuid.UUID:
    run_id = await new_run(ctx, plan, auto_start=True)
    async with asyncio.timeout(STUCK_S):
        await gate.entered.wait()
    return run_id


def refused_then_locked(known: WatchedRuns, step_number: int) -> None:
    """The result of ``step_number`` was tried on known records, refused, and never retried
    there (it was recorded under the lock)."""
    tries = [a.applied for a in known.attempts if a.recorded(step_number)]
    assert tries == [False], [(a.events, a.applied) for a in known.attempts]


async def test_an_approval_meanwhile_sends_the_result_under_the_lock_which_runs_the_approved(
    settings: Settings,
) -> None:
    gate, known = Gate(), WatchedRuns()
    plan = [noop("gated", requires_approval=True), noop("slow", depends_on=[], step_type="gate")]
    async with engine_context(settings, registry=registry_with(gate)) as ctx:
        async with running_worker(ctx, concurrency=1, known=known) as worker:
            run_id = await gated_run(ctx, plan, gate)  # step 1 parked, step 2 in the only slot
            waiting = await snapshot(ctx, run_id)
            assert [s["status"] for s in waiting["steps"]] == ["awaiting_approval", "running"]
            await decide_step(
                ctx,
                str(run_id),
                str(waiting["steps"][0]["id"]),
                decision="approved",
                actor="human",
                comment="go",
            )
            gate.opened.set()
            final = await wait_finished(ctx, run_id)
        chain = await chain_of(ctx, run_id)

    refused_then_locked(known, 2)
    assert final["run"]["status"] == "completed"
    assert [(s["status"], s["attempt"], s["fence"]) for s in final["steps"]] == [
        ("completed", 1, 1),
        ("completed", 1, 1),
    ]
    # The write under the lock recorded step 2 and claimed the approved step 1 for the slot.
    assert worker.known_runs.misses >= 1
    assert verify_chain(chain) == (True, None)


async def test_another_worker_meanwhile_keeps_its_claim_and_the_result_is_recorded(
    settings: Settings,
) -> None:
    gate, known = Gate(), WatchedRuns()
    plan = [noop("slow", step_type="gate"), noop("free", depends_on=[])]
    async with engine_context(settings, registry=registry_with(gate)) as ctx:
        async with running_worker(ctx, concurrency=1, known=known) as worker:
            run_id = await gated_run(ctx, plan, gate)
            (theirs,) = await claim_locking(ctx, run_id, owner="other")
            gate.opened.set()

            async def recorded() -> bool:
                steps = (await snapshot(ctx, run_id))["steps"]
                return steps[0]["status"] == "completed" and worker.inflight == 0

            await wait_until(recorded)
            mid = await snapshot(ctx, run_id)
            result = await run_claimed(ctx, theirs)  # the other worker finishes its step
            assert result is not None
            await record_result(ctx, theirs, result, actor="other")
        final = await snapshot(ctx, run_id)

    refused_then_locked(known, 1)
    first, second = mid["steps"]
    assert (first["status"], first["attempt"], first["fence"]) == ("completed", 1, 1)
    assert (second["status"], second["lease_owner"], second["fence"]) == ("running", "other", 1)
    assert final["run"]["status"] == "completed"
    assert [(s["attempt"], s["fence"]) for s in final["steps"]] == [(1, 1), (1, 1)]


async def test_heartbeats_meanwhile_send_the_result_under_the_lock(settings: Settings) -> None:
    """Leases of 0.9 s: the worker's heartbeat (every 0.3 s) bumps the run's version while the
    step runs, so the result's guarded write is refused, and the lock records it."""
    gate, known = Gate(), WatchedRuns()
    plan = [noop("slow", step_type="gate"), noop("after")]
    async with (
        engine_context(settings, registry=registry_with(gate)) as ctx,
        running_worker(ctx, concurrency=1, known=known, lease_s=0.9),
    ):
        run_id = await gated_run(ctx, plan, gate)
        claimed = (await snapshot(ctx, run_id))["run"]["version"]

        async def beaten() -> bool:
            return bool((await snapshot(ctx, run_id))["run"]["version"] > claimed)

        await wait_until(beaten)
        gate.opened.set()
        final = await wait_finished(ctx, run_id)

    refused_then_locked(known, 1)
    assert final["run"]["status"] == "completed"
    assert [(s["status"], s["attempt"], s["fence"]) for s in final["steps"]] == [
        ("completed", 1, 1),
        ("completed", 1, 1),
    ]
    assert not any(e["payload"].get("reason") == "lease expired" for e in final["events"])


async def test_cancel_while_a_step_runs_makes_the_known_path_fall_back(settings: Settings) -> None:
    known = WatchedRuns()
    async with engine_context(settings) as ctx:
        run_id = await new_run(ctx, [noop("slow", sleep_s=600), noop("never")], auto_start=True)
        async with running_worker(ctx, concurrency=2, known=known) as worker:

            async def first_step_running() -> bool:
                status: str = (await snapshot(ctx, run_id))["steps"][0]["status"]
                return status == "running"

            await wait_until(first_step_running)
            running = (await snapshot(ctx, run_id))["run"]
            view = await cancel_run(ctx, str(run_id), actor="human", reason="stop")
            assert view.run.status == "cancelled"

            async def result_handled() -> bool:
                return bool(known.attempts) and worker.inflight == 0

            await wait_until(result_handled)  # the noop saw the cancel and its result came back
        final = await snapshot(ctx, run_id)
        chain = await chain_of(ctx, run_id)

    # The worker tried to record on the records from before the cancel; the guard refused it.
    attempts = [(a.run_id, a.expected_version, a.applied) for a in known.attempts]
    assert attempts == [(run_id, running["version"], False)]
    assert worker.known_runs.hits == 0
    assert final["run"]["status"] == "cancelled"
    assert [s["status"] for s in final["steps"]] == ["cancelled", "cancelled"]
    never = final["steps"][1]
    assert (never["attempt"], never["fence"], never["started_at"]) == (0, 0, None)
    assert final["steps"][0]["output_data"] is None  # the late result did not land
    # Nothing was written after the cancel: its events are the last of the chain.
    assert final["run"]["audit_seq"] == view.run.audit_seq
    assert [e["type"] for e in final["events"]][running["audit_seq"] :] == [
        "run.cancelled",
        "step.cancelled",
        "step.cancelled",
    ]
    assert verify_chain(chain) == (True, None)


# --- 5. a lost answer -----------------------------------------------------------------------------


class LosesOneAnswer(ChangeWriter):
    """The real writer; the first batch recording step ``target`` fails as if the connection broke,
    after it committed (``committed``) or before it was sent."""

    target = 2
    committed = True
    lost = 0

    async def _write_batch(self, writes: list[Write]) -> list[bool]:
        records = any(
            table == "audit_events"
            and any(
                row["type"] == "step.completed" and row["payload"]["step_number"] == self.target
                for row in rows
            )
            for write in writes
            for table, rows in write.inserts
        )
        if not records or LosesOneAnswer.lost:
            return await super()._write_batch(writes)
        LosesOneAnswer.lost += 1
        if LosesOneAnswer.committed:
            await super()._write_batch(writes)
        raise OperationalError("write", None, ConnectionResetError("answer lost"))


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not-committed"])
async def test_a_write_whose_answer_was_lost_is_recognised_by_its_last_audit_event(
    settings: Settings, committed: bool
) -> None:
    """The write recording step 2 (and claiming step 3) breaks off. Committed, its last audit
    event is stored, so the claim stands and step 3 runs; not committed, the result goes under
    the lock. Leases of an hour: a claim taken for lost would hang the run (and this test)."""
    LosesOneAnswer.lost, LosesOneAnswer.committed = 0, committed
    gate = Gate()
    gate.opened.set()  # a gate that counts executions and never waits
    plan = [noop(n, step_type="gate") for n in range(1, 5)]
    async with engine_context(settings, registry=registry_with(gate), writer=LosesOneAnswer) as ctx:
        async with running_worker(ctx, concurrency=1, lease_s=3600) as worker:
            run_id = await new_run(ctx, plan, auto_start=True)
            final = await wait_finished(ctx, run_id)
        chain = await chain_of(ctx, run_id)

    assert LosesOneAnswer.lost == 1
    assert gate.starts == [(1, 1), (2, 1), (3, 1), (4, 1)]  # none ran twice
    each_step_recorded_once(final, chain)
    if committed:
        assert worker.known_runs.misses == 0  # recognised as written: no fall back
    else:
        assert worker.known_runs.misses == 1


class Witness(NoopExecutor):
    """A no-op that looks, as it starts, whether the claim it runs under is stored; unlike
    ``noop`` it does not declare itself free to start early."""

    name = "witness"
    may_start_early = False

    def __init__(self) -> None:
        self.sessions: Any = None
        self.seen: list[tuple[int, int, bool]] = []  # (step number, attempt, claim committed)

    async def execute(self, input: NoopInput, context: ExecutorContext) -> NoopOutput:
        async with read_transaction(self.sessions) as session:
            steps = await load_steps_txn(session, uuid.UUID(str(context.run_id)))
        mine = next(s for s in steps if s.step_number == context.step_number)
        committed = mine.status == "running" and mine.attempt == context.attempt
        self.seen.append((context.step_number, context.attempt, committed))
        return await super().execute(input, context)


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_no_step_starts_before_the_write_that_claimed_it_committed(
    settings: Settings, concurrency: int
) -> None:
    witness = Witness()
    plan = [
        noop(1, step_type="witness"),
        *(noop(n, step_type="witness", depends_on=[1]) for n in (2, 3, 4)),
        noop(5, step_type="witness", depends_on=[2, 3, 4]),
        noop(6, step_type="witness"),
    ]
    async with engine_context(settings, registry=registry_with(witness)) as ctx:
        witness.sessions = ctx.sessions
        async with running_worker(ctx, concurrency=concurrency) as worker:
            run_id = await new_run(ctx, plan, auto_start=True)
            final = await wait_finished(ctx, run_id)

    assert final["run"]["status"] == "completed"
    assert worker.known_runs.hits > 0
    assert sorted(witness.seen) == [(n, 1, True) for n in range(1, 7)]  # each ran once, claimed


class EarlyWitness(Witness):
    """A witness free to repeat: it may start while the write that claimed it commits."""

    name = "early_witness"
    may_start_early = True


def completed_in(write: Write) -> list[int]:
    """The step numbers whose completion ``write`` records."""
    return [
        row["payload"]["step_number"]
        for table, rows in write.inserts
        if table == "audit_events"
        for row in rows
        if row["type"] == "step.completed"
    ]


class RefusingOneClaim(KnownRuns):
    """Known runs whose write recording step ``number`` finds the run's version moved (as if
    someone changed the run meanwhile), so that write is refused."""

    def __init__(self, ctx: Any, number: int) -> None:
        super().__init__()
        self.ctx, self.number, self.refused = ctx, number, 0

    async def send(self, writer: Any, sessions: Any, run_id: uuid.UUID, decide: Any) -> Any:
        outer = self

        class Bumping:
            blob_threshold = writer.blob_threshold

            async def send(self, write: Write, notice: str) -> bool:
                completes = completed_in(write)
                if outer.number in completes and not outer.refused:
                    outer.refused += 1
                    async with outer.ctx.db.begin() as connection:
                        await connection.execute(
                            RUNS.update()
                            .where(RUNS.c.id == write.run_id)
                            .values(version=RUNS.c.version + 1)
                        )
                return bool(await writer.send(write, notice))

        return await super().send(Bumping(), sessions, run_id, decide)


def _completions(final: dict[str, Any]) -> list[int]:
    return sorted(
        e["payload"]["step_number"] for e in final["events"] if e["type"] == "step.completed"
    )


async def test_a_step_free_to_repeat_starts_before_its_claim_commits_on_postgres(
    settings: Settings,
) -> None:
    witness = EarlyWitness()
    plan = [noop(n, step_type="early_witness") for n in range(1, 7)]
    async with engine_context(settings, registry=registry_with(witness)) as ctx:
        witness.sessions = ctx.sessions
        async with running_worker(ctx) as worker:
            run_id = await new_run(ctx, plan, auto_start=True)
            final = await wait_finished(ctx, run_id)
    assert final["run"]["status"] == "completed"
    assert _completions(final) == [1, 2, 3, 4, 5, 6]  # each recorded once
    if settings.database_url.startswith("postgresql"):
        assert worker.early_starts == 5  # every step but the first, claimed at creation
    else:
        assert worker.early_starts == 0  # SQLite writes in this process: nothing overlaps


async def test_an_early_start_whose_claim_was_refused_is_forgotten_and_run_again(
    settings: Settings,
) -> None:
    witness = EarlyWitness()
    plan = [noop(n, step_type="early_witness") for n in range(1, 5)]
    async with engine_context(settings, registry=registry_with(witness)) as ctx:
        witness.sessions = ctx.sessions
        known = RefusingOneClaim(ctx, number=2)
        async with running_worker(ctx, known=known) as worker:
            run_id = await new_run(ctx, plan, auto_start=True)
            final = await wait_finished(ctx, run_id)
    assert known.refused == 1
    assert final["run"]["status"] == "completed"
    assert _completions(final) == [1, 2, 3, 4]  # step 2's result recorded once, under the lock
    steps = {s["step_number"]: s for s in final["steps"]}
    assert all(steps[n]["attempt"] == 1 for n in range(1, 5))  # no attempt was lost or doubled
    if settings.database_url.startswith("postgresql"):
        # Step 3 started on the claim that was never written, and ran again once claimed.
        assert [n for n, _attempt, _stored in witness.seen].count(3) == 2
        assert worker.early_starts >= 3
    else:
        assert sorted(n for n, _attempt, _stored in witness.seen) == [1, 2, 3, 4]


# --- 6. notifications and timers ------------------------------------------------------------------


async def notices_until(
    wakeups: asyncio.Queue[str], run_id: uuid.UUID, last: Any
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


async def test_a_write_on_known_records_is_announced_once_with_the_state_after_it(
    settings: Settings,
) -> None:
    async with engine_context(settings) as ctx:
        worker = Worker(ctx, WorkerOptions(worker_id="w", concurrency=1))
        known = worker.known_runs
        run_id = await new_run(ctx, [noop(1), noop(2), noop(3)], auto_start=True)
        async with ctx.notifier.subscribe() as wakeups:
            (claim,) = await claim_locking(ctx, run_id)
            claimed_at = (await remember(ctx, known, run_id)).run.audit_seq
            # The claim's own notification (PostgreSQL's may come late): nothing after it yet.
            await notices_until(wakeups, run_id, lambda notice: notice.seq == claimed_at)
            result = await run_claimed(ctx, claim)
            assert result is not None
            following, early = await worker._record(claim, result, None)
            if early is not None:  # step 2 may start before the write commits: let it commit
                assert await early.committed()
            assert known.hits == 1  # recorded (and step 2 claimed) on the known records
            stored = await snapshot(ctx, run_id)
            # A later commit by someone else: its notification comes after any of ours.
            await cancel_run(ctx, str(run_id), actor="someone else", reason="barrier")
            notices = await notices_until(wakeups, run_id, lambda n: n.status == "cancelled")

    written = stored["events"][claimed_at:]
    assert [c.step_number for c in following] == [2]
    assert [e["type"] for e in written] == ["step.completed", "step.running"]
    mine, cancelled = notices  # announced once, with the run's state after the write
    assert (mine.seq, mine.status) == (written[-1]["seq"], "running")
    assert stored["run"]["claimable_at"] is not None  # step 2's lease
    assert mine.claimable_at == pytest.approx(stored["run"]["claimable_at"].timestamp(), abs=1e-5)
    assert cancelled.seq > mine.seq
    # What the worker makes of such a notice, its own or not: a step claimable now is work, a
    # later moment sets a timer, nothing claimable is no work.
    now = RunNotice(run_id, mine.seq, mine.status, claimable_at=0.0)
    assert worker._on_event(now.payload()) is True
    assert worker._on_event(mine.payload()) is False  # step 2's lease ends later
    assert worker._timer is not None
    idle = RunNotice(run_id, mine.seq, "awaiting_approval", claimable_at=None)
    assert worker._on_event(idle.payload()) is False


async def test_a_retry_scheduled_on_known_records_wakes_its_own_worker(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry's schedule is written on known records; when its backoff ends it must still
    wake the worker. Its poll interval and leases are an hour here, so nothing else can wake it
    before the test's guard against hanging gives up."""
    monkeypatch.setattr(RetryPolicy, "delay_s", lambda self, failed_attempt, rng=None: 0.2)
    retry = RetryPolicy(max_attempts=2, initial_backoff_s=0.2, max_backoff_s=0.2)
    known = WatchedRuns()
    async with engine_context(settings) as ctx:
        plan = [noop("flaky", fail_attempts=1, retry_policy=retry), noop("after")]
        run_id = await new_run(ctx, plan, auto_start=True)
        async with running_worker(ctx, known=known, poll_s=3600, lease_s=3600):
            final = await wait_finished(ctx, run_id)

    assert final["run"]["status"] == "completed"
    assert [(s["status"], s["attempt"]) for s in final["steps"]] == [
        ("completed", 2),
        ("completed", 1),
    ]
    retried = [e for e in final["events"] if e["type"] == "step.pending"]
    assert [e["payload"]["retry_in_s"] for e in retried] == [0.2]
    scheduled = [
        a.applied for a in known.attempts if any(e["type"] == "step.pending" for e in a.events)
    ]
    assert scheduled == [True]


class SlowToCommit(KnownRuns):
    """Known runs whose write recording step ``number`` waits ``delay`` seconds before it is
    sent, so that other decisions on the run are made while it is in flight."""

    def __init__(self, number: int, delay: float) -> None:
        super().__init__()
        self.number, self.delay, self.delayed = number, delay, 0

    async def send(self, writer: Any, sessions: Any, run_id: uuid.UUID, decide: Any) -> Any:
        outer = self

        class Slow:
            blob_threshold = writer.blob_threshold

            async def send(self, write: Write, notice: str) -> bool:
                completes = completed_in(write)
                if outer.number in completes:
                    outer.delayed += 1
                    await asyncio.sleep(outer.delay)
                return bool(await writer.send(write, notice))

        return await super().send(Slow(), sessions, run_id, decide)


async def test_a_decision_sees_the_outputs_of_a_write_still_in_flight(settings: Settings) -> None:
    """Step 2's result claims step 3, which names step 1's output, while the write recording
    step 1 has not committed: the output comes from the worker's records, not the database."""
    plan = [
        noop("one"),
        noop("two", depends_on=[]),
        noop({"$ref": "steps.1.output.value"}, depends_on=[1, 2]),
    ]
    async with engine_context(settings) as ctx:
        known = SlowToCommit(number=1, delay=0.3)
        async with running_worker(ctx, concurrency=2, known=known):
            run_id = await new_run(ctx, plan, auto_start=True)
            final = await wait_finished(ctx, run_id)
    assert known.delayed == 1
    assert final["run"]["status"] == "completed", final["steps"]
    assert final["steps"][2]["output_data"]["value"] == "one"


class BrokenOnce(Worker):
    """A worker whose first recording hits a bug of the engine's own."""

    broke = 0

    async def _record(self, *args: Any, **kwargs: Any) -> Any:
        if not BrokenOnce.broke:
            BrokenOnce.broke += 1
            raise RuntimeError("a bug in recording")
        return await super()._record(*args, **kwargs)


async def test_a_bug_while_recording_is_logged_and_the_step_claimed_again(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    BrokenOnce.broke = 0
    expiries = metrics.REGISTRY.get_sample_value("agent_engine_lease_expiries_total") or 0
    async with engine_context(settings) as ctx:
        worker = BrokenOnce(ctx, WorkerOptions(worker_id="w", lease_s=1.0, poll_s=0.05))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            run_id = await new_run(ctx, [noop(1), noop(2)], auto_start=True)
            final = await wait_finished(ctx, run_id)
        finally:
            stop.set()
            await task
    assert BrokenOnce.broke == 1
    assert final["run"]["status"] == "completed"
    assert final["steps"][0]["attempt"] == 2  # its lease lapsed, and it ran again
    assert metrics.REGISTRY.get_sample_value("agent_engine_lease_expiries_total") == expiries + 1
    assert any("could not be recorded" in r.getMessage() for r in caplog.records)
