"""The model client a claimed step gets: routed, held to its budgets, replayed, pinned.

From the inside out: the router (built only if the step calls a model); the budget wrapper
when any budget may apply (``llm/budgeted.py``); the replay wrapper for a replay or a fork from
records, else the response cache when the run asks for it (a cache hit reserves nothing); the
fork's model pin. The pin goes outside the replay wrapper: a step whose model a fork
changed asks for another model, which is not what was recorded, so it runs live. Replayed calls
cost nothing, so the budget wrapper sits inside the replay wrapper and never sees them.
"""

from __future__ import annotations

from agent_engine.engine.budget_gate import RunBudgetGate
from agent_engine.engine.claiming import Claim
from agent_engine.engine.context import EngineContext, lazy_llm
from agent_engine.engine.replay_calls import wrap_for
from agent_engine.engine.response_cache import with_response_cache
from agent_engine.llm.base import CallContext, LLMClient
from agent_engine.llm.budgeted import BudgetedLLMClient
from agent_engine.llm.model_hint import ModelHintClient


async def step_clients(ctx: EngineContext, claim: Claim) -> tuple[LLMClient, LLMClient]:
    """The client whose ``calls`` the step records, and the client its executor is given."""
    llm: LLMClient = lazy_llm(ctx, None)
    if claim.budget.may_apply:
        gate = RunBudgetGate(
            ctx,
            claim.budget,
            purpose="step",
            step_id=claim.step_id,
            attempt=claim.attempt,
            fence=claim.fence,
            settle_beside=True,
        )
        llm = BudgetedLLMClient(llm, gate, saver_below=ctx.settings.routing_saver_below)
    call = CallContext(str(claim.run_id), claim.step_number, claim.attempt, "step")
    if claim.replay is not None:
        llm = await wrap_for(ctx, claim.replay, claim.run_id, call, llm)
    else:  # a replay is served from its original's records, never from the cache
        llm = with_response_cache(ctx, claim.options, call, llm)
    client = ModelHintClient(llm, claim.model) if claim.model else llm
    return llm, client
