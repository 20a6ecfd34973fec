"""Taking ready steps of one locked run: leases, fences, approvals and expired-lease recovery.

Everything here runs inside the caller's transaction, which holds the run's row. The run row is
the one lock every writer of a run takes first, so claims, results, approvals and cancellation of
one run are serialised without step-level locks, and never deadlock on lock order.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.refs import (
    StepReferenceError,
    iter_references,
    parse_reference,
    resolve_references,
)
from agent_engine.domain.states import RunStatus, StepStatus
from agent_engine.engine.context import EngineContext, executor_context
from agent_engine.engine.hot_path import changes_made
from agent_engine.engine.retries import fail_step_txn
from agent_engine.engine.settle import ready_steps, settle_run_txn
from agent_engine.errors import EngineError, ExecutorError
from agent_engine.llm.base import LLMClient
from agent_engine.storage.collecting import CollectingSession
from agent_engine.storage.run_changes import RunChanges
from agent_engine.storage.runs import list_open_steps_of_runs_txn, outputs_of_txn
from agent_engine.storage.tables import AgentRun, AuditEvent, Step
from agent_engine.storage.transitions import move_run_txn, move_step_txn
from agent_engine.storage.types import utcnow


@dataclass(frozen=True)
class Claim:
    """A step taken for execution: the fence it was taken with guards every later write."""

    run_id: uuid.UUID
    step_id: uuid.UUID
    step_number: int
    step_type: str
    fence: int
    attempt: int
    resolved_input: dict[str, Any]
    workspace: str | None
    remaining_budget: Decimal | None
    side_effects: bool
    idempotent: bool
    # The intent of an earlier attempt whose outcome was never recorded (it crashed mid-effect).
    prior_intent: dict[str, Any] | None
    prior_outputs: dict[int, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Parked:
    """The step did not start: it now waits for approval, or failed before it could run."""

    step_id: uuid.UUID
    status: StepStatus


Work = Claim | Parked


async def _resolve(session: AsyncSession, run: AgentRun, step: Step) -> dict[str, Any]:
    """The step's input with references replaced by the outputs they name (read on demand)."""
    if step.resolved_input is not None:
        return step.resolved_input  # resolved once, recorded, never re-resolved
    try:
        wanted = {parse_reference(ref)[0] for ref in iter_references(step.input_data)}
        outputs = await outputs_of_txn(session, run.id, wanted) if wanted else {}
        resolved: dict[str, Any] = resolve_references(step.input_data, outputs)
    except StepReferenceError as exc:
        raise ExecutorError(f"step {step.step_number}: {exc}") from exc
    return resolved


def lease_until(now: datetime, lease: timedelta) -> datetime:
    """When a lease taken or extended at ``now`` ends: ``lease`` later, rounded up to a whole
    second. A run's ``claimable_at`` is its running step's lease end, so it then stays the same
    across the steps of a second, and PostgreSQL updates the run's row in place instead of
    inserting into each of its indexes (migration 0005)."""
    end = now + lease
    return end if end.microsecond == 0 else end.replace(microsecond=0) + timedelta(seconds=1)


def _release_expired(
    session: AsyncSession, run: AgentRun, steps: list[Step], actor: str, now: datetime
) -> int:
    """Steps whose worker stopped heartbeating go back to PENDING, keeping any effect intent.
    Returns how many steps are still running (the same pass)."""
    running = 0
    for step in steps:
        if step.status != StepStatus.RUNNING:
            continue
        expires = step.lease_expires_at
        if expires is None or expires >= now:
            running += 1
        else:
            move_step_txn(
                session,
                run,
                step,
                StepStatus.PENDING,
                actor=actor,
                reason="lease expired",
                previous_owner=step.lease_owner,
                fence=step.fence,
            )
            step.lease_owner = None
            step.lease_expires_at = None
    return running


def start_step_txn(
    session: AsyncSession, run: AgentRun, step: Step, owner: str, lease: timedelta
) -> None:
    """PENDING/APPROVED → RUNNING as a new attempt under a new fence and lease."""
    if run.status == RunStatus.PLANNED:
        move_run_txn(session, run, RunStatus.RUNNING, actor=owner)
    step.attempt += 1
    step.fence += 1
    step.lease_owner = owner
    step.lease_expires_at = lease_until(utcnow(), lease)
    step.not_before = None
    move_step_txn(session, run, step, StepStatus.RUNNING, actor=owner, fence=step.fence)


async def _park_for_approval(
    ctx: EngineContext,
    session: AsyncSession,
    run: AgentRun,
    step: Step,
    resolved: dict[str, Any],
    llm: LLMClient,
    actor: str,
) -> None:
    executor = ctx.registry[step.step_type]
    context = executor_context(ctx, run.id, step.step_number, run.workspace, llm)
    try:
        preview = await executor.preview(executor.validate_input(resolved), context)
    except (EngineError, ValidationError) as exc:
        preview = {"input": resolved, "preview_error": str(exc)}
    step.resolved_input = resolved
    step.preview = preview
    if run.status == RunStatus.PLANNED:
        move_run_txn(session, run, RunStatus.RUNNING, actor=actor)
    move_step_txn(
        session,
        run,
        step,
        StepStatus.AWAITING_APPROVAL,
        actor=actor,
        rule=step.approval_rule,
        shown=preview,
    )


