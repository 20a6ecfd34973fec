"""The Smart Model Router as its own FastAPI service (``agent-engine router serve`` / ``-m``)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent_engine.config import Settings, get_settings
from agent_engine.errors import EngineError, ProviderError
from agent_engine.llm.base import CompletionRequest, Usage
from agent_engine.llm.redaction import redact
from agent_engine.llm.transport import close_provider_clients
from agent_engine.router.openai_answers import completion_id
from agent_engine.router.openai_http import (
    CHAT_COMPLETIONS_PATH,
    chat_response,
    error_response,
    read_chat_body,
)
from agent_engine.router.openai_wire import parse_chat_request
from agent_engine.router.service import RouterService
from agent_engine.tracing.genai import continued_from

logger = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://agent-engine.dev/problems/"


class RouteBody(CompletionRequest):
    """A completion request plus the caller's remaining budget (None: no budget)."""

    remaining_budget_usd: Decimal | None = Field(default=None, ge=0)

    def to_request(self) -> CompletionRequest:
        """The plain request, without the budget."""
        return CompletionRequest.model_validate(self.model_dump(exclude={"remaining_budget_usd"}))


def _problem(status: int, title: str, detail: str, code: str, **extra: Any) -> JSONResponse:
    body = {
        "type": PROBLEM_BASE + code.replace("_", "-"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(redact(body), status_code=status, media_type=PROBLEM_JSON)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EngineError)
    async def engine_error(request: Request, exc: EngineError) -> JSONResponse:
        body = exc.problem()
        if isinstance(exc, ProviderError):
            body["retryable"] = exc.is_retryable
        return JSONResponse(redact(body), status_code=exc.http_status, media_type=PROBLEM_JSON)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", ""))}
            for err in exc.errors()
        ]
        return _problem(
            422,
            "Request validation failed",
            "the request body is invalid",
            "validation_error",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _problem(exc.status_code, "HTTP error", str(exc.detail), f"http_{exc.status_code}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Internals stay in the log; the caller learns only that the router failed.
        logger.exception("router request failed")
        return _problem(500, "Internal error", "the router failed unexpectedly", "internal_error")


def create_router_app(
    settings: Settings | None = None, *, service: RouterService | None = None
) -> FastAPI:
    """The router app over ``service`` (default: one built from ``settings``)."""
    router = service or RouterService.from_settings(settings or get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await close_provider_clients()  # the providers' kept connections

    app = FastAPI(title="agent-engine model router", version="1", lifespan=lifespan)
    _install_error_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        eligible = [m["id"] for m in router.list_models() if m["eligible"]]
        return {"status": "ok", "eligible_models": eligible}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"models": router.list_models()}

    @app.post("/v1/route")
    async def route(body: RouteBody) -> dict[str, Any]:
        decision = await router.route(body.to_request(), body.remaining_budget_usd)
        dumped = decision.model_dump(mode="json")
        return {
            "model": dumped["model"],
            "candidates": dumped["candidates"],
            "reason": dumped["reason"],
            "estimated_cost_usd": dumped["estimated_cost_usd"],
            "decision": dumped,
        }

    @app.post("/v1/complete")
    async def complete(body: RouteBody, request: Request) -> dict[str, Any]:
        with continued_from(request.headers):  # the caller's traceparent: its step's span
            response, records, decision = await router.complete(
                body.to_request(), body.remaining_budget_usd
            )
        priced = [r.cost_usd for r in records if r.cost_usd is not None]
        usage = sum((r.usage for r in records), Usage())
        return {
            "response": response.model_dump(mode="json"),
            "usage": usage.model_dump(mode="json"),
            "cost_usd": format(sum(priced, Decimal(0)), "f"),
            "unpriced_calls": len(records) - len(priced),
            "routing": decision.model_dump(mode="json"),
            "calls": [r.model_dump(mode="json") for r in records],
        }

    @app.post(CHAT_COMPLETIONS_PATH)
    async def chat_completions(request: Request) -> Response:
        """OpenAI's chat completions, routed: no keys, budgets or ledger here (the engine
        API's endpoint has them)."""
        try:
            call = parse_chat_request(await read_chat_body(request), router.catalog, router.env)
            with continued_from(request.headers):
                answer, _, _ = await router.complete(call.request)
        except EngineError as exc:
            return error_response(exc)
        created = int(time.time())
        return chat_response(call, answer, id_=completion_id(uuid.uuid4().hex), created=created)

    return app
