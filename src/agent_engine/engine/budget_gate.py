"""The budget gate a model client asks before and after each call (``llm/budgeted.py``), for a
step attempt or for calls outside a step (the planner's), over ``engine/budgets.py``."""

from __future__ import annotations

import uuid
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
    return BudgetedLLMClient(llm, RunBudgetGate(ctx, subject, purpose=purpose))


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
    ) -> None:
        self.ctx = ctx
        self.subject = subject
        self.purpose = purpose
        self.step_id = step_id
        self.attempt = attempt
        self.fence = fence

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

    async def settle(self, hold: Any, records: list[LLMCallRecord]) -> None:
        await settle(self.ctx, hold, records)
