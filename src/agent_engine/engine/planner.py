"""The planning service: CREATED → PLANNING → PLANNED (or FAILED) through the LLM router.

The planner asks for JSON matching the plan schema (step types and input schemas from the
registry), validates it, and feeds validation errors back for a bounded number of retries. The LLM
call happens between two short transactions, never inside one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import structlog
from pydantic import ValidationError

from agent_engine.access_errors import LimitExceededError, MaxStepsExceededError
from agent_engine.domain.adaptive import bounds_of
from agent_engine.domain.plan import Plan
from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.states import RunStatus, StepStatus
from agent_engine.domain.transitions import append_event, move_run, move_step
from agent_engine.engine.budget_gate import budgeted
from agent_engine.engine.budget_pauses import pause_run_for_budget
from agent_engine.engine.context import EngineContext, executor_context
from agent_engine.engine.ledger import record_calls
from agent_engine.engine.locking import change_run
from agent_engine.engine.plan_estimates import (
    check_estimate,
    estimate_steps,
    warn_over_budget,
)
from agent_engine.engine.plans import insert_plan, validate_plan
from agent_engine.engine.policies import PlanApprovals, inputs_of_run, plan_approvals
from agent_engine.engine.replay_approvals import apply_recorded_plan_decision
from agent_engine.engine.replay_calls import client_for
from agent_engine.engine.request_limits import check_plan
from agent_engine.engine.settle import refresh_claimable
from agent_engine.errors import (
    BudgetExceededError,
    ConflictError,
    EngineError,
    PlanValidationError,
    ProviderError,
    ReplayMissError,
)
from agent_engine.executors.mcp_tool import catalog_entries as mcp_catalog_entries
from agent_engine.llm.base import CallContext, LLMClient
from agent_engine.llm.planning import request_plan
from agent_engine.storage.runs import delete_steps_txn
from agent_engine.tracing import within_run

logger = logging.getLogger(__name__)
MAX_PLAN_ATTEMPTS = 3
REPLANNABLE = (RunStatus.PLANNED, RunStatus.AWAITING_APPROVAL)


@dataclass
class PlanOutcome:
    plan: Plan | None
    rationale: str | None
    failure: str
    estimates: list[Decimal | None]
    code: str = "planning_failed"
    details: dict[str, Any] = field(default_factory=dict)


def step_catalog(ctx: EngineContext) -> list[dict[str, Any]]:
    """What the planner may use: every registered step type with its input schema, and each
    listed MCP tool as an ``mcp_tool`` entry of its own."""
    return [
        {
            "step_type": name,
            "description": (type(executor).__doc__ or "").strip().split("\n")[0],
            "requires_approval": executor.requires_approval,
            "input_schema": executor.input_model.model_json_schema(),
        }
        for name, executor in sorted(ctx.registry.items())
        if name not in ("noop", "mcp_tool")
    ] + (mcp_catalog_entries(ctx.limits.mcp_servers) if "mcp_tool" in ctx.registry else [])


async def _workspace_files(
    ctx: EngineContext, run: RunRecord, llm: LLMClient
) -> list[dict[str, Any]] | None:
    if run.workspace is None or "list_files" not in ctx.registry:
        return None
    executor = ctx.registry["list_files"]
    context = executor_context(ctx, run.id, 0, run.workspace, llm)
    output = await executor.execute(executor.validate_input({}), context)
    files: list[dict[str, Any]] = output.model_dump(mode="json").get("files", [])
    return files


async def _make_plan(ctx: EngineContext, run: RunRecord, llm: LLMClient) -> PlanOutcome:
    """Ask for a plan, feeding validation errors back, at most ``MAX_PLAN_ATTEMPTS`` times."""
    files = await _workspace_files(ctx, run, llm)
    catalog = step_catalog(ctx)
    errors: list[str] = []
    for _ in range(MAX_PLAN_ATTEMPTS):
        try:
            answer = await request_plan(
                llm,
                run.goal,
                files,
                catalog,
                previous_errors=errors or None,
                adaptive=run.options.get("planning") == "adaptive",
            )
            plan = Plan.model_validate({"steps": answer.get("steps", [])})
            # The same limits as an explicit plan's (steps, input size and depth).
            check_plan(plan, ctx.request_limits)
            check_max_steps(run, plan)
            validate_plan(
                plan, ctx.registry, has_workspace=run.workspace is not None, limits=ctx.limits
            )
            rationale = answer.get("rationale")
            return PlanOutcome(
                plan, str(rationale) if rationale else None, "", await estimate_steps(llm, plan)
            )
        except ValidationError as exc:
            errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        except (PlanValidationError, LimitExceededError) as exc:
            errors = [exc.detail]
        except ProviderError as exc:
            if exc.is_retryable:
                return PlanOutcome(None, None, exc.detail, [])
            errors = [exc.detail]
    return PlanOutcome(None, None, "; ".join(errors), [])


def check_max_steps(run: RunRecord, plan: Plan) -> None:
    """Refuse a first plan with more steps than an adaptive run's ``max_steps``."""
    bounds = bounds_of(run)
    if bounds is not None and len(plan.steps) > bounds.max_steps:
        raise MaxStepsExceededError(
            f"the plan has {len(plan.steps)} steps; the run's max_steps is {bounds.max_steps}",
            limit="max_steps",
            maximum=bounds.max_steps,
        )


