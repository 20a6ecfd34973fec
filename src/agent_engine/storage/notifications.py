"""Wake-ups when audit events commit: PostgreSQL LISTEN/NOTIFY across processes, in-process
delivery on SQLite. Payloads are ``"<run_id> <seq> <type>"``; subscribers re-read the audit log,
so a dropped notification delays a reader but never loses an event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.engine import make_url

CHANNEL = "agent_engine_events"
QUEUE_SIZE = 10_000
logger = logging.getLogger(__name__)


class Notifier:
    """Fan-out of event notifications to any number of in-process subscribers."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[str]] = set()
        self._connection: asyncpg.Connection | None = None

    def publish(self, payloads: Iterable[str]) -> None:
        """Deliver to every subscriber; a full queue drops (its reader re-queries anyway)."""
        for payload in payloads:
            for queue in self._queues:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(payload)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[str]]:
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

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
