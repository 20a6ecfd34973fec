"""The cost summary of a run: totals and breakdowns, all sums of ledger rows, with what the
run's budget has spent, holds and has left, and what the cache and the budget saver saved."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from agent_engine.domain.money import quantize_money
from agent_engine.engine.context import EngineContext
from agent_engine.storage.budget_tables import BudgetCounter
from agent_engine.storage.cost_reports import run_counter_txn
from agent_engine.storage.database import read_transaction
from agent_engine.storage.ledger import list_calls_txn
from agent_engine.storage.runs import get_run_txn, list_steps_txn
from agent_engine.storage.tables import LLMCall

ZERO = Decimal(0)


def _bucket() -> dict[str, Any]:
    return {
        "cost_usd": ZERO,
        "calls": 0,
        "input_tokens": 0,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 0,
        "reasoning_tokens": 0,
        "unpriced_calls": 0,
        "estimated_calls": 0,
        "cached_calls": 0,
        "saved_by_cache_usd": ZERO,
        "saved_by_routing_usd": ZERO,
    }


def _add(bucket: dict[str, Any], call: LLMCall) -> None:
    bucket["calls"] += 1
    if not call.priced:  # no known price: an assumed cost (counted), or none at all
        bucket["unpriced_calls"] += 1
    if call.cost_usd is not None:
        bucket["cost_usd"] += call.cost_usd
    if call.cached:
        bucket["cached_calls"] += 1
    if call.saved_usd is not None and call.saving in ("cache", "routing"):
        bucket[f"saved_by_{call.saving}_usd"] += call.saved_usd
    if call.usage_estimated:
        bucket["estimated_calls"] += 1
    for name in (
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
    ):
        bucket[name] += getattr(call, name)


async def cost_summary(ctx: EngineContext, run_id: str) -> dict[str, Any]:
    """Totals and breakdowns by step, step type, model and provider, reported vs estimated."""
    async with read_transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id)
        steps = {step.id: step for step in await list_steps_txn(session, run.id)}
        calls = await list_calls_txn(session, run.id, whole=False)  # numbers only
        counter = await run_counter_txn(session, run.id)
    total = _bucket()
    by_step: dict[str, dict[str, Any]] = {}
    by_type: dict[str, dict[str, Any]] = defaultdict(_bucket)
    by_model: dict[str, dict[str, Any]] = defaultdict(_bucket)
    by_provider: dict[str, dict[str, Any]] = defaultdict(_bucket)
    by_usage_source: dict[str, dict[str, Any]] = defaultdict(_bucket)
    for call in calls:
        _add(total, call)
        step = steps.get(call.step_id) if call.step_id else None
        key = f"{step.step_number}" if step else call.purpose
        if key not in by_step:
            by_step[key] = {
                "step_id": str(step.id) if step else None,
                "step_number": step.step_number if step else None,
                "step_type": step.step_type if step else call.purpose,
                **_bucket(),
            }
        _add(by_step[key], call)
        _add(by_type[step.step_type if step else call.purpose], call)
        _add(by_model[f"{call.provider}:{call.model}"], call)
        _add(by_provider[call.provider], call)
        _add(by_usage_source["estimated" if call.usage_estimated else "reported"], call)
    return {
        "run_id": str(run.id),
        "total_cost_usd": run.total_cost_usd,
        "budget_usd": run.budget_usd,
        **_budget_state(run.budget_usd, run.total_cost_usd, counter),
        "saved_by_cache_usd": total["saved_by_cache_usd"],
        "saved_by_routing_usd": total["saved_by_routing_usd"],
        "ledger_total_usd": total["cost_usd"],
        "consistent": total["cost_usd"] == run.total_cost_usd,
        "totals": total,
        "by_step": list(by_step.values()),
        "by_step_type": dict(by_type),
        "by_model": dict(by_model),
        "by_provider": dict(by_provider),
        "by_usage_source": dict(by_usage_source),
        "has_unpriced_calls": total["unpriced_calls"] > 0,
        "has_estimated_usage": total["estimated_calls"] > 0,
    }


def _budget_state(
    budget: Decimal | None, total: Decimal, counter: BudgetCounter | None
) -> dict[str, Decimal | None]:
    """Spent, reserved and remaining from the run's budget counter; a run without one (made
    before counters) has spent its total and holds nothing. Remaining is None without a budget
    and may be negative when a budget was lowered below what is spent."""
    if counter is not None:
        spent, reserved = counter.spent_usd, counter.reserved_usd
        limit = counter.limit_usd if counter.limit_usd is not None else budget
    else:
        spent, reserved, limit = total, ZERO, budget
    remaining = quantize_money(limit - spent - reserved) if limit is not None else None
    return {"spent_usd": spent, "reserved_usd": reserved, "remaining_usd": remaining}
