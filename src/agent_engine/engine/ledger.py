"""The cost ledger's write side: one ``llm_calls`` row per provider call, added to the change set
that records the step (or the plan), with the step and run totals moved by the same amounts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from agent_engine import metrics
from agent_engine.domain.audit_cover import call_coverage
from agent_engine.domain.canonical import content_hash
from agent_engine.domain.clock import utcnow
from agent_engine.domain.money import quantize_money
from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.llm.base import LLMCallRecord


def record_calls(
    changes: ChangeSet,
    run: RunRecord,
    step: StepRecord | None,
    records: Sequence[LLMCallRecord],
    *,
    purpose: str = "step",
) -> list[dict[str, Any]]:
    """Add ``records`` to the ledger and to the step and run totals; the new rows.

    A call of a model with no known price carries an assumed cost (the catalog's most expensive
    price of its tier) and ``priced = false``: the assumed cost counts in the totals, flagged.
    Only a call that has no cost at all (no priced model to assume from) adds nothing. A call
    served from the response cache has no tokens and costs $0; its ``saved_usd`` says what the
    original cost.
    """
    if not records:
        return []  # most steps call no model: nothing to add, and no totals to touch
    added = Decimal(0)
    rows: list[dict[str, Any]] = []
    for record in records:
        row = call_row(
            record,
            run_id=run.id,
            step_id=step.id if step is not None else None,
            purpose=purpose,
            project=run.project,
            api_key_id=run.api_key_id,
        )
        cost = row["cost_usd"]
        changes.add("llm_calls", row)
        changes.uncovered_calls.append(call_coverage(row))
        rows.append(row)
        if cost is not None:
            added += cost
        metrics.observe_model_call(
            record.provider,
            record.model,
            input_tokens=record.usage.input_tokens,
            output_tokens=record.usage.output_tokens,
            cost_usd=cost,
        )
        run.input_tokens += record.usage.input_tokens
        run.output_tokens += record.usage.output_tokens
        if step is not None:
            step.input_tokens += record.usage.input_tokens
            step.output_tokens += record.usage.output_tokens
    run.total_cost_usd = quantize_money(run.total_cost_usd + added)
    if step is not None:
        step.cost_usd = quantize_money(step.cost_usd + added)
        successful = [r for r in records if r.error is None]
        if successful:
            step.model = f"{successful[-1].provider}:{successful[-1].model}"
    return rows


def call_row(
    record: LLMCallRecord,
    *,
    run_id: uuid.UUID | None,
    step_id: uuid.UUID | None,
    purpose: str,
    project: str | None = None,
    api_key_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """The ``llm_calls`` row of one call: a run's (and step's), or, with ``run_id`` None, one
    made through the OpenAI-compatible endpoint for a project or key."""
    cost = quantize_money(record.cost_usd) if record.cost_usd is not None else None
    saved = quantize_money(record.saved_usd) if record.saved_usd is not None else None
    return {
        "id": uuid.uuid4(),
        "run_id": run_id,
        "step_id": step_id,
        "project": project,
        "api_key_id": api_key_id,
        "purpose": purpose,
        "provider": record.provider,
        "model": record.model,
        "request": record.request,
        "request_hash": record.request_hash,
        "response": record.response,
        # Over the document as stored, so anyone can recompute it from the ledger.
        "response_hash": content_hash(record.response) if record.response is not None else None,
        "input_tokens": record.usage.input_tokens,
        "output_tokens": record.usage.output_tokens,
        "cached_input_tokens": record.usage.cached_input_tokens,
        "cache_write_tokens": record.usage.cache_write_tokens,
        "reasoning_tokens": record.usage.reasoning_tokens,
        "usage_estimated": record.usage.estimated,
        "cost_usd": cost,
        "priced": cost is not None and record.priced,
        "price_source": record.price_source,
        "latency_ms": record.latency_ms,
        "attempt": record.attempt,
        "error": record.error,
        "routing": record.routing,
        "cached": record.cached,
        "cache_of": uuid.UUID(record.cache_of) if record.cache_of is not None else None,
        "saved_usd": saved,
        "saving": record.saving,
        "replayed": record.replayed,
        "reservation_id": (
            uuid.UUID(record.reservation_id) if record.reservation_id is not None else None
        ),
        "created_at": utcnow(),
        "payloads_pruned_at": None,  # set by retention (engine/retention.py)
    }
