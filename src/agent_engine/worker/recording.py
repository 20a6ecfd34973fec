"""Recording a worker's result: on the records it holds for the run when it holds them (no read),
else, or when that write is refused, under the run's lock; and going on with a step that may
start before its claim commits (``worker/early_start.py``)."""

from __future__ import annotations

from typing import Any

from agent_engine.domain.records import ChangeSet
from agent_engine.domain.states import RUN_OVER_STATES
from agent_engine.engine.claiming import Claim
from agent_engine.engine.context import EngineContext
from agent_engine.engine.locking import change_run
from agent_engine.engine.stepping import ContinueWith, Recorded, StepResult, decide_result
from agent_engine.storage.database import read_transaction
from agent_engine.storage.runs import outputs_txn
from agent_engine.worker.early_start import Recording, may_start_early
from agent_engine.worker.known_runs import KnownRuns


async def record_and_claim(
    ctx: EngineContext,
    known: KnownRuns,
    claim: Claim,
    result: StepResult,
    claimed_by: Recording | None,
    then: ContinueWith,
) -> tuple[list[Claim], Recording | None]:
    """Record ``result`` and claim the run's next steps; the claims, and the recording when the
    first may start before its write commits.

    ``claimed_by``: the write that claimed this step, when it started early; if that write did
    not commit, this result is forgotten and that write's result is recorded under the lock
    instead (its claims go on). Raises StaleFenceError when the claim is no longer ours (after
    its model calls are written to the ledger).
    """
    if claimed_by is not None and not await claimed_by.committed():
        # This step started early on a claim that was never written.
        recorded = await _record_locked(ctx, known, claimed_by.claim, claimed_by.result, then)
        return recorded.accepted(), None

    async def read_stored(numbers: set[int] | None) -> dict[int, Any]:
        async with read_transaction(ctx.sessions) as session:
            return await outputs_txn(session, claim.run_id, numbers)

    async def decide(changes: ChangeSet) -> Recorded:
        recorded = await decide_result(
            ctx, changes, read_stored, claim, result, actor=then.owner, then=then
        )
        if changes.run.status in RUN_OVER_STATES:
            # A finished run's budget counters are final: its settles land before it ends.
            # (No database lock is held here, so a settle that writes to the run goes on.)
            await ctx.settles.wait(claim.run_id)
        return recorded

    sent = await known.send(ctx.changes, ctx.sessions, claim.run_id, decide)
    if sent is not None:
        claims = sent.result.claims
        if sent.result.refused is None and may_start_early(ctx, claims):
            return claims, Recording(claim, result, sent)
        if await sent.committed():
            return sent.result.accepted(), None
    recorded = await _record_locked(ctx, known, claim, result, then)
    return recorded.accepted(), None


async def _record_locked(
    ctx: EngineContext, known: KnownRuns, claim: Claim, result: StepResult, then: ContinueWith
) -> Recorded:
    # Before the lock, whether or not this write ends the run: a settle that crosses an alert
    # threshold writes to the run, so waiting for it under the run's lock would never end.
    await ctx.settles.wait(claim.run_id)
    async with change_run(ctx, claim.run_id, open_steps=True, also=claim.step_id) as locked:
        recorded = await decide_result(
            ctx, locked.changes, locked.read, claim, result, actor=then.owner, then=then
        )
    known.remember(locked.changes)
    return recorded
