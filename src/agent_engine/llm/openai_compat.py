"""OpenAI-compatible Chat Completions provider (OpenAI, vLLM, Ollama, llama.cpp, LM Studio)."""

from __future__ import annotations

import os
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
    WireExchange,
)
from agent_engine.llm.openai_structured import chat_messages, json_tool_call, structured_fields
from agent_engine.llm.redaction import redact, redact_text
from agent_engine.llm.structured_output import (
    StructuredOutput,
    json_text,
    refused,
    tool_value,
    truncated,
    wrap_schema,
)
from agent_engine.llm.tokens import (
    estimated_usage,
    token_count,
)
from agent_engine.llm.transport import (
    ProviderTimeouts,
    decode_json_object,
    encode_body,
    error_from_response,
    malformed,
    parse_json_output,
    post_json,
    provider_error,
    shared_client,
    transport_errors,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
WIRE_FORMAT = "openai.chat_completions"
# Where a request carries the output limit: ``max_tokens`` is what compatible servers read (many
# ignore anything else); OpenAI's reasoning models accept only ``max_completion_tokens``.
MaxTokensField = Literal["max_tokens", "max_completion_tokens"]


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


class OpenAICompatProvider(LLMProvider):
    """Chat Completions over httpx; ``name`` is configurable so any compatible server can be used.

    The API key is read from the environment variable ``api_key_env`` at call time and is never
    stored in responses, errors or logs. ``api_key_env=None`` sends no Authorization header. The
    output limit goes in ``max_tokens``, which every compatible server reads, unless
    ``max_tokens_fields`` names another field for a model (OpenAI's reasoning models take only
    ``max_completion_tokens``). A request with a JSON schema uses ``structured_output`` (or the
    model's entry in ``structured_outputs``) and is never streamed: its answer is parsed whole.
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
        structured_output: StructuredOutput = "json_schema",
        structured_outputs: Mapping[str, StructuredOutput] | None = None,
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
        self.structured_output = structured_output
        self.structured_outputs = dict(structured_outputs or {})
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

    def structured_output_mode(self, model: str) -> StructuredOutput:
        """How a JSON schema is sent to ``model``: json_schema, tools, json_object or none."""
        return self.structured_outputs.get(model, self.structured_output)

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
        mode = self.structured_output_mode(model) if request.json_schema is not None else None
        body: dict[str, Any] = {
            "model": model,
            "messages": chat_messages(request, mode),
            self.output_limit_field(model): request.max_output_tokens,
            "temperature": request.temperature,
        }
        if request.json_schema is not None and mode is not None:
            body.update(structured_fields(request.json_schema, mode))
        # Only what the caller set: an unset parameter keeps the server's default.
        for name in ("top_p", "seed", "stop"):
            value = getattr(request, name)
            if value is not None:
                body[name] = value
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        """Call ``model``; streams text when the provider was built with ``stream=True``."""
        if self.stream and request.json_schema is None:
            return await self.complete_stream(request, model)
        headers = self._headers(model)
        started = time.perf_counter()
        data, wire = await post_json(
            self._http(),
            f"{self.base_url}/chat/completions",
            headers=headers,
            body=self.build_body(request, model, stream=False),
            provider=self.name,
            model=model,
            wire_format=WIRE_FORMAT,
        )
        return self.read_body(request, model, data, wire, started)

    def read_body(
        self,
        request: CompletionRequest,
        model: str,
        data: dict[str, Any],
        wire: WireExchange | None = None,
        started: float | None = None,
    ) -> CompletionResponse:
        """The normalised answer in a Chat Completions body: the text, or the JSON value of the
        forced tool call or of the text; refusals and cut-off JSON answers raise."""
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise malformed(
                f"{self.name} response for model {model} has no choices",
                self.name,
                model,
                wire=wire,
            )
        choice = choices[0]
        message = choice.get("message")
        message = message if isinstance(message, dict) else {}
        content = message.get("content")
        call = json_tool_call(message)
        text = content if isinstance(content, str) else ""
        arguments = (call.get("arguments") if call is not None else None) or ""
        usage = map_usage(data.get("usage"), request.messages, text or str(arguments))
        if message.get("refusal"):
            raise refused(self.name, model, str(message["refusal"]), usage, wire)
        if choice.get("finish_reason") == "content_filter" and request.json_schema is not None:
            raise refused(self.name, model, "the content filter stopped the answer", usage, wire)
        json_value: Any = None
        if request.json_schema is not None:
            if choice.get("finish_reason") == "length":
                raise truncated(self.name, model, request.max_output_tokens, usage, wire)
            text, json_value = self._json_value(request.json_schema, text, call, model, usage, wire)
        elif not isinstance(content, str):
            raise malformed(
                f"{self.name} response for model {model} has no text content",
                self.name,
                model,
                usage,
                wire,
            )
        return self._response(request, model, text, json_value, usage, data, wire, started)

    def _json_value(
        self,
        schema: dict[str, Any],
        text: str,
        call: dict[str, Any] | None,
        model: str,
        usage: Usage,
        wire: WireExchange | None,
    ) -> tuple[str, Any]:
        _, wrapped = wrap_schema(schema)
        if call is not None:
            value = tool_value(
                call.get("arguments"),
                wrapped,
                provider=self.name,
                model=model,
                usage=usage,
                wire=wire,
            )
            return json_text(value), value
        # No tool call: the JSON is in the text (json_schema, json_object, none, or a compatible
        # server that ignored the tool); a wrapped schema's value comes back unwrapped.
        value = parse_json_output(text, self.name, model, usage, wire)
        sent_wrapped = wrapped and self.structured_output_mode(model) in ("json_schema", "tools")
        if sent_wrapped and isinstance(value, dict) and set(value) == {"value"}:
            return json_text(value["value"]), value["value"]
        return text, value

    async def complete_stream(self, request: CompletionRequest, model: str) -> CompletionResponse:
        """Call ``model`` with SSE streaming; assemble the text, take usage from the last chunk."""
        headers = self._headers(model)
        body = self.build_body(request, model, stream=True)
        sent = encode_body(body)
        started = time.perf_counter()
        with transport_errors(self.name, model):
            async with self._http().stream(
                "POST",
                f"{self.base_url}/chat/completions",
                content=sent.encode("utf-8"),
                headers=headers,
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise error_from_response(response, self.name, model)
                pieces, usage_raw, last, lines = await self._read_stream(response, model)
        text = "".join(pieces)
        raw = {
            "id": last.get("id"),
            "object": "chat.completion",
            "model": last.get("model"),
            "streamed": True,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": usage_raw,
        }
        wire = WireExchange(
            format=f"{WIRE_FORMAT}.stream",
            path=httpx.URL(self.base_url).path + "/chat/completions",
            request_body=redact_text(sent),
            status=response.status_code,
            response_body=redact_text("\n".join(lines)),
        )
        usage = map_usage(usage_raw, request.messages, text)
        return self._response(request, model, text, None, usage, raw, wire, started)

    async def _read_stream(
        self, response: httpx.Response, model: str
    ) -> tuple[list[str], Any, dict[str, Any], list[str]]:
        pieces: list[str] = []
        usage_raw: Any = None
        last: dict[str, Any] = {}
        lines: list[str] = []
        async for line in response.aiter_lines():
            lines.append(line)
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
        return pieces, usage_raw, last, lines

    def _response(
        self,
        request: CompletionRequest,
        model: str,
        text: str,
        json_value: Any,
        usage: Usage,
        raw: dict[str, Any],
        wire: WireExchange | None,
        started: float | None,
    ) -> CompletionResponse:
        latency = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        return CompletionResponse(
            text=text,
            json_value=json_value,
            usage=usage,
            provider=self.name,
            model=model,
            raw=redact(raw),
            latency_ms=latency,
            wire=wire,
        )
