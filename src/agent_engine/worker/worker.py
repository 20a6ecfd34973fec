"""The worker: claim ready steps, execute them concurrently, heartbeat their leases, record.

Any number of workers on any number of hosts coordinate through the database alone: a run's row
lock (``FOR UPDATE SKIP LOCKED``) decides who claims its steps, leases with fencing tokens decide
whose result counts, and LISTEN/NOTIFY wakes idle workers (polling is only the fallback).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError

from agent_engine import metrics
from agent_engine.domain.clock import utcnow
from agent_engine.domain.records import ChangeSet, copy_changes
from agent_engine.domain.states import RunStatus
from agent_engine.engine.claiming import Claim, claim_ready, lease_until
from agent_engine.engine.context import EngineContext, lazy_llm
from agent_engine.engine.planner import plan_run
from agent_engine.engine.revisions import revise_run
from agent_engine.engine.step_logs import step_log_context
from agent_engine.engine.stepping import ContinueWith, StepResult, run_claimed
from agent_engine.errors import EngineError, StaleFenceError
from agent_engine.storage.claims import extend_leases_txn
from agent_engine.storage.database import transaction
from agent_engine.storage.notifications import RunNotice
from agent_engine.worker.claim_round import claim_round_txn
from agent_engine.worker.early_start import Recording
from agent_engine.worker.known_runs import KnownRuns
from agent_engine.worker.leases import release_step
from agent_engine.worker.options import WorkerOptions
from agent_engine.worker.presence import Presence
from agent_engine.worker.recording import record_and_claim

__all__ = ["Worker", "WorkerOptions"]

logger = logging.getLogger(__name__)
CLAIM_RETRY_S = 0.5  # after a claim round the database refused


@dataclass
class _Inflight:
    claim: Claim
    cancel: asyncio.Event
    task: asyncio.Task[None]
    # The write that claimed the step, while the step runs before it committed (early start).
    claimed_by: Recording | None = None


async def _no_outputs(_numbers: set[int] | None) -> dict[int, Any]:
    return {}  # a run not written yet has none


class Worker:
    """One worker process's loop; ``run`` returns after ``stop`` is set and in-flight work is
    finished or handed back."""

    def __init__(self, ctx: EngineContext, options: WorkerOptions | None = None) -> None:
        self.ctx = ctx
        self.options = options or WorkerOptions()
        self.id = self.options.worker_id
        self._inflight: dict[uuid.UUID, _Inflight] = {}
        self._planning: set[asyncio.Task[None]] = set()
        self._reserved = 0  # slots of steps claimed for runs created here, not yet written
        self._new_claims: dict[uuid.UUID, list[Claim]] = {}  # by run, until ``started``
        self._stop: asyncio.Event | None = None
        self._lease = timedelta(seconds=self.options.lease_s)
        self._recheck = asyncio.Event()  # a slot freed up, or a timer for claimable work fired
        self._timer: asyncio.TimerHandle | None = None
        self.claim_rounds = 0  # for the log line at shutdown
        self.early_starts = 0  # steps started before the write that claimed them committed
        self._work_waiting = True  # look once at start
        # The runs this worker executes, as it last wrote them: recording goes without reading.
        self.known_runs = KnownRuns()
        self._presence = Presence(ctx, self.id, self.options.concurrency, self.options.lease_s)

    @property
    def inflight(self) -> int:
        return len(self._inflight) + len(self._planning) + self._reserved

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and execute until ``stop``; then drain within the shutdown grace period."""
        self._stop = stop
        self.ctx.hand_off = self
        # Notifications are judged as they arrive: only news wakes the loop.
        async with self.ctx.notifier.subscribe(accept=self._on_event) as wakeups:
            heartbeat = asyncio.create_task(self._heartbeat_loop(stop))
            try:
                while not stop.is_set():
                    if self._work_waiting and self.inflight < self.options.concurrency:
                        # A round that filled every free slot may have left work behind.
                        self._work_waiting = await self._claim_round()
                    else:
                        await self._idle(wakeups, stop)
            finally:
                if self.ctx.hand_off is self:
                    self.ctx.hand_off = None
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
                await self._drain()
                await self._presence.gone()

    async def claim_new(self, changes: ChangeSet) -> ChangeSet | None:
        """A run about to be created in this process: when its first steps are ready now and a
        slot is free, claim them in a copy of its change set, to be written instead of it.

        Nothing is read: the run is new, so its change set is the whole truth. Its notification
        then says its next step is due when the claimed lease ends, so no claim round looks for
        it now.
        """
        run = changes.run
        limit = self.options.concurrency - self.inflight
        ready = run.claimable_at is not None and run.claimable_at <= utcnow()
        if (
            not ready
            or limit <= 0
            or run.status != RunStatus.PLANNED
            or self._stop is None
            or self._stop.is_set()
        ):
            return None
        claimed = copy_changes(changes)
        events_before = len(claimed.events())
        self._reserved += limit  # while the claim is worked out (an approval's preview may wait)
        try:
            claims = await claim_ready(
                self.ctx,
                claimed,
                _no_outputs,
                owner=self.id,
                limit=limit,
                lease=self._lease,
                llm=lazy_llm(self.ctx, None),
                step_types=self.options.step_types,
            )
        except EngineError:
            return None  # the run goes as created; its notification brings it to a claim round
        finally:
            self._reserved -= limit
        if len(claimed.events()) == events_before:
            return None  # nothing this worker may take
        self._reserved += len(claims)  # until ``started``
        self._new_claims[run.id] = claims
        return claimed

    def started(self, taken: ChangeSet, *, written: bool) -> None:
        """The run claimed by ``claim_new`` was written (or not, and nothing was claimed)."""
        claims = self._new_claims.pop(taken.run.id, [])
        self._reserved -= len(claims)
        if not written:
            return
        self.known_runs.remember(taken)
        for claim in claims:
            self._spawn(claim)
        if claims and self.inflight >= self.options.concurrency:
            self._work_waiting = True  # the run may have more ready steps than there were slots

    async def _idle(self, wakeups: asyncio.Queue[str], stop: asyncio.Event) -> None:
        """Sleep until news (a notification ``_on_event`` accepted), a recheck (a freed slot or a
        timer), stop, or the poll interval. News and the poll interval mark work as waiting; a
        freed slot only lets the loop act on work already known to be waiting."""
        self._recheck.clear()
        waiters = [
            asyncio.ensure_future(wakeups.get()),
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._recheck.wait()),
        ]
        done, pending = await asyncio.wait(
            waiters, timeout=self.options.poll_s, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in pending:
            waiter.cancel()
        news = not done  # the poll interval passed: look anyway
        for waiter in done:
            news = isinstance(waiter.result(), str) or news
        while not wakeups.empty():  # many commits, one wake-up
            wakeups.get_nowait()
            news = True
        self._work_waiting = self._work_waiting or news

    def _on_event(self, payload: str) -> bool:
        """Handle a committed change of a run; whether a claim round may find work now.

        A run with nothing claimable is no work. A run whose next step becomes claimable later
        (a lease's end, a retry's backoff) sets a timer for that moment. A run with a step
        claimable now is work, even when this worker wrote that state itself: a retry's short
        backoff may end while the write that scheduled it commits, and when the worker left
        ready steps behind for want of slots, the round waits for a free one anyway. A cancelled
        run's executors are signalled at once instead of at the next heartbeat.
        """
        notice = RunNotice.parse(payload)
        if notice is None:
            return True  # not understood: look anyway
        if notice.status == RunStatus.CANCELLED:
            for item in self._inflight.values():
                if item.claim.run_id == notice.run_id:
                    item.cancel.set()
        if notice.claimable_at is None:
            return False
        delay = notice.claimable_at - time.time()
        if delay > 0:
            self._recheck_in(delay)
            return False
        return True

    def _recheck_in(self, delay: float) -> None:
        """Look for work after ``delay`` seconds (one timer: the earliest wins)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        if self._timer is not None and not self._timer.cancelled() and self._timer.when() <= due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._work_waiting = True
        self._recheck.set()

    async def _claim_round(self) -> bool:
        """One transaction: lock runs with work, claim their ready steps, start tasks.

        Returns whether more work may be waiting (the round used every free slot)."""
        free = self.options.concurrency - self.inflight
        self.claim_rounds += 1
        try:
            async with transaction(self.ctx.sessions) as session:
                round_ = await claim_round_txn(
                    self.ctx,
                    session,
                    owner=self.id,
                    free=free,
                    lease=self._lease,
                    step_types=self.options.step_types,
                )
        except (DBAPIError, OSError) as exc:
            # Lost a race the database settled (deadlock victim, serialization), or the database
            # is out of reach (restarting: a refused connection is an OSError): try again soon.
            logger.warning("claim round failed: %s", getattr(exc, "orig", exc))
            self._recheck_in(CLAIM_RETRY_S)  # soon, not only at the next notice or poll
            return False
        for changes in round_.written:
            self.known_runs.remember(changes)
        for claim in round_.claims:
            self._spawn(claim)
        for run_id, resume in round_.plans:
            self._start_planning(run_id, resume)
        for run_id in round_.revisions:
            self._start_planning(run_id, resume=True, revise=True)
        taken = len(round_.claims) + len(round_.plans) + len(round_.revisions)
        return round_.locked >= free or taken >= free

    def _spawn(self, claim: Claim) -> None:
        cancel = asyncio.Event()
        task = asyncio.create_task(self._execute(claim, cancel))
        self._inflight[claim.step_id] = _Inflight(claim, cancel, task)

    def _start_planning(self, run_id: str, resume: bool, *, revise: bool = False) -> None:
        async def plan() -> None:
            try:
                if revise:
                    await revise_run(self.ctx, run_id, actor=self.id)
                else:
                    await plan_run(self.ctx, run_id, actor=self.id, resume=resume)
            except EngineError as exc:  # e.g. another worker planned it first
                logger.info("planning run %s skipped: %s", run_id, exc.detail)

        task = asyncio.create_task(plan())
        self._planning.add(task)
        task.add_done_callback(self._planning_done)

    def _planning_done(self, task: asyncio.Task[None]) -> None:
        self._planning.discard(task)
        self._recheck.set()

    async def _execute(self, claim: Claim, cancel: asyncio.Event) -> None:
        """Execute ``claim``, record it, and go on in this task with the first of the run's next
        steps the recording claimed (the others get tasks of their own)."""
        current: Claim | None = claim
        claimed_by: Recording | None = None
        while current is not None:
            current, cancel, claimed_by = await self._execute_one(current, cancel, claimed_by)

    async def _execute_one(
        self, claim: Claim, cancel: asyncio.Event, claimed_by: Recording | None
    ) -> tuple[Claim | None, asyncio.Event, Recording | None]:
        """Execute one claimed step and record it; the step this task executes next (and, when
        it starts early, the write that claimed it)."""
        following: list[Claim] = []  # this slot goes straight to the run's next step
        early: Recording | None = None
        with step_log_context(claim):
            try:
                result = await run_claimed(self.ctx, claim, cancel=cancel)
                if result is not None:
                    following, early = await self._record(claim, result, claimed_by)
                    metrics.observe_step(claim.step_type, bool(result.error), result.latency_ms)
                for next_claim in following[1:]:
                    self._spawn(next_claim)
            except StaleFenceError as exc:
                # A newer attempt owns the step (our lease lapsed): our result must not count.
                logger.warning("result of step %s refused: %s", claim.step_id, exc.detail)
            except (DBAPIError, OSError) as exc:
                # The database is unreachable: the lease will lapse and another worker retries.
                logger.error("step %s could not be recorded: %s", claim.step_id, exc)
            except Exception:
                # An engine bug must not end this task silently: say so; the lease lapses and the
                # step is claimed again.
                logger.exception("step %s could not be recorded", claim.step_id)
            finally:
                item = self._inflight.pop(claim.step_id, None)
                if not following:
                    self._recheck.set()
        if not following:
            return None, cancel, None
        upcoming = following[0]
        if item is None:  # not registered (cannot happen): never leave a claimed step behind
            self._spawn(upcoming)
            return None, cancel, None
        next_cancel = asyncio.Event()
        self._inflight[upcoming.step_id] = _Inflight(upcoming, next_cancel, item.task, early)
        return upcoming, next_cancel, early

    async def _record(
        self, claim: Claim, result: StepResult, claimed_by: Recording | None
    ) -> tuple[list[Claim], Recording | None]:
        """Record a result with the run's next steps claimed (``worker/recording.py``); this
        task's slot frees up as it records, so it may take the run's next steps."""
        then = ContinueWith(
            owner=self.id,
            limit=self.options.concurrency - self.inflight + 1,
            lease=self._lease,
            llm=lazy_llm(self.ctx, None),
            step_types=self.options.step_types,
        )
        claims, early = await record_and_claim(
            self.ctx, self.known_runs, claim, result, claimed_by, then
        )
        if early is not None:
            self.early_starts += 1
        return self._took(claims, then), early

    def _took(self, claims: list[Claim], then: ContinueWith) -> list[Claim]:
        if len(claims) >= then.limit:
            self._work_waiting = True  # the run may have more ready steps than we took
        return claims

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        interval = self.options.lease_s / 3
        await self._presence.alive()  # at once: `GET /v1/workers` shows it from its start
        while True:
            await asyncio.sleep(interval)
            await self._presence.alive()
            fences = {
                sid: item.claim.fence
                for sid, item in self._inflight.items()
                if item.claimed_by is None or not item.claimed_by.in_flight
            }
            if not fences:
                continue
            try:
                async with transaction(self.ctx.sessions) as session:
                    held = await extend_leases_txn(
                        session, self.id, fences, lease_until(utcnow(), self._lease)
                    )
            except (DBAPIError, OSError) as exc:
                logger.warning("heartbeat failed: %s", getattr(exc, "orig", exc))
                continue
            for step_id in set(fences) - held:
                item = self._inflight.get(step_id)
                if item is not None:
                    item.cancel.set()  # cancelled, or reclaimed by another worker

    async def _drain(self) -> None:
        """Let in-flight steps finish within the grace period; hand the rest back."""
        tasks = [item.task for item in self._inflight.values()] + list(self._planning)
        if tasks:
            await asyncio.wait(tasks, timeout=self.options.shutdown_grace_s)
        leftovers = list(self._inflight.values())
        for item in leftovers:
            # Interrupt without recording a failure: the step is handed back, not failed.
            item.task.cancel()
        for item in leftovers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await item.task
            self.known_runs.forget(item.claim.run_id)
            await release_step(self.ctx, item.claim, actor=self.id)
        for task in list(self._planning):
            task.cancel()
