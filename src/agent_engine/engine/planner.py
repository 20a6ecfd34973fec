"""The planning service: CREATED → PLANNING → PLANNED (or FAILED) through the LLM router."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from agent_engine.domain.approval_policy import ApprovalPolicy
from agent_engine.domain.plan import Plan
from agent_engine.domain.states import RunStatus
from agent_engine.engine.context import EngineContext
from agent_engine.engine.plans import insert_plan_txn, validate_plan
from agent_engine.engine.stepping import executor_context
from agent_engine.errors import EngineError, PlanValidationError, ProviderError
from agent_engine.llm.base import LLMClient
from agent_engine.llm.planning import request_plan
from agent_engine.storage.database import transaction
from agent_engine.storage.ledger import record_calls_txn
from agent_engine.storage.runs import get_run_txn
from agent_engine.storage.tables import AgentRun
from agent_engine.storage.transitions import move_run_txn

logger = logging.getLogger(__name__)
MAX_PLAN_ATTEMPTS = 3


def step_catalog(ctx: EngineContext) -> list[dict[str, Any]]:
    """What the planner may use: every registered step type with its input schema."""
    return [
        {
            "step_type": name,
            "description": (type(executor).__doc__ or "").strip().splitlines()[0:1],
            "requires_approval": executor.requires_approval,
            "input_schema": executor.input_model.model_json_schema(),
        }
        for name, executor in sorted(ctx.registry.items())
        if name != "noop"
    ]


async def _workspace_files(
    ctx: EngineContext, run: AgentRun, llm: LLMClient
) -> list[dict[str, Any]]:
    if run.workspace is None or "list_files" not in ctx.registry:
        return []
    executor = ctx.registry["list_files"]
    context = executor_context(ctx, run.id, 0, run.workspace, llm)
    output = await executor.execute(executor.validate_input({}), context)
    files: list[dict[str, Any]] = output.model_dump(mode="json").get("files", [])
    return files


async def _make_plan(ctx: EngineContext, run: AgentRun, llm: LLMClient) -> tuple[Plan | None, str]:
    """Ask for a plan, feeding validation errors back, at most ``MAX_PLAN_ATTEMPTS`` times."""
    files = await _workspace_files(ctx, run, llm)
    catalog = step_catalog(ctx)
    errors: list[str] = []
    for _ in range(MAX_PLAN_ATTEMPTS):
        try:
            answer = await request_plan(
                llm,
                run.goal,
                files if run.workspace else None,
                catalog,
                previous_errors=errors or None,
            )
            plan = Plan.model_validate({"steps": answer.get("steps", [])})
            validate_plan(plan, ctx.registry, has_workspace=run.workspace is not None)
            return plan, ""
        except ValidationError as exc:
            errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        except PlanValidationError as exc:
            errors = [exc.detail]
        except ProviderError as exc:
            if exc.is_retryable:
                raise
            errors = [exc.detail]
    return None, "; ".join(errors)


async def plan_run(ctx: EngineContext, run_id: str, *, actor: str) -> None:
    """Plan a CREATED run. The LLM call happens between two short transactions."""
    async with transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id, lock=True)
        move_run_txn(session, run, RunStatus.PLANNING, actor=actor)
    llm = ctx.llm_factory(run.budget_usd)
    plan: Plan | None = None
    failure = ""
    try:
        plan, failure = await _make_plan(ctx, run, llm)
    except EngineError as exc:
        failure = exc.detail
    async with transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id, lock=True)
        record_calls_txn(session, run, None, llm.calls, purpose="plan")
        if RunStatus(run.status) is not RunStatus.PLANNING:
            return  # cancelled while planning: keep the ledger, drop the plan
        if plan is None:
            run.error = {"code": "planning_failed", "message": failure}
            move_run_txn(session, run, RunStatus.FAILED, actor=actor, reason=failure)
            return
        policy = ApprovalPolicy.model_validate(run.options.get("approval_policy", {}))
        insert_plan_txn(
            session, run, plan, ctx.registry, policy=policy, actor=actor, source="planner"
        )
        move_run_txn(session, run, RunStatus.PLANNED, actor=actor)
        if run.options.get("plan_approval"):
            move_run_txn(
                session, run, RunStatus.AWAITING_APPROVAL, actor=actor, reason="plan approval"
            )
