"""Replaying a finished run: a new run linked to it (``replay_of``) that does it all again from
its records — the same goal, workspace, budget, policy and options, the same plan, the same
approval decisions — with every model call served from the original's recorded calls.

- An explicit plan is copied from the original's plan version 1; a planned run is planned again,
  and its planner call is served from the records like every later call (revisions, analyze,
  summarize, proposed edits), so the plan and its revisions are reproduced, not copied.
- ``hermetic`` (the default): side effects really happen, so the workspace should be in the
  state the original started from. ``verify``: side-effecting steps do not act; the original's
  recorded results stand in for them (``engine/replay_effects.py``).
- The replay starts at once, on the workers, like a run created with ``auto_start``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from agent_engine.domain.plan import Plan
from agent_engine.domain.records import ChangeSet, RunRecord
from agent_engine.domain.states import RunStatus
from agent_engine.domain.transitions import append_event, move_run
from agent_engine.engine.context import EngineContext
from agent_engine.engine.new_runs import insert_new_run
from agent_engine.engine.plans import insert_plan
from agent_engine.engine.policies import PlanApprovals, inputs_of_run, plan_approvals
from agent_engine.engine.replay_approvals import apply_recorded_plan_decision
from agent_engine.engine.retention import check_not_pruned
from agent_engine.engine.runs import RunView
from agent_engine.engine.settle import refresh_claimable
from agent_engine.errors import InvalidTransitionError
from agent_engine.storage.database import read_transaction
from agent_engine.storage.replay_records import (
    first_plan_txn,
    plan_decisions_txn,
    step_decisions_txn,
)
from agent_engine.storage.runs import load_run_txn
from agent_engine.storage.tables import PlanVersion

ReplayMode = Literal["hermetic", "verify"]
REPLAYABLE = frozenset({RunStatus.COMPLETED, RunStatus.FAILED})


class ReplayRequest(BaseModel):
    """The body of ``POST /v1/agent-runs/{id}/replay``."""

    model_config = ConfigDict(extra="forbid")

    mode: ReplayMode = "hermetic"


@dataclass(frozen=True)
class Original:
    """The run to replay, as its records hold it."""

    run: RunRecord
    first_plan: PlanVersion | None
    decisions: list[dict[str, Any]]  # on steps
    plan_decisions: list[dict[str, Any]]


async def _original(ctx: EngineContext, run_id: str) -> Original:
    async with read_transaction(ctx.sessions) as session:
        run = await load_run_txn(session, run_id)
        return Original(
            run,
            await first_plan_txn(session, run.id),
            await step_decisions_txn(session, run.id),
            await plan_decisions_txn(session, run.id),
        )


def _check_replayable(run: RunRecord) -> None:
    check_not_pruned(run, "replayed")
    if RunStatus(run.status) not in REPLAYABLE:
        raise InvalidTransitionError(
            "run",
            run.status,
            "replayed",
            detail=f"run {run.id} is '{run.status}': only a completed or failed run can be "
            "replayed (its records are final only then)",
        )


def _replay_record(source: Original, mode: ReplayMode, actor: str) -> RunRecord:
    original = source.run
    options = {
        **original.options,
        "auto_start": True,
        "replay": {
            "of": str(original.id),
            "mode": mode,
            "decisions": source.decisions,
            "plan_decisions": source.plan_decisions,
        },
    }
    return RunRecord(
        id=uuid.uuid4(),
        goal=original.goal,
        status=RunStatus.CREATED.value,
        workspace=original.workspace,
        budget_usd=original.budget_usd,
        budget_tokens=original.budget_tokens,
        created_by=actor,
        metadata=original.metadata,
        options=options,
        started=True,
        max_parallel=original.max_parallel,
        replay_of=original.id,
        replay_mode=mode,
    )


async def replay_run(ctx: EngineContext, run_id: str, mode: ReplayMode, *, actor: str) -> RunView:
    """Create and start the replay of the finished run ``run_id``; the new run.

    404 for an unknown run, 409 ``invalid_transition`` for one not completed or failed.
    """
    source = await _original(ctx, run_id)
    original, first_plan = source.run, source.first_plan
    _check_replayable(original)
    run = _replay_record(source, mode, actor)
    changes = ChangeSet(run, [], new_run=True)
    append_event(
        changes,
        run,
        "run.created",
        {"goal": run.goal, "workspace": run.workspace, "replay_of": str(original.id)},
        actor=actor,
    )
    append_event(
        changes,
        run,
        "run.replay_created",
        {
            "replay_of": str(original.id),
            "mode": mode,
            "plan": "copied" if first_plan and first_plan.source != "planner" else "replanned",
            "decisions": [d["approval_id"] for d in source.decisions + source.plan_decisions],
        },
        actor=actor,
    )
    if first_plan is not None and first_plan.source != "planner":
        plan = Plan.model_validate(first_plan.document)
        inputs = inputs_of_run(run.options)
        approvals: PlanApprovals = await plan_approvals(inputs, plan, ctx.limits, run.workspace)
        move_run(changes, run, RunStatus.PLANNING, actor=actor, reason="replayed plan")
        insert_plan(
            changes,
            run,
            plan,
            ctx.registry,
            approvals=approvals,
            actor=actor,
            source="replay",
            rationale=f"plan version 1 of run {original.id}",
        )
        move_run(changes, run, RunStatus.PLANNED, actor=actor)
        if run.options.get("plan_approval"):
            move_run(changes, run, RunStatus.AWAITING_APPROVAL, actor=actor, reason="plan approval")
            apply_recorded_plan_decision(changes, run)
    refresh_claimable(run, changes.steps)
    return await insert_new_run(ctx, changes)
