"""Deciding under a run's lock: read the run and its steps as records, let the caller decide,
write the change set, commit — one transaction (the path for every change not made by a worker
from the state it already holds)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.records import ChangeSet, StepRecord
from agent_engine.engine.claiming import OutputReader
from agent_engine.engine.context import EngineContext
from agent_engine.errors import NotFoundError
from agent_engine.storage.database import transaction
from agent_engine.storage.runs import load_run_txn, load_steps_txn, outputs_txn, parse_step_id


@dataclass
class Locked:
    """A run held for a decision: its records (in ``changes``) and a way to read outputs."""

    changes: ChangeSet
    read: OutputReader
    session: AsyncSession  # for reads beyond the run's records (approvals, plans)

    def step(self, step_id: str) -> StepRecord:
        """The run's step with id ``step_id`` (NotFoundError, also for a malformed id)."""
        found = self.changes.step(parse_step_id(step_id))
        if found is None:
            run_id = str(self.changes.run.id)
            raise NotFoundError(
                f"run {run_id} has no step with id {step_id!r}", run_id=run_id, step_id=step_id
            )
        return found


@asynccontextmanager
async def change_run(
    ctx: EngineContext,
    run_id: str | uuid.UUID,
    *,
    open_steps: bool = False,
    also: uuid.UUID | None = None,
) -> AsyncIterator[Locked]:
    """Lock the run, load it with its steps (``open_steps``: only the unfinished ones, plus
    ``also``), and write what the caller changed when the block ends without an error. An error
    leaves everything as it was."""
    async with transaction(ctx.sessions) as session:
        run = await load_run_txn(session, run_id, lock=True)
        steps = await load_steps_txn(session, run.id, open_only=open_steps, also=also)
        changes = ChangeSet(run, steps)

        async def read(numbers: set[int] | None) -> dict[int, Any]:
            return await outputs_txn(session, run.id, numbers)

        yield Locked(changes, read, session)
        if not changes.is_empty():
            (applied,) = await ctx.changes.apply_in(session, [changes])
            if not applied:  # the lock makes this impossible: refuse rather than half-write
                raise RuntimeError(f"run {run.id} changed while locked")
