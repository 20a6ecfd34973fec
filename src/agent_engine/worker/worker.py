"""The worker: claim ready steps, execute them concurrently, heartbeat their leases, record.

Any number of workers on any number of hosts coordinate through the database alone: a run's row
lock (``FOR UPDATE SKIP LOCKED``) decides who claims its steps, leases with fencing tokens decide
whose result counts, and LISTEN/NOTIFY wakes idle workers (polling is only the fallback).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError

from agent_engine.config import Settings
from agent_engine.domain.states import RunStatus, StepStatus
from agent_engine.engine.claiming import (
    Claim,
    ClaimConflictError,
    LockedRun,
    NewRunClaim,
    claim_from_locked_runs_txn,
    claim_ready_txn,
    lease_until,
)
from agent_engine.engine.context import EngineContext, lazy_llm
from agent_engine.engine.hot_path import KnownRuns, detached_copy, mark_written
from agent_engine.engine.planner import plan_run
from agent_engine.engine.settle import settle_run_txn
from agent_engine.engine.stepping import (
    ContinueWith,
    Recording,
    StepResult,
    lock_claimed_txn,
    run_claimed,
    start_recording,
)
from agent_engine.errors import EngineError, StaleFenceError
from agent_engine.storage.audit import take_notices
from agent_engine.storage.claims import extend_leases_txn, lock_claimable_runs_txn
from agent_engine.storage.collecting import CollectingSession, NeedsDatabase
from agent_engine.storage.database import transaction
from agent_engine.storage.notifications import RunNotice
from agent_engine.storage.runs import list_steps_txn
from agent_engine.storage.tables import AgentRun, Step
from agent_engine.storage.transitions import move_step_txn
from agent_engine.storage.types import utcnow

logger = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class WorkerOptions:
    worker_id: str = field(default_factory=default_worker_id)
    concurrency: int = 4
    step_types: frozenset[str] = frozenset()
    lease_s: float = 30.0
    poll_s: float = 2.0
    shutdown_grace_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> WorkerOptions:
        """Options from ``AGENT_ENGINE_WORKER_*``; explicit overrides (CLI flags) win."""
        values: dict[str, Any] = {
            "concurrency": settings.worker_concurrency,
            "lease_s": settings.worker_lease_s,
            "poll_s": settings.worker_poll_s,
            "shutdown_grace_s": settings.worker_shutdown_grace_s,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class _Inflight:
    claim: Claim
    cancel: asyncio.Event
    task: asyncio.Task[None]
    # False while the write that claimed the step may still be committing (the step started
    # early): a heartbeat would not find the lease yet, and must not take that for a lost claim.
    confirmed: bool = True


@dataclass(frozen=True)
class _Next:
    """What a worker task executes next, and the recording whose write claimed it, when the
    step starts before that write committed."""

    claim: Claim
    cancel: asyncio.Event
    claimed_by: Recording | None = None


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
        self._stop: asyncio.Event | None = None
        self._lease = timedelta(seconds=self.options.lease_s)
        self._recheck = asyncio.Event()  # a slot freed up, or a timer for claimable work fired
        self._timer: asyncio.TimerHandle | None = None
        self.claim_rounds = 0  # for the log line at shutdown
        self._work_waiting = True  # look once at start
        # The runs this worker executes, as it last wrote them: recording goes without reading.
        self.known_runs = KnownRuns()

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

    async def claim_new(self, run: AgentRun, steps: list[Step]) -> NewRunClaim | None:
        """A run about to be created in this process: when its first steps are ready now and a
        slot is free, claim them (on copies of its rows) so that they are written with it.

        Nothing is read: the run is new, so what the creator holds is the whole truth. Its
        notification then says its next step is due when the claimed lease ends, so no claim
        round looks for it now.
        """
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
        claimed_run = detached_copy(run)
        claimed_steps = [detached_copy(step) for step in steps]
        collected = CollectingSession()
        self._reserved += limit  # while the claim is worked out (an approval's preview may wait)
        try:
            claims = await claim_ready_txn(
                self.ctx,
                collected,
                claimed_run,
                claimed_steps,
                owner=self.id,
                limit=limit,
                lease=self._lease,
                llm=lazy_llm(self.ctx, None),
                step_types=self.options.step_types,
            )
        except (NeedsDatabase, EngineError):
            return None  # the run goes as created; its notification brings it to a claim round
        finally:
            self._reserved -= limit
        if not collected.audit_rows:
            return None  # nothing this worker may take
        self._reserved += len(claims)  # until ``started``
        return NewRunClaim(claimed_run, claimed_steps, collected, claims)

    def started(self, taken: NewRunClaim, *, written: bool) -> None:
        """The run claimed by ``claim_new`` was written (or not, and nothing was claimed)."""
        self._reserved -= len(taken.claims)
        if not written:
            return
        # A copy again: the creator answers its caller with the instances it wrote.
        self.known_runs.adopt(taken.run, taken.steps)
        for claim in taken.claims:
            self._spawn(claim)
        if taken.claims and self.inflight >= self.options.concurrency:
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
        claims: list[Claim] = []
        plans: list[tuple[str, bool]] = []
        llm = lazy_llm(self.ctx, None)
        written: list[LockedRun] = []
        try:
            async with transaction(self.ctx.sessions) as session:
                now = utcnow()
                runs = await lock_claimable_runs_txn(
                    session, now=now, limit=free, step_types=sorted(self.options.step_types)
                )
                stepping = []
                for run in runs:
                    status = RunStatus(run.status)
                    if status in (RunStatus.CREATED, RunStatus.PLANNING):
                        run.claimable_at = lease_until(now, self._lease)  # the planner's lease
                        plans.append((str(run.id), status is RunStatus.PLANNING))
                    else:
                        stepping.append(run)
                taken, written = await claim_from_locked_runs_txn(
                    self.ctx,
                    session,
                    stepping,
                    owner=self.id,
                    limit=free - len(plans),
                    lease=self._lease,
                    llm=llm,
                    step_types=self.options.step_types,
                )
                claims.extend(taken)
        except (DBAPIError, ClaimConflictError) as exc:
            # Lost a race the database settled (deadlock victim, serialization): try again soon.
            logger.warning("claim round failed: %s", getattr(exc, "orig", exc))
            return False
        for locked in written:
            mark_written(locked.run, locked.steps)
            self.known_runs.remember(locked.run, locked.steps)
            self.ctx.publish_locally(take_notices(locked.collected.info))
        for claim in claims:
            self._spawn(claim)
        for run_id, resume in plans:
            self._start_planning(run_id, resume)
        return len(runs) >= free or len(claims) + len(plans) >= free

    def _spawn(self, claim: Claim) -> None:
        cancel = asyncio.Event()
        task = asyncio.create_task(self._execute(claim, cancel))
        self._inflight[claim.step_id] = _Inflight(claim, cancel, task)

    def _start_planning(self, run_id: str, resume: bool) -> None:
        async def plan() -> None:
            try:
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
        current: _Next | None = _Next(claim, cancel)
        while current is not None:
            current = await self._execute_one(current)

    def _may_start_early(self, claim: Claim) -> bool:
        """Whether ``claim`` may start before the write that made it commits: its executor is
        free to repeat, and the write leaves this process's interpreter free meanwhile."""
        executor = self.ctx.registry.get(claim.step_type)
        return (
            executor is not None
            and executor.may_start_early
            and claim.prior_intent is None
            and self.ctx.run_changes.works_elsewhere
        )

    async def _execute_one(self, current: _Next) -> _Next | None:
        """Execute one claimed step and record it; what this task does next.

        A step that is free to repeat (``may_start_early``) starts while the write that claimed
        it is still committing; its result is recorded only once that write committed, and is
        forgotten when it did not (then the claims the locking path made go on instead).
        """
        claim = current.claim
        following: list[Claim] = []  # this slot goes straight to the run's next step
        early: Recording | None = None  # the write this task's next step starts ahead of
        try:
            result = await run_claimed(self.ctx, claim, cancel=current.cancel)
            if result is not None:
                following, early = await self._record(claim, result, current.claimed_by)
            for next_claim in following[1:]:
                self._spawn(next_claim)
        except StaleFenceError as exc:
            # A newer attempt owns the step (our lease lapsed): our result must not count.
            logger.warning("result of step %s refused: %s", claim.step_id, exc.detail)
        except (DBAPIError, OSError) as exc:
            # The database is unreachable: the lease will lapse and another worker retries.
            logger.error("step %s could not be recorded: %s", claim.step_id, exc)
        finally:
            item = self._inflight.pop(claim.step_id, None)
            if not following:
                self._recheck.set()
        if not following:
            return None
        if item is None:  # not registered (cannot happen): never leave a claimed step behind
            self._spawn(following[0])
            return None
        upcoming = _Next(following[0], asyncio.Event(), claimed_by=early)
        self._inflight[upcoming.claim.step_id] = _Inflight(
            upcoming.claim, upcoming.cancel, item.task, confirmed=early is None
        )
        if early is not None and early.written is not None:
            early.written.add_done_callback(lambda _: self._confirm(upcoming.claim))
        return upcoming

    async def _record(
        self, claim: Claim, result: StepResult, claimed_by: Recording | None
    ) -> tuple[list[Claim], Recording | None]:
        """Record a result with the run's next steps claimed; the claims, and the recording when
        the first may start before its write commits (the only claim, free to repeat).

        A step that started early (``claimed_by``) is recorded on top of the write that claimed
        it; when that write did not commit, the claim never existed: its result is forgotten,
        the earlier result goes through the locking path, and the claims made there go on."""
        # This task's slot frees up as it records: it may take the run's next steps.
        then = ContinueWith(
            owner=self.id,
            limit=self.options.concurrency - self.inflight + 1,
            lease=self._lease,
            llm=lazy_llm(self.ctx, None),
            step_types=self.options.step_types,
            known=self.known_runs,
        )
        recording = await start_recording(
            self.ctx, claim, result, actor=self.id, then=then, claimed_by=claimed_by
        )
        if recording is None:
            assert claimed_by is not None
            return await claimed_by.confirmed(), None
        early = None
        following = recording.claims
        if recording.in_flight and len(following) == 1 and self._may_start_early(following[0]):
            early = recording
        else:
            following = await recording.confirmed()
        if len(following) >= then.limit:
            self._work_waiting = True  # the run may have more ready steps than we took
        return following, early

    def _confirm(self, claim: Claim) -> None:
        """The write that claimed this step settled: heartbeats look after its lease again (and
        cancel the step if that write did not claim it after all)."""
        item = self._inflight.get(claim.step_id)
        if item is not None and item.claim is claim:
            item.confirmed = True

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        interval = self.options.lease_s / 3
        while True:
            await asyncio.sleep(interval)
            fences = {
                sid: item.claim.fence for sid, item in self._inflight.items() if item.confirmed
            }
            if not fences:
                continue
            try:
                async with transaction(self.ctx.sessions) as session:
                    held = await extend_leases_txn(
                        session, self.id, fences, lease_until(utcnow(), self._lease)
                    )
            except DBAPIError as exc:
                logger.warning("heartbeat failed: %s", exc.orig)
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
            await self._release(item.claim)
        for task in list(self._planning):
            task.cancel()

    async def _release(self, claim: Claim) -> None:
        """Hand an unfinished step back (RUNNING → PENDING) so another worker takes it at once."""
        try:
            async with transaction(self.ctx.sessions) as session:
                run, step = await lock_claimed_txn(session, claim)
                step.lease_owner = None
                step.lease_expires_at = None
                move_step_txn(
                    session,
                    run,
                    step,
                    StepStatus.PENDING,
                    actor=self.id,
                    reason="worker shutdown",
                    fence=claim.fence,
                )
                settle_run_txn(session, run, await list_steps_txn(session, run.id), actor=self.id)
        except StaleFenceError:
            return  # no longer ours: nothing to hand back
        except (DBAPIError, EngineError) as exc:
            logger.error("could not release step %s: %s", claim.step_id, exc)
