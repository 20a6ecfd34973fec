"""A client wrapper that asks the router for one model on every call (``hints.model``)."""

from __future__ import annotations

from decimal import Decimal

from agent_engine.llm.base import CompletionRequest, CompletionResponse, LLMCallRecord, LLMClient


class ModelHintClient(LLMClient):
    """Adds ``hints.model`` to each request: the router chooses that model whenever it is
    eligible (in the catalog, available, fitting the request and the budget) and records that
    it was asked for; an ineligible one is recorded as ignored."""

    def __init__(self, inner: LLMClient, model: str) -> None:
        self._inner = inner
        self._model = model

    def _hinted(self, request: CompletionRequest) -> CompletionRequest:
        return request.model_copy(update={"hints": {**request.hints, "model": self._model}})

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        """Answer ``request`` through the wrapped client, asking for the pinned model."""
        return await self._inner.complete(self._hinted(request))

    async def estimate_cost(self, request: CompletionRequest) -> Decimal | None:
        """The wrapped client's estimate for the request as it will be sent."""
        return await self._inner.estimate_cost(self._hinted(request))

    @property
    def calls(self) -> list[LLMCallRecord]:
        return self._inner.calls
