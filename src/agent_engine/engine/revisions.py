"""Adaptive planning's revision: a run waiting in PLANNING after an observing step asks the
planner whether the rest of its plan stands, and records the answer in one guarded write.

Like planning, the model call happens between two short transactions. The first reads the
run; the second writes the answer only if the run still waits for this very revision (same
step, same plan version): a worker that died mid-revision leaves the run claimable again when its
planner lease (``claimable_at``) lapses, and the revision is simply asked again.

What each answer does (docs/adaptive-planning.md):
- ``continue``: ``plan.kept`` is recorded with the rationale; the plan runs on.
- ``revise``: a new plan version (``plan.revised``); the steps not started are CANCELLED as
  superseded; new steps are appended. With ``plan_approval`` the run waits for it.
  The revision that reaches ``max_replans`` also records ``plan.revisions_exhausted``.
- ``done``: ``plan.goal_met``; the steps not started are SKIPPED (CANCELLED if waiting for
  approval), except summaries that need none of them; the run completes when the rest finish.
- Over ``max_steps`` after every attempt: the run FAILS with code ``max_steps``; any other
  unusable answer: FAILS with ``revision_failed``. A budget too small for the planner's call
  closes the loop (``plan.revisions_stopped``, reason ``budget``): the plan runs on as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from agent_engine.access_errors import LimitExceededError, MaxStepsExceededError
from agent_engine.domain.adaptive import (
    AdaptiveBounds,
    bounds_of,
    loop_state,
    revision_due,
    update_loop,
)
from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.refs import StepReferenceError, iter_references, parse_reference
from agent_engine.domain.states import RunStatus, StepStatus
from agent_engine.domain.transitions import append_event, move_run, move_step
from agent_engine.engine.budget_gate import budgeted
from agent_engine.engine.context import EngineContext
from agent_engine.engine.ledger import record_calls
from agent_engine.engine.locking import change_run
from agent_engine.engine.plan_estimates import estimate_steps
from agent_engine.engine.planner import step_catalog
from agent_engine.engine.policies import PlanApprovals, inputs_of_run, plan_approvals
from agent_engine.engine.replay_approvals import apply_recorded_plan_decision
from agent_engine.engine.replay_calls import client_for
from agent_engine.engine.revision_plans import (
    Revision,
    answer_errors,
    build_revision,
    insert_revision,
    replaceable,
)
from agent_engine.engine.settle import settle_run
from agent_engine.errors import (
    BudgetExceededError,
    EngineError,
    PlanValidationError,
    ProviderError,
    ReplayMissError,
)
from agent_engine.llm.base import CallContext, LLMClient
from agent_engine.llm.planning import request_revision
from agent_engine.llm.revision_prompts import bounded_steps
from agent_engine.storage.blobs import expand_documents_txn
from agent_engine.storage.tables import PlanVersion

logger = logging.getLogger(__name__)
MAX_REVISION_ATTEMPTS = 3


@dataclass
class _Outcome:
    decision: str  # continue | revise | done | budget | failed
    rationale: str | None = None
    revision: Revision | None = None
    estimates: list[Decimal | None] = field(default_factory=list)
    failure: dict[str, Any] | None = None


def _step_view(step: StepRecord, outputs: dict[int, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "step_number": step.step_number,
        "step_type": step.step_type,
        "status": step.status,
        "input_data": step.input_data,
        "depends_on": step.depends_on,
    }
    if replaceable(step):
        view["replaceable"] = True
    if step.step_number in outputs and outputs[step.step_number] is not None:
        view["output"] = outputs[step.step_number]
    if step.error:
        view["error"] = step.error
    return view


async def _ask(
    ctx: EngineContext,
    run: RunRecord,
    steps: list[StepRecord],
    outputs: dict[int, Any],
    after: int,
    bounds: AdaptiveBounds,
    llm: LLMClient,
) -> _Outcome:
    """Ask for a decision, feeding refusals back, at most ``MAX_REVISION_ATTEMPTS`` times."""
    settings = ctx.settings
    shown = bounded_steps(
        [_step_view(s, outputs) for s in steps],
        settings.adaptive_output_chars,
        settings.adaptive_outputs_chars,
    )
    state = loop_state(run)
    info = {
        "after_step": after,
        "next_step_number": len(steps) + 1,
        "new_steps_allowed": max(bounds.max_steps - len(steps), 0),
        "max_steps": bounds.max_steps,
        "revisions_made": state["revisions"],
        "revisions_left": bounds.max_replans - state["revisions"],
    }
    catalog = step_catalog(ctx)
    errors: list[str] = []
    code = "revision_failed"
    for _ in range(MAX_REVISION_ATTEMPTS):
        try:
            answer = await request_revision(
                llm, run.goal, shown, info, catalog, previous_errors=errors or None
            )
            rationale = answer.get("rationale") or None
            if answer["decision"] != "revise":
                return _Outcome(answer["decision"], rationale)
            revision = build_revision(
                ctx, run, steps, answer["steps"], after_step=after, bounds=bounds
            )
            new_steps = revision.plan.model_copy(
                update={"steps": revision.plan.steps[len(steps) :]}
            )
            return _Outcome("revise", rationale, revision, await estimate_steps(llm, new_steps))
        except BudgetExceededError as exc:
            return _Outcome("budget", exc.detail)
        except MaxStepsExceededError as exc:
            errors, code = [exc.detail], "max_steps"
        except ValidationError as exc:
            errors, code = answer_errors(exc), "revision_failed"
        except (PlanValidationError, LimitExceededError) as exc:
            errors, code = [exc.detail], "revision_failed"
        except ProviderError as exc:
            errors, code = [exc.detail], "revision_failed"
            if exc.is_retryable:
                break
    return _Outcome("failed", failure={"code": code, "message": "; ".join(errors)})


async def revise_run(ctx: EngineContext, run_id: str, *, actor: str) -> None:
    """Ask for and record the revision the run waits for (nothing when none is due)."""
    async with change_run(ctx, run_id) as locked:
        run = locked.changes.run
        after = revision_due(run)
        bounds = bounds_of(run)
        if RunStatus(run.status) is not RunStatus.PLANNING or after is None or bounds is None:
            return
        steps = sorted(locked.changes.steps, key=lambda s: s.step_number)
        outputs = await locked.read(None)
        version = run.plan_version
    remaining = run.budget_usd - run.total_cost_usd if run.budget_usd is not None else None
    call = CallContext(str(run.id), None, 1, "revision")
    llm = await client_for(ctx, run, call, budgeted(ctx, run, ctx.llm_factory(None), "revision"))
    if remaining is not None and remaining <= 0:
        outcome = _Outcome("budget", "the run's budget is spent")
    else:
        try:
            outcome = await _ask(ctx, run, steps, outputs, after, bounds, llm)
        except ReplayMissError as exc:  # a replay asked what its original never did: say so
            outcome = _Outcome(
                "failed", failure={**exc.data, "code": exc.code, "message": exc.detail}
            )
        except EngineError as exc:
            outcome = _Outcome("failed", failure={"code": "revision_failed", "message": exc.detail})
    approvals = PlanApprovals(inputs_of_run(run.options))
    if outcome.revision is not None:
        approvals = await plan_approvals(
            approvals.inputs, outcome.revision.plan, ctx.limits, run.workspace
        )
    async with change_run(ctx, run_id) as locked:
        changes = locked.changes
        run = changes.run
        rows = record_calls(changes, run, None, llm.calls, purpose="revision")
        if (
            RunStatus(run.status) is not RunStatus.PLANNING
            or revision_due(run) != after
            or run.plan_version != version
        ):
            return  # cancelled meanwhile, or revised by another worker: keep the ledger only
        if outcome.revision is not None and _changed_meanwhile(changes.steps, outcome.revision):
            # A step it replaces was decided meanwhile (e.g. rejected): the revision stays due
            # and is asked again on what the run now holds (the next claim or execute).
            logger.info("revision of run %s is stale; it will be asked again", run.id)
            return
        made_by = next((row["id"] for row in reversed(rows) if row["error"] is None), None)
        stored = await locked.session.scalar(
            select(PlanVersion.document).where(
                PlanVersion.run_id == run.id, PlanVersion.version == version
            )
        )
        (previous,) = await expand_documents_txn(locked.session, [stored])
        _apply(ctx, changes, outcome, bounds, approvals, actor, made_by, previous)


def _changed_meanwhile(steps: list[StepRecord], revision: Revision) -> bool:
    by_number = {step.step_number: step for step in steps}
    replaced = {n for n, step in by_number.items() if replaceable(step)}
    return replaced != set(revision.replaced) or len(by_number) != revision.added[0] - 1


def _apply(
    ctx: EngineContext,
    changes: ChangeSet,
    outcome: _Outcome,
    bounds: AdaptiveBounds,
    approvals: PlanApprovals,
    actor: str,
    made_by: Any,
    previous: dict[str, Any] | None,
) -> None:
    run = changes.run
    after = revision_due(run)
    base: dict[str, Any] = {"after_step": after, "version": run.plan_version}
    if outcome.decision == "failed":
        failure = outcome.failure or {"code": "revision_failed", "message": ""}
        update_loop(run, due_after=None, closed=failure["code"])
        run.error = {**failure, "after_step": after}
        move_run(changes, run, RunStatus.FAILED, actor=actor, reason=failure["message"])
        return
    if outcome.decision == "revise" and outcome.revision is not None:
        insert_revision(
            changes,
            run,
            outcome.revision,
            ctx,
            approvals=approvals,
            actor=actor,
            rationale=outcome.rationale,
            llm_call_id=made_by,
            step_estimates=outcome.estimates,
            previous=previous,
        )
        revisions = loop_state(run)["revisions"] + 1
        update_loop(run, revisions=revisions, due_after=None)
        if revisions >= bounds.max_replans:
            update_loop(run, closed="max_replans")
            append_event(
                changes,
                run,
                "plan.revisions_exhausted",
                {"max_replans": bounds.max_replans, "version": run.plan_version},
                actor=actor,
            )
    elif outcome.decision == "done":
        update_loop(run, due_after=None, closed="goal_met")
        skipped = _finish_early(changes, run, actor)
        append_event(
            changes,
            run,
            "plan.goal_met",
            {**base, "rationale": outcome.rationale, "skipped": skipped},
            actor=actor,
        )
    elif outcome.decision == "budget":
        update_loop(run, due_after=None, closed="budget")
        append_event(
            changes,
            run,
            "plan.revisions_stopped",
            {**base, "reason": "budget", "detail": outcome.rationale},
            actor=actor,
        )
    else:
        update_loop(run, due_after=None)
        append_event(
            changes, run, "plan.kept", {**base, "rationale": outcome.rationale}, actor=actor
        )
    move_run(changes, run, RunStatus.RUNNING, actor=actor, decision=outcome.decision)
    if outcome.decision == "revise" and run.options.get("plan_approval"):
        move_run(changes, run, RunStatus.AWAITING_APPROVAL, actor=actor, reason="plan approval")
        apply_recorded_plan_decision(changes, run)  # a replay needs no person
    settle_run(changes, run, changes.steps, actor=actor)


def _finish_early(changes: ChangeSet, run: RunRecord, actor: str) -> list[int]:
    """The goal is met: every step not started is skipped, except summaries whose inputs name
    none of the skipped steps (a step waiting for approval is cancelled: it cannot be skipped)."""
    pending = sorted((s for s in changes.steps if replaceable(s)), key=lambda s: s.step_number)
    dropped: set[int] = set()
    for step in pending:
        if step.step_type == "summarize" and not (_referenced(step) & dropped):
            continue
        dropped.add(step.step_number)
        target = StepStatus.SKIPPED if step.status == StepStatus.PENDING else StepStatus.CANCELLED
        move_step(changes, run, step, target, actor=actor, reason="goal met")
    return sorted(dropped)


def _referenced(step: StepRecord) -> set[int]:
    numbers: set[int] = set()
    for ref in iter_references(step.input_data):
        try:
            numbers.add(parse_reference(ref)[0])
        except StepReferenceError:
            continue
    return numbers
