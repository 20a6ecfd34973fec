"""Wake-ups when audit events commit: in-process delivery at once, and PostgreSQL LISTEN/NOTIFY
across processes. Subscribers re-read the audit log, so a dropped notification delays a reader
but never loses an event.

One notification per run per committed transaction, saying how the run stands after it:
``"<run_id> <audit_seq> <status> <claimable_at as epoch seconds, or ->"``. Workers use it to wake
exactly when a run has a step to claim (now, or later: a lease's end, a retry's backoff); streams
use the run id.
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

import asyncpg
from sqlalchemy.engine import make_url

CHANNEL = "agent_engine_events"
NOTHING_CLAIMABLE = "-"
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
        self._connection: asyncpg.Connection | None = None
        self._delivered: OrderedDict[str, int] = OrderedDict()  # run id → highest seq delivered

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

    async def listen_postgres(self, database_url: str) -> None:
        """LISTEN on the events channel over a dedicated connection (PostgreSQL only)."""
        dsn = make_url(database_url).set(drivername="postgresql")
        self._connection = await asyncpg.connect(dsn.render_as_string(hide_password=False))

        def _on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            self.publish((payload,))

        await self._connection.add_listener(CHANNEL, _on_notify)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await self._connection.close()
            self._connection = None
