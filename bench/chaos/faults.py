"""The fault schedule: a seeded timeline over the chaos run's length, then its injection while
the workload runs. Kinds: ``kill -9`` of a random worker (restarted at once), SIGSTOP of a worker
past its lease (then SIGCONT), ``pg_terminate_backend`` of every backend, of only the LISTEN
connections, and restarts of PostgreSQL (at least two)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.chaos.cluster import PrivateCluster
from bench.chaos.processes import LEASE_S, WorkerPool

KILL = "worker kill -9"
PAUSE = "worker SIGSTOP past lease"
TERMINATE = "pg_terminate_backend (all)"
DROP_LISTEN = "LISTEN connection dropped"
RESTART = "PostgreSQL restart"
KINDS = (KILL, PAUSE, TERMINATE, DROP_LISTEN, RESTART)
PAUSE_S = 2 * LEASE_S + 1.5  # well past the lease, so another worker takes the step over


@dataclass(frozen=True, order=True)
class Fault:
    at_s: float
    kind: str


def schedule(duration_s: float, rng: random.Random) -> list[Fault]:
    """The faults of a run of ``duration_s``: kills every few seconds, the rest spread so each
    kind happens at least once (restarts at least twice)."""
    faults: list[Fault] = []
    at = rng.uniform(1.5, 3.0)
    while at < duration_s - 1:
        faults.append(Fault(round(at, 2), KILL))
        at += rng.uniform(2.5, 4.5)

    def spread(kind: str, count: int, first: float, last: float) -> None:
        span = (last - first) * duration_s / max(count, 1)
        for n in range(count):
            start = first * duration_s + n * span
            faults.append(Fault(round(start + rng.uniform(0.1, 0.9) * span, 2), kind))

    spread(RESTART, max(2, int(duration_s // 25)), 0.2, 0.85)
    spread(TERMINATE, max(1, int(duration_s // 30)), 0.1, 0.9)
    spread(DROP_LISTEN, max(1, int(duration_s // 30)), 0.1, 0.9)
    spread(PAUSE, max(1, int(duration_s // 40)), 0.2, 0.7)
    return sorted(faults)


@dataclass
class Injector:
    """Carries out a schedule against the cluster and the workers; counts what it did."""

    cluster: PrivateCluster
    workers: WorkerPool
    rng: random.Random
    log: Callable[[str], None]
    injected: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)  # workers that died on their own
    _resumes: list[asyncio.Task[None]] = field(default_factory=list)

    async def run(self, faults: list[Fault], stop: asyncio.Event) -> None:
        """Inject each fault at its time (seconds from now) until the list or ``stop`` ends."""
        started = time.monotonic()
        for fault in faults:
            wait = fault.at_s - (time.monotonic() - started)
            if wait > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=wait)
                    break
                except TimeoutError:
                    pass
            self.crashes += self.workers.revive_dead()
            try:
                detail = await self._inject(fault.kind)
            except Exception as exc:  # a fault that could not be injected is reported
                self.failures.append(f"{fault.kind} at {fault.at_s}s: {exc!r}")
                continue
            self.injected[fault.kind] += 1
            self.log(f"t={time.monotonic() - started:6.1f}s  {fault.kind}: {detail}")
        await self.resume_all()

    async def _inject(self, kind: str) -> str:
        if kind == KILL:
            slot = self._slot()
            name = await asyncio.to_thread(self.workers.kill_and_restart, slot)
            return f"killed {name}, started {self.workers.workers[slot].name}"
        if kind == PAUSE:
            slot = self._slot()
            name = self.workers.pause(slot)
            self._resumes.append(asyncio.create_task(self._resume_later(slot)))
            return f"stopped {name} for {PAUSE_S:.1f}s (lease {LEASE_S}s)"
        if kind == RESTART:
            seconds = await asyncio.to_thread(self.cluster.restart)
            return f"restarted in {seconds:.1f}s"
        return await self._terminate(listening_only=kind == DROP_LISTEN)

    async def _terminate(self, *, listening_only: bool) -> str:
        # Just after a restart the connections may not be back yet: try again a few times.
        for _ in range(20):
            ended = await self.cluster.terminate_backends(listening_only=listening_only)
            if ended:
                return f"{ended} backends ended"
            await asyncio.sleep(0.25)
        raise RuntimeError("no backend to end")

    def _slot(self) -> int:
        running = [n for n, w in enumerate(self.workers.workers) if not w.paused]
        return self.rng.choice(running)

    async def _resume_later(self, slot: int) -> None:
        await asyncio.sleep(PAUSE_S)
        self.workers.resume(slot)

    async def resume_all(self) -> None:
        """Wait for the pending SIGCONTs (no worker is left stopped)."""
        await asyncio.gather(*self._resumes)
        for slot in range(len(self.workers.workers)):
            self.workers.resume(slot)
