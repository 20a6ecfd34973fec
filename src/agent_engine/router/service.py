"""The in-process Smart Model Router: route, call, retry, fall back, and record every attempt.

Retryable failures (timeouts, connection errors, 5xx, 429) are retried on the same model with
jittered exponential backoff (honouring Retry-After up to a cap); any provider failure then moves
on to the next candidate. Every attempt, failed or not, becomes an :class:`LLMCallRecord`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from agent_engine.config import Settings
from agent_engine.errors import EngineError, ProviderError
from agent_engine.llm.base import (
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMProvider,
    Usage,
    canonical_request,
    canonical_request_hash,
)
from agent_engine.llm.catalog import ModelCatalog, ModelEntry, cached_catalog
from agent_engine.llm.pricing import price_entry
from agent_engine.llm.redaction import redact, redact_text
from agent_engine.llm.traced import TracedProvider
from agent_engine.llm.transport import ProviderTimeouts, malformed
from agent_engine.router.policy import (
    DEFAULT_SAVER_BELOW,
    RoutingDecision,
    decide_route,
    entry_for,
)
from agent_engine.tracing.genai import routing_reason

__all__ = ["RetryPolicy", "RouterService", "build_provider", "calls_from_error", "request_hash"]
from agent_engine.llm.providers import ProviderFactory, build_provider

logger = logging.getLogger(__name__)
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries per model: few attempts, small delays."""

    attempts_per_model: int = 3
    backoff_multiplier_s: float = 0.25
    max_backoff_s: float = 2.0
    jitter_s: float = 0.25
    retry_after_cap_s: float = 10.0


def request_hash(request: CompletionRequest) -> str:
    """SHA-256 of the canonical JSON of the request (the same for every attempt and model);
    routing-only hints (the budget left) are not part of it."""
    return canonical_request_hash(request)


def calls_from_error(error: EngineError) -> list[LLMCallRecord]:
    """The call records a failed ``complete`` attached to its error (empty if none)."""
    raw = error.data.get("calls") or []
    return [LLMCallRecord.model_validate(item) for item in raw]


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, ProviderError) and error.is_retryable


