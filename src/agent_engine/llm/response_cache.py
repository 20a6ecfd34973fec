"""The response cache as a wrapper around an LLM client: an identical request is answered from
an earlier call's recorded response instead of a provider.

Identical means the same canonical request hash (``llm/base.py`` ``canonical_request_hash``): the
messages, ``max_output_tokens``, ``temperature``, the JSON schema (the response format), the
step type and every hint (a pinned model, and any sampling parameter a caller passes there such as
``top_p`` or ``seed``) are all part of it; only the routing-only hints (the budget left) are not.
Any request is cacheable, a sampling temperature above 0 included: a run that opts in asks for
the recorded answer to a request it repeats, and a different temperature is a different request.

The lookup is given (the engine reads ``llm_calls``; nothing here touches the database). A hit
becomes a call record that says ``cached``, names the call it repeats (``cache_of``), has no
tokens and costs $0, and records the original's cost as ``saved_usd``; no provider is called.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from agent_engine.domain.canonical import content_hash
from agent_engine.llm.base import (
    CallContext,
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMClient,
    Usage,
    canonical_request,
)

CACHE_SOURCE = "response cache"


@dataclass(frozen=True)
class CachedAnswer:
    """An earlier successful call (not itself cached or replayed) whose response can be reused."""

    call_id: str
    provider: str
    model: str
    response: dict[str, Any]
    cost_usd: Decimal | None


CacheLookup = Callable[[str], Awaitable[CachedAnswer | None]]


class CachingLLMClient(LLMClient):
    """Answers a request seen before from its recorded response; any other goes to ``inner``."""

    def __init__(self, inner: LLMClient, lookup: CacheLookup, call: CallContext) -> None:
        self.inner = inner
        self.lookup = lookup
        self.call = call
        self.hits = 0
        self._calls: list[LLMCallRecord] = []

    @property
    def calls(self) -> list[LLMCallRecord]:
        return self._calls

    async def estimate_cost(self, request: CompletionRequest) -> Decimal | None:
        """$0 for a request the cache holds, else the wrapped client's estimate."""
        document = canonical_request(request)
        if await self.lookup(content_hash(document)) is not None:
            return Decimal(0)
        return await self.inner.estimate_cost(request)

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        """The recorded answer to an identical earlier request, else the wrapped client's."""
        document = canonical_request(request)
        requested = content_hash(document)
        found = await self.lookup(requested)
        if found is None:
            return await self._live(request)
        self.hits += 1
        self._calls.append(_cached_record(found, document, requested))
        answer = {k: v for k, v in found.response.items() if k != "wire"}
        return CompletionResponse.model_validate({**answer, "latency_ms": 0.0})

    async def _live(self, request: CompletionRequest) -> CompletionResponse:
        before = len(self.inner.calls)
        try:
            return await self.inner.complete(request)
        finally:
            self._calls.extend(self.inner.calls[before:])


def _cached_record(found: CachedAnswer, document: dict[str, Any], requested: str) -> LLMCallRecord:
    """The ledger's row for a hit: the request as asked, the original's response, no tokens."""
    return LLMCallRecord(
        provider=found.provider,
        model=found.model,
        request=document,
        request_hash=requested,
        response=found.response,
        usage=Usage(),
        cost_usd=Decimal(0),
        price_source=CACHE_SOURCE,
        latency_ms=0.0,
        cached=True,
        cache_of=found.call_id,
        saved_usd=found.cost_usd if found.cost_usd is not None else Decimal(0),
        saving="cache",
    )
