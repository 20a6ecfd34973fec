"""Changing budgets: a run's (``PATCH …/budget``, audited with who and why) and the monthly
budgets of projects and keys. Raising a budget resumes what was paused for it.

Lock order: budget counters before the run row, as every writer of both takes them (the
reservation and settling paths never hold a run lock), so two changes never wait on each other.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from agent_engine.domain.budget_math import month_bounds, month_of
from agent_engine.domain.budget_thresholds import alerted_for_new_limit
from agent_engine.domain.clock import utcnow
from agent_engine.domain.money import quantize_money
from agent_engine.domain.records import ChangeSet
from agent_engine.domain.states import TERMINAL_RUN_STATES, RunStatus
from agent_engine.domain.transitions import append_event
from agent_engine.engine.budget_pauses import paused_for_budget, resume_after_raise
from agent_engine.engine.budgets import RUN_PERIOD
from agent_engine.engine.context import EngineContext
from agent_engine.engine.locking import change_run
from agent_engine.engine.settle import settle_run
from agent_engine.errors import BudgetBelowSpentError, NotFoundError, RunFinishedError
from agent_engine.storage import budgets as store
from agent_engine.storage.database import read_transaction, transaction
from agent_engine.storage.runs import load_run_txn, load_steps_txn
from agent_engine.storage.tables import AgentRun

# Token counts are stored as 64-bit integers; a limit beyond this is no limit in practice.
MAX_TOKENS = 2**62
Usd = Field(default=None, ge=0, max_digits=20, decimal_places=9)


class BudgetChange(BaseModel):
    """The body of ``PATCH /v1/agent-runs/{id}/budget``: the new limits (``null`` removes one)
    and why."""

    model_config = ConfigDict(extra="forbid")

    budget_usd: Decimal | None = Usd
    budget_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    reason: str = Field(min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _names_a_limit(self) -> BudgetChange:
        if not {"budget_usd", "budget_tokens"} & self.model_fields_set:
            raise ValueError("give budget_usd, budget_tokens or both")
        return self


class MonthlyBudget(BaseModel):
    """The body of ``PUT /v1/budgets/{scope}/{subject}``: limits per calendar month (UTC)."""

    model_config = ConfigDict(extra="forbid")

    limit_usd: Decimal | None = Usd
    limit_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS)


Scope = Literal["project", "api_key"]


async def change_run_budget(
    ctx: EngineContext, run_id: str, change: BudgetChange, *, actor: str
) -> dict[str, Any]:
    """Set the run's budget; refused below what it spent (422) or on a finished run (409).
    Steps paused for budget go on; the change and its reason are in the audit chain."""
    async with transaction(ctx.sessions) as session:
        current = await load_run_txn(session, run_id)
        usd = change.budget_usd if "budget_usd" in change.model_fields_set else current.budget_usd
        tokens = (
            change.budget_tokens
            if "budget_tokens" in change.model_fields_set
            else current.budget_tokens
        )
        counter_id = await store.ensure_counter_txn(
            session,
            scope="run",
            subject=str(current.id),
            period=RUN_PERIOD,
            limit_usd=usd,
            limit_tokens=tokens,
            now=utcnow(),
        )
        (counter,) = await store.lock_counters_txn(session, [counter_id])
        run = await load_run_txn(session, current.id, lock=True)
        if RunStatus(run.status) in TERMINAL_RUN_STATES:
            raise RunFinishedError(
                f"run {run.id} is {run.status}: its budget can no longer change",
                run_id=str(run.id),
                run_status=run.status,
            )
        # Spent before the counter existed (calls made while the run had no budget) counts too.
        spent_usd = max(counter["spent_usd"], run.total_cost_usd)
        spent_tokens = max(counter["spent_tokens"], run.input_tokens + run.output_tokens)
        _check_not_below(usd, spent_usd, tokens, spent_tokens, str(run.id))
        await store.write_counter_txn(
            session,
            counter_id,
            {
                "limit_usd": usd,
                "limit_tokens": tokens,
                "spent_usd": spent_usd,
                "spent_tokens": spent_tokens,
                # A raise re-arms the alert thresholds above what is spent.
                "alerted_percent": alerted_for_new_limit(
                    usd, tokens, spent_usd, spent_tokens, ctx.settings.budget_alert_thresholds
                ),
                "updated_at": utcnow(),
            },
        )
        steps = await load_steps_txn(session, run.id, open_only=True)
        changes = ChangeSet(run, steps)
        before = {"budget_usd": _text(run.budget_usd), "budget_tokens": run.budget_tokens}
        run.budget_usd = quantize_money(usd) if usd is not None else None
        run.budget_tokens = tokens
        append_event(
            changes,
            run,
            "budget.changed",
            {
                "before": before,
                "after": {"budget_usd": _text(run.budget_usd), "budget_tokens": tokens},
                "reason": change.reason,
            },
            actor=actor,
        )
        resumed = resume_after_raise(changes, run, steps, actor=actor)
        settle_run(changes, run, steps, actor=actor)
        (applied,) = await ctx.changes.apply_in(session, [changes])
        if not applied:  # the lock makes this impossible: refuse rather than half-write
            raise RuntimeError(f"run {run.id} changed while locked")
    return {
        "run_id": str(run.id),
        "budget_usd": run.budget_usd,
        "budget_tokens": run.budget_tokens,
        "spent_usd": spent_usd,
        "resumed_steps": resumed,
        "status": run.status,
    }


def _check_not_below(
    usd: Decimal | None, spent_usd: Decimal, tokens: int | None, spent_tokens: int, what: str
) -> None:
    if usd is not None and quantize_money(usd) < spent_usd:
        raise BudgetBelowSpentError(
            f"{what} has already spent ${spent_usd}: "
            f"a budget of ${quantize_money(usd)} is below it",
            spent_usd=format(spent_usd, "f"),
        )
    if tokens is not None and tokens < spent_tokens:
        raise BudgetBelowSpentError(
            f"{what} has already spent {spent_tokens} tokens: a budget of {tokens} is below it",
            spent_tokens=spent_tokens,
        )


def _text(value: Decimal | None) -> str | None:
    return format(value, "f") if value is not None else None


async def set_monthly_budget(
    ctx: EngineContext, scope: Scope, subject: str, budget: MonthlyBudget, *, actor: str
) -> dict[str, Any]:
    """Create or change the monthly budget of a project or key (this month's counter takes the
    new limits at once); runs of it paused for budget go on."""
    now = utcnow()
    async with transaction(ctx.sessions) as session:
        counter_id = await store.ensure_counter_txn(
            session,
            scope=scope,
            subject=subject,
            period=month_of(now),
            limit_usd=budget.limit_usd,
            limit_tokens=budget.limit_tokens,
            now=now,
        )
        (counter,) = await store.lock_counters_txn(session, [counter_id])
        # A budget set mid-month counts what the month already spent (the ledger's calls).
        start, end = month_bounds(counter["period"])
        ledger_usd, ledger_tokens = await store.ledger_spend_txn(
            session, scope, subject, start, end
        )
        counter["spent_usd"] = max(counter["spent_usd"], quantize_money(ledger_usd))
        counter["spent_tokens"] = max(counter["spent_tokens"], ledger_tokens)
        _check_not_below(
            budget.limit_usd,
            counter["spent_usd"],
            budget.limit_tokens,
            counter["spent_tokens"],
            f"{scope} {subject} this month",
        )
        await store.write_counter_txn(
            session,
            counter_id,
            {
                "limit_usd": budget.limit_usd,
                "limit_tokens": budget.limit_tokens,
                "spent_usd": counter["spent_usd"],
                "spent_tokens": counter["spent_tokens"],
                "alerted_percent": alerted_for_new_limit(
                    budget.limit_usd,
                    budget.limit_tokens,
                    counter["spent_usd"],
                    counter["spent_tokens"],
                    ctx.settings.budget_alert_thresholds,
                ),
                "updated_at": now,
            },
        )
        await store.upsert_definition_txn(
            session,
            {
                "id": uuid.uuid4(),
                "scope": scope,
                "subject": subject,
                "limit_usd": budget.limit_usd,
                "limit_tokens": budget.limit_tokens,
                "updated_by": actor,
                "created_at": now,
                "updated_at": now,
            },
        )
    resumed = await _resume_runs_of(ctx, scope, subject, actor=actor)
    return {**(await monthly_budget(ctx, scope, subject)), "resumed_runs": resumed}


async def _resume_runs_of(ctx: EngineContext, scope: Scope, subject: str, *, actor: str) -> int:
    column = AgentRun.project if scope == "project" else AgentRun.api_key_id
    value: Any = subject if scope == "project" else _key_id(subject)
    if value is None:
        return 0
    async with read_transaction(ctx.sessions) as session:
        ids = list(
            await session.scalars(
                select(AgentRun.id).where(
                    column == value, AgentRun.status == RunStatus.AWAITING_APPROVAL.value
                )
            )
        )
    resumed = 0
    for run_id in ids:
        async with change_run(ctx, run_id, open_steps=True) as locked:
            run, steps = locked.changes.run, locked.changes.steps
            if paused_for_budget(steps):
                resume_after_raise(locked.changes, run, steps, actor=actor)
                settle_run(locked.changes, run, steps, actor=actor)
                resumed += 1
    return resumed


def _key_id(subject: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(subject)
    except ValueError:
        return None


async def monthly_budget(ctx: EngineContext, scope: Scope, subject: str) -> dict[str, Any]:
    """One monthly budget with this month's figures (NotFoundError if none is defined)."""
    for item in await list_monthly_budgets(ctx):
        if item["scope"] == scope and item["subject"] == subject:
            return item
    raise NotFoundError(f"no monthly budget for {scope} {subject!r}", scope=scope, subject=subject)


