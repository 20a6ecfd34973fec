"""Per-key limits: a request rate (token bucket, per process) and the runs a key may have in
flight (counted in the database when a run is created)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent_engine.access_errors import RateLimitedError, TooManyRunsError
from agent_engine.storage.api_keys import count_runs_in_flight_txn
from agent_engine.storage.database import read_transaction

MAX_BUCKETS = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per principal name: ``burst`` requests at once, refilled at ``per_s``.

    Kept in this process's memory: N API processes allow N times the rate in total.
    """

    def __init__(
        self, *, per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._per_s = per_s
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, name: str) -> None:
        """Spend one request of ``name``'s; :class:`RateLimitedError` when none is left."""
        now = self._clock()
        bucket = self._buckets.get(name)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                # Forgetting every bucket only ever refills them: never stricter than the limit.
                self._buckets.clear()
            bucket = self._buckets[name] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._per_s)
        bucket.at = now
        if bucket.tokens < 1.0:
            retry_after = max(1, math.ceil((1.0 - bucket.tokens) / self._per_s))
            raise RateLimitedError(
                f"{name!r} may make {self._per_s:g} requests per second "
                f"(bursts of {self._burst:g}); retry in {retry_after} s",
                retry_after_s=retry_after,
            )
        bucket.tokens -= 1.0


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class RunAdmission:
    """Refuses a new run when its creator already has ``limit`` runs not yet over.

    Creations by one name are taken one at a time in this process, so that two concurrent ones
    cannot both see room for one; across processes the count may overshoot by the number of
    creations racing at the same instant.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, limit: int) -> None:
        self._sessions = sessions
        self._limit = limit
        self._slots: dict[str, _Slot] = {}

    @asynccontextmanager
    async def admit(self, name: str) -> AsyncIterator[None]:
        """Hold ``name``'s slot while the block creates its run (no limit: no query at all)."""
        if self._limit <= 0:
            yield
            return
        slot = self._slots.setdefault(name, _Slot())
        slot.users += 1
        try:
            async with slot.lock:
                async with read_transaction(self._sessions) as session:
                    in_flight = await count_runs_in_flight_txn(session, name)
                if in_flight >= self._limit:
                    raise TooManyRunsError(
                        f"{name!r} has {in_flight} runs in flight and may have {self._limit}; "
                        "wait for one to finish or cancel one",
                        in_flight=in_flight,
                        limit=self._limit,
                    )
                yield
        finally:
            slot.users -= 1
            if slot.users == 0:  # nobody holds or awaits it: names do not pile up
                del self._slots[name]
