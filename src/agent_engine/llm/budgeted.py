"""Budgets around a model client: reserve the worst case before a call, settle it after.

``BudgetedLLMClient`` wraps the client a step (or the planner) uses. Before each call it
reserves the worst case of the model the router would choose; when that does not fit, it asks
the router for the cheapest model that fits the room the refusing budget names and reserves
that one; when nothing fits, ``BudgetExceededError`` is raised before any request is sent.
The call then runs bounded by the amount reserved (fallbacks included) and is settled to what
it actually cost — also when the caller is cancelled mid-call: the request already sent may be
billed, so the call is allowed to finish (up to ``finish_grace_s``) and its usage is settled
before the cancellation goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from decimal import Decimal
from typing import Protocol

from agent_engine.errors import BudgetExceededError
from agent_engine.llm.base import (
    BUDGET_FRACTION_HINT,
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

    @property
    def fraction_left(self) -> float | None: ...


class BudgetGate(Protocol):
    """The budgets that apply to one caller (engine/budget_gate.py implements it)."""

    async def reserve(self, worst: WorstCase) -> Hold | None:
        """Hold ``worst`` against every budget at once (None: no budget applies), or raise
        BudgetExceededError holding nothing."""
        ...

    def settle(self, hold: Hold, records: list[LLMCallRecord]) -> Awaitable[None]:
        """Start replacing the hold by what the calls in ``records`` cost; what it returns is
        done once the caller may rely on that (at once, when the settle runs beside it)."""
        ...


def _room_named(refused: BudgetExceededError) -> Decimal | None:
    """The USD room the refusing budget has left (None: it refused on tokens, or said not)."""
    data = refused.data
    if data.get("measure") != "usd" or data.get("limit_usd") is None:
        return None
    left = Decimal(data["limit_usd"]) - Decimal(data["spent_usd"]) - Decimal(data["reserved_usd"])
    return max(left, Decimal(0))


class BudgetedLLMClient(LLMClient):
    """Reserves before and settles after every call of the wrapped client."""

    def __init__(
        self,
        inner: LLMClient,
        gate: BudgetGate,
        *,
        saver_below: float = 0.0,
        finish_grace_s: float = 30.0,
    ):
        self.inner = inner
        self.gate = gate
        # Below this share of a budget left, the router is told so and may pick a cheaper tier.
        self.saver_below = saver_below
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
        worst = await self.inner.worst_case(request)
        if worst is None or worst.usd is None:
            # Nothing to price the call by: it runs unreserved.
            return await self._unbudgeted(request)
        hold = await self._hold(request, worst)
        if hold is None:
            return await self._unbudgeted(request)  # no budget applies to this caller
        if hold.fraction_left is not None and hold.fraction_left < self.saver_below:
            # Little is left: the router is told how little (a hint no hash includes) and may
            # choose a cheaper tier; the hold, made for its first choice, covers either.
            hints = {**request.hints, BUDGET_FRACTION_HINT: round(hold.fraction_left, 4)}
            request = request.model_copy(update={"hints": hints})
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

    async def _hold(self, request: CompletionRequest, worst: WorstCase) -> Hold | None:
        """Reserve the router's own choice; if it does not fit, the cheapest model that fits
        the room the refusal names; else the refusal stands."""
        try:
            return await self.gate.reserve(worst)
        except BudgetExceededError as refused:
            room = _room_named(refused)
            if room is None:
                raise
            try:
                cheaper = await self.inner.worst_case(request, room)
            except BudgetExceededError:
                raise refused from None
            if cheaper is None or cheaper.usd is None or cheaper.model == worst.model:
                raise
            return await self.gate.reserve(cheaper)

    async def _unbudgeted(self, request: CompletionRequest) -> CompletionResponse:
        before = len(self.inner.calls)
        try:
            return await self.inner.complete(request)
        finally:
            self._calls.extend(self.inner.calls[before:])