async def take_ready_txn(
    ctx: EngineContext,
    session: AsyncSession,
    run: AgentRun,
    steps: list[Step],
    *,
    owner: str,
    limit: int,
    lease: timedelta,
    llm: LLMClient,
    step_types: frozenset[str] = frozenset(),
) -> list[Work]:
    """Claim up to ``limit`` ready steps of ``run`` (and its parallel limit), lowest number first.

    A ready step that needs approval is parked in AWAITING_APPROVAL with its preview instead; one
    whose references do not resolve fails. The caller settles the run afterwards.
    """
    now = utcnow()
    running = _release_expired(session, run, steps, owner, now)
    slots = min(limit, max(run.max_parallel - running, 0))
    work: list[Work] = []
    remaining = run.budget_usd - run.total_cost_usd if run.budget_usd is not None else None
    for step in ready_steps(steps):
        if len(work) >= slots:
            break
        if step.not_before is not None and step.not_before > now:
            continue
        if step_types and step.step_type not in step_types:
            continue
        executor = ctx.registry[step.step_type]
        try:
            resolved = await _resolve(session, run, step)
        except ExecutorError as exc:
            start_step_txn(session, run, step, owner, lease)
            fail_step_txn(session, run, step, exc, actor=owner)
            work.append(Parked(step.id, StepStatus(step.status)))
            continue
        if step.status == StepStatus.PENDING and step.requires_approval:
            await _park_for_approval(ctx, session, run, step, resolved, llm, owner)
            work.append(Parked(step.id, StepStatus.AWAITING_APPROVAL))
            continue
        if step.status == StepStatus.APPROVED and step.preview:
            resolved = executor.bind_preview(resolved, step.preview)
        step.resolved_input = resolved
        prior = step.effect_intent if step.effect_outcome is None else None
        earlier = await outputs_of_txn(session, run.id) if executor.needs_prior_outputs else {}
        start_step_txn(session, run, step, owner, lease)
        work.append(
            Claim(
                run_id=run.id,
                step_id=step.id,
                step_number=step.step_number,
                step_type=step.step_type,
                fence=step.fence,
                attempt=step.attempt,
                resolved_input=resolved,
                workspace=run.workspace,
                remaining_budget=remaining,
                side_effects=executor.side_effects,
                idempotent=step.idempotent,
                prior_intent=prior,
                prior_outputs=earlier,
            )
        )
    return work  # the caller settles the run, which refreshes what workers may claim


async def claim_ready_txn(
    ctx: EngineContext,
    session: AsyncSession,
    run: AgentRun,
    steps: list[Step],
    *,
    owner: str,
    limit: int,
    lease: timedelta,
    llm: LLMClient,
    step_types: frozenset[str] = frozenset(),
) -> list[Claim]:
    """``take_ready_txn`` and settle the run: what a claim round does for each run it locked (and
    a worker for a run handed to it at creation)."""
    work = await take_ready_txn(
        ctx,
        session,
        run,
        steps,
        owner=owner,
        limit=limit,
        lease=lease,
        llm=llm,
        step_types=step_types,
    )
    settle_run_txn(session, run, steps, actor=owner)
    return [item for item in work if isinstance(item, Claim)]


@dataclass(frozen=True)
class NewRunClaim:
    """A new run's first steps claimed before its first write, to be written with it: the run
    and steps as claimed (copies of the creator's), the claim's audit events, and the claims."""

    run: AgentRun
    steps: list[Step]
    collected: CollectingSession
    claims: list[Claim]


class ClaimConflictError(RuntimeError):
    """A run locked for a claim round changed anyway: the round is rolled back."""


@dataclass(frozen=True)
class LockedRun:
    """A run a claim round changed, as committed (once the round's transaction commits)."""

    run: AgentRun
    steps: list[Step]
    collected: CollectingSession  # what the round appended for it (its notifications)


async def claim_from_locked_runs_txn(
    ctx: EngineContext,
    session: AsyncSession,
    runs: Sequence[AgentRun],
    *,
    owner: str,
    limit: int,
    lease: timedelta,
    llm: LLMClient,
    step_types: frozenset[str] = frozenset(),
) -> tuple[list[Claim], list[LockedRun]]:
    """Claim ready steps of ``runs`` (locked by the caller's transaction), up to ``limit`` in all.

    The rows are changed by the usual state-machine code, detached from the session, and written
    with one call for all the runs instead of a flush (what a flush would write when a change
    falls outside the hot columns). The caller calls ``mark_written`` after its commit.
    """
    open_steps = await list_open_steps_of_runs_txn(session, [run.id for run in runs])
    claims: list[Claim] = []
    changed: list[LockedRun] = []
    batch: list[RunChanges] = []
    for run in runs:
        steps = open_steps[run.id]
        for instance in (run, *steps):
            session.expunge(instance)
        collected = CollectingSession(reads_from=session)
        expected_seq = run.audit_seq
        claims.extend(
            await claim_ready_txn(
                ctx,
                collected,
                run,
                steps,
                owner=owner,
                limit=limit - len(claims),
                lease=lease,
                llm=llm,
                step_types=step_types,
            )
        )
        changed.append(LockedRun(run, steps, collected))
        changes = changes_made(run, steps, expected_seq, collected.audit_rows)
        if changes is None:
            continue
        if changes.within_hot_columns():
            batch.append(changes)
        else:  # columns the one-call write does not cover: let the session flush them
            session.add_all([run, *steps])
            session.add_all([AuditEvent(**row) for row in collected.audit_rows])
    if batch and not all(await ctx.run_changes.apply_in(session, batch)):
        raise ClaimConflictError("a run locked for claiming changed meanwhile")
    return claims, changed
