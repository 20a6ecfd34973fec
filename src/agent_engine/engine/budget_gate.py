"""The budget gate a model client asks before and after each call (``llm/budgeted.py``), for a
step attempt or for calls outside a step (the planner's), over ``engine/budgets.py``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any

from agent_engine.domain.budget_math import BudgetSubject, budget_subject
from agent_engine.domain.records import RunRecord
from agent_engine.engine.budgets import Reservation, reserve, settle
from agent_engine.engine.context import EngineContext
from agent_engine.llm.base import LLMCallRecord, LLMClient, WorstCase
from agent_engine.llm.budgeted import BudgetedLLMClient

ZERO = Decimal(0)


def budgeted(ctx: EngineContext, run: RunRecord, llm: LLMClient, purpose: str) -> LLMClient:
    """``llm`` held to the budgets of ``run`` for calls made outside a step (the planner's)."""
    subject = budget_subject(run)
    if not subject.may_apply:
        return llm
    gate = RunBudgetGate(ctx, subject, purpose=purpose)
    return BudgetedLLMClient(llm, gate, saver_below=ctx.settings.routing_saver_below)


class RunBudgetGate:
    """The budgets of one caller (a step attempt, the planner, a gateway request), as the
    ``BudgetGate`` that ``llm/budgeted.py`` asks before and after each call."""

    def __init__(
        self,
        ctx: EngineContext,
        subject: BudgetSubject,
        *,
        purpose: str,
        step_id: uuid.UUID | None = None,
        attempt: int = 0,
        fence: int | None = None,
        settle_beside: bool = False,
    ) -> None:
        self.ctx = ctx
        self.subject = subject
        self.purpose = purpose
        self.step_id = step_id
        self.attempt = attempt
        self.fence = fence
        # A step's settles run beside its write (engine/budget_settles.py); the planner's and
        # the gateway's are awaited, as their callers read the spend at once.
        self.settle_beside = settle_beside

    async def reserve(self, worst: WorstCase) -> Reservation | None:
        return await reserve(
            self.ctx,
            self.subject,
            amount_usd=worst.usd or ZERO,
            amount_tokens=worst.tokens,
            purpose=self.purpose,
            estimate=worst.model_dump(mode="json"),
            step_id=self.step_id,
            attempt=self.attempt,
            fence=self.fence,
        )

    def settle(self, hold: Any, records: list[LLMCallRecord]) -> Awaitable[None]:
        settling = asyncio.ensure_future(settle(self.ctx, hold, records))
        if not self.settle_beside:
            return settling
        self.ctx.settles.track(self.subject.run_id, settling)
        # Done at once: the caller goes on without yielding, so the settle's own work runs
        # while the step's write waits on the database, not before it.
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done
