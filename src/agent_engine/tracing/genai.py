"""The GenAI semantic conventions of a ``chat`` span, and carrying a trace over HTTP.

The conventions are still in development. By default a span carries the latest attribute
names and, beside ``gen_ai.provider.name``, its v1.36.0 name ``gen_ai.system``; captured
message contents are v1.36.0 span events (``gen_ai.user.message``, ``gen_ai.choice``, …). With
``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`` only the latest conventions are
emitted: no ``gen_ai.system``, and contents as the attributes ``gen_ai.system_instructions``,
``gen_ai.input.messages`` and ``gen_ai.output.messages``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from decimal import Decimal
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.trace import Span

from agent_engine.llm.base import CompletionRequest, CompletionResponse
from agent_engine.llm.redaction import redact_text
from agent_engine.tracing.setup import STATE

_NOTHING: AbstractContextManager[None] = nullcontext()
# Why the router chose the model being called (set by the router around its calls).
_ROUTING: ContextVar[str | None] = ContextVar("agent_engine_routing_reason", default=None)


def request_attributes(provider: str, model: str, request: CompletionRequest) -> dict[str, Any]:
    """A ``chat`` span's attributes known before the call."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.request.max_tokens": request.max_output_tokens,
        "gen_ai.request.temperature": request.temperature,
        "gen_ai.output.type": "json" if request.json_schema is not None else "text",
    }
    if not STATE.latest_genai:
        attributes["gen_ai.system"] = provider  # v1.36.0's name of gen_ai.provider.name
    for name, value in (
        ("gen_ai.request.top_p", request.top_p),
        ("gen_ai.request.seed", request.seed),
        ("gen_ai.request.stop_sequences", request.stop),
    ):
        if value is not None:
            attributes[name] = value
    reason = _ROUTING.get()
    if reason is not None:
        attributes["agent_engine.routing.reason"] = reason
    if request.step_type is not None:
        attributes["agent_engine.step.type"] = request.step_type
    return attributes


def finish_reasons(response: CompletionResponse) -> list[str]:
    """Why the model stopped, as its provider said (OpenAI's choices, Anthropic's
    ``stop_reason``); ``stop`` when it says nothing (the offline model, a streamed answer)."""
    raw = response.raw
    choices = raw.get("choices")
    found = [
        str(choice["finish_reason"])
        for choice in (choices if isinstance(choices, list) else [])
        if isinstance(choice, dict) and choice.get("finish_reason")
    ]
    if not found and raw.get("stop_reason"):
        found = [str(raw["stop_reason"])]
    return found or ["stop"]


def describe_response(span: Span, response: CompletionResponse, cost_usd: Decimal | None) -> None:
    """What the call answered: model, usage, finish reasons, cost; contents when captured."""
    span.set_attribute("gen_ai.response.model", response.model)
    response_id = response.raw.get("id")
    if isinstance(response_id, str):
        span.set_attribute("gen_ai.response.id", response_id)
    span.set_attribute("gen_ai.usage.input_tokens", response.usage.input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", response.usage.output_tokens)
    span.set_attribute("gen_ai.response.finish_reasons", finish_reasons(response))
    if cost_usd is not None:
        span.set_attribute("agent_engine.cost_usd", float(cost_usd))


def capture_request(span: Span, provider: str, request: CompletionRequest) -> None:
    """The prompt on the span, keys masked; only with
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``."""
    if not STATE.capture_content:
        return
    if STATE.latest_genai:
        system = [m for m in request.messages if m.role == "system"]
        others = [m for m in request.messages if m.role != "system"]
        if system:
            parts = [{"type": "text", "content": redact_text(m.content)} for m in system]
            span.set_attribute("gen_ai.system_instructions", json.dumps(parts))
        messages = [
            {"role": m.role, "parts": [{"type": "text", "content": redact_text(m.content)}]}
            for m in others
        ]
        span.set_attribute("gen_ai.input.messages", json.dumps(messages))
        return
    for message in request.messages:
        span.add_event(
            f"gen_ai.{message.role}.message",
            {"gen_ai.system": provider, "content": redact_text(message.content)},
        )


def capture_response(span: Span, provider: str, response: CompletionResponse) -> None:
    """The answer on the span, keys masked; only when contents are captured."""
    if not STATE.capture_content:
        return
    reasons = finish_reasons(response)
    text = redact_text(response.text)
    if STATE.latest_genai:
        message = {
            "role": "assistant",
            "parts": [{"type": "text", "content": text}],
            "finish_reason": reasons[0],
        }
        span.set_attribute("gen_ai.output.messages", json.dumps([message]))
        return
    choice = {"role": "assistant", "content": text}
    span.add_event(
        "gen_ai.choice",
        {
            "gen_ai.system": provider,
            "index": 0,
            "finish_reason": reasons[0],
            "message": json.dumps(choice),
        },
    )


@contextmanager
def _routing(reason: str) -> Iterator[None]:
    token = _ROUTING.set(reason)
    try:
        yield
    finally:
        _ROUTING.reset(token)


def routing_reason(reason: str) -> AbstractContextManager[None]:
    """The model calls made inside say why the router chose their model."""
    return _NOTHING if STATE.tracer is None else _routing(reason)


def inject_traceparent(headers: MutableMapping[str, str]) -> None:
    """Add the current span's ``traceparent`` to outgoing ``headers`` (when tracing is on)."""
    if STATE.tracer is not None:
        propagate.inject(headers)


@contextmanager
def _continued(carrier: Mapping[str, str]) -> Iterator[None]:
    token = otel_context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


def continued_from(carrier: Mapping[str, str]) -> AbstractContextManager[None]:
    """Spans started inside continue the trace of the incoming ``traceparent`` in ``carrier``
    (an HTTP request's headers)."""
    return _NOTHING if STATE.tracer is None else _continued(carrier)
