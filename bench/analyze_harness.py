"""Our engine on the sequential workload made of model-calling steps: ``analyze`` steps answered
by the benchmark's own model server, so what a step costs beyond a no-op step is the engine's
work for a model call (the call, its ledger row, its cost roll-up) plus one loopback round trip.
"""

from __future__ import annotations

import asyncio
import tempfile
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select

from agent_engine.config import Settings
from agent_engine.domain.plan import PlanStep
from agent_engine.engine.context import build_context
from agent_engine.engine.runs import CreateRunRequest
from agent_engine.storage.database import transaction
from agent_engine.storage.migrations import upgrade
from agent_engine.storage.tables import AgentRun, LLMCall, Step
from bench.databases import BenchDatabase
from bench.engine_harness import sequential, settings_for
from bench.model_server import MODEL_ID, ModelServer, ServerCount, measure_round_trips
from bench.results import ModelCallFacts, RoundTrips, SequentialResult

ANALYZE_GOAL = "bench: sequential analyze steps"


def analyze_request(steps: int) -> CreateRunRequest:
    """A run of ``steps`` analyze steps without inputs, each depending on the one before."""
    plan = [
        PlanStep(
            step_type="analyze",
            input_data={"instruction": f"Report on step {number + 1}.", "inputs": []},
        )
        for number in range(steps)
    ]
    return CreateRunRequest(goal=ANALYZE_GOAL, steps=plan, auto_start=True)


async def _facts(
    settings: Settings, served: ServerCount, round_trips: RoundTrips
) -> ModelCallFacts:
    """Read back what the runs recorded: the database is this measurement's alone."""
    ctx = build_context(settings)
    try:
        async with transaction(ctx.sessions) as session:
            steps = await session.scalar(
                select(func.count()).select_from(Step).where(Step.status == "completed")
            )
            calls = (
                await session.execute(
                    select(
                        LLMCall.step_id,
                        LLMCall.cost_usd,
                        LLMCall.input_tokens,
                        LLMCall.output_tokens,
                    )
                )
            ).all()
            runs = (
                await session.execute(
                    select(AgentRun.total_cost_usd, AgentRun.input_tokens, AgentRun.output_tokens)
                )
            ).all()
    finally:
        await ctx.close()
    return ModelCallFacts(
        steps=steps or 0,
        server_answered=served.answered,
        server_refused=served.refused,
        handler_s=served.handler_s,
        llm_call_rows=len(calls),
        steps_with_a_call=len({call.step_id for call in calls if call.step_id is not None}),
        priced_rows=sum(1 for call in calls if call.cost_usd is not None),
        ledger_cost_usd=sum((call.cost_usd or Decimal(0) for call in calls), Decimal(0)),
        run_cost_usd=sum((run.total_cost_usd for run in runs), Decimal(0)),
        ledger_tokens=sum(call.input_tokens + call.output_tokens for call in calls),
        run_tokens=sum(run.input_tokens + run.output_tokens for run in runs),
        round_trips=round_trips,
    )


async def _measure(
    settings: Settings, server: ModelServer, runs: int, steps: int
) -> SequentialResult:
    # The bare round trip first, in this process and event loop, as the engine will make it.
    round_trips = await measure_round_trips(server.base_url)
    before = server.count()
    result = await sequential(settings, analyze_request, runs=runs, steps=steps)
    served = server.count().since(before)
    facts = await _facts(settings, served, round_trips)
    return SequentialResult(
        result.runs, result.steps, result.run_ms, result.latencies, result.profile, facts
    )


def measure_sequential_analyze(
    db: BenchDatabase, server: ModelServer, *, runs: int, steps: int
) -> SequentialResult:
    """``runs`` runs of ``steps`` sequential analyze steps, one at a time, one in-process worker,
    every step one call to ``server`` (the only model in the catalog, pinned)."""
    upgrade(db.engine_url)
    with tempfile.TemporaryDirectory(prefix="ae_bench_models_") as directory:
        catalog = server.write_catalog(Path(directory))
        settings = settings_for(db.engine_url, models_file=catalog, model=MODEL_ID)
        return asyncio.run(_measure(settings, server, runs, steps))
