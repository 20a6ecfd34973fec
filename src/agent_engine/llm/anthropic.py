"""Anthropic Messages API provider.

JSON output uses forced tool use: the request's schema becomes the input schema of one tool
(``emit_json``) that the model must call, and the tool call's input is the JSON value. This gives
schema-shaped JSON without prompt tricks; a non-object schema is wrapped as ``{"value": …}``. If a
compatible server answers with plain text instead, the text is parsed as JSON. A model the
catalog marks ``structured_output: none`` gets the schema in the system prompt instead.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from agent_engine.llm.base import (
    ChatMessage,
    CompletionRequest,
    CompletionResponse,
    LLMProvider,
    Usage,
    WireExchange,
)
from agent_engine.llm.redaction import redact
from agent_engine.llm.structured_output import (
    JSON_TOOL_DESCRIPTION,
    JSON_TOOL_NAME,
    StructuredOutput,
    json_text,
    refused,
    schema_instruction,
    tool_value,
    truncated,
    with_instruction,
    wrap_schema,
)
from agent_engine.llm.tokens import (
    estimated_usage,
    token_count,
)
from agent_engine.llm.transport import (
    ProviderTimeouts,
    malformed,
    parse_json_output,
    post_json,
    provider_error,
    shared_client,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
WIRE_FORMAT = "anthropic.messages"
# Stop reasons after which a JSON answer is incomplete.
_CUT_OFF = frozenset({"max_tokens", "model_context_window_exceeded"})


def map_usage(raw: Any, messages: list[ChatMessage], text: str) -> Usage:
    """Map Anthropic usage; ``input_tokens`` becomes all input, cache reads and writes included."""
    if not isinstance(raw, dict) or "input_tokens" not in raw:
        return estimated_usage(messages, text)
    cache_read = token_count(raw.get("cache_read_input_tokens"))
    cache_write = token_count(raw.get("cache_creation_input_tokens"))
    # Anthropic reports uncached input separately; our Usage (like OpenAI and genai-prices)
    # counts all input tokens in input_tokens, with the cached/written share broken out.
    return Usage(
        input_tokens=token_count(raw.get("input_tokens")) + cache_read + cache_write,
        output_tokens=token_count(raw.get("output_tokens")),
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def json_tool(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The forced tool for ``schema`` and whether the value is wrapped in ``{"value": …}``."""
    input_schema, wrapped = wrap_schema(schema)
    tool = {
        "name": JSON_TOOL_NAME,
        "description": JSON_TOOL_DESCRIPTION,
        "input_schema": input_schema,
    }
    return tool, wrapped


class AnthropicProvider(LLMProvider):
    """Messages API over httpx; the key comes from ``api_key_env`` at call time, never stored."""

    def __init__(
        self,
        *,
        name: str = "anthropic",
        base_url: str | None = None,
        api_key_env: str = "ANTHROPIC_API_KEY",
        timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        structured_output: StructuredOutput = "tools",
        structured_outputs: dict[str, StructuredOutput] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = name
        # Messages has one native way (a forced tool): every mode but "none" uses it.
        self.structured_output = structured_output
        self.structured_outputs = dict(structured_outputs or {})
        self.base_url = (
            base_url or os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL
        ).rstrip("/")
        self.api_key_env = api_key_env
        self.timeouts = ProviderTimeouts(read_s=timeout_s, connect_s=connect_timeout_s)
        self._client = client

    def _headers(self, model: str) -> dict[str, str]:
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise provider_error(
                f"{self.name}: environment variable {self.api_key_env} is not set",
                kind="client_error",
                provider=self.name,
                model=model,
            )
        return {
            "content-type": "application/json",
            "x-api-key": key,
            "anthropic-version": ANTHROPIC_VERSION,
        }

    def uses_tool(self, model: str) -> bool:
        """Whether a JSON schema goes to ``model`` as a forced tool (else in the system prompt)."""
        return self.structured_outputs.get(model, self.structured_output) != "none"

    def build_body(self, request: CompletionRequest, model: str) -> dict[str, Any]:
        """The Messages request body: system messages joined into ``system``, others in order."""
        messages = request.messages
        tool = request.json_schema is not None and self.uses_tool(model)
        if request.json_schema is not None and not tool:
            messages = with_instruction(messages, schema_instruction(request.json_schema))
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_output_tokens,
            "temperature": request.temperature,
            "messages": [
                {"role": m.role, "content": m.content} for m in messages if m.role != "system"
            ],
        }
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        if system:
            body["system"] = system
        # The Messages API has no seed; top_p and stop sequences go when the caller set them.
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        if request.json_schema is not None and tool:
            definition, _ = json_tool(request.json_schema)
            body["tools"] = [definition]
            body["tool_choice"] = {"type": "tool", "name": JSON_TOOL_NAME}
        return body

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        """Call ``model`` through the Messages API; raise a classified ProviderError on failure."""
        headers = self._headers(model)
        started = time.perf_counter()
        # The shared client keeps connections (and TLS sessions) across calls and steps.
        client = self._client
        if client is None:
            client = shared_client(self.base_url, self.timeouts)
        data, wire = await post_json(
            client,
            f"{self.base_url}/v1/messages",
            headers=headers,
            body=self.build_body(request, model),
            provider=self.name,
            model=model,
            wire_format=WIRE_FORMAT,
        )
        response = self.read_body(request, model, data, wire)
        latency = (time.perf_counter() - started) * 1000
        return response.model_copy(update={"latency_ms": latency})

    def read_body(
        self,
        request: CompletionRequest,
        model: str,
        data: dict[str, Any],
        wire: WireExchange | None = None,
    ) -> CompletionResponse:
        """The normalised answer in a Messages body; refusals and cut-off JSON answers raise."""
        blocks = data.get("content")
        if not isinstance(blocks, list):
            detail = f"{self.name} response for model {model} has no content"
            raise malformed(detail, self.name, model, wire=wire)
        text = "".join(
            str(b.get("text", ""))
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "text"
        )
        tool_block = next(
            (
                b
                for b in blocks
                if isinstance(b, dict)
                and b.get("type") == "tool_use"
                and b.get("name") == JSON_TOOL_NAME
            ),
            None,
        )
        usage = map_usage(data.get("usage"), request.messages, text)
        stop_reason = data.get("stop_reason")
        if stop_reason == "refusal":
            raise refused(self.name, model, text.strip() or None, usage, wire)
        json_value: Any = None
        if request.json_schema is not None:
            if stop_reason in _CUT_OFF:
                raise truncated(self.name, model, request.max_output_tokens, usage, wire)
            text, json_value = self._json_output(
                request.json_schema, text, tool_block, model, usage, wire
            )
        return CompletionResponse(
            text=text,
            json_value=json_value,
            usage=usage,
            provider=self.name,
            model=model,
            raw=redact(data),
            wire=wire,
        )

    def _json_output(
        self,
        schema: dict[str, Any],
        text: str,
        tool_block: dict[str, Any] | None,
        model: str,
        usage: Usage,
        wire: WireExchange | None,
    ) -> tuple[str, Any]:
        if tool_block is None:
            return text, parse_json_output(text, self.name, model, usage, wire)
        _, wrapped = json_tool(schema)
        value = tool_value(
            tool_block.get("input"),
            wrapped,
            provider=self.name,
            model=model,
            usage=usage,
            wire=wire,
        )
        return json_text(value), value
