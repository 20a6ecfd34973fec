"""The Chat Completions fields for a JSON schema in each structured-output mode, and the forced
tool's call in an answer (the OpenAI side of :mod:`agent_engine.llm.structured_output`)."""

from __future__ import annotations

import re
from typing import Any

from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.llm.structured_output import (
    JSON_TOOL_DESCRIPTION,
    JSON_TOOL_NAME,
    StructuredOutput,
    schema_instruction,
    strict_compatible,
    with_instruction,
    wrap_schema,
)

_SCHEMA_NAME = re.compile(r"[^a-zA-Z0-9_-]+")


def sent_messages(request: CompletionRequest, mode: StructuredOutput | None) -> list[ChatMessage]:
    """The messages a Chat Completions request carries: the request's own, with the schema in
    the prompt for the modes that have no native schema feature."""
    messages = request.messages
    if request.json_schema is not None and mode in ("json_object", "none"):
        # Without a native schema feature the schema travels in the prompt (JSON mode also needs
        # the word "JSON" in the messages, which the instruction carries).
        messages = with_instruction(messages, schema_instruction(request.json_schema))
    return list(messages)


def chat_messages(
    request: CompletionRequest, mode: StructuredOutput | None
) -> list[dict[str, str]]:
    """The request's messages as Chat Completions takes them (see :func:`sent_messages`)."""
    return [{"role": m.role, "content": m.content} for m in sent_messages(request, mode)]


def structured_fields(schema: dict[str, Any], mode: StructuredOutput) -> dict[str, Any]:
    """The body fields that ask for JSON valid for ``schema`` in ``mode``; strict only when the
    schema qualifies for it."""
    if mode == "json_object":
        return {"response_format": {"type": "json_object"}}
    if mode == "none":
        return {}
    wrapped, _ = wrap_schema(schema)
    strict = strict_compatible(wrapped)
    if mode == "tools":
        function = {
            "name": JSON_TOOL_NAME,
            "description": JSON_TOOL_DESCRIPTION,
            "parameters": wrapped,
            "strict": strict,
        }
        return {
            "tools": [{"type": "function", "function": function}],
            "tool_choice": {"type": "function", "function": {"name": JSON_TOOL_NAME}},
        }
    json_schema = {"name": schema_name(schema), "schema": wrapped, "strict": strict}
    return {"response_format": {"type": "json_schema", "json_schema": json_schema}}


def schema_name(schema: dict[str, Any]) -> str:
    """A response_format name from the schema's title (the API allows [a-zA-Z0-9_-], 64 chars)."""
    title = schema.get("title")
    name = _SCHEMA_NAME.sub("_", title)[:64] if isinstance(title, str) else ""
    return name or "response"


def json_tool_call(message: dict[str, Any]) -> dict[str, Any] | None:
    """The ``function`` of the first call to the JSON tool in ``message``, if any."""
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and function.get("name") == JSON_TOOL_NAME:
            return function
    return None
