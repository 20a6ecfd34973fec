"""Settling a step's model calls beside its write instead of before it.

A step's call has already been made and priced when its hold is settled, so nothing the step
does next depends on the settle: the worker's write of the result need not wait for it. Each
settle runs as a task this process tracks, and is awaited where its outcome is read:

- a reservation that does not fit waits for this process's settles first (a finished call's
  hold still holds its worst case until settled: without the wait a call that fits could be
  refused);
- the write that ends a run, and a step recorded by hand (``POST …/execute``), wait for the
  run's own settles, so a finished run's counters are final;
- the process waits for them all when it stops.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

logger = logging.getLogger(__name__)


class PendingSettles:
    """The settles this process started and has not yet seen finish, by run."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Future[None], uuid.UUID | None] = {}

    def track(self, run_id: uuid.UUID | None, task: asyncio.Future[None]) -> None:
        """Keep ``task`` (a settle running in the background) until it finishes; its failure is
        logged (the hold then lapses and is released when its step's lease does, see
        ``engine/budgets.py``)."""
        self._tasks[task] = run_id
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Future[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("a budget settle failed: %s", task.exception())

    def pending(self, run_id: uuid.UUID | None = None) -> int:
        """How many are still running (of ``run_id``'s, or all)."""
        return sum(1 for owner in self._tasks.values() if run_id is None or owner == run_id)

    async def wait(self, run_id: uuid.UUID | None = None, timeout_s: float | None = None) -> None:
        """Until every settle started so far (of ``run_id``'s, or all) has finished."""
        tasks = [t for t, owner in self._tasks.items() if run_id is None or owner == run_id]
        if tasks:
            # asyncio.wait, not gather: a waiter that is cancelled must not cancel the settles.
            # A settle's own failure was logged by its callback; it does not fail the waiter.
            await asyncio.wait(tasks, timeout=timeout_s)
