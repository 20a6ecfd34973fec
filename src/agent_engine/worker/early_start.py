"""Starting a step while the write that claimed it commits (PostgreSQL only).

A worker that records step N of a run claims step N+1 in the same write. When N+1 is free to
repeat (its executor declares ``may_start_early``: it changes nothing and calls no model, as
``noop``, ``read_file`` and ``list_files`` do), the worker starts N+1 at once instead of waiting
for that write's commit: the commit's round trip and the next step's work overlap.

What keeps it safe:
- N+1's result is recorded only once N's write committed (the worker waits for it first), on
  the records as N's write left them.
- When N's write does not commit (the run moved on, or the connection broke and its last audit
  event is not stored), N+1's claim never existed: its result is forgotten, N's result is
  recorded under the run's lock, and the claims made there go on. N+1 did nothing to the world
  (that is what ``may_start_early`` promises), so running it again is harmless.
- Steps with side effects, model calls or a previous attempt's effect intent never start early,
  and neither does anything on SQLite, whose writes run in a thread of this process and would
  compete with the step for the interpreter.
- A heartbeat leaves a step alone while the write that claimed it is in flight (its lease is
  not in the database yet).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent_engine.engine.claiming import Claim
from agent_engine.engine.context import EngineContext
from agent_engine.engine.stepping import Recorded, StepResult
from agent_engine.worker.known_runs import Sent


@dataclass(frozen=True)
class Recording:
    """A result whose write is in flight, and the step it claimed: what to record again under
    the lock if that write turns out not to have committed."""

    claim: Claim
    result: StepResult
    sent: Sent[Recorded]

    @property
    def in_flight(self) -> bool:
        return not self.sent.written.done()

    async def committed(self) -> bool:
        return await self.sent.committed()


def may_start_early(ctx: EngineContext, claims: list[Claim]) -> bool:
    """Whether the one step just claimed may start before the write that claimed it commits."""
    if len(claims) != 1 or not ctx.changes.works_elsewhere:
        return False
    executor = ctx.registry.get(claims[0].step_type)
    return executor is not None and executor.may_start_early and claims[0].prior_intent is None
