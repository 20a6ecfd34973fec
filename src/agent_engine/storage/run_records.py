"""Reading a run's plan versions in order (what a run's manifest lists)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.storage.blobs import expand_plans_txn
from agent_engine.storage.tables import PlanVersion


async def list_plans_txn(session: AsyncSession, run_id: uuid.UUID) -> Sequence[PlanVersion]:
    """Every plan version of the run, oldest first, documents whole."""
    result = await session.scalars(
        select(PlanVersion).where(PlanVersion.run_id == run_id).order_by(PlanVersion.version)
    )
    return await expand_plans_txn(session, result.all())
