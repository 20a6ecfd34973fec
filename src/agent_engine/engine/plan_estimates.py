"""What a plan is expected to cost before anything runs: an estimate per step (the routed
model's worst case for the steps that call a model, zero for the others), checked against the
run's budget — a warning on the run, or a refusal when its creator asked for one."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from agent_engine.domain.plan import Plan
from agent_engine.domain.records import ChangeSet
from agent_engine.domain.transitions import append_event
from agent_engine.engine.context import EngineContext
from agent_engine.errors import CallerError, EngineError
from agent_engine.llm.base import ChatMessage, CompletionRequest, LLMClient

# The built-in steps that call a model (each asks once; propose_edit may ask again to repair).
LLM_STEP_TYPES = frozenset({"analyze", "summarize", "propose_edit"})


class EstimateOverBudgetError(CallerError):
    """The plan's estimated cost exceeds the budget of a run created with over_budget=refuse."""

    code = "estimate_over_budget"
    http_status = 422
    title = "Estimated cost exceeds the budget"


async def estimate_steps(llm: LLMClient, plan: Plan) -> list[Decimal | None]:
    """Estimated USD per step: the client's estimate for LLM steps (None: unknown), zero for the
    others."""
    estimates: list[Decimal | None] = []
    for step in plan.steps:
        if step.step_type not in LLM_STEP_TYPES:
            estimates.append(Decimal(0))
            continue
        instruction = str(step.input_data.get("instruction") or step.step_type)
        request = CompletionRequest(
            messages=[ChatMessage(role="user", content=instruction)], step_type=step.step_type
        )
        try:
            estimates.append(await llm.estimate_cost(request))
        except EngineError:
            estimates.append(None)
    return estimates


async def estimate_plan(ctx: EngineContext, plan: Plan) -> list[Decimal | None]:
    """Each step's estimated cost (a plan without model steps needs no router)."""
    if not any(step.step_type in LLM_STEP_TYPES for step in plan.steps):
        return [Decimal(0)] * len(plan.steps)
    return await estimate_steps(ctx.llm_factory(None), plan)


def check_estimate(
    estimates: list[Decimal | None], budget_usd: Decimal | None, *, refuse: str
) -> dict[str, Any] | None:
    """The warning when the known estimates add up to more than ``budget_usd`` (None: within,
    or no budget); with ``refuse == "refuse"`` an EstimateOverBudgetError instead."""
    if budget_usd is None:
        return None
    total = sum((e for e in estimates if e is not None), Decimal(0))
    if total <= budget_usd:
        return None
    message = (
        f"the plan is estimated at ${total}, more than the budget of ${budget_usd}: "
        "steps that do not fit will wait for a raise"
    )
    warning: dict[str, Any] = {
        "estimated_cost_usd": format(total, "f"),
        "budget_usd": format(budget_usd, "f"),
        "unestimated_steps": [n for n, e in enumerate(estimates, 1) if e is None],
    }
    if refuse == "refuse":
        raise EstimateOverBudgetError(message, **warning)
    return {**warning, "message": message}


def warn_over_budget(changes: ChangeSet, warning: dict[str, Any]) -> None:
    """Put the warning on the new run (``options.budget_warning``) and in its audit chain."""
    run = changes.run
    run.options = {**run.options, "budget_warning": warning}
    append_event(changes, run, "budget.estimate_exceeds", warning, actor=run.created_by)
