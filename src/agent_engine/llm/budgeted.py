"""Budgets around a model client: reserve the worst case before a call, settle it after.

``BudgetedLLMClient`` wraps the client a step (or the planner) uses. Before each call it asks
the gate how much room every applicable budget leaves, lets the router choose a model that fits
that room, and reserves the chosen model's worst case; a reservation that does not fit raises
``BudgetExceededError`` before any request is sent. The call then runs bounded by the amount
reserved (fallbacks included) and is settled to what it actually cost — also when the caller
is cancelled mid-call: the request already sent may be billed, so the call is allowed to finish
(up to ``finish_grace_s``) and its usage is settled before the cancellation goes on.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Protocol

from agent_engine.errors import BudgetExceededError
from agent_engine.llm.base import (
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMClient,
    WorstCase,
)


class Hold(Protocol):
    """A reservation a gate made: its id and the USD it holds."""

    @property
    def id(self) -> str: ...

    @property
    def usd(self) -> Decimal: ...


class BudgetGate(Protocol):
    """The budgets that apply to one caller (engine/budgets.py implements it)."""

    async def room(self) -> tuple[Decimal | None, float | None] | None:
        """USD room left and the fraction of the budget left, or None when no budget applies."""
        ...

    async def reserve(self, worst: WorstCase) -> Hold:
        """Hold ``worst`` against every budget at once, or raise BudgetExceededError."""
        ...

    async def settle(self, hold: Hold, records: list[LLMCallRecord]) -> None:
        """Replace the hold by what the calls in ``records`` cost."""
        ...


class BudgetedLLMClient(LLMClient):
    """Reserves before and settles after every call of the wrapped client."""

    def __init__(self, inner: LLMClient, gate: BudgetGate, *, finish_grace_s: float = 30.0):
        self.inner = inner
        self.gate = gate
        self.finish_grace_s = finish_grace_s
        self._calls: list[LLMCallRecord] = []

    @property
    def calls(self) -> list[LLMCallRecord]:
        return self._calls

    async def estimate_cost(self, request: CompletionRequest) -> Decimal | None:
        return await self.inner.estimate_cost(request)

    async def worst_case(
        self, request: CompletionRequest, room_usd: Decimal | None = None
    ) -> WorstCase | None:
        return await self.inner.worst_case(request, room_usd)

    async def complete_within(
        self, request: CompletionRequest, limit_usd: Decimal
    ) -> CompletionResponse:
        return await self.complete(request)

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        """Answer ``request`` within every budget; BudgetExceededError (nothing sent) if not."""
        room = await self.gate.room()
        if room is None:
            return await self._unbudgeted(request)
        room_usd, _fraction_left = room
        try:
            worst = await self.inner.worst_case(request, room_usd)
        except BudgetExceededError:
            # No model fits the room: reserve the unconstrained choice, which refuses with
            # the budget's own figures (or, if room was freed meanwhile, goes ahead).
            worst = await self.inner.worst_case(request, None)
        if worst is None or worst.usd is None:
            # Nothing to price the call by: it runs unreserved (and settles what it cost).
            return await self._unbudgeted(request)
        hold = await self.gate.reserve(worst)
        before = len(self.inner.calls)
        task = asyncio.ensure_future(self.inner.complete_within(request, hold.usd))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # The request may already be billed: let it finish so its usage is settled.
            await asyncio.wait({task}, timeout=self.finish_grace_s)
            raise
        finally:
            if not task.done():
                task.cancel()
            made = [
                record.model_copy(update={"reservation_id": hold.id})
                for record in self.inner.calls[before:]
            ]
            self._calls.extend(made)
            await asyncio.shield(self.gate.settle(hold, made))

    async def _unbudgeted(self, request: CompletionRequest) -> CompletionResponse:
        before = len(self.inner.calls)
        try:
            return await self.inner.complete(request)
        finally:
            self._calls.extend(self.inner.calls[before:])
