"""Writing a run made from another one (a replay, a fork): one insert, handed to this process's
worker in that very write when there is one."""

from __future__ import annotations

from agent_engine.domain.records import ChangeSet
from agent_engine.engine.context import EngineContext
from agent_engine.engine.runs import RunView


async def insert_new_run(ctx: EngineContext, changes: ChangeSet) -> RunView:
    """Insert the new run, handing it to this process's worker when there is one; the run as
    written (claimed, when the worker took it)."""
    local = ctx.hand_off
    taken = await local.claim_new(changes) if local is not None else None
    written = False
    try:
        await ctx.changes.insert(taken or changes)
        written = True
    finally:
        if taken is not None and local is not None:
            local.started(taken, written=written)
    final = taken or changes
    return RunView(final.run, final.steps)
