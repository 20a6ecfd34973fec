"""A replay decides its steps' and plans' approvals as its original's approvers did, without a
person.

The original's decisions are copied into the replay's options when it is created (step number,
attempt, decision, approver, comment, what they were shown). When a replayed step comes to wait
for approval, the decision recorded for the same step and attempt is applied at once, in the
same write, under the original approver's name, and its audit event names the approval it
replays. A decision is applied only to what its approver saw: when the replay's preview differs
from the recorded one (the workspace changed), the step keeps waiting for a person and the
audit log says why (``replay.approval_withheld``). A plan version waiting for approval gets
the decision on the same version, if its hash is the one the approver saw.
"""

from __future__ import annotations

from typing import Any

from agent_engine.domain.audit_cover import approval_receipt, resolved_input_hash
from agent_engine.domain.canonical import content_hash
from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord, approval_row
from agent_engine.domain.states import RunStatus, StepStatus
from agent_engine.domain.transitions import append_event, move_run, move_step
from agent_engine.engine.settle import plan_awaits_approval, refresh_claimable

REPLAY_ACTOR = "replay"


def _decisions(run: RunRecord, kind: str) -> list[dict[str, Any]]:
    replay = run.options.get("replay")
    if run.replay_of is None or not isinstance(replay, dict):
        return []
    found: list[dict[str, Any]] = replay.get(kind) or []
    return found


def recorded_decision(run: RunRecord, step: StepRecord) -> dict[str, Any] | None:
    """The original's decision on this step and attempt (None: none recorded, or no replay)."""
    for decision in _decisions(run, "decisions"):
        if decision["step_number"] == step.step_number and decision["attempt"] == step.attempt:
            return decision
    return None


def apply_recorded_decision(
    changes: ChangeSet, run: RunRecord, step: StepRecord, preview: dict[str, Any]
) -> bool:
    """Decide the waiting ``step`` as the original's approver did; False when there is no
    such decision or it was made on something else than ``preview`` (the step keeps waiting)."""
    decision = recorded_decision(run, step)
    if decision is None:
        return False
    if content_hash(decision["shown"]) != content_hash(preview):
        append_event(
            changes,
            run,
            "replay.approval_withheld",
            {
                "step_number": step.step_number,
                "approval_id": decision["approval_id"],
                "reason": "the step shows something else than the original's approver saw",
                "recorded_shown_hash": content_hash(decision["shown"]),
                "shown_hash": content_hash(preview),
            },
            actor=REPLAY_ACTOR,
            step_id=step.id,
        )
        return False
    approved = decision["decision"] == "approved"
    row = approval_row(
        run_id=run.id,
        step_id=step.id,
        decision=decision["decision"],
        actor=decision["actor"],
        comment=decision["comment"],
        shown=preview,
        attempt=step.attempt,
    )
    # The replayed decision is a receipt like the original's: bound to this exact input.
    row["input_hash"] = resolved_input_hash(
        step.resolved_input if step.resolved_input is not None else step.input_data
    )
    row["shown_hash"] = content_hash(preview)
    step.approved_input_hash = row["input_hash"] if approved else None
    move_step(
        changes,
        run,
        step,
        StepStatus.APPROVED if approved else StepStatus.REJECTED,
        actor=decision["actor"],
        comment=decision["comment"],
        shown=preview,
        replayed_from_approval=decision["approval_id"],
        approval=approval_receipt(row),
    )
    changes.add("approvals", row)
    return True


def apply_recorded_plan_decision(changes: ChangeSet, run: RunRecord) -> bool:
    """Decide the plan version the replay waits on as the original's approver decided the same
    version; False when there is none, or the plan is not the one they saw (it keeps waiting)."""
    if RunStatus(run.status) is not RunStatus.AWAITING_APPROVAL or not plan_awaits_approval(run):
        return False
    decision = next(
        (d for d in _decisions(run, "plan_decisions") if d["plan_version"] == run.plan_version),
        None,
    )
    if decision is None:
        return False
    if decision["shown"].get("plan_hash") != run.plan_hash:
        append_event(
            changes,
            run,
            "replay.approval_withheld",
            {
                "plan_version": run.plan_version,
                "approval_id": decision["approval_id"],
                "reason": "the plan is not the one the original's approver saw",
                "recorded_plan_hash": decision["shown"].get("plan_hash"),
                "plan_hash": run.plan_hash,
            },
            actor=REPLAY_ACTOR,
        )
        return False
    row = approval_row(
        run_id=run.id,
        step_id=None,
        decision=decision["decision"],
        actor=decision["actor"],
        comment=decision["comment"],
        shown=decision["shown"],
        attempt=run.plan_version,
    )
    row["input_hash"] = run.plan_hash  # a plan decision binds to the plan version's hash
    row["shown_hash"] = content_hash(decision["shown"])
    changes.add("approvals", row)
    details = {
        "comment": decision["comment"],
        "plan_version": run.plan_version,
        "replayed_from_approval": decision["approval_id"],
        "approval": approval_receipt(row),
    }
    if decision["decision"] == "approved":
        run.plan_approved_version = run.plan_version
        move_run(
            changes,
            run,
            RunStatus.PLANNED,
            actor=decision["actor"],
            plan_hash=run.plan_hash,
            decision="plan approved",
            **details,
        )
        refresh_claimable(run, changes.steps)
    else:
        run.error = {"code": "plan_rejected", "message": decision["comment"]}
        move_run(
            changes,
            run,
            RunStatus.FAILED,
            actor=decision["actor"],
            decision="plan rejected",
            **details,
        )
    return True
