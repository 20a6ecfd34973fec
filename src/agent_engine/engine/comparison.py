"""Comparing two runs step by step, and the divergence report of a replay or a fork.

Both read the runs' steps and model calls and answer with data: per step number what differs
(inputs, outputs, models, tokens, cost, duration) and, for a divergence report, ``match``,
``diverged`` or ``not_reached`` with the first differing field named at the top level.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from agent_engine.domain.records import RunRecord, StepRecord
from agent_engine.domain.step_diff import (
    divergence_of,
    duration_ms,
    input_difference,
    output_difference,
)
from agent_engine.engine.context import EngineContext
from agent_engine.errors import NotDerivedError, NotFoundError
from agent_engine.storage.database import read_transaction
from agent_engine.storage.ledger import list_calls_txn
from agent_engine.storage.runs import load_run_txn, load_steps_txn


@dataclass(frozen=True)
class _Loaded:
    run: RunRecord
    steps: dict[int, StepRecord]
    calls: Counter[uuid.UUID]  # model calls per step id
    models: dict[uuid.UUID, str]  # the last model each step called


async def _load(ctx: EngineContext, run_id: str | uuid.UUID) -> _Loaded:
    async with read_transaction(ctx.sessions) as session:
        run = await load_run_txn(session, run_id)
        steps = await load_steps_txn(session, run.id)
        calls = await list_calls_txn(session, run.id, whole=False)  # numbers only
    counted: Counter[uuid.UUID] = Counter(c.step_id for c in calls if c.step_id is not None)
    models = {c.step_id: c.model for c in calls if c.step_id is not None}
    return _Loaded(run, {s.step_number: s for s in steps}, counted, models)


def _pair(a: Any, b: Any) -> dict[str, Any]:
    return {"a": a, "b": b}


def _side(loaded: _Loaded, step: StepRecord | None, field: str) -> Any:
    if step is None:
        return None
    if field == "model":
        return step.model or loaded.models.get(step.id)
    if field == "tokens":
        return {"input": step.input_tokens, "output": step.output_tokens}
    if field == "duration_ms":
        return duration_ms(step)
    if field == "llm_calls":
        return loaded.calls.get(step.id, 0)
    return getattr(step, field)


def _compare_step(number: int, a: _Loaded, b: _Loaded) -> dict[str, Any]:
    left, right = a.steps.get(number), b.steps.get(number)
    row: dict[str, Any] = {"step_number": number}
    for field in ("step_type", "status", "model", "tokens", "cost_usd", "duration_ms", "llm_calls"):
        row[field] = _pair(_side(a, left, field), _side(b, right, field))
    row["reused_from"] = _pair(
        left.reused_from if left else None, right.reused_from if right else None
    )
    if left is None or right is None:
        row["input"] = row["output"] = None
        row["differs_in"] = ["step"]
        row["verdict"] = "only_in_b" if left is None else "only_in_a"
        return row
    found_input = input_difference(left, right)
    found_output = output_difference(left, right)
    row["input"] = {
        **_pair(left.input_hash, right.input_hash),
        "first_difference": found_input.as_dict() if found_input else None,
    }
    row["output"] = {
        **_pair(left.output_hash, right.output_hash),
        "first_difference": found_output.as_dict() if found_output else None,
    }
    differs = [f for f in ("step_type", "status", "model") if row[f]["a"] != row[f]["b"]]
    differs += [name for name, found in (("input", found_input), ("output", found_output)) if found]
    row["differs_in"] = differs
    row["verdict"] = "differs" if differs else "same"
    return row


def _summary(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status,
        "total_cost_usd": run.total_cost_usd,
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "replay_of": run.replay_of,
        "forked_from": run.forked_from,
        "from_step": run.from_step,
    }


async def compare_runs(ctx: EngineContext, a_id: str, b_id: str) -> dict[str, Any]:
    """Runs ``a`` and ``b`` step by step: each step number's verdict (``same``, ``differs``,
    ``only_in_a``, ``only_in_b``), what differs in it, and the first differing step."""
    a, b = await _load(ctx, a_id), await _load(ctx, b_id)
    numbers = sorted(set(a.steps) | set(b.steps))
    steps = [_compare_step(number, a, b) for number in numbers]
    first = next((row for row in steps if row["verdict"] != "same"), None)
    first_difference = None
    if first is not None:
        first_difference = {"step_number": first["step_number"], "differs_in": first["differs_in"]}
        for part in ("input", "output"):
            if first[part] and first[part]["first_difference"]:
                first_difference.update(first[part]["first_difference"])
                break
    return {
        "a": _summary(a.run),
        "b": _summary(b.run),
        "verdict": "differs" if first is not None else "same",
        "first_difference": first_difference,
        "steps": steps,
    }


def source_of(run: RunRecord) -> tuple[uuid.UUID, str]:
    """The run ``run`` is a replay (first) or a fork of, and which; 409 if neither."""
    if run.replay_of is not None:
        return run.replay_of, "replay"
    if run.forked_from is not None:
        return run.forked_from, "fork"
    raise NotDerivedError(
        f"run {run.id} is neither a replay nor a fork: it has nothing to diverge from",
        run_id=str(run.id),
    )


async def divergence_report(ctx: EngineContext, run_id: str) -> dict[str, Any]:
    """Each step of the run against the run it replays or forks: ``match``, ``diverged`` (with
    the field, expected and actual values or hashes) or ``not_reached``; the first divergence
    at the top level. Reused steps match."""
    run = await _load(ctx, run_id)
    source_id, relation = source_of(run.run)
    try:
        source = await _load(ctx, source_id)
    except NotFoundError:
        raise NotFoundError(
            f"run {run.run.id} is a {relation} of run {source_id}, which is not on this server",
            run_id=str(source_id),
        ) from None
    numbers = sorted(set(source.steps) | set(run.steps))
    steps = [divergence_of(source.steps.get(n), run.steps.get(n)) for n in numbers]
    first = next((row for row in steps if row["verdict"] == "diverged"), None)
    reached = all(row["verdict"] != "not_reached" for row in steps)
    verdict = "diverged" if first is not None else "match" if reached else "incomplete"
    return {
        "run_id": run.run.id,
        "against": source_id,
        "relation": relation,
        "from_step": run.run.from_step,
        "replay_mode": run.run.replay_mode,
        "verdict": verdict,
        "first_divergence": first,
        "counts": dict(Counter(row["verdict"] for row in steps)),
        "steps": steps,
    }


def jsonable(value: Any) -> Any:
    """The report as JSON values: money as numbers, ids and times as text."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value
