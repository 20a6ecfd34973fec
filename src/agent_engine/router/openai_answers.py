"""Our answers and errors in OpenAI's Chat Completions wire format: the ``chat.completion``
object, its stream of ``chat.completion.chunk`` Server-Sent Events, and the error object.

Providers answer whole, so a stream replays the finished answer in pieces: the same text, the
same usage, only later than a provider's own stream would start.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from agent_engine.access_errors import ForbiddenError, RateLimitedError, UnauthenticatedError
from agent_engine.errors import BudgetExceededError, EngineError, ProviderError
from agent_engine.llm.base import CompletionResponse, Usage
from agent_engine.llm.redaction import redact_text
from agent_engine.router.openai_wire import ChatRequestError

STREAM_PIECE_CHARS = 48
DONE_EVENT = "data: [DONE]\n\n"
# Anthropic's stop reasons in OpenAI's terms; anything else ended normally.
_FINISH_REASONS = {"length": "length", "max_tokens": "length", "content_filter": "content_filter"}


def completion_id(key: str) -> str:
    """The ``id`` of a completion: ``chatcmpl-`` and a key unique to the call."""
    return f"chatcmpl-{key}"


def model_name(answer: CompletionResponse) -> str:
    """The model that answered, as ``provider:model`` (ask for it by that name to pin it)."""
    return f"{answer.provider}:{answer.model}"


def answer_content(answer: CompletionResponse) -> str:
    """The assistant message's text; a JSON answer given only as a value is serialised."""
    if answer.text or answer.json_value is None:
        return answer.text
    return json.dumps(answer.json_value, ensure_ascii=False)


def finish_reason(answer: CompletionResponse) -> str:
    """Why the answer ended, from the provider's own body: ``stop``, ``length`` or
    ``content_filter``."""
    raw = answer.raw
    choices = raw.get("choices")
    reason: Any = raw.get("stop_reason")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
    return _FINISH_REASONS.get(str(reason), "stop")


def usage_object(usage: Usage) -> dict[str, Any]:
    """OpenAI's ``usage``: prompt and completion tokens, with cached and reasoning details."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def completion_object(answer: CompletionResponse, *, id_: str, created: int) -> dict[str, Any]:
    """The ``chat.completion`` object for ``answer``."""
    return {
        "id": id_,
        "object": "chat.completion",
        "created": created,
        "model": model_name(answer),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer_content(answer)},
                "finish_reason": finish_reason(answer),
                "logprobs": None,
            }
        ],
        "usage": usage_object(answer.usage),
    }


def stream_events(
    answer: CompletionResponse, *, id_: str, created: int, include_usage: bool
) -> Iterator[str]:
    """The answer as Server-Sent Events: a role chunk, content chunks, a chunk with the finish
    reason, the usage chunk (when asked for), then ``[DONE]``."""
    model = model_name(answer)

    def chunk(delta: dict[str, Any], reason: str | None = None) -> str:
        body = {
            "id": id_,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}],
        }
        return _event(body)

    yield chunk({"role": "assistant", "content": ""})
    text = answer_content(answer)
    for start in range(0, len(text), STREAM_PIECE_CHARS):
        yield chunk({"content": text[start : start + STREAM_PIECE_CHARS]})
    yield chunk({}, finish_reason(answer))
    if include_usage:
        usage = {
            "id": id_,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage_object(answer.usage),
        }
        yield _event(usage)
    yield DONE_EVENT


def _event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False, separators=(',', ':'))}\n\n"


def error_object(
    message: str, *, kind: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_answer(error: EngineError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and OpenAI error body for one of our errors. A budget refusal is 429
    ``insufficient_quota`` (the official client raises RateLimitError for it)."""
    message = redact_text(error.detail)
    if isinstance(error, ChatRequestError):
        code = error.data.get("openai_code")
        param = error.data.get("param")
        return 400, error_object(message, kind="invalid_request_error", code=code, param=param)
    if isinstance(error, BudgetExceededError):
        return 429, error_object(message, kind="insufficient_quota", code="insufficient_quota")
    if isinstance(error, RateLimitedError):
        return 429, error_object(message, kind="requests", code="rate_limit_exceeded")
    if isinstance(error, UnauthenticatedError):
        return 401, error_object(message, kind="invalid_request_error", code="invalid_api_key")
    if isinstance(error, ForbiddenError):
        return 403, error_object(message, kind="permission_error", code=error.code)
    if isinstance(error, ProviderError):
        kind = str(error.data.get("kind") or error.code)
        if kind == "no_model":
            # No model can take the request as asked (its prompt and max_tokens exceed every
            # eligible model's limits): the caller must ask for less.
            return 400, error_object(message, kind="invalid_request_error", code=kind)
        return 502, error_object(message, kind="api_error", code=kind)
    status = error.http_status
    kind = "api_error" if status >= 500 else "invalid_request_error"
    return status, error_object(message, kind=kind, code=error.code)
