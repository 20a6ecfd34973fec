"""A step's settle runs beside the write of its result: a reservation that does not fit waits
for the settles this process still has in flight, a run is written finished only once its
settles landed, and a hold whose settle was lost is settled from the ledger when released."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from agent_engine.config import Settings
from agent_engine.domain.budget_math import budget_subject
from agent_engine.domain.records import RunRecord
from agent_engine.engine.budgets import Reservation, release_lapsed, reserve, settle
from agent_engine.engine.context import EngineContext
from agent_engine.engine.runs import CreateRunRequest, create_run
from agent_engine.engine.stepping import record_result, run_claimed
from agent_engine.storage.database import read_transaction, transaction
from agent_engine.storage.runs import load_run_txn
from agent_engine.storage.tables import LLMCall
from tests.backends import one_backend
from tests.budget_flow import (
    counters,
    fire_at_once,
    metered_settings,
    parallel_analyses,
    peak_commitment,
    reservations,
    worst_case_reply,
)
from tests.engines import (
    STUCK_S,
    chain_of,
    claim_locking,
    engine_context,
    running_worker,
    wait_finished,
    wait_until,
)
from tests.fakes.llm_servers import FakeLLMServer, ReceivedRequest, Reply


def _slow_reply(received: ReceivedRequest) -> Reply:
    return dataclasses.replace(worst_case_reply(received), delay_s=0.5)


async def _hold(
    ctx: EngineContext,
    run: RunRecord,
    amount: str,
    *,
    tokens: int = 10,
    step_id: uuid.UUID | None = None,
    fence: int | None = None,
) -> Reservation:
    held = await reserve(
        ctx,
        budget_subject(run),
        amount_usd=Decimal(amount),
        amount_tokens=tokens,
        purpose="step",
        estimate={},
        step_id=step_id,
        attempt=1,
        fence=fence,
    )
    assert held is not None
    return held


def _settle_once(
    ctx: EngineContext, run_id: uuid.UUID, held: Reservation, call_returned: asyncio.Event
) -> None:
    """A settle of ``held`` in flight, as a step's is, that writes once ``call_returned`` is set."""

    async def settle_once_the_call_returned() -> None:
        await call_returned.wait()
        await settle(ctx, held, [])

    ctx.settles.track(run_id, asyncio.ensure_future(settle_once_the_call_returned()))


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(responder=worst_case_reply) as running:
        yield running


async def test_a_reservation_that_does_not_fit_waits_for_the_settles_in_flight(
    settings: Settings,
) -> None:
    async with engine_context(settings) as ctx:
        request = CreateRunRequest(goal="settles", steps=parallel_analyses(2), budget_usd="1")
        run = (await create_run(ctx, request, actor="t", idempotency_key=None)).run
        first, second = await claim_locking(ctx, run.id, limit=2)
        held = await _hold(ctx, run, "0.8", step_id=first.step_id, fence=first.fence)
        call_returned = asyncio.Event()
        _settle_once(ctx, run.id, held, call_returned)
        # 0.8 held + 0.5 does not fit 1: the reservation waits for the settle, never refuses.
        second_hold = asyncio.ensure_future(
            _hold(ctx, run, "0.5", step_id=second.step_id, fence=second.fence)
        )
        done, _ = await asyncio.wait({second_hold}, timeout=0.5)
        assert not done, "the reservation was decided before the settle in flight landed"
        call_returned.set()
        assert await second_hold is not None
        (counter,) = await counters(ctx)
        first_row, second_row = await reservations(ctx)
    assert counter.reserved_usd == Decimal("0.5") and counter.spent_usd == 0
    # The waiting hold is stamped when it took effect, after the settle it waited for: read back
    # from the reservations' own times, the two were never held together.
    assert first_row.settled_at is not None and second_row.created_at >= first_row.settled_at
    assert peak_commitment([first_row, second_row]) <= Decimal("1")


async def test_a_run_is_finished_only_once_its_settles_landed(
    settings: Settings, tmp_path: Path, server: FakeLLMServer
) -> None:
    async with engine_context(metered_settings(settings, tmp_path, server)) as ctx:
        request = CreateRunRequest(
            goal="settled", steps=parallel_analyses(3), budget_usd="1", auto_start=True
        )
        run = (await create_run(ctx, request, actor="t", idempotency_key=None)).run
        # A settle of this run still in flight (an earlier call's) holds the run's end back.
        call_returned = asyncio.Event()
        _settle_once(ctx, run.id, await _hold(ctx, run, "0.1"), call_returned)
        async with running_worker(ctx, concurrency=3):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1.0):
                    await wait_finished(ctx, run.id)
            call_returned.set()
            finished = await wait_finished(ctx, run.id)
            # Read as soon as the run reads finished, with the worker still running.
            holds = await reservations(ctx)
            (counter,) = await counters(ctx)
    assert finished["run"]["status"] == "completed"
    assert [h.status for h in holds] == ["settled"] * 4
    assert counter.reserved_usd == 0
    assert counter.spent_usd == sum((h.actual_usd or Decimal(0) for h in holds), Decimal(0)) > 0
    assert counter.spent_usd == Decimal(str(finished["run"]["total_cost_usd"]))


