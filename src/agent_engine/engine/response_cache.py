"""Whether a run's model calls may be answered from the response cache, and the cache's lookup
in the ledger (``llm/response_cache.py`` is the wrapper that uses it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent_engine.config import Settings
from agent_engine.engine.context import EngineContext
from agent_engine.llm.base import CallContext, LLMClient
from agent_engine.llm.response_cache import CachedAnswer, CacheLookup, CachingLLMClient
from agent_engine.storage.database import read_transaction
from agent_engine.storage.ledger import cacheable_call_txn

RUN_OPTION = "response_cache"


def cache_enabled(settings: Settings, options: Mapping[str, Any]) -> bool:
    """On for every run with ``AGENT_ENGINE_RESPONSE_CACHE``, else for a run created with
    ``response_cache: true``. A replay never asks: it is served from its original's records."""
    return settings.response_cache or bool(options.get(RUN_OPTION))


def ledger_lookup(ctx: EngineContext) -> CacheLookup:
    """The cache's lookup: the earliest call recorded with the hash that answered itself."""

    async def lookup(request_hash: str) -> CachedAnswer | None:
        async with read_transaction(ctx.sessions) as session:
            call = await cacheable_call_txn(session, request_hash)
        if call is None or call.response is None:
            return None
        return CachedAnswer(
            call_id=str(call.id),
            provider=call.provider,
            model=call.model,
            response=call.response,
            cost_usd=call.cost_usd,
        )

    return lookup


def with_response_cache(
    ctx: EngineContext, options: Mapping[str, Any], call: CallContext, inner: LLMClient
) -> LLMClient:
    """``inner`` behind the response cache when the run uses it, else ``inner`` itself."""
    if not cache_enabled(ctx.settings, options):
        return inner
    return CachingLLMClient(inner, ledger_lookup(ctx), call)
