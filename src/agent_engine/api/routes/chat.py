"""``POST /v1/chat/completions``: OpenAI's chat completions, routed by the engine, within the
caller's key and project budgets, every call in the ledger. Answers (and the errors the call
itself meets) are in OpenAI's format, so any OpenAI client can use it."""

from __future__ import annotations

import copy
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response

from agent_engine.api.access import requires
from agent_engine.api.deps import CurrentPrincipal, Engine
from agent_engine.api.openapi_responses import PROBLEM_SCHEMA
from agent_engine.domain.principals import Role
from agent_engine.engine import gateway
from agent_engine.errors import EngineError
from agent_engine.router.openai_answers import completion_id
from agent_engine.router.openai_http import (
    CHAT_COMPLETIONS_PATH,
    chat_response,
    error_response,
    read_chat_body,
)

router = APIRouter(tags=["openai"])

_OPENAI_ERROR: dict[str, Any] = {
    "type": "object",
    "title": "OpenAIError",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_OPENAI_OR_PROBLEM = {
    "application/json": {"schema": _OPENAI_ERROR},
    "application/problem+json": {"schema": PROBLEM_SCHEMA},
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A `chat.completion` object, or with `stream: true` its "
        "`chat.completion.chunk` events ending with `data: [DONE]`",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    },
    400: {
        "description": "Invalid or unsupported request (OpenAI's error object)",
        "content": _OPENAI_OR_PROBLEM,
    },
    429: {
        "description": "The key's or project's budget cannot hold the call "
        "(`insufficient_quota`), or the key's rate limit is spent",
        "content": _OPENAI_OR_PROBLEM,
    },
    502: {
        "description": "Every candidate model failed (OpenAI's error object)",
        "content": {"application/json": {"schema": _OPENAI_ERROR}},
    },
}
_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "OpenAI's chat completions request; see docs/openai-endpoint.md",
                "required": ["model", "messages"],
                "properties": {
                    "model": {"type": "string", "examples": ["auto", "small", "openai:gpt-4o"]},
                    "messages": {"type": "array", "items": {"type": "object"}},
                    "stream": {"type": "boolean"},
                },
            }
        }
    },
}


def _route_options() -> dict[str, Any]:
    options = requires(Role.OPERATOR, responses=copy.deepcopy(_RESPONSES))
    options["openapi_extra"]["requestBody"] = _BODY
    return options


@router.post(CHAT_COMPLETIONS_PATH, response_model=None, **_route_options())
async def chat_completions(
    request: Request,
    engine: Engine,
    principal: CurrentPrincipal,
    openai_project: Annotated[
        str | None,
        Header(alias="OpenAI-Project", description="The project whose budget the call uses"),
    ] = None,
) -> Response:
    """Answer an OpenAI chat completions request with a routed model (`model`: `auto`, a
    tier, or `provider:model`); 429 `insufficient_quota` when the worst case of the call does
    not fit the key's or project's budget (nothing is sent)."""
    try:
        caller = gateway.GatewayCaller(
            project=gateway.project_of(openai_project), api_key_id=principal.key_id
        )
        answered = await gateway.answer_chat(engine, await read_chat_body(request), caller)
    except EngineError as exc:
        return error_response(exc)
    return chat_response(
        answered.call,
        answered.answer,
        id_=completion_id(answered.call_id.hex),
        created=answered.created,
    )
