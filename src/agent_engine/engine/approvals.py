"""Human decisions on steps that wait for approval."""

from __future__ import annotations

from typing import Literal

from agent_engine.domain.states import RunStatus, StepStatus
from agent_engine.engine.context import EngineContext
from agent_engine.engine.runs import RunView
from agent_engine.engine.settle import settle_run_txn
from agent_engine.errors import InvalidTransitionError
from agent_engine.storage.database import transaction
from agent_engine.storage.runs import get_run_txn, get_step_txn, list_steps_txn
from agent_engine.storage.tables import Approval
from agent_engine.storage.transitions import move_step_txn

Decision = Literal["approved", "rejected"]
_OPEN_RUN_STATES = (RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL)


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

    The run row is locked for the whole decision, so of two concurrent decisions exactly one
    finds the step still waiting; the other gets 409. The approvals table's unique
    (step, attempt) key backs this up in the database itself.
    """
    async with transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id, lock=True)
        step = await get_step_txn(session, run.id, step_id, lock=True)
        if RunStatus(run.status) not in _OPEN_RUN_STATES:
            raise InvalidTransitionError(
                "step",
                step.status,
                decision,
                detail=f"run {run.id} is '{run.status}': its steps can no longer be {decision}",
            )
        target = StepStatus.APPROVED if decision == "approved" else StepStatus.REJECTED
        shown = step.preview or {"input": step.resolved_input or step.input_data}
        move_step_txn(
            session,
            run,
            step,
            target,
            actor=actor,
            comment=comment,
            shown=shown,
        )
        session.add(
            Approval(
                run_id=run.id,
                step_id=step.id,
                decision=decision,
                actor=actor,
                comment=comment,
                shown=shown,
                attempt=step.attempt,
            )
        )
        steps = await list_steps_txn(session, run.id)
        settle_run_txn(session, run, steps, actor=actor)
        return RunView(run, steps)
