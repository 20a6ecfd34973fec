"""Calling the router: over HTTP (:class:`RouterClient`) or in-process, behind one LLMClient."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

import httpx

from agent_engine.config import Settings
from agent_engine.errors import BudgetExceededError, EngineError, ProviderError
from agent_engine.llm.base import (
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMClient,
    WorstCase,
)
from agent_engine.llm.catalog import CatalogError
from agent_engine.llm.pricing import quantize_usd
from agent_engine.llm.transport import ProviderTimeouts, shared_client
from agent_engine.router.policy import RoutingDecision
from agent_engine.router.service import RouterService, calls_from_error
from agent_engine.tracing.genai import inject_traceparent

_PROBLEM_KEYS = frozenset({"type", "title", "status", "detail", "code", "retryable"})
_ERRORS_BY_CODE: dict[str, type[EngineError]] = {
    "budget_exceeded": BudgetExceededError,
    "invalid_model_catalog": CatalogError,
}


class RouterBackend(Protocol):
    """What RoutedLLMClient needs: RouterService (in-process) and RouterClient (HTTP) both fit."""

    async def route(
        self, request: CompletionRequest, remaining_budget: Decimal | None = None
    ) -> RoutingDecision: ...

    async def complete(
        self, request: CompletionRequest, remaining_budget: Decimal | None = None
    ) -> tuple[CompletionResponse, list[LLMCallRecord], RoutingDecision]: ...


def _error_from_problem(response: httpx.Response) -> EngineError:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return ProviderError(
            f"router returned HTTP {response.status_code}",
            retryable=response.status_code >= 500,
            kind="router_error",
            status_code=response.status_code,
        )
    detail = str(body.get("detail") or f"router returned HTTP {response.status_code}")
    data = {k: v for k, v in body.items() if k not in _PROBLEM_KEYS}
    code = str(body.get("code") or "")
    if code == "provider_error":
        return ProviderError(detail, retryable=bool(body.get("retryable")), **data)
    error_type = _ERRORS_BY_CODE.get(code)
    if error_type is not None:
        return error_type(detail, **data)
    data.setdefault("kind", "router_error")
    data["router_code"] = code
    return ProviderError(detail, retryable=response.status_code >= 500, **data)


class RouterClient:
    """The router over HTTP, with the same ``route``/``complete`` methods as RouterService.

    Calls go through the process's shared client for the router's URL, so they reuse connections
    (closed by :func:`~agent_engine.llm.transport.close_provider_clients`); a ``transport`` given
    for tests gets a client of its own per call.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeouts = ProviderTimeouts(read_s=timeout_s)
        self._transport = transport

    async def ping(self, *, timeout_s: float = 2.0) -> str | None:
        """Ask the router's ``/healthz``: None when it answers ok, else why not (one line)."""
        try:
            async with httpx.AsyncClient(timeout=timeout_s, transport=self._transport) as client:
                response = await client.get(f"{self.base_url}/healthz")
        except httpx.HTTPError as exc:
            return f"router unreachable: {type(exc).__name__}"
        if response.status_code != 200:
            return f"router answered HTTP {response.status_code}"
        return None

    async def _send(self, path: str, payload: dict[str, Any]) -> httpx.Response:
        url = f"{self.base_url}{path}"
        headers: dict[str, str] = {}
        inject_traceparent(headers)  # the router's model-call spans join the step's trace
        if self._transport is None:
            client = shared_client(self.base_url, self.timeouts)
            return await client.post(url, json=payload, headers=headers)
        timeout = self.timeouts.httpx_timeout()
        async with httpx.AsyncClient(timeout=timeout, transport=self._transport) as client:
            return await client.post(url, json=payload, headers=headers)

    async def _post(
        self, path: str, request: CompletionRequest, remaining_budget: Decimal | None
    ) -> dict[str, Any]:
        payload = request.model_dump(mode="json")
        payload["remaining_budget_usd"] = (
            str(remaining_budget) if remaining_budget is not None else None
        )
        try:
            response = await self._send(path, payload)
        except httpx.TransportError as exc:
            raise ProviderError(
                f"router at {self.base_url} unreachable ({type(exc).__name__})",
                retryable=True,
                kind="timeout" if isinstance(exc, httpx.TimeoutException) else "connection",
            ) from exc
        if not response.is_success:
            raise _error_from_problem(response)
        body: dict[str, Any] = response.json()
        return body

    async def route(
        self, request: CompletionRequest, remaining_budget: Decimal | None = None
    ) -> RoutingDecision:
        """Ask the router which model would answer ``request``."""
        body = await self._post("/v1/route", request, remaining_budget)
        return RoutingDecision.model_validate(body["decision"])

    async def complete(
        self, request: CompletionRequest, remaining_budget: Decimal | None = None
    ) -> tuple[CompletionResponse, list[LLMCallRecord], RoutingDecision]:
        """Route and call through the router; errors carry the attempts' records as in-process."""
        body = await self._post("/v1/complete", request, remaining_budget)
        return (
            CompletionResponse.model_validate(body["response"]),
            [LLMCallRecord.model_validate(item) for item in body["calls"]],
            RoutingDecision.model_validate(body["routing"]),
        )


