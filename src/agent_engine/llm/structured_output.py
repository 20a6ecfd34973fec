"""Structured output on the wire: which native feature a request uses, and what is shared by the
providers that use them (the forced tool, strict-mode eligibility, the prompt fallback, the
errors for answers that were cut off or refused).

Modes, as the model catalog names them: ``json_schema`` (OpenAI ``response_format`` with the
schema), ``tools`` (one forced tool whose parameters are the schema), ``json_object`` (JSON mode,
the schema in the prompt) and ``none`` (the schema in the prompt, JSON parsed from the text).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from agent_engine.errors import ProviderError
from agent_engine.llm.base import ChatMessage, Usage, WireExchange
from agent_engine.llm.transport import malformed, provider_error

StructuredOutput = Literal["json_schema", "tools", "json_object", "none"]
JSON_TOOL_NAME = "emit_json"
JSON_TOOL_DESCRIPTION = "Return the answer as JSON that matches the input schema exactly."
# What OpenAI's strict mode accepts, kept narrow: a schema using anything else is sent with
# strict false (still schema-guided), never rejected by the API.
_STRICT_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "anyOf",
        "$ref",
        "$defs",
        "definitions",
        "description",
        "title",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
    }
)
_STRICT_MAX_DEPTH = 10
_QUOTE_LIMIT = 200


def wrap_schema(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """An object schema for ``schema`` (tools and strict mode take only objects) and whether it
    wraps the value as ``{"value": …}``; ``$defs`` move to the new root so references hold."""
    if schema.get("type") == "object":
        return schema, False
    inner = {key: value for key, value in schema.items() if key not in ("$defs", "definitions")}
    wrapper: dict[str, Any] = {
        "type": "object",
        "properties": {"value": inner},
        "required": ["value"],
        "additionalProperties": False,
    }
    for key in ("$defs", "definitions"):
        if key in schema:
            wrapper[key] = schema[key]
    return wrapper, True


def strict_compatible(schema: dict[str, Any]) -> bool:
    """Whether OpenAI's strict mode accepts ``schema``: an object root, every object closed
    (``additionalProperties: false``) with all its properties required, known keywords only."""
    return schema.get("type") == "object" and _strict_node(schema, 0)


def _strict_node(node: Any, depth: int) -> bool:
    if not isinstance(node, dict) or depth > _STRICT_MAX_DEPTH or set(node) - _STRICT_KEYWORDS:
        return False
    if "$ref" in node:
        return True  # its target is checked where it is defined, under $defs
    if not any(key in node for key in ("type", "anyOf", "enum", "const")):
        return False
    children = _strict_children(node)
    return children is not None and all(_strict_node(child, depth + 1) for child in children)


def _strict_children(node: dict[str, Any]) -> list[Any] | None:
    """The subschemas of ``node`` to check, or None when ``node`` itself breaks strict mode."""
    types = node.get("type")
    kinds = types if isinstance(types, list) else [types]
    children: list[Any] = []
    if "object" in kinds or "properties" in node:
        properties = node.get("properties")
        required = node.get("required", [])
        if not isinstance(properties, dict) or node.get("additionalProperties") is not False:
            return None
        if not isinstance(required, list) or sorted(map(str, required)) != sorted(properties):
            return None
        children += properties.values()
    if "items" in node:
        children.append(node["items"])
    nested = [node.get("anyOf", []), *(node.get(key, {}) for key in ("$defs", "definitions"))]
    for group in nested:
        if not isinstance(group, list | dict):
            return None
        children += group if isinstance(group, list) else group.values()
    return children


def schema_instruction(schema: dict[str, Any]) -> str:
    """The prompt text that asks for JSON valid for ``schema`` (for models without a native way)."""
    text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False)
    return (
        "Answer with one JSON value and nothing else: no prose, no code fence. It must be valid "
        f"for this JSON schema:\n```json\n{text}\n```"
    )


def with_instruction(messages: list[ChatMessage], text: str) -> list[ChatMessage]:
    """``messages`` with ``text`` added to the first system message (or as one, first): many chat
    templates accept a single system message, at the start."""
    for index, message in enumerate(messages):
        if message.role == "system":
            merged = ChatMessage(role="system", content=f"{message.content}\n\n{text}")
            return [*messages[:index], merged, *messages[index + 1 :]]
    return [ChatMessage(role="system", content=text), *messages]


def tool_value(
    arguments: Any,
    wrapped: bool,
    *,
    provider: str,
    model: str,
    usage: Usage,
    wire: WireExchange | None,
) -> Any:
    """The JSON value of a forced tool call: ``arguments`` as a JSON string (OpenAI) or an
    object (Anthropic), unwrapped from ``{"value": …}`` when the schema was wrapped."""
    value = arguments
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except (ValueError, RecursionError) as exc:
            raise malformed(
                f"{provider} model {model} called {JSON_TOOL_NAME} with arguments that are not "
                f"valid JSON: {arguments[:_QUOTE_LIMIT]!r}",
                provider,
                model,
                usage,
                wire,
            ) from exc
    if not isinstance(value, dict) or (wrapped and "value" not in value):
        raise malformed(
            f"{provider} model {model} returned a tool call without the JSON value",
            provider,
            model,
            usage,
            wire,
        )
    return value["value"] if wrapped else value


def json_text(value: Any) -> str:
    """The text of a JSON value taken from a tool call: sorted keys, UTF-8."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def truncated(
    provider: str, model: str, limit: int, usage: Usage, wire: WireExchange | None
) -> ProviderError:
    """The answer hit the output limit before the JSON was complete (not retryable: the same
    request stops at the same place; another model or a larger limit may not)."""
    return provider_error(
        f"{provider} model {model} stopped at the output limit ({limit} tokens) before its JSON "
        "answer was complete",
        kind="truncated",
        provider=provider,
        model=model,
        usage=usage,
        wire=wire,
    )


def refused(
    provider: str, model: str, reason: str | None, usage: Usage, wire: WireExchange | None
) -> ProviderError:
    """The model declined to answer (not retryable on the same model)."""
    said = f": {reason[:_QUOTE_LIMIT]}" if reason else ""
    return provider_error(
        f"{provider} model {model} refused to answer{said}",
        kind="refused",
        provider=provider,
        model=model,
        usage=usage,
        wire=wire,
    )
