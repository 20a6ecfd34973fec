"""The HTTP side of the OpenAI-compatible endpoint, shared by the engine API and the router
service: reading the body, and answering with a completion, an event stream or an error."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from agent_engine.errors import EngineError
from agent_engine.llm.base import CompletionResponse
from agent_engine.router.openai_answers import completion_object, error_answer, stream_events
from agent_engine.router.openai_wire import ChatCall, ChatRequestError

CHAT_COMPLETIONS_PATH = "/v1/chat/completions"


async def read_chat_body(request: Request) -> Any:
    """The request's JSON document; a body that is not JSON is a 400 in OpenAI's format."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        raise ChatRequestError(f"the request body is not valid JSON: {exc}") from None


def chat_response(
    call: ChatCall, answer: CompletionResponse, *, id_: str, created: int
) -> Response:
    """The answer as the caller asked for it: one ``chat.completion``, or its event stream."""
    if not call.stream:
        return JSONResponse(completion_object(answer, id_=id_, created=created))
    events = stream_events(answer, id_=id_, created=created, include_usage=call.include_usage)

    async def send() -> AsyncIterator[str]:
        for event in events:
            yield event

    return StreamingResponse(
        send(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def error_response(error: EngineError) -> JSONResponse:
    """One of our errors as OpenAI's error object, with the error's own headers (Retry-After,
    WWW-Authenticate)."""
    status, body = error_answer(error)
    return JSONResponse(body, status_code=status, headers=error.headers())
