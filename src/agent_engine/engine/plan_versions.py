"""Reading plan versions, diffing them, and the human decision on a whole plan."""

from __future__ import annotations

import difflib
import json
from typing import Any, Literal

from sqlalchemy import select

from agent_engine.domain.audit_cover import approval_receipt
from agent_engine.domain.canonical import content_hash
from agent_engine.domain.records import approval_row
from agent_engine.domain.states import RunStatus
from agent_engine.domain.transitions import move_run
from agent_engine.engine.approvals import check_four_eyes
from agent_engine.engine.context import EngineContext
from agent_engine.engine.locking import change_run
from agent_engine.engine.runs import RunView
from agent_engine.engine.settle import plan_awaits_approval, refresh_claimable
from agent_engine.errors import ConflictError, NotFoundError
from agent_engine.storage.blobs import expand_plans_txn
from agent_engine.storage.database import read_transaction
from agent_engine.storage.runs import get_run_txn
from agent_engine.storage.tables import PlanVersion


async def get_plan(ctx: EngineContext, run_id: str, version: int | None) -> PlanVersion:
    """One version of the run's plan (the latest when ``version`` is None)."""
    async with read_transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id)
        query = select(PlanVersion).where(PlanVersion.run_id == run.id)
        if version is None:
            query = query.order_by(PlanVersion.version.desc()).limit(1)
        else:
            query = query.where(PlanVersion.version == version)
        plan = (await session.scalars(query)).first()
        if plan is not None:
            (plan,) = await expand_plans_txn(session, [plan])
    if plan is None:
        which = f"version {version}" if version is not None else "a plan yet"
        raise NotFoundError(f"run {run.id} has no {which}", run_id=str(run.id))
    return plan


def _lines(document: dict[str, Any]) -> list[str]:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def _step_changes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    for number in range(1, max(len(old), len(new)) + 1):
        before = old[number - 1] if number <= len(old) else None
        after = new[number - 1] if number <= len(new) else None
        if before == after:
            continue
        if before is None or after is None:
            kind = "added" if before is None else "removed"
            changes.append({"step_number": number, "change": kind, "step": after or before})
            continue
        fields = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        changes.append(
            {
                "step_number": number,
                "change": "changed",
                "fields": {f: {"from": before.get(f), "to": after.get(f)} for f in fields},
            }
        )
    return changes


async def diff_plans(ctx: EngineContext, run_id: str, old: int, new: int) -> dict[str, Any]:
    """What changed between two plan versions: per step, and as a unified diff of the JSON."""
    before = await get_plan(ctx, run_id, old)
    after = await get_plan(ctx, run_id, new)
    unified = difflib.unified_diff(
        _lines(before.document),
        _lines(after.document),
        fromfile=f"plan v{old}",
        tofile=f"plan v{new}",
        lineterm="",
    )
    return {
        "run_id": str(before.run_id),
        "from_version": old,
        "to_version": new,
        "from_hash": before.plan_hash,
        "to_hash": after.plan_hash,
        "identical": before.plan_hash == after.plan_hash,
        "steps": _step_changes(before.document["steps"], after.document["steps"]),
        "unified_diff": "\n".join(unified),
    }


async def decide_plan(
    ctx: EngineContext,
    run_id: str,
    *,
    decision: Literal["approved", "rejected"],
    actor: str,
    comment: str | None,
) -> RunView:
    """Approve the waiting plan (the run becomes PLANNED) or reject it (the run FAILS)."""
    async with change_run(ctx, run_id) as locked:
        changes = locked.changes
        run = changes.run
        if RunStatus(run.status) is not RunStatus.AWAITING_APPROVAL or not plan_awaits_approval(
            run
        ):
            raise ConflictError(
                f"run {run.id} is '{run.status}': no plan is waiting for approval",
                run_id=str(run.id),
                current_state=run.status,
            )
        stored = (
            await locked.session.scalars(
                select(PlanVersion).where(
                    PlanVersion.run_id == run.id, PlanVersion.version == run.plan_version
                )
            )
        ).one()
        (plan,) = await expand_plans_txn(locked.session, [stored])
        if decision == "approved":
            check_four_eyes(
                ctx, run, actor, what=f"plan version {plan.version}", plan_creator=plan.created_by
            )
        shown = {"plan_version": plan.version, "plan_hash": plan.plan_hash, "plan": plan.document}
        row = approval_row(
            run_id=run.id,
            step_id=None,
            decision=decision,
            actor=actor,
            comment=comment,
            shown=shown,
            attempt=plan.version,
        )
        row["input_hash"] = plan.plan_hash  # a plan decision binds to the plan version's hash
        row["shown_hash"] = content_hash(shown)
        changes.add("approvals", row)
        if decision == "approved":
            run.plan_approved_version = plan.version
            move_run(
                changes,
                run,
                RunStatus.PLANNED,
                actor=actor,
                comment=comment,
                plan_version=plan.version,
                plan_hash=plan.plan_hash,
                decision="plan approved",
                approval=approval_receipt(row),
            )
            refresh_claimable(run, changes.steps)
        else:
            run.error = {"code": "plan_rejected", "message": comment}
            move_run(
                changes,
                run,
                RunStatus.FAILED,
                actor=actor,
                comment=comment,
                plan_version=plan.version,
                decision="plan rejected",
                approval=approval_receipt(row),
            )
    return RunView(run, changes.steps)
