"""Workers' liveness: each worker's heartbeat row, and the list the API shows operators."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from agent_engine.domain.clock import utcnow
from agent_engine.engine.context import EngineContext
from agent_engine.storage.database import read_transaction, transaction
from agent_engine.storage.workers import beat_txn, forget_worker_txn, list_workers_txn

# One page is every worker a deployment runs; more are shown only by the database itself.
MAX_LISTED = 500


@dataclass(frozen=True)
class WorkerStatus:
    """A worker as ``GET /v1/workers`` shows it."""

    id: str
    host: str
    slots: int
    started_at: datetime
    last_heartbeat_at: datetime
    alive: bool
    steps_in_flight: int


async def beat(
    ctx: EngineContext, worker_id: str, *, slots: int, started_at: datetime, lease_s: float
) -> None:
    """Say this worker is alive until its lease would lapse (its steps are safe until then)."""
    async with transaction(ctx.sessions) as session:
        await beat_txn(
            session,
            worker_id=worker_id,
            host=socket.gethostname(),
            slots=slots,
            started_at=started_at,
            now=utcnow(),
            alive_for=timedelta(seconds=lease_s),
        )


async def forget(ctx: EngineContext, worker_id: str) -> None:
    """Remove a worker that stopped cleanly from the list."""
    async with transaction(ctx.sessions) as session:
        await forget_worker_txn(session, worker_id)


async def list_workers(ctx: EngineContext) -> list[WorkerStatus]:
    """Workers seen lately, the most recently alive first, each with its running steps."""
    now = utcnow()
    async with read_transaction(ctx.sessions) as session:
        rows = await list_workers_txn(session, limit=MAX_LISTED)
    return [
        WorkerStatus(
            id=row.id,
            host=row.host,
            slots=row.slots,
            started_at=row.started_at,
            last_heartbeat_at=row.last_heartbeat_at,
            alive=row.alive_until >= now,
            steps_in_flight=row.steps_in_flight,
        )
        for row in rows
    ]
