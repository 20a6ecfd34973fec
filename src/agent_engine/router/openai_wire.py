"""OpenAI's Chat Completions wire format, translated: a request body into our
:class:`CompletionRequest`, our answer into a ``chat.completion`` object (or its stream of
``chat.completion.chunk`` events), and our errors into OpenAI's error object.

Translation only: no routing, no calls, no storage. Both the engine API (``/v1/chat/completions``
with keys, budgets and the ledger) and the standalone router service use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_engine.errors import CallerError
from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.llm.catalog import TIERS, ModelCatalog

AUTO_MODEL = "auto"
# Fields of the OpenAI request this endpoint cannot honour: refused, never silently dropped.
UNSUPPORTED_FIELDS: dict[str, str] = {
    "tools": "tool calling",
    "tool_choice": "tool calling",
    "functions": "function calling",
    "function_call": "function calling",
    "logprobs": "log probabilities",
    "top_logprobs": "log probabilities",
    "logit_bias": "logit bias",
    "audio": "audio output",
    "modalities": "output modalities other than text",
    "prediction": "predicted outputs",
    "web_search_options": "web search",
}
# Chat Completions roles; ``developer`` is OpenAI's newer name for ``system``.
ROLES: dict[str, Literal["system", "user", "assistant"]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
MAX_METADATA_ENTRIES = 16


class ChatRequestError(CallerError):
    """A chat completions request this endpoint cannot answer; rendered as OpenAI's error with
    ``param`` naming the offending field and ``openai_code`` its code."""

    code = "invalid_chat_request"
    http_status = 400
    title = "Invalid chat completions request"

    def __init__(
        self, detail: str, *, param: str | None = None, openai_code: str | None = None
    ) -> None:
        super().__init__(detail, param=param, openai_code=openai_code)


class _Wire(BaseModel):
    # Unknown fields are kept (and ignored) so that clients sending newer options still work.
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Wire):
    include_usage: bool = False


class WireMessage(_Wire):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatCompletionBody(_Wire):
    """The part of OpenAI's chat completions request that this endpoint reads."""

    model: str = Field(min_length=1, max_length=300)
    messages: list[WireMessage]
    max_tokens: int | None = Field(default=None, ge=1, le=200_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=200_000)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    response_format: dict[str, Any] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None


@dataclass(frozen=True)
class ChatCall:
    """One translated request: what to ask the router, and how the caller wants the answer."""

    request: CompletionRequest
    asked_model: str
    stream: bool = False
    include_usage: bool = False
    user: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def parse_chat_request(
    body: Any,
    catalog: ModelCatalog,
    env: Mapping[str, str] | None = None,
    *,
    check_available: bool = True,
) -> ChatCall:
    """Translate an OpenAI chat completions body; :class:`ChatRequestError` (400) for anything
    invalid or unsupported, naming the field. ``check_available=False`` leaves a named model's
    availability (its key variable) to the router that will call it."""
    if not isinstance(body, dict):
        raise ChatRequestError("the request body must be a JSON object")
    for name, feature in UNSUPPORTED_FIELDS.items():
        if body.get(name) not in (None, False, [], {}):
            raise ChatRequestError(
                f"{feature} ({name}) is not supported by this endpoint", param=name
            )
    try:
        wire = ChatCompletionBody.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first.get("loc", ())) or None
        raise ChatRequestError(f"{param}: {first.get('msg', 'invalid')}", param=param) from None
    if wire.n not in (None, 1):
        raise ChatRequestError("only n=1 is supported (one choice per request)", param="n")
    if wire.metadata is not None and len(wire.metadata) > MAX_METADATA_ENTRIES:
        raise ChatRequestError(
            f"metadata may have at most {MAX_METADATA_ENTRIES} entries", param="metadata"
        )
    request = CompletionRequest(
        messages=_messages(wire.messages),
        max_output_tokens=wire.max_completion_tokens or wire.max_tokens or 1024,
        temperature=wire.temperature if wire.temperature is not None else 0.0,
        top_p=wire.top_p,
        seed=wire.seed,
        stop=_stop(wire.stop),
        json_schema=_json_schema(wire.response_format),
        hints=model_hints(wire.model, catalog, env, check_available=check_available),
    )
    return ChatCall(
        request=request,
        asked_model=wire.model,
        stream=bool(wire.stream),
        include_usage=bool(wire.stream_options and wire.stream_options.include_usage),
        user=wire.user,
        metadata=dict(wire.metadata or {}),
    )


def model_hints(
    model: str,
    catalog: ModelCatalog,
    env: Mapping[str, str] | None = None,
    *,
    check_available: bool = True,
) -> dict[str, Any]:
    """Routing hints for OpenAI's ``model``: ``auto`` routes freely, a tier name pins the tier,
    ``provider:model`` asks for that catalog model (and its tier, for the fallbacks)."""
    if model == AUTO_MODEL:
        return {}
    if model in TIERS:
        return {"tier": model}
    entry = catalog.find(model)
    if entry is None:
        known = ", ".join(m.id for m in catalog.models)
        raise ChatRequestError(
            f"unknown model '{model}': use 'auto', a tier ({', '.join(TIERS)}) or a catalog "
            f"model ({known})",
            param="model",
            openai_code="model_not_found",
        )
    unavailable = catalog.unavailable_reason(entry, env) if check_available else None
    if unavailable is not None:
        raise ChatRequestError(
            f"model '{model}' is not available: {unavailable}",
            param="model",
            openai_code="model_not_available",
        )
    return {"model": entry.id, "tier": entry.tier}


def _messages(messages: list[WireMessage]) -> list[ChatMessage]:
    if not messages:
        raise ChatRequestError("messages must not be empty", param="messages")
    out = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = ROLES.get(message.role)
        if role is None:
            raise ChatRequestError(
                f"{where}: role '{message.role}' is not supported (tool results need tool "
                "calling, which this endpoint does not offer)",
                param=f"{where}.role",
            )
        if getattr(message, "tool_calls", None):
            raise ChatRequestError(
                f"{where}: tool calls are not supported", param=f"{where}.tool_calls"
            )
        out.append(ChatMessage(role=role, content=_text(message.content, where)))
    return out


def _text(content: str | list[dict[str, Any]] | None, where: str) -> str:
    """A message's text: a string, or text parts joined; any other part is refused."""
    if content is None:
        raise ChatRequestError(f"{where}: content is required", param=f"{where}.content")
    if isinstance(content, str):
        return content
    texts = []
    for number, part in enumerate(content):
        kind = part.get("type")
        text = part.get("text")
        if kind != "text" or not isinstance(text, str):
            raise ChatRequestError(
                f"{where}: content part of type '{kind}' is not supported (text only)",
                param=f"{where}.content[{number}]",
            )
        texts.append(text)
    return "".join(texts)


def _stop(stop: str | list[str] | None) -> list[str] | None:
    if stop is None:
        return None
    sequences = [stop] if isinstance(stop, str) else stop
    if len(sequences) > 4:
        raise ChatRequestError("stop may hold at most 4 sequences", param="stop")
    return sequences or None


def _json_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """``json_object`` asks for any JSON object; ``json_schema`` for JSON valid for its schema."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = (response_format or {}).get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ChatRequestError(
                "response_format.json_schema.schema must be a JSON schema object",
                param="response_format.json_schema.schema",
            )
        return schema
    raise ChatRequestError(
        f"response_format type '{kind}' is not supported (text, json_object or json_schema)",
        param="response_format.type",
    )
