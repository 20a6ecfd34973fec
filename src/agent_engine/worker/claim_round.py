"""A claim round: in one transaction, lock runs that have work (``FOR UPDATE SKIP LOCKED``),
claim their ready steps (or take a run to plan), and write all their change sets in one call."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.adaptive import revision_due
from agent_engine.domain.clock import utcnow
from agent_engine.domain.records import ChangeSet
from agent_engine.domain.states import RunStatus
from agent_engine.engine.claiming import Claim, OutputReader, claim_ready, lease_until
from agent_engine.engine.context import EngineContext, lazy_llm
from agent_engine.storage.claims import lock_claimable_runs_txn
from agent_engine.storage.runs import load_open_steps_of_runs_txn, outputs_txn


@dataclass
class ClaimRound:
    """What a round took: steps to run, runs to plan (id, whether a dead planner's), the change
    sets it wrote (as committed, once the transaction commits) and how many runs it locked."""

    claims: list[Claim] = field(default_factory=list)
    plans: list[tuple[str, bool]] = field(default_factory=list)
    revisions: list[str] = field(default_factory=list)  # adaptive runs waiting for a revision
    written: list[ChangeSet] = field(default_factory=list)
    locked: int = 0


def _reader(session: AsyncSession, run_id: uuid.UUID) -> OutputReader:
    """Stored outputs of one run, read in the claim round's transaction."""

    async def read(numbers: set[int] | None) -> dict[int, Any]:
        return await outputs_txn(session, run_id, numbers)

    return read


async def claim_round_txn(
    ctx: EngineContext,
    session: AsyncSession,
    *,
    owner: str,
    free: int,
    lease: timedelta,
    step_types: frozenset[str],
) -> ClaimRound:
    """Claim up to ``free`` steps (or runs to plan) in the caller's transaction."""
    taken = ClaimRound()
    llm = lazy_llm(ctx, None)
    now = utcnow()
    runs = await lock_claimable_runs_txn(
        session, now=now, limit=free, step_types=sorted(step_types)
    )
    taken.locked = len(runs)
    open_steps = await load_open_steps_of_runs_txn(session, [run.id for run in runs])
    for run in runs:
        changes = ChangeSet(run, open_steps[run.id])
        status = RunStatus(run.status)
        if status in (RunStatus.CREATED, RunStatus.PLANNING):
            run.claimable_at = lease_until(now, lease)  # the planner's lease
            if revision_due(run) is not None:
                taken.revisions.append(str(run.id))
            else:
                taken.plans.append((str(run.id), status is RunStatus.PLANNING))
        else:
            taken.claims.extend(
                await claim_ready(
                    ctx,
                    changes,
                    _reader(session, run.id),
                    owner=owner,
                    limit=free - len(taken.plans) - len(taken.revisions) - len(taken.claims),
                    lease=lease,
                    llm=llm,
                    step_types=step_types,
                )
            )
        if not changes.is_empty():
            taken.written.append(changes)
    await ctx.changes.apply_in(session, taken.written)
    return taken