async def test_a_hold_whose_settle_was_lost_is_settled_from_the_ledger(
    settings: Settings,
) -> None:
    async with engine_context(settings) as ctx:
        request = CreateRunRequest(goal="lost", steps=parallel_analyses(1), budget_usd="1")
        run = (await create_run(ctx, request, actor="t", idempotency_key=None)).run
        (claim,) = await claim_locking(ctx, run.id, limit=1)
        # An attempt that has since moved on (its fence is an old one).
        held = await _hold(
            ctx, run, "0.8", tokens=5000, step_id=claim.step_id, fence=claim.fence - 1
        )
        async with transaction(ctx.sessions) as session:
            # The attempt's call, recorded with its step's result; its settle never ran.
            session.add(
                LLMCall(
                    run_id=run.id,
                    step_id=claim.step_id,
                    provider="meter",
                    model="meter-1",
                    request={},
                    request_hash="0" * 64,
                    input_tokens=300,
                    output_tokens=200,
                    cost_usd=Decimal("0.0012"),
                    reservation_id=uuid.UUID(held.id),
                )
            )
        assert await release_lapsed(ctx, run.id) == 1
        (hold,) = await reservations(ctx)
        (counter,) = await counters(ctx)
        # A settle arriving late writes nothing twice.
        await settle(ctx, held, [])
        (after,) = await counters(ctx)
    assert hold.status == "settled" and hold.actual_usd == Decimal("0.0012")
    assert hold.actual_tokens == 500
    assert counter.reserved_usd == 0 and counter.spent_usd == Decimal("0.0012")
    assert counter.spent_tokens == 500 and counter.reserved_tokens == 0
    assert (after.spent_usd, after.reserved_usd) == (counter.spent_usd, counter.reserved_usd)


@one_backend("postgres", "the test holds a budget counter's row lock to keep a settle in flight")
async def test_a_settle_that_announces_an_alert_is_never_waited_for_under_the_runs_lock(
    settings: Settings, tmp_path: Path
) -> None:
    with FakeLLMServer(responder=_slow_reply) as slow:
        metered = metered_settings(settings, tmp_path, slow)
        async with engine_context(metered) as ctx:
            probe = CreateRunRequest(goal="probe", steps=parallel_analyses(1))
            probe_run = (await create_run(ctx, probe, actor="t", idempotency_key=None)).run
            await fire_at_once(ctx, [probe_run.id], per_run=1)
            async with read_transaction(ctx.sessions) as session:
                cost = (await load_run_txn(session, probe_run.id)).total_cost_usd
            # One call spends two thirds of the budget: its settle announces the 50 % alert,
            # which is a write to the run.
            request = CreateRunRequest(
                goal="alert", steps=parallel_analyses(1), budget_usd=cost * Decimal("1.5")
            )
            run = (await create_run(ctx, request, actor="t", idempotency_key=None)).run
            (claim,) = await claim_locking(ctx, run.id, limit=1)
            executing = asyncio.ensure_future(run_claimed(ctx, claim))
            await wait_until(lambda: _answered(slow, 2))
            async with ctx.db.connect() as blocker:
                # The call is in flight: hold its counter so that its settle waits.
                await blocker.execute(text("SELECT 1 FROM budget_counters FOR UPDATE"))
                result = await executing
                assert result is not None and ctx.settles.pending(run.id) == 1
                recording = asyncio.ensure_future(record_result(ctx, claim, result, actor="w"))
                await asyncio.sleep(0.2)  # the write is waiting for the settle by now
                await blocker.commit()
            async with asyncio.timeout(STUCK_S):
                await recording
            events = await chain_of(ctx, run.id)
    assert [
        e.payload["threshold_percent"] for e in events if e.type == "budget.threshold_reached"
    ] == [50]
    assert events[-1].type in {"run.completed", "run.status_changed"} or any(
        e.type.startswith("run.") for e in events
    )


async def _answered(server: FakeLLMServer, count: int) -> bool:
    return len(server.requests) >= count
