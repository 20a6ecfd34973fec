"""A provider wrapper that makes one ``chat {model}`` span per provider call (GenAI semantic
conventions, ``tracing/genai.py``). The router wraps each provider it calls, so a fallback's
every attempt is a span of its own, in-process or in the router service alike."""

from __future__ import annotations

from decimal import Decimal

from opentelemetry.trace import SpanKind

from agent_engine.errors import ProviderError
from agent_engine.llm.base import CompletionRequest, CompletionResponse, LLMProvider
from agent_engine.llm.catalog import ModelCatalog
from agent_engine.llm.pricing import price_entry
from agent_engine.tracing import genai
from agent_engine.tracing.setup import STATE


class TracedProvider(LLMProvider):
    """Calls the wrapped provider inside a span (when tracing is on; else it only forwards)."""

    def __init__(self, inner: LLMProvider, provider: str, catalog: ModelCatalog) -> None:
        self.name = inner.name
        self._inner = inner
        self._provider = provider  # the catalog's name of the provider
        self._catalog = catalog

    def _cost(self, model: str, response: CompletionResponse) -> Decimal | None:
        entry = self._catalog.find(f"{self._provider}:{model}")
        return None if entry is None else price_entry(self._catalog, entry, response.usage).cost_usd

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        """The wrapped provider's answer; the span says what was asked and answered."""
        tracer = STATE.tracer
        if tracer is None:
            return await self._inner.complete(request, model)
        with tracer.start_as_current_span(
            f"chat {model}",
            kind=SpanKind.CLIENT,
            attributes=genai.request_attributes(self._provider, model, request),
        ) as span:
            genai.capture_request(span, self._provider, request)
            try:
                response = await self._inner.complete(request, model)
            except ProviderError as exc:
                span.set_attribute("error.type", str(exc.data.get("kind") or exc.code))
                raise
            genai.describe_response(span, response, self._cost(model, response))
            genai.capture_response(span, self._provider, response)
            return response
