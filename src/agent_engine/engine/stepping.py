"""The step runner: claim, execute outside any transaction, record — shared by the synchronous
``execute`` endpoint and the workers.

Each phase that writes is one transaction holding the run's row, so a step change, the run status
it implies and their audit events commit together or not at all. Every write about a claimed step
carries the fence it was claimed with; a stale fence is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.canonical import content_hash
from agent_engine.domain.states import RunStatus, StepStatus
from agent_engine.domain.text import NUMBER_PROBLEM, TEXT_PROBLEM, find_unstorable
from agent_engine.engine.claiming import Claim, Parked, lease_until, take_ready_txn
from agent_engine.engine.context import EngineContext, LogCapture, executor_context, lazy_llm
from agent_engine.engine.hot_path import KnownRuns
from agent_engine.engine.retries import fail_step_txn
from agent_engine.engine.settle import (
    plan_awaits_approval,
    refresh_claimable,
    settle_run_txn,
    settle_status_txn,
)
from agent_engine.errors import (
    ConflictError,
    EngineError,
    ExecutorError,
    InvalidTransitionError,
    StaleFenceError,
)
from agent_engine.faults import crash_point
from agent_engine.llm.base import LLMCallRecord, LLMClient
from agent_engine.storage.audit import append_event_txn, has_event_txn
from agent_engine.storage.claims import extend_leases_txn
from agent_engine.storage.database import read_transaction, transaction
from agent_engine.storage.ledger import record_calls_txn
from agent_engine.storage.runs import (
    get_run_txn,
    get_step_txn,
    list_open_steps_txn,
    list_steps_txn,
)
from agent_engine.storage.tables import AgentRun, Step
from agent_engine.storage.transitions import move_step_txn
from agent_engine.storage.types import utcnow

logger = logging.getLogger(__name__)

RUNNABLE_RUN_STATES = (RunStatus.PLANNED, RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL)


class NoReadyStepError(ConflictError):
    code = "no_ready_step"
    title = "No step is ready"


def check_runnable(run: AgentRun) -> None:
    """Refuse to start steps of a run that is not running, or whose plan awaits approval."""
    status = RunStatus(run.status)
    if status not in RUNNABLE_RUN_STATES:
        raise InvalidTransitionError("run", status.value, RunStatus.RUNNING.value)
    if plan_awaits_approval(run):
        raise ConflictError(
            f"run {run.id}: plan version {run.plan_version} is waiting for approval "
            f"(POST /v1/agent-runs/{run.id}/plan/approve)",
            run_id=str(run.id),
        )


@dataclass(frozen=True)
class StepResult:
    output: dict[str, Any] | None
    error: EngineError | None
    calls: list[LLMCallRecord]
    latency_ms: float
    recovered: bool = False  # the effect was found already applied after a crash
    logs: tuple[dict[str, str], ...] = ()


async def lock_claimed_txn(session: AsyncSession, claim: Claim) -> tuple[AgentRun, Step]:
    """The run (locked) and the claimed step, or StaleFenceError if the claim is no longer ours."""
    run = await get_run_txn(session, claim.run_id, lock=True)
    step = await get_step_txn(session, run.id, claim.step_id)
    _check_fence(step, claim)
    return run, step


def _check_fence(step: Step, claim: Claim) -> None:
    """Refuse a write from an attempt that no longer owns the step (a newer fence, or gone)."""
    if step.fence != claim.fence or step.status != StepStatus.RUNNING:
        raise StaleFenceError(
            f"step {step.step_number}: attempt with fence {claim.fence} is no longer current "
            f"(fence {step.fence}, status {step.status})",
            step_id=str(step.id),
        )


async def record_intent(ctx: EngineContext, claim: Claim, intent: dict[str, Any]) -> None:
    """Commit what a side effect is about to do before doing it (the effect ledger's first half)."""
    async with transaction(ctx.sessions) as session:
        run, step = await lock_claimed_txn(session, claim)
        step.effect_intent = {"attempt": claim.attempt, "fence": claim.fence, **intent}
        step.effect_outcome = None
        append_event_txn(
            session,
            run,
            "effect.intent",
            {"step_number": step.step_number, **step.effect_intent},
            actor=step.lease_owner or "worker",
            step_id=step.id,
        )


async def park_outcome_unknown(ctx: EngineContext, claim: Claim, *, actor: str) -> None:
    """A crashed side effect whose outcome cannot be known waits for a human to decide."""
    async with transaction(ctx.sessions) as session:
        run, step = await lock_claimed_txn(session, claim)
        step.outcome_unknown = True
        step.preview = {
            "outcome_unknown": True,
            "message": "a previous attempt started this effect and its outcome is unknown; "
            "approve to run it again, reject to stop",
            "intent": claim.prior_intent,
        }
        step.effect_intent = None
        step.lease_owner = None
        step.lease_expires_at = None
        move_step_txn(
            session,
            run,
            step,
            StepStatus.AWAITING_APPROVAL,
            actor=actor,
            reason="outcome unknown",
            shown=step.preview,
        )
        settle_run_txn(session, run, await list_steps_txn(session, run.id), actor=actor)


async def run_claimed(
    ctx: EngineContext, claim: Claim, *, cancel: asyncio.Event | None = None
) -> StepResult | None:
    """Execute a claimed step (None: it was parked for a human instead). The step's own failure
    is a result, never an exception; only a lost claim (StaleFenceError) propagates."""
    executor = ctx.registry[claim.step_type]
    llm = lazy_llm(ctx, claim.remaining_budget)
    context = executor_context(ctx, claim.run_id, claim.step_number, claim.workspace, llm)
    context.prior_outputs = claim.prior_outputs
    context.attempt = claim.attempt
    capture = LogCapture()
    context.logger.addHandler(capture)
    if cancel is not None:
        context.cancel_event = cancel
    started = time.perf_counter()
    output: dict[str, Any] | None = None
    error: EngineError | None = None
    try:
        parsed = executor.validate_input(claim.resolved_input)
        if claim.prior_intent is not None:
            found = await executor.reconcile(parsed, claim.prior_intent, context)
            if found.state == "applied":
                elapsed = (time.perf_counter() - started) * 1000
                return StepResult(found.output, None, list(llm.calls), elapsed, recovered=True)
            if found.state == "unknown" and not claim.idempotent:
                await park_outcome_unknown(ctx, claim, actor=f"recovery:{claim.step_id}")
                return None
        if claim.side_effects:
            await record_intent(ctx, claim, await executor.preview(parsed, context))
            crash_point("before_effect", claim.step_type)
        output = _storable(claim, (await executor.execute(parsed, context)).model_dump(mode="json"))
        if claim.side_effects:
            crash_point("after_effect", claim.step_type)
    except StaleFenceError:
        raise
    except ValidationError as exc:
        error = ExecutorError(f"step {claim.step_number}: resolved input is invalid: {exc}")
    except EngineError as exc:
        error = exc
    except Exception as exc:  # a plugin's bug must fail its step, not the engine
        logger.exception("executor %s crashed", claim.step_type)
        error = ExecutorError(f"executor {claim.step_type} crashed: {type(exc).__name__}: {exc}")
    latency_ms = (time.perf_counter() - started) * 1000
    if capture.dropped:
        capture.lines.append({"level": "warning", "message": f"{capture.dropped} more lines"})
    return StepResult(output, error, list(llm.calls), latency_ms, logs=tuple(capture.lines))


def _storable(claim: Claim, output: dict[str, Any]) -> dict[str, Any]:
    """The output, if every database can store it (and it can be hashed); else the step fails."""
    where = find_unstorable(output)
    if where is not None:
        raise ExecutorError(
            f"step {claim.step_number}: output {where} cannot be stored: "
            f"{TEXT_PROBLEM}, and {NUMBER_PROBLEM}"
        )
    return output


@dataclass(frozen=True)
class ContinueWith:
    """Claim the run's next ready steps in the same transaction that records a result: a worker
    that finishes step N of a run usually runs step N+1, and this saves it a claim round trip.
    With ``known``, the worker's state of its runs, recording first tries the hot path."""

    owner: str
    limit: int
    lease: timedelta
    llm: LLMClient
    step_types: frozenset[str] = frozenset()
    known: KnownRuns | None = None


@dataclass
class Recording:
    """A result being recorded: ``claims`` are the run's next steps taken with it. When the hot
    path sent the write and it has not committed yet, ``confirmed`` waits for it."""

    ctx: EngineContext
    claim: Claim
    result: StepResult
    actor: str
    then: ContinueWith | None
    claims: list[Claim]
    written: asyncio.Future[bool] | None = None  # the hot path's write, while in flight
    head: tuple[int, str] | None = None  # the chain head that write leaves (``Started.head``)
    outcome: bool | None = None  # whether that write committed, once known

    @property
    def in_flight(self) -> bool:
        return self.written is not None and not self.written.done()

    async def committed(self) -> bool:
        """Whether the result and the claims are in the database: the hot path's write committed,
        or its answer was lost but its last audit event is stored. False: not written, or not
        provably (``confirmed`` then takes the locking path)."""
        if self.written is None:
            return True
        if self.outcome is None:
            try:
                self.outcome = await asyncio.shield(self.written)
            except DBAPIError as exc:
                logger.warning("hot-path write for step %s failed: %s", self.claim.step_id, exc)
                self.outcome = await self._committed_anyway()
        return self.outcome

    async def confirmed(self) -> list[Claim]:
        """The claims once the write that made them committed. If it was not written (the run
        moved on) or may not have been (its connection broke), the result goes through the
        locking path, which records it (or finds it recorded: a stale fence), and its claims are
        returned instead."""
        if await self.committed():
            return self.claims
        self.written = None  # recorded under the lock below: committed from then on
        self.claims = await _record_locking(
            self.ctx, self.claim, self.result, actor=self.actor, then=self.then
        )
        return self.claims

    async def _committed_anyway(self) -> bool:
        """Whether a write whose outcome is unknown committed: its last audit event is stored."""
        if self.head is None:
            return False
        seq, digest = self.head
        async with read_transaction(self.ctx.sessions) as session:
            return await has_event_txn(session, self.claim.run_id, seq, digest)


async def record_result(
    ctx: EngineContext,
    claim: Claim,
    result: StepResult,
    *,
    actor: str,
    then: ContinueWith | None = None,
) -> list[Claim]:
    """Write the step's result if the claim's fence is still current (the ledger in any case),
    settle the run, and with ``then`` claim its next ready steps; returns those claims."""
    recording = await start_recording(ctx, claim, result, actor=actor, then=then)
    assert recording is not None  # (None only for a step that started early)
    return await recording.confirmed()


async def start_recording(
    ctx: EngineContext,
    claim: Claim,
    result: StepResult,
    *,
    actor: str,
    then: ContinueWith | None = None,
    claimed_by: Recording | None = None,
) -> Recording | None:
    """``record_result``, returning as soon as the hot path sent its write: the caller may
    start a claimed step that is free to repeat while the write commits (``Recording``).

    ``claimed_by``: the recording whose write claimed this step, when the step started before
    that write committed. This result is computed on top of it and sent once it committed; None
    when it did not (the claim never existed: this result is not to be recorded).
    """
    known = then.known if then is not None else None
    if known is not None:

        async def record(session: AsyncSession, run: AgentRun, steps: list[Step]) -> list[Claim]:
            return await _record_txn(
                ctx, session, run, steps, claim, result, actor=actor, then=then
            )

        started = await known.start_change(
            ctx.run_changes, claim.run_id, record, on_committed=ctx.publish_locally
        )
        if started is not None:
            return Recording(
                ctx, claim, result, actor, then, started.result, started.written, started.head
            )
    if claimed_by is not None and not await claimed_by.committed():
        return None
    claims = await _record_locking(ctx, claim, result, actor=actor, then=then)
    return Recording(ctx, claim, result, actor, then, claims)


async def _record_locking(
    ctx: EngineContext,
    claim: Claim,
    result: StepResult,
    *,
    actor: str,
    then: ContinueWith | None,
) -> list[Claim]:
    """Record under the run's row lock, from what the database holds."""
    async with transaction(ctx.sessions) as session:
        run = await get_run_txn(session, claim.run_id, lock=True)
        steps = await list_open_steps_txn(session, run.id, also=claim.step_id)
        claims = await _record_txn(ctx, session, run, steps, claim, result, actor=actor, then=then)
    known = then.known if then is not None else None
    if known is not None:
        known.remember(run, steps)
    return claims


async def _record_txn(
    ctx: EngineContext,
    session: AsyncSession,
    run: AgentRun,
    steps: list[Step],
    claim: Claim,
    result: StepResult,
    *,
    actor: str,
    then: ContinueWith | None,
) -> list[Claim]:
    """``record_result`` inside a transaction holding the run (or against its known state)."""
    step = next((s for s in steps if s.id == claim.step_id), None)
    if step is None:
        raise StaleFenceError(f"step {claim.step_id} no longer exists")
    # Calls that happened cost money whether or not this attempt may still write its result.
    record_calls_txn(session, run, step, result.calls)
    if step.fence != claim.fence or step.status != StepStatus.RUNNING:
        if step.status == StepStatus.CANCELLED:
            return []  # cancelled meanwhile: the ledger is kept, the result is moot
        _check_fence(step, claim)
    for line in result.logs:
        append_event_txn(
            session,
            run,
            "step.log",
            {"step_number": step.step_number, **line},
            actor=actor,
            step_id=step.id,
        )
    _write_result_txn(session, run, step, claim, result, actor=actor)
    settle_status_txn(session, run, steps, actor=actor)
    claims: list[Claim] = []
    if then is not None and then.limit > 0 and run.status in RUNNABLE_RUN_STATES and run.started:
        work = await take_ready_txn(
            ctx,
            session,
            run,
            steps,
            owner=then.owner,
            limit=then.limit,
            lease=then.lease,
            llm=then.llm,
            step_types=then.step_types,
        )
        settle_status_txn(session, run, steps, actor=then.owner)
        claims = [item for item in work if isinstance(item, Claim)]
    refresh_claimable(run, steps)
    return claims


def _write_result_txn(
    session: AsyncSession,
    run: AgentRun,
    step: Step,
    claim: Claim,
    result: StepResult,
    *,
    actor: str,
) -> None:
    step.latency_ms = result.latency_ms
    if claim.side_effects and step.effect_intent is not None:
        step.effect_outcome = {
            "attempt": claim.attempt,
            "ok": result.error is None,
            "recovered": result.recovered or None,
        }
    if result.error is None:
        step.lease_owner = None
        step.lease_expires_at = None
        step.output_data = result.output
        step.output_hash = content_hash(result.output)
        move_step_txn(
            session,
            run,
            step,
            StepStatus.COMPLETED,
            actor=actor,
            output_hash=step.output_hash,
            cost_usd=format(step.cost_usd, "f"),
            recovered=result.recovered or None,
        )
        return
    fail_step_txn(session, run, step, result.error, actor=actor)
    if result.error.code == "workspace_violation":
        append_event_txn(
            session,
            run,
            "security.workspace_violation",
            {"step_number": step.step_number, **step.error} if step.error else {},
            actor=actor,
            step_id=step.id,
        )


def _why_nothing_ready(run: AgentRun, steps: list[Step]) -> str:
    busy = [
        f"step {s.step_number} is {s.status}"
        for s in steps
        if s.status in (StepStatus.RUNNING, StepStatus.AWAITING_APPROVAL)
    ]
    waiting = [
        f"step {s.step_number} retries at {s.not_before.isoformat()}"
        for s in steps
        if s.not_before is not None and s.status == StepStatus.PENDING
    ]
    detail = "; ".join(busy + waiting) or "no step has all its dependencies completed"
    return f"run {run.id} has no step ready to execute: {detail}"


async def execute_one(ctx: EngineContext, run_id: str, *, actor: str) -> uuid.UUID:
    """Execute the run's next ready step synchronously (or park it for approval); its id."""
    llm = lazy_llm(ctx, None)
    lease = timedelta(seconds=ctx.settings.worker_lease_s)
    async with transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id, lock=True)
        check_runnable(run)
        steps = await list_steps_txn(session, run.id)
        work = await take_ready_txn(
            ctx, session, run, steps, owner=actor, limit=1, lease=lease, llm=llm
        )
        if not work:
            raise NoReadyStepError(_why_nothing_ready(run, steps), run_id=str(run.id))
        settle_run_txn(session, run, steps, actor=actor)
    item = work[0]
    if isinstance(item, Parked):
        return item.step_id
    # The synchronous path heartbeats too, so a long command is never taken for abandoned.
    heartbeat = asyncio.create_task(_keep_lease(ctx, item, actor, lease))
    try:
        result = await run_claimed(ctx, item)
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
    if result is not None:
        await record_result(ctx, item, result, actor=actor)
    return item.step_id


async def _keep_lease(ctx: EngineContext, claim: Claim, owner: str, lease: timedelta) -> None:
    while True:
        await asyncio.sleep(lease.total_seconds() / 3)
        async with transaction(ctx.sessions) as session:
            await extend_leases_txn(
                session, owner, {claim.step_id: claim.fence}, lease_until(utcnow(), lease)
            )
