"""Taking ready steps of a run: leases, fences, approvals and expired-lease recovery.

These are decisions on records (``domain/records.py``): they change the run and its steps and
add audit events to the caller's change set, which is written guarded by the run's version, so
claims, results, approvals and cancellation of one run never overwrite each other.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from agent_engine import metrics
from agent_engine.domain.budget_math import BudgetSubject, budget_subject
from agent_engine.domain.canonical import content_hash
from agent_engine.domain.clock import utcnow
from agent_engine.domain.fork_options import pinned_model
from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.refs import (
    StepReferenceError,
    iter_references,
    parse_reference,
    resolve_references,
)
from agent_engine.domain.states import RunStatus, StepStatus
from agent_engine.domain.transitions import move_run, move_step
from agent_engine.engine.context import EngineContext, executor_context
from agent_engine.engine.receipts import receipt_holds, void_receipt
from agent_engine.engine.replay_approvals import apply_recorded_decision, recorded_decision
from agent_engine.engine.replay_calls import ReplaySource, replay_source
from agent_engine.engine.request_limits import check_recorded_depth
from agent_engine.engine.retries import fail_step
from agent_engine.engine.secrets import held_secrets, redact_error, redact_value
from agent_engine.engine.settle import ready_steps, settle_run
from agent_engine.errors import EngineError, ExecutorError
from agent_engine.llm.base import LLMClient
from agent_engine.tracing import RunTrace, run_trace

# Stored outputs of a run's steps by number (None: all of them). Outputs of finished steps never
# change, so they may be read outside the write that uses them.
OutputReader = Callable[[set[int] | None], Awaitable[dict[int, Any]]]


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
    # The budgets its model calls count against (engine/budgets.py).
    budget: BudgetSubject
    side_effects: bool
    idempotent: bool
    # The intent of an earlier attempt whose outcome was never recorded (it crashed mid-effect).
    prior_intent: dict[str, Any] | None
    prior_outputs: dict[int, Any] = field(default_factory=dict)
    goal: str | None = None
    # A replay (or a fork from records): where its model calls, and in verify mode its side
    # effects, are served from.
    replay: ReplaySource | None = None
    # The model a fork pinned for this step (``domain/fork_options.py``); None: routed.
    model: str | None = None
    # The run's options as created (the response cache is one of them).
    options: dict[str, Any] = field(default_factory=dict)
    # The run's span, which the attempt's span hangs from (None: the run has no trace).
    trace: RunTrace | None = None


@dataclass(frozen=True)
class Parked:
    """The step did not start: it now waits for approval, or failed before it could run."""

    step_id: uuid.UUID
    status: StepStatus


Work = Claim | Parked


async def outputs_of(
    steps: Sequence[StepRecord], read: OutputReader, numbers: set[int] | None
) -> dict[int, Any]:
    """Outputs by step number: those the decision holds (a result recorded in this very change
    set among them), and the stored ones for the rest."""
    held = {
        s.step_number: s.output_data
        for s in steps
        if s.output_data is not None and (numbers is None or s.step_number in numbers)
    }
    missing = None if numbers is None else numbers - held.keys()
    stored = await read(missing) if missing is None or missing else {}
    return {**stored, **held}


async def _resolve(
    step: StepRecord,
    steps: Sequence[StepRecord],
    read: OutputReader,
    max_depth: int,
    *,
    fresh: bool = False,
) -> dict[str, Any]:
    """The step's input with references replaced by the outputs they name; refused when that
    nests deeper than ``max_depth`` (each reference adds the depth of the output it names).
    ``fresh``: resolve again from the stored outputs (checking an approval's receipt)."""
    if step.resolved_input is not None and not fresh:
        return step.resolved_input  # resolved once, recorded, never re-resolved
    try:
        wanted = {parse_reference(ref)[0] for ref in iter_references(step.input_data)}
        outputs = await outputs_of(steps, read, wanted) if wanted else {}
        resolved: dict[str, Any] = resolve_references(step.input_data, outputs)
    except StepReferenceError as exc:
        raise ExecutorError(f"step {step.step_number}: {exc}") from exc
    check_recorded_depth(step.step_number, "resolved input", resolved, max_depth)
    return resolved


def _record_resolved(step: StepRecord, resolved: dict[str, Any]) -> None:
    """Record the input the step runs with, and hash that (not the plan's unresolved input,
    whose hash the plan's own hash covers): what the step saw is what a replay compares."""
    step.resolved_input = resolved
    step.input_hash = content_hash(resolved)


def lease_until(now: datetime, lease: timedelta) -> datetime:
    """When a lease taken or extended at ``now`` ends: ``lease`` later, rounded up to a whole
    second. A run's ``claimable_at`` is its running step's lease end, so it then stays the same
    across the steps of a second, and PostgreSQL updates the run's row in place instead of
    inserting into each of its indexes (migration 0005)."""
    end = now + lease
    return end if end.microsecond == 0 else end.replace(microsecond=0) + timedelta(seconds=1)


def _release_expired(
    changes: ChangeSet, run: RunRecord, steps: list[StepRecord], actor: str, now: datetime
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
            move_step(
                changes,
                run,
                step,
                StepStatus.PENDING,
                actor=actor,
                reason="lease expired",
                previous_owner=step.lease_owner,
                fence=step.fence,
            )
            metrics.LEASE_EXPIRIES.inc()
            step.lease_owner = None
            step.lease_expires_at = None
    return running


def start_step(
    changes: ChangeSet, run: RunRecord, step: StepRecord, owner: str, lease: timedelta
) -> None:
    """PENDING/APPROVED → RUNNING as a new attempt under a new fence and lease."""
    if run.status == RunStatus.PLANNED:
        move_run(changes, run, RunStatus.RUNNING, actor=owner)
    now = utcnow()
    if run.claimable_at is not None:
        metrics.observe_queue_wait(step.step_type, (now - run.claimable_at).total_seconds())
    step.attempt += 1
    step.fence += 1
    step.lease_owner = owner
    step.lease_expires_at = lease_until(now, lease)
    step.not_before = None
    step.approved_input_hash = None  # the receipt was checked; a later attempt is decided anew
    move_step(changes, run, step, StepStatus.RUNNING, actor=owner, fence=step.fence)


async def _park_for_approval(
    ctx: EngineContext,
    changes: ChangeSet,
    run: RunRecord,
    step: StepRecord,
    resolved: dict[str, Any],
    llm: LLMClient,
    actor: str,
    lease: timedelta,
) -> StepStatus:
    """Show a person exactly what the step will do; a step whose preview already fails (its
    command is not allowed, its edit does not apply) cannot work: it fails at once instead."""
    executor = ctx.registry[step.step_type]
    context = executor_context(ctx, run.id, step.step_number, run.workspace, llm)
    secrets = held_secrets(ctx.settings.models_file)
    source = replay_source(run)
    decided = recorded_decision(run, step)
    try:
        shown = decided["shown"] if decided else step.preview
        if source is not None and source.verify and executor.side_effects and shown:
            # Verify mode touches nothing: the approver's recorded view stands for the preview,
            # also for an attempt the original never had (the replay's approved attempt was cut
            # off): it waits for a person then, never judged on a world the original changed.
            preview: dict[str, Any] = shown
        else:
            preview = redact_value(
                await executor.preview(executor.validate_input(resolved), context), secrets
            )
    except (EngineError, ValidationError) as exc:
        error = redact_error(
            exc
            if isinstance(exc, EngineError)
            else ExecutorError(f"step {step.step_number}: input is invalid: {exc}"),
            secrets,
        )
        _record_resolved(step, resolved)
        start_step(changes, run, step, actor, lease)
        fail_step(changes, run, step, error, actor=actor)
        return StepStatus(step.status)
    _record_resolved(step, resolved)
    step.preview = preview
    if run.status == RunStatus.PLANNED:
        move_run(changes, run, RunStatus.RUNNING, actor=actor)
    move_step(
        changes,
        run,
        step,
        StepStatus.AWAITING_APPROVAL,
        actor=actor,
        rule=step.approval_rule,
        shown=preview,
    )
    if decided is not None:
        apply_recorded_decision(changes, run, step, preview)  # a replay needs no person
    return StepStatus(step.status)


async def take_ready(
    ctx: EngineContext,
    changes: ChangeSet,
    read: OutputReader,
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
    run, steps = changes.run, changes.steps
    now = utcnow()
    running = _release_expired(changes, run, steps, owner, now)
    slots = min(limit, max(run.max_parallel - running, 0))
    work: list[Work] = []
    budget = budget_subject(run)
    for step in ready_steps(steps):
        if len(work) >= slots:
            break
        if step.not_before is not None and step.not_before > now:
            continue
        if step_types and step.step_type not in step_types:
            continue
        executor = ctx.registry[step.step_type]
        try:
            resolved = await _resolve(
                step,
                steps,
                read,
                ctx.request_limits.max_json_depth,
                fresh=step.approved_input_hash is not None,
            )
        except ExecutorError as exc:
            start_step(changes, run, step, owner, lease)
            fail_step(changes, run, step, exc, actor=owner)
            work.append(Parked(step.id, StepStatus(step.status)))
            continue
        if step.status == StepStatus.APPROVED and not receipt_holds(step, resolved):
            void_receipt(changes, run, step, resolved, actor=owner)
            parked = await _park_for_approval(ctx, changes, run, step, resolved, llm, owner, lease)
            work.append(Parked(step.id, parked))
            continue
        if step.status == StepStatus.PENDING and step.requires_approval:
            parked = await _park_for_approval(ctx, changes, run, step, resolved, llm, owner, lease)
            work.append(Parked(step.id, parked))
            continue
        if step.status == StepStatus.APPROVED and step.preview:
            resolved = executor.bind_preview(resolved, step.preview)
        _record_resolved(step, resolved)
        prior = step.effect_intent if step.effect_outcome is None else None
        earlier = await outputs_of(steps, read, None) if executor.needs_prior_outputs else {}
        start_step(changes, run, step, owner, lease)
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
                budget=budget,
                side_effects=executor.side_effects,
                idempotent=step.idempotent,
                prior_intent=prior,
                prior_outputs=earlier,
                goal=run.goal,
                replay=replay_source(run),
                model=pinned_model(run.options, step.step_number),
                options=run.options,
                trace=run_trace(run),
            )
        )
    return work  # the caller settles the run, which refreshes what workers may claim


async def claim_ready(
    ctx: EngineContext,
    changes: ChangeSet,
    read: OutputReader,
    *,
    owner: str,
    limit: int,
    lease: timedelta,
    llm: LLMClient,
    step_types: frozenset[str] = frozenset(),
) -> list[Claim]:
    """``take_ready`` and settle the run: what a claim round does for each run it locked (and
    a worker for a run handed to it at creation)."""
    work = await take_ready(
        ctx,
        changes,
        read,
        owner=owner,
        limit=limit,
        lease=lease,
        llm=llm,
        step_types=step_types,
    )
    settle_run(changes, changes.run, changes.steps, actor=owner)
    return [item for item in work if isinstance(item, Claim)]
