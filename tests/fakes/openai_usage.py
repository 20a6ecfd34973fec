"""Usage as OpenAI would report it for a Chat Completions body, for the loopback server.

``prompt_tokens`` follows OpenAI's published counting rule ("How to count tokens with tiktoken",
OpenAI cookbook) with the model's tokenizer: per message 3 tokens plus its role's and content's
tokens, plus 3 priming the reply. A schema sent natively (``response_format`` json_schema or a
tool) adds the tokens of those fields as compact sorted JSON: OpenAI does not publish how it
counts a schema, so the server follows the engine's documented estimate there. Written apart
from the engine's counter on purpose, so that a test compares two implementations of the rule.
``completion_tokens`` is the request's output limit: the most a call may be charged.
"""

from __future__ import annotations

import json
from typing import Any

import tiktoken

from agent_engine.llm.vendored_encodings import VENDORED_ENCODINGS, load_encoding

_SCHEMA_FIELDS = ("response_format", "tools", "tool_choice")


def _encoding(model: str) -> tiktoken.Encoding | None:
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return None
    return load_encoding(name) if name in VENDORED_ENCODINGS else None


def _native_schema_text(body: dict[str, Any]) -> str | None:
    response_format = body.get("response_format")
    native = "tools" in body or (
        isinstance(response_format, dict) and response_format.get("type") == "json_schema"
    )
    if not native:
        return None
    fields = {key: body[key] for key in _SCHEMA_FIELDS if key in body}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def openai_prompt_tokens(body: dict[str, Any]) -> int | None:
    """The prompt tokens OpenAI would report for ``body``; None for a model tiktoken does not
    map to a vendored encoding."""
    encoding = _encoding(str(body.get("model", "")))
    if encoding is None:
        return None
    messages = body.get("messages") or []
    tokens = 3  # the reply's priming
    for message in messages:
        tokens += 3 + len(encoding.encode_ordinary(str(message.get("role", ""))))
        tokens += len(encoding.encode_ordinary(str(message.get("content") or "")))
    schema_text = _native_schema_text(body)
    if schema_text is not None:
        tokens += len(encoding.encode_ordinary(schema_text))
    return tokens


def requested_max_tokens(body: dict[str, Any]) -> int | None:
    """The output limit ``body`` asks for (``max_tokens`` or ``max_completion_tokens``)."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int):
            return value
    return None


def exact_usage(body: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """``usage`` with prompt and completion tokens as the worst case of ``body``: the prompt
    counted as OpenAI would, every requested output token used. Fields it cannot work out (an
    unmapped model, no output limit) keep their scripted values."""
    updated = dict(usage)
    prompt = openai_prompt_tokens(body)
    if prompt is not None:
        updated["prompt_tokens"] = prompt
    completion = requested_max_tokens(body)
    if completion is not None:
        updated["completion_tokens"] = completion
    updated["total_tokens"] = int(updated.get("prompt_tokens", 0)) + int(
        updated.get("completion_tokens", 0)
    )
    return updated