class RoutedLLMClient(LLMClient):
    """The LLMClient executors use: routes every call, keeps every record and the budget left."""

    def __init__(
        self, backend: RouterBackend, *, remaining_budget_usd: Decimal | None = None
    ) -> None:
        self.backend = backend
        self._remaining = remaining_budget_usd
        self._calls: list[LLMCallRecord] = []
        self._decisions: list[RoutingDecision] = []

    @property
    def calls(self) -> list[LLMCallRecord]:
        return self._calls

    @property
    def decisions(self) -> list[RoutingDecision]:
        """The routing decision of every successful ``complete``, in order."""
        return self._decisions

    @property
    def remaining_budget_usd(self) -> Decimal | None:
        """Budget left after the calls so far (None: no budget); may go below zero."""
        return self._remaining

    async def route(self, request: CompletionRequest) -> RoutingDecision:
        """Which model would answer ``request`` with the budget left (nothing is called)."""
        return await self.backend.route(request, self._remaining)

    async def estimate_cost(self, request: CompletionRequest) -> Decimal | None:
        """The routed model's worst-case USD for ``request``; routing errors propagate."""
        return (await self.route(request)).estimated_cost_usd

    async def worst_case(
        self, request: CompletionRequest, room_usd: Decimal | None = None
    ) -> WorstCase | None:
        """The chosen model's worst case with ``room_usd`` left; BudgetExceededError when no
        eligible model fits it."""
        decision = await self.backend.route(request, room_usd)
        inputs = decision.inputs
        return WorstCase(
            model=decision.model,
            usd=decision.estimated_cost_usd,
            tokens=inputs.prompt_tokens + inputs.max_output_tokens,
            prompt_tokens=inputs.prompt_tokens,
            prompt_count_method="heuristic" if inputs.prompt_tokens_estimated else "tokenizer",
        )

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        """Answer ``request``; records of every attempt are kept even when it fails."""
        return await self._complete(request, self._remaining)

    async def complete_within(
        self, request: CompletionRequest, limit_usd: Decimal
    ) -> CompletionResponse:
        """Answer ``request`` with fallbacks only while the attempts so far and the next
        model's worst case stay within ``limit_usd``."""
        return await self._complete(request, limit_usd)

    async def _complete(
        self, request: CompletionRequest, remaining: Decimal | None
    ) -> CompletionResponse:
        try:
            response, records, decision = await self.backend.complete(request, remaining)
        except EngineError as exc:
            self._settle(calls_from_error(exc))
            raise
        self._settle(records)
        self._decisions.append(decision)
        return response

    def _settle(self, records: list[LLMCallRecord]) -> None:
        self._calls.extend(records)
        if self._remaining is not None:
            spent = sum((r.cost_usd for r in records if r.cost_usd is not None), Decimal(0))
            self._remaining = quantize_usd(self._remaining - spent)


def build_llm_client(
    settings: Settings, remaining_budget_usd: Decimal | None = None
) -> RoutedLLMClient:
    """A client over the router: HTTP when ``AGENT_ENGINE_ROUTER_URL`` is set, else in-process."""
    backend: RouterBackend = (
        RouterClient(settings.router_url)
        if settings.router_url
        else RouterService.from_settings(settings)
    )
    return RoutedLLMClient(backend, remaining_budget_usd=remaining_budget_usd)
