"""OpenAI-compatible Chat Completions provider (OpenAI, vLLM, Ollama, llama.cpp, LM Studio)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any, Literal

import httpx

from agent_engine.llm.base import (
    ChatMessage,
    CompletionRequest,
    CompletionResponse,
    LLMProvider,
    Usage,
)
from agent_engine.llm.redaction import redact
from agent_engine.llm.tokens import (
    estimated_usage,
    token_count,
)
from agent_engine.llm.transport import (
    ProviderTimeouts,
    decode_json_object,
    error_from_response,
    malformed,
    parse_json_output,
    post_json,
    provider_error,
    shared_client,
    transport_errors,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Where a request carries the output limit: ``max_tokens`` is what compatible servers read (many
# ignore anything else); OpenAI's reasoning models accept only ``max_completion_tokens``.
MaxTokensField = Literal["max_tokens", "max_completion_tokens"]
_SCHEMA_NAME = re.compile(r"[^a-zA-Z0-9_-]+")


def map_usage(raw: Any, messages: list[ChatMessage], text: str) -> Usage:
    """Map an OpenAI ``usage`` object; when it is missing, estimate from text and mark it."""
    if not isinstance(raw, dict) or "prompt_tokens" not in raw:
        return estimated_usage(messages, text)
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=token_count(raw.get("prompt_tokens")),
        output_tokens=token_count(raw.get("completion_tokens")),
        cached_input_tokens=token_count(prompt_details.get("cached_tokens")),
        reasoning_tokens=token_count(completion_details.get("reasoning_tokens")),
    )


def schema_name(schema: dict[str, Any]) -> str:
    """A response_format name from the schema's title (the API allows [a-zA-Z0-9_-], 64 chars)."""
    title = schema.get("title")
    name = _SCHEMA_NAME.sub("_", title)[:64] if isinstance(title, str) else ""
    return name or "response"


class OpenAICompatProvider(LLMProvider):
    """Chat Completions over httpx; ``name`` is configurable so any compatible server can be used.

    The API key is read from the environment variable ``api_key_env`` at call time and is never
    stored in responses, errors or logs. ``api_key_env=None`` sends no Authorization header. The
    output limit goes in ``max_tokens``, which every compatible server reads, unless
    ``max_tokens_fields`` names another field for a model (OpenAI's reasoning models take only
    ``max_completion_tokens``).
    """

    def __init__(
        self,
        *,
        name: str = "openai",
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        stream: bool = False,
        json_mode: Literal["json_schema", "json_object"] = "json_schema",
        max_tokens_field: MaxTokensField = "max_tokens",
        max_tokens_fields: Mapping[str, MaxTokensField] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = name
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )
        self.api_key_env = api_key_env
        self.timeouts = ProviderTimeouts(read_s=timeout_s, connect_s=connect_timeout_s)
        self.stream = stream
        self.json_mode = json_mode
        self.max_tokens_field = max_tokens_field
        self.max_tokens_fields = dict(max_tokens_fields or {})
        self._client = client

    def _http(self) -> httpx.AsyncClient:
        # The process-wide client keeps connections (and TLS sessions) across calls and steps.
        if self._client is not None:
            return self._client
        return shared_client(self.base_url, self.timeouts)

    def output_limit_field(self, model: str) -> MaxTokensField:
        """The request field that carries the output token limit for ``model``."""
        return self.max_tokens_fields.get(model, self.max_tokens_field)

    def _headers(self, model: str) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.api_key_env is None:
            return headers
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise provider_error(
                f"{self.name}: environment variable {self.api_key_env} is not set",
                kind="client_error",
                provider=self.name,
                model=model,
            )
        headers["authorization"] = f"Bearer {key}"
        return headers

    def build_body(self, request: CompletionRequest, model: str, *, stream: bool) -> dict[str, Any]:
        """The Chat Completions request body for ``request`` (no secrets in it)."""
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            self.output_limit_field(model): request.max_output_tokens,
            "temperature": request.temperature,
        }
        if request.json_schema is not None:
            if self.json_mode == "json_schema":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": schema_name(request.json_schema),
                        "schema": request.json_schema,
                        "strict": True,
                    },
                }
            else:
                body["response_format"] = {"type": "json_object"}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        """Call ``model``; streams when the provider was built with ``stream=True``."""
        if self.stream:
            return await self.complete_stream(request, model)
        headers = self._headers(model)
        started = time.perf_counter()
        data = await post_json(
            self._http(),
            f"{self.base_url}/chat/completions",
            headers=headers,
            body=self.build_body(request, model, stream=False),
            provider=self.name,
            model=model,
        )
        text = self._message_text(data, model)
        return self._response(request, model, text, data, data.get("usage"), started)

    async def complete_stream(self, request: CompletionRequest, model: str) -> CompletionResponse:
        """Call ``model`` with SSE streaming; assemble the text, take usage from the last chunk."""
        headers = self._headers(model)
        body = self.build_body(request, model, stream=True)
        started = time.perf_counter()
        with transport_errors(self.name, model):
            async with self._http().stream(
                "POST", f"{self.base_url}/chat/completions", json=body, headers=headers
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise error_from_response(response, self.name, model)
                pieces, usage_raw, last = await self._read_stream(response, model)
        text = "".join(pieces)
        raw = {
            "id": last.get("id"),
            "object": "chat.completion",
            "model": last.get("model"),
            "streamed": True,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": usage_raw,
        }
        return self._response(request, model, text, raw, usage_raw, started)

    async def _read_stream(
        self, response: httpx.Response, model: str
    ) -> tuple[list[str], Any, dict[str, Any]]:
        pieces: list[str] = []
        usage_raw: Any = None
        last: dict[str, Any] = {}
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue  # SSE comments, event names and keep-alive blank lines
            payload = line[len("data:") :].strip()
            if payload == "[DONE]":
                break
            chunk = decode_json_object(payload, self.name, model)
            if "error" in chunk:
                raise provider_error(
                    f"{self.name} reported an error mid-stream for model {model}",
                    kind="server_error",
                    provider=self.name,
                    model=model,
                )
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if isinstance(content, str):
                    pieces.append(content)
            if chunk.get("usage"):
                usage_raw = chunk["usage"]
            last = chunk
        return pieces, usage_raw, last

    def _message_text(self, data: dict[str, Any], model: str) -> str:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise malformed(
                f"{self.name} response for model {model} has no choices", self.name, model
            )
        message = choices[0].get("message") or {}
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            refusal = message.get("refusal") if isinstance(message, dict) else None
            reason = "refused" if refusal else "has no text content"
            raise malformed(f"{self.name} response for model {model} {reason}", self.name, model)
        return content

    def _response(
        self,
        request: CompletionRequest,
        model: str,
        text: str,
        raw: dict[str, Any],
        usage_raw: Any,
        started: float,
    ) -> CompletionResponse:
        usage = map_usage(usage_raw, request.messages, text)
        json_value = (
            parse_json_output(text, self.name, model, usage)
            if request.json_schema is not None
            else None
        )
        return CompletionResponse(
            text=text,
            json_value=json_value,
            usage=usage,
            provider=self.name,
            model=model,
            raw=redact(raw),
            latency_ms=(time.perf_counter() - started) * 1000,
        )