class RouterService:
    """Routes requests over a catalog and calls providers in-process."""

    def __init__(
        self,
        catalog: ModelCatalog,
        *,
        pinned_model: str | None = None,
        provider_factory: ProviderFactory | None = None,
        retry: RetryPolicy | None = None,
        sleep: Sleep | None = None,
        env: Mapping[str, str] | None = None,
        timeouts: ProviderTimeouts | None = None,
        saver_below: float = DEFAULT_SAVER_BELOW,
    ) -> None:
        self.catalog = catalog
        self.saver_below = saver_below
        self.pinned_model = pinned_model
        self.retry = retry or RetryPolicy()
        self.timeouts = timeouts or ProviderTimeouts()
        self._factory = provider_factory or (
            lambda name: build_provider(name, catalog, timeouts=self.timeouts)
        )
        self._providers: dict[str, LLMProvider] = {}
        self._sleep: Sleep = sleep or asyncio.sleep
        self._env = env
        self._backoff = wait_exponential_jitter(
            multiplier=self.retry.backoff_multiplier_s,
            max=self.retry.max_backoff_s,
            jitter=self.retry.jitter_s,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> RouterService:
        """A service over the configured catalog, pinned when ``AGENT_ENGINE_MODEL`` is set."""
        return cls(
            cached_catalog(settings.models_file),
            pinned_model=settings.model,
            timeouts=ProviderTimeouts(
                read_s=settings.llm_timeout_s, connect_s=settings.llm_connect_timeout_s
            ),
            saver_below=settings.routing_saver_below,
        )

    @property
    def env(self) -> Mapping[str, str] | None:
        """The environment that decides which models are available (None: the process's)."""
        return self._env

    def provider(self, name: str) -> LLMProvider:
        """The provider instance for ``name``, built once by the factory; each call through it
        is a ``chat`` span while tracing is on."""
        if name not in self._providers:
            self._providers[name] = TracedProvider(self._factory(name), name, self.catalog)
        return self._providers[name]

    async def route(
        self, request: CompletionRequest, remaining_budget: Decimal | None = None
    ) -> RoutingDecision:
        """Decide which model answers ``request`` (no provider is called)."""
        return decide_route(
            request,
            self.catalog,
            remaining_budget_usd=remaining_budget,
            pinned_model=self.pinned_model,
            env=self._env,
            saver_below=self.saver_below,
        )

    async def complete(
        self, request: CompletionRequest, remaining_budget: Decimal | None = None
    ) -> tuple[CompletionResponse, list[LLMCallRecord], RoutingDecision]:
        """Route and call, falling back along the chain; raise ProviderError with the records."""
        decision = await self.route(request, remaining_budget)
        with routing_reason(decision.reason):
            return await self._complete(request, remaining_budget, decision)

    async def _complete(
        self,
        request: CompletionRequest,
        remaining_budget: Decimal | None,
        decision: RoutingDecision,
    ) -> tuple[CompletionResponse, list[LLMCallRecord], RoutingDecision]:
        records: list[LLMCallRecord] = []
        errors: list[str] = []
        last: ProviderError | None = None
        for position, model_id in enumerate(decision.chain):
            if position and not self._affordable(model_id, decision, remaining_budget, records):
                errors.append(f"{model_id}: skipped, over the remaining budget")
                continue
            entry = entry_for(self.catalog, model_id, decision.tier)
            try:
                response = await self._call_with_retries(entry, request, decision, records)
            except ProviderError as exc:
                last = exc
                errors.append(f"{model_id}: {exc.data.get('kind', 'error')}: {exc.detail}")
                continue
            return response, records, decision
        raise ProviderError(
            f"all candidate models failed: {' | '.join(errors)}",
            retryable=last.is_retryable if last is not None else False,
            kind="exhausted",
            calls=[record.model_dump(mode="json") for record in records],
            routing=decision.model_dump(mode="json"),
        )

    def list_models(self) -> list[dict[str, Any]]:
        """The catalog with each model's current eligibility, for ``GET /v1/models``."""
        out = []
        for entry in self.catalog.models:
            reason = self.catalog.unavailable_reason(entry, self._env)
            item = entry.model_dump(mode="json", by_alias=True)
            item.update(id=entry.id, eligible=reason is None, unavailable_reason=reason)
            out.append(item)
        return out

    def _affordable(
        self,
        model_id: str,
        decision: RoutingDecision,
        remaining: Decimal | None,
        records: list[LLMCallRecord],
    ) -> bool:
        if remaining is None:
            return True
        spent = sum((r.cost_usd for r in records if r.cost_usd is not None), Decimal(0))
        estimate = next(
            (c.estimated_cost_usd for c in decision.candidates if c.model == model_id), None
        )
        return estimate is not None and estimate <= remaining - spent

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        retry_after = error.data.get("retry_after_s") if isinstance(error, ProviderError) else None
        if isinstance(retry_after, int | float):
            return min(float(retry_after), self.retry.retry_after_cap_s)
        return float(self._backoff(state))

    async def _call_with_retries(
        self,
        entry: ModelEntry,
        request: CompletionRequest,
        decision: RoutingDecision,
        records: list[LLMCallRecord],
    ) -> CompletionResponse:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.attempts_per_model),
            wait=self._wait,
            retry=retry_if_exception(_is_retryable),
            sleep=self._sleep,
            reraise=True,
        )
        response: CompletionResponse = await retrying(
            self._attempt, entry, request, decision, records
        )
        return response

    async def _attempt(
        self,
        entry: ModelEntry,
        request: CompletionRequest,
        decision: RoutingDecision,
        records: list[LLMCallRecord],
    ) -> CompletionResponse:
        number = len(records) + 1
        started = time.perf_counter()
        try:
            response = await self.provider(entry.provider).complete(request, entry.model)
            _check_json(request, response)
        except ProviderError as exc:
            latency = (time.perf_counter() - started) * 1000
            usage = Usage.model_validate(exc.data["usage"]) if exc.data.get("usage") else Usage()
            error = redact_text(f"{exc.data.get('kind', 'error')}: {exc.detail}")
            wire = exc.data.get("wire")
            records.append(
                self._record(
                    entry, request, decision, number, latency, usage, None, error, wire=wire
                )
            )
            logger.warning("LLM call to %s (attempt %d) failed: %s", entry.id, number, error)
            raise
        latency = (time.perf_counter() - started) * 1000
        records.append(
            self._record(entry, request, decision, number, latency, response.usage, response, None)
        )
        return response

    def _record(
        self,
        entry: ModelEntry,
        request: CompletionRequest,
        decision: RoutingDecision,
        attempt: int,
        latency_ms: float,
        usage: Usage,
        response: CompletionResponse | None,
        error: str | None,
        *,
        wire: dict[str, Any] | None = None,
    ) -> LLMCallRecord:
        quote = price_entry(self.catalog, entry, usage)
        sent, received = _recorded_documents(request, response, wire)
        saved = self._saved_by_routing(decision, usage, quote.cost_usd) if response else None
        return LLMCallRecord(
            provider=entry.provider,
            model=entry.model,
            request=sent,
            request_hash=request_hash(request),
            response=received,
            usage=usage,
            cost_usd=quote.cost_usd,
            price_source=quote.price_source,
            priced=quote.priced,
            latency_ms=latency_ms,
            attempt=attempt,
            error=error,
            routing=decision.model_dump(mode="json"),
            saved_usd=saved,
            saving="routing" if saved is not None else None,
        )

    def _saved_by_routing(
        self, decision: RoutingDecision, usage: Usage, cost: Decimal | None
    ) -> Decimal | None:
        """What the budget saver saved on an answered call: the same usage priced on the model
        it would have chosen, less what the call cost (never below 0); None without a saver."""
        would = decision.downgraded_from
        if would is None or cost is None:
            return None
        entry = entry_for(self.catalog, would.model, would.tier)
        instead = price_entry(self.catalog, entry, usage).cost_usd
        if instead is None:
            return None
        return max(instead - cost, Decimal(0))


def _recorded_documents(
    request: CompletionRequest,
    response: CompletionResponse | None,
    wire: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The request and response as ``llm_calls`` keeps them: the normalised forms plus, under
    ``wire``, the bodies exactly as sent and received (a failed call keeps what it received)."""
    sent: dict[str, Any] = canonical_request(request)
    received: dict[str, Any] | None = None
    if response is not None:
        received = response.model_dump(mode="json", exclude={"wire"})
        wire = response.wire.model_dump(mode="json") if response.wire is not None else wire
    if wire is not None:
        sent["wire"] = {key: wire.get(key) for key in ("format", "path")}
        sent["wire"]["body"] = wire.get("request_body")
        if wire.get("response_body") is not None or response is not None:
            received = received if received is not None else {}
            received["wire"] = {"status": wire.get("status"), "body": wire.get("response_body")}
    return redact(sent), redact(received) if received is not None else None


def _check_json(request: CompletionRequest, response: CompletionResponse) -> None:
    """JSON was asked for but the provider gave none it could parse: that model's output is bad."""
    if request.json_schema is None or response.json_value is not None:
        return
    try:
        json.loads(response.text)
    except ValueError:
        raise malformed(
            f"{response.provider} model {response.model} returned output that is not valid JSON",
            response.provider,
            response.model,
            response.usage,
        ) from None