def _check_replannable(run: RunRecord, steps: list[StepRecord]) -> None:
    if RunStatus(run.status) not in REPLANNABLE or any(
        StepStatus(s.status) is not StepStatus.PENDING or s.attempt for s in steps
    ):
        raise ConflictError(
            f"run {run.id} is '{run.status}' with steps already started: only a run whose "
            "steps have not started can be re-planned",
            run_id=str(run.id),
        )


def _close_without_plan(
    changes: ChangeSet, run: RunRecord, outcome: PlanOutcome, *, actor: str
) -> None:
    """No plan: the run waits for budget if that is what stopped its planner, else fails."""
    if outcome.code == BudgetExceededError.code:
        pause_run_for_budget(changes, run, outcome.failure, outcome.details, actor=actor)
        return
    run.error = {**outcome.details, "code": outcome.code, "message": outcome.failure}
    move_run(changes, run, RunStatus.FAILED, actor=actor, reason=outcome.failure)


async def plan_run(
    ctx: EngineContext, run_id: str, *, actor: str, replan: bool = False, resume: bool = False
) -> None:
    """Plan a CREATED run, or re-plan one whose steps have not started (a new plan version).

    ``resume`` takes over a run left in PLANNING by a worker that died while planning it.
    Every line logged meanwhile carries the run's id.
    """
    trace_id = structlog.contextvars.get_contextvars().get("trace_id")
    with structlog.contextvars.bound_contextvars(run_id=str(run_id), trace_id=trace_id):
        await _plan_run(ctx, run_id, actor=actor, replan=replan, resume=resume)


async def _plan_run(
    ctx: EngineContext, run_id: str, *, actor: str, replan: bool, resume: bool
) -> None:
    async with change_run(ctx, run_id) as locked:
        changes = locked.changes
        run = changes.run
        if replan:
            _check_replannable(run, changes.steps)
            # The old steps never ran; each leaves with an audited transition (the plan they
            # belonged to stays in the run's plan versions), then makes room for the new ones.
            for step in changes.steps:
                move_step(
                    changes,
                    run,
                    step,
                    StepStatus.CANCELLED,
                    actor=actor,
                    reason=f"superseded: plan version {run.plan_version} is being replaced",
                )
            await delete_steps_txn(locked.session, run.id)
            changes.steps.clear()
            run.plan_approved_version = None
        if resume and RunStatus(run.status) is RunStatus.PLANNING:
            append_event(
                changes, run, "plan.resumed", {"reason": "planner lease expired"}, actor=actor
            )
        else:
            move_run(changes, run, RunStatus.PLANNING, actor=actor, replan=replan or None)
    call = CallContext(str(run.id), None, 1, "plan")
    llm = await client_for(ctx, run, call, budgeted(ctx, run, ctx.llm_factory(None), "plan"))
    try:
        with within_run(run):  # its model calls hang from the run's span
            outcome = await _make_plan(ctx, run, llm)
    except BudgetExceededError as exc:  # the run waits for a raise (engine/budget_pauses.py)
        outcome = PlanOutcome(None, None, exc.detail, [], code=exc.code, details=exc.data)
    except ReplayMissError as exc:  # a replay asked what its original never did: say so
        outcome = PlanOutcome(None, None, exc.detail, [], code=exc.code, details=exc.data)
    except EngineError as exc:
        outcome = PlanOutcome(None, None, exc.detail, [])
    # The policy recorded with the run decides, not today's file. A model cannot loosen it: its
    # answer never carries requires_approval, and the run's own auto_approve rules count only
    # when its creator may loosen the policy.
    approvals = PlanApprovals(inputs_of_run(run.options))
    if outcome.plan is not None:
        approvals = await plan_approvals(approvals.inputs, outcome.plan, ctx.limits, run.workspace)
    async with change_run(ctx, run_id) as locked:
        changes = locked.changes
        run = changes.run
        rows = record_calls(changes, run, None, llm.calls, purpose="plan")
        if RunStatus(run.status) is not RunStatus.PLANNING:
            return  # cancelled while planning: keep the ledger, drop the plan
        if outcome.plan is None:
            _close_without_plan(changes, run, outcome, actor=actor)
            return
        made_by = next((row["id"] for row in reversed(rows) if row["error"] is None), None)
        steps = insert_plan(
            changes,
            run,
            outcome.plan,
            ctx.registry,
            approvals=approvals,
            actor=actor,
            source="planner",
            rationale=outcome.rationale,
            llm_call_id=made_by,
            step_estimates=outcome.estimates,
        )
        warning = check_estimate(outcome.estimates, run.budget_usd, refuse="warn")
        if warning is not None:
            warn_over_budget(changes, warning)  # a planner's plan is warned about, not refused
        move_run(changes, run, RunStatus.PLANNED, actor=actor)
        if run.options.get("plan_approval"):
            move_run(changes, run, RunStatus.AWAITING_APPROVAL, actor=actor, reason="plan approval")
            apply_recorded_plan_decision(changes, run)  # a replay needs no person
        refresh_claimable(run, steps)
