"""Budgets: a run's (``PATCH /v1/agent-runs/{id}/budget``) and the monthly budgets of projects
and API keys (``/v1/budgets``). Raising a budget resumes what was paused for it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, Field

from agent_engine.api.access import requires
from agent_engine.api.deps import Actor, Engine
from agent_engine.api.schemas import Money
from agent_engine.domain.principals import Role
from agent_engine.engine import budget_changes
from agent_engine.engine.budget_changes import BudgetChange, MonthlyBudget, Scope

router = APIRouter(tags=["budgets"])


class RunBudgetOut(BaseModel):
    run_id: str
    status: str
    budget_usd: Money | None
    budget_tokens: int | None
    spent_usd: Money
    resumed_steps: list[int] = Field(description="Steps that were paused for budget and go on")


class MonthlyBudgetOut(BaseModel):
    scope: Scope
    subject: str
    period: str = Field(description="This calendar month (UTC), e.g. 2026-12")
    limit_usd: Money | None
    limit_tokens: int | None
    spent_usd: Money
    reserved_usd: Money
    remaining_usd: Money | None
    spent_tokens: int
    reserved_tokens: int
    updated_by: str
    updated_at: datetime
    resumed_runs: int | None = None


Subject = Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@router.patch(
    "/v1/agent-runs/{run_id}/budget", response_model=RunBudgetOut, **requires(Role.OPERATOR)
)
async def change_run_budget(
    run_id: str, body: BudgetChange, engine: Engine, actor: Actor
) -> dict[str, Any]:
    """Change the run's `budget_usd` / `budget_tokens` (`null` removes a limit), with the
    reason, into the audit chain; steps paused for budget go on. 422 `budget_below_spent`
    below what the run spent, 409 `run_finished` on a completed or cancelled run."""
    return await budget_changes.change_run_budget(engine, run_id, body, actor=actor)


@router.get("/v1/budgets", response_model=list[MonthlyBudgetOut], **requires(Role.VIEWER))
async def list_budgets(engine: Engine) -> list[dict[str, Any]]:
    """Every monthly budget of a project or key, with this month's spent, reserved, remaining."""
    return await budget_changes.list_monthly_budgets(engine)


@router.get("/v1/budgets/{scope}/{subject}", response_model=dict[str, Any], **requires(Role.VIEWER))
async def get_budget(scope: Scope, engine: Engine, subject: str = Subject) -> dict[str, Any]:
    """One monthly budget with this month's figures; 404 if none is defined."""
    return await budget_changes.monthly_budget(engine, scope, subject)


@router.put(
    "/v1/budgets/{scope}/{subject}", response_model=MonthlyBudgetOut, **requires(Role.ADMIN)
)
async def set_budget(
    scope: Scope, body: MonthlyBudget, engine: Engine, actor: Actor, subject: str = Subject
) -> dict[str, Any]:
    """Set a project's (`project`, by name) or key's (`api_key`, by id) budget per calendar
    month (UTC); runs of it paused for budget go on. 422 `budget_below_spent` below this
    month's spend."""
    return await budget_changes.set_monthly_budget(engine, scope, subject, body, actor=actor)


@router.delete(
    "/v1/budgets/{scope}/{subject}",
    status_code=status.HTTP_204_NO_CONTENT,
    **requires(Role.ADMIN),
)
async def delete_budget(scope: Scope, engine: Engine, subject: str = Subject) -> None:
    """Remove a monthly budget; 404 if none is defined."""
    await budget_changes.delete_monthly_budget(engine, scope, subject)
