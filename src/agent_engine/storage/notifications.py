"""Wake-ups when audit events commit: in-process delivery at once, and PostgreSQL LISTEN/NOTIFY
across processes. Subscribers re-read the audit log, so a dropped notification delays a reader
but never loses an event.

One notification per run per committed transaction, saying how the run stands after it:
``"<run_id> <audit_seq> <status> <claimable_at as epoch seconds, or ->"``. Workers use it to wake
exactly when a run has a step to claim (now, or later: a lease's end, a retry's backoff); streams
use the run id.

On PostgreSQL the notifier LISTENs over one connection of the engine's own pool, kept checked out
for its life. When that connection drops it is re-opened (with backoff, for as long as the notifier
is open), and subscribers are then told to look again: notifications sent while it was down are
lost, so everyone re-reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tenacity import AsyncRetrying, before_sleep_log, wait_exponential_jitter

from agent_engine import metrics

CHANNEL = "agent_engine_events"
NOTHING_CLAIMABLE = "-"
# Published after the LISTEN connection was re-opened: not a run notice, so every subscriber takes
# it as "something may have changed" and re-reads (a worker runs a claim round, a stream reads).
LOOK_AGAIN = "*"
REOPEN_INITIAL_S = 0.05
REOPEN_MAX_S = 5.0
QUEUE_SIZE = 10_000
DELIVERED_RUNS = 4096  # runs whose last delivered seq is remembered (to drop the echo)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunNotice:
    """What a notification says about one run after a commit."""

    run_id: uuid.UUID
    seq: int  # the run's audit_seq: every event up to it is committed
    status: str
    claimable_at: float | None  # when a worker may claim a step of it (epoch seconds)

    def payload(self) -> str:
        claimable = NOTHING_CLAIMABLE if self.claimable_at is None else repr(self.claimable_at)
        return f"{self.run_id} {self.seq} {self.status} {claimable}"

    @classmethod
    def parse(cls, payload: str) -> RunNotice | None:
        """The notice, or None for a payload this version does not understand."""
        try:
            run_id, seq, status, claimable = payload.split(" ")
            when = None if claimable == NOTHING_CLAIMABLE else float(claimable)
            return cls(uuid.UUID(run_id), int(seq), status, when)
        except ValueError:
            return None

    @classmethod
    def of(
        cls, run_id: uuid.UUID, seq: int, status: str, claimable_at: datetime | None
    ) -> RunNotice:
        return cls(run_id, seq, status, claimable_at.timestamp() if claimable_at else None)


class Notifier:
    """Fan-out of event notifications to any number of in-process subscribers.

    A commit made in this process is announced at once, in-process; on PostgreSQL the same commit
    also comes back through LISTEN (it is how other processes learn of it). Each run's state is
    delivered once: a notice whose ``audit_seq`` was already delivered for its run is dropped.
    """

    def __init__(self) -> None:
        # Each subscriber: its queue, and the filter that decides on arrival what goes in it.
        self._queues: dict[asyncio.Queue[str], Callable[[str], bool] | None] = {}
        self._delivered: OrderedDict[str, int] = OrderedDict()  # run id → highest seq delivered
        self._engine: AsyncEngine | None = None
        self._held: AsyncConnection | None = None  # checked out of the engine's pool for LISTEN
        self._listening: asyncpg.Connection | None = None  # its driver connection
        self._reopening: asyncio.Task[None] | None = None  # held: the loop keeps only weak refs
        self._closed = False

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is open now (False while it is being re-opened, and
        always on SQLite, which has none)."""
        return self._listening is not None and not self._listening.is_closed()

    def _is_news(self, payload: str) -> bool:
        run_id, _, rest = payload.partition(" ")
        seq_text = rest.partition(" ")[0]
        if not seq_text.isdigit():
            return True  # not a run notice this version knows: deliver as it is
        seq = int(seq_text)
        if self._delivered.get(run_id, -1) >= seq:
            return False
        self._delivered[run_id] = seq
        self._delivered.move_to_end(run_id)
        if len(self._delivered) > DELIVERED_RUNS:
            self._delivered.popitem(last=False)
        return True

    def publish(self, payloads: Iterable[str]) -> None:
        """Deliver to every subscriber; a full queue drops (its reader re-queries anyway)."""
        for payload in payloads:
            if not self._is_news(payload):
                continue
            for queue, accept in list(self._queues.items()):
                if accept is not None and not accept(payload):
                    continue
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(payload)

    @asynccontextmanager
    async def subscribe(
        self, accept: Callable[[str], bool] | None = None
    ) -> AsyncIterator[asyncio.Queue[str]]:
        """A queue of payloads; with ``accept``, only those it returns True for."""
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        self._queues[queue] = accept
        try:
            yield queue
        finally:
            self._queues.pop(queue, None)

    async def listen_postgres(self, engine: AsyncEngine) -> None:
        """LISTEN on the events channel over one connection of ``engine``'s pool (PostgreSQL
        only), re-opened whenever it drops until :meth:`close`."""
        self._engine = engine
        self._closed = False
        await self._open()

    async def _open(self) -> None:
        assert self._engine is not None
        held = await self._engine.connect()
        try:
            pooled = await held.get_raw_connection()
            listening = cast(asyncpg.Connection, pooled.driver_connection)
            await listening.add_listener(CHANNEL, self._on_notify)
            listening.add_termination_listener(self._on_terminated)
        except BaseException:
            await _discard(held)
            raise
        self._held, self._listening = held, listening

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.publish((payload,))

    def _on_terminated(self, connection: object) -> None:
        if self._closed or connection is not self._listening:
            return
        logger.warning("the LISTEN connection dropped; re-opening it")
        if self._reopening is None or self._reopening.done():
            self._reopening = asyncio.get_running_loop().create_task(self._reopen())
            self._reopening.add_done_callback(_log_failure)

    async def _reopen(self) -> None:
        """Give the dead connection back to the pool as invalid, check out another one (retrying
        with backoff on any failure), then tell every subscriber to look again."""
        dead, self._held, self._listening = self._held, None, None
        if dead is not None:
            await _discard(dead)
        retrying = AsyncRetrying(
            wait=wait_exponential_jitter(
                multiplier=REOPEN_INITIAL_S, max=REOPEN_MAX_S, jitter=REOPEN_INITIAL_S
            ),
            before_sleep=before_sleep_log(logger, logging.WARNING),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._open()
        metrics.NOTIFICATION_RECONNECTS.inc()
        logger.info("the LISTEN connection is re-opened; subscribers look again")
        self.publish((LOOK_AGAIN,))

    async def close(self) -> None:
        """Stop listening; the connection goes back to the pool without its LISTEN."""
        self._closed = True
        if self._reopening is not None:
            self._reopening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reopening
            self._reopening = None
        held, listening = self._held, self._listening
        self._held, self._listening = None, None
        if held is None or listening is None:
            return
        listening.remove_termination_listener(self._on_terminated)
        try:
            await listening.remove_listener(CHANNEL, self._on_notify)  # UNLISTEN
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await _discard(held)
            return
        await held.close()


def _log_failure(task: asyncio.Task[None]) -> None:
    # Every failure is retried, so only a bug ends the task early: say so instead of going deaf.
    if not task.cancelled() and task.exception() is not None:
        logger.error("the LISTEN connection is not re-opened", exc_info=task.exception())


async def _discard(held: AsyncConnection) -> None:
    """Close a connection that must not go back to the pool as it is (the pool opens a new one
    in its place when needed)."""
    with contextlib.suppress(OSError, DBAPIError, asyncpg.PostgresError, asyncpg.InterfaceError):
        await held.invalidate()
    with contextlib.suppress(OSError, DBAPIError, asyncpg.PostgresError, asyncpg.InterfaceError):
        await held.close()
