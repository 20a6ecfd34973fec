"""Which model client a call of a run gets: the plain one, or the replaying wrapper around it
loaded with the recorded calls of the run it replays (or the fork it continues from records)."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from agent_engine.domain.records import RunRecord
from agent_engine.engine.context import EngineContext
from agent_engine.engine.response_cache import with_response_cache
from agent_engine.llm.base import CallContext, LLMClient, Usage
from agent_engine.llm.replaying import (
    ExchangeKey,
    OnMiss,
    RecordedCall,
    ReplayingLLMClient,
    ReplayRecords,
    exchanges_of,
)
from agent_engine.storage.database import read_transaction
from agent_engine.storage.replay_records import (
    has_live_calls_txn,
    recorded_calls_txn,
    served_exchanges_txn,
)

HERMETIC = "hermetic"
VERIFY = "verify"


@dataclass(frozen=True)
class ReplaySource:
    """The run whose records serve this run's model calls, and what a miss does."""

    run_id: uuid.UUID
    on_miss: OnMiss
    verify: bool = False  # side effects are served from the original's records too


def replay_source(run: RunRecord) -> ReplaySource | None:
    """Where a run's model calls come from: a replay from its original (a miss fails); a fork
    made with ``replay: true`` from the run it forked (a miss goes live); any other run, None."""
    if run.replay_of is not None:
        return ReplaySource(run.replay_of, "fail", verify=run.replay_mode == VERIFY)
    fork = run.options.get("fork")
    if run.forked_from is not None and isinstance(fork, dict) and fork.get("replay"):
        return ReplaySource(run.forked_from, "live")
    return None


def _recorded(row: dict[str, Any]) -> RecordedCall:
    usage = Usage(
        input_tokens=int(row["input_tokens"] or 0),
        output_tokens=int(row["output_tokens"] or 0),
        cached_input_tokens=int(row["cached_input_tokens"] or 0),
        cache_write_tokens=int(row["cache_write_tokens"] or 0),
        reasoning_tokens=int(row["reasoning_tokens"] or 0),
        estimated=bool(row["usage_estimated"]),
    )
    return RecordedCall(
        id=str(row["id"]),
        purpose=str(row["purpose"]),
        step_number=row["step_number"],
        request_hash=str(row["request_hash"]),
        request=row["request"],
        response=row["response"],
        provider=str(row["provider"]),
        model=str(row["model"]),
        usage=usage,
        attempt=int(row["attempt"]),
        error=row["error"],
    )


async def load_replay_records(
    ctx: EngineContext, source: ReplaySource, run_id: uuid.UUID, call: CallContext
) -> tuple[ReplayRecords, bool]:
    """The source run's exchanges at the call's site (purpose and step) with those this run
    already used marked, and whether this run has already gone live (a fork whose replay
    missed). When the site has none, every exchange of the run: a miss is then certain, and
    its nearest recorded request may be anywhere.

    A replay reads its original's calls once per process (``ctx.recorded_runs``); a step's
    first attempt is the first to call from its site, so it reads nothing else either."""
    site = (call.purpose, call.step_number)
    # A replay's original is finished; a fork's source may not be, so it is read every time.
    cache = ctx.recorded_runs if source.on_miss == "fail" else None
    calls = cache.get(str(source.run_id)) if cache is not None else None
    first = call.purpose == "step" and call.attempt <= 1
    served: list[ExchangeKey] = []
    live = False
    if calls is None or not first or source.on_miss == "live":
        async with read_transaction(ctx.sessions) as session:
            if calls is None:
                rows = await recorded_calls_txn(session, source.run_id)
                calls = [_recorded(row) for row in rows]
                if cache is not None:
                    cache.put(str(source.run_id), calls)
            if not first:
                served = await served_exchanges_txn(session, run_id, site)
            live = source.on_miss == "live" and await has_live_calls_txn(session, run_id)
    here = [c for c in calls if (c.purpose, c.step_number) == site]
    return ReplayRecords(exchanges_of(here or calls), Counter(served)), live


async def client_for(
    ctx: EngineContext, run: RunRecord, call: CallContext, inner: LLMClient
) -> LLMClient:
    """The client for one call site of ``run`` (a step, the planner, a revision): ``inner``
    itself, the replaying wrapper around it, or (a run that uses it) the response cache."""
    source = replay_source(run)
    if source is None:
        return with_response_cache(ctx, run.options, call, inner)
    return await wrap_for(ctx, source, run.id, call, inner)


async def wrap_for(
    ctx: EngineContext,
    source: ReplaySource,
    run_id: uuid.UUID,
    call: CallContext,
    inner: LLMClient,
) -> LLMClient:
    """``inner`` wrapped to serve ``call`` from ``source``'s records."""
    records, live = await load_replay_records(ctx, source, run_id, call)
    return ReplayingLLMClient(inner, records, call, on_miss=source.on_miss, live=live)