async def list_monthly_budgets(ctx: EngineContext) -> list[dict[str, Any]]:
    """Every monthly budget with this month's spent, reserved and remaining."""
    period = month_of(utcnow())
    async with read_transaction(ctx.sessions) as session:
        definitions = await store.list_definitions_txn(session)
        out = []
        for row in definitions:
            counters = await store.counters_of_txn(session, row["scope"], row["subject"])
            current = next((c for c in counters if c["period"] == period), None)
            spent = current["spent_usd"] if current else Decimal(0)
            reserved = current["reserved_usd"] if current else Decimal(0)
            limit = row["limit_usd"]
            out.append(
                {
                    "scope": row["scope"],
                    "subject": row["subject"],
                    "period": period,
                    "limit_usd": limit,
                    "limit_tokens": row["limit_tokens"],
                    "spent_usd": spent,
                    "reserved_usd": reserved,
                    "remaining_usd": quantize_money(limit - spent - reserved)
                    if limit is not None
                    else None,
                    "spent_tokens": current["spent_tokens"] if current else 0,
                    "reserved_tokens": current["reserved_tokens"] if current else 0,
                    "updated_by": row["updated_by"],
                    "updated_at": row["updated_at"],
                }
            )
    return out


async def delete_monthly_budget(ctx: EngineContext, scope: Scope, subject: str) -> None:
    """Remove a monthly budget (its counters stay, as history); NotFoundError if none."""
    async with transaction(ctx.sessions) as session:
        if not await store.delete_definition_txn(session, scope, subject):
            raise NotFoundError(
                f"no monthly budget for {scope} {subject!r}", scope=scope, subject=subject
            )
