"""Human decisions on steps that wait for approval."""

from __future__ import annotations

from typing import Literal

from agent_engine.access_errors import FourEyesError
from agent_engine.domain.audit_cover import approval_receipt, resolved_input_hash
from agent_engine.domain.canonical import content_hash
from agent_engine.domain.records import RunRecord, approval_row
from agent_engine.domain.states import UNDER_WAY_RUN_STATES, RunStatus, StepStatus
from agent_engine.domain.transitions import move_step
from agent_engine.engine.context import EngineContext
from agent_engine.engine.locking import change_run
from agent_engine.engine.runs import RunView
from agent_engine.engine.settle import settle_run
from agent_engine.errors import InvalidTransitionError
from agent_engine.storage.audit import waiting_since_txn
from agent_engine.tracing import emit_approval_wait, run_trace, tracing_active

Decision = Literal["approved", "rejected"]


def check_four_eyes(
    ctx: EngineContext, run: RunRecord, actor: str, *, what: str, plan_creator: str | None = None
) -> None:
    """Refuse (403 ``four_eyes``) an approval by the run's creator, or by the plan's, when the
    run asks for four eyes (its own option, or AGENT_ENGINE_FOUR_EYES for every run)."""
    if not (ctx.settings.four_eyes or run.options.get("four_eyes")):
        return
    if actor == run.created_by:
        why = f"{actor!r} created run {run.id}"
    elif plan_creator is not None and actor == plan_creator:
        why = f"{actor!r} made the plan of run {run.id}"
    else:
        return
    raise FourEyesError(
        f"four-eyes: {why} and may not approve {what}; another approver must",
        run_id=str(run.id),
        actor=actor,
    )


async def decide_step(
    ctx: EngineContext,
    run_id: str,
    step_id: str,
    *,
    decision: Decision,
    actor: str,
    comment: str | None,
) -> RunView:
    """Record ``actor``'s decision on a waiting step, with what they were shown, and settle the run.

    The run is locked for the whole decision, so of two concurrent decisions exactly one finds
    the step still waiting; the other gets 409. The approvals table's unique (step, attempt) key
    backs this up in the database itself.
    """
    async with change_run(ctx, run_id) as locked:
        changes = locked.changes
        run = changes.run
        step = locked.step(step_id)
        if RunStatus(run.status) not in UNDER_WAY_RUN_STATES:
            raise InvalidTransitionError(
                "step",
                step.status,
                decision,
                detail=f"run {run.id} is '{run.status}': its steps can no longer be {decision}",
            )
        if decision == "approved":
            check_four_eyes(ctx, run, actor, what=f"its step {step.step_number}")
        target = StepStatus.APPROVED if decision == "approved" else StepStatus.REJECTED
        shown = step.preview or {"input": step.resolved_input or step.input_data}
        row = approval_row(
            run_id=run.id,
            step_id=step.id,
            decision=decision,
            actor=actor,
            comment=comment,
            shown=shown,
            attempt=step.attempt,
        )
        # The receipt: the decision binds to this exact input; if the input the step would run
        # differs when it is claimed, the approval no longer applies (engine/receipts.py).
        row["input_hash"] = resolved_input_hash(
            step.resolved_input if step.resolved_input is not None else step.input_data
        )
        row["shown_hash"] = content_hash(shown)
        # An outcome-unknown re-run is approved on its recorded intent, not on a resolution.
        bound = decision == "approved" and not step.outcome_unknown
        step.approved_input_hash = row["input_hash"] if bound else None
        move_step(
            changes,
            run,
            step,
            target,
            actor=actor,
            comment=comment,
            shown=shown,
            approval=approval_receipt(row),
        )
        changes.add("approvals", row)
        settle_run(changes, run, changes.steps, actor=actor)
        ids = run_trace(run) if tracing_active() else None
        since = await waiting_since_txn(locked.session, run.id, step.id) if ids else None
    emit_approval_wait(  # committed: the wait is over
        ids,
        run_id=run.id,
        step_number=step.step_number,
        step_type=step.step_type,
        decision=decision,
        since=since,
        decided_at=row["decided_at"],
    )
    return RunView(run, changes.steps)
