"""A worker's heartbeat row: written at start and at each heartbeat, removed at a clean stop."""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError

from agent_engine.domain.clock import utcnow
from agent_engine.engine import workers
from agent_engine.engine.context import EngineContext

logger = logging.getLogger(__name__)


class Presence:
    """What the database knows of one worker being alive (``GET /v1/workers``, the
    workers-alive gauge). A failed write is logged: the leases, not this row, keep its steps
    safe."""

    def __init__(self, ctx: EngineContext, worker_id: str, slots: int, lease_s: float) -> None:
        self._ctx = ctx
        self._id = worker_id
        self._slots = slots
        self._lease_s = lease_s
        self._started_at = utcnow()

    async def alive(self) -> None:
        """Say the worker is alive until its lease would lapse."""
        try:
            await workers.beat(
                self._ctx,
                self._id,
                slots=self._slots,
                started_at=self._started_at,
                lease_s=self._lease_s,
            )
        except (DBAPIError, OSError) as exc:  # a refused connection is an OSError
            logger.warning("worker heartbeat not written: %s", getattr(exc, "orig", exc))

    async def gone(self) -> None:
        """Remove the worker's row: it stopped cleanly."""
        try:
            await workers.forget(self._ctx, self._id)
        except (DBAPIError, OSError) as exc:
            logger.warning("worker row not removed (it goes stale): %s", getattr(exc, "orig", exc))
