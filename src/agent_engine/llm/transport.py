"""HTTP plumbing shared by the remote providers: posting JSON, classifying failures, parsing output.

Failure kinds: ``timeout``, ``connection``, ``rate_limited`` and ``server_error`` are retryable on
the same model; ``client_error``, ``malformed``, ``truncated`` (the answer hit the output limit) and
``refused`` (the model declined) are not: the same request would get the same answer, so the
router moves to another model. An error raised after the provider answered carries the exchange
(``wire``) so the call's record keeps what was sent and received.
"""

from __future__ import annotations

import asyncio
import json
import re
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx

from agent_engine.errors import ProviderError
from agent_engine.llm.base import Usage, WireExchange
from agent_engine.llm.redaction import redact_text

ErrorKind = Literal[
    "timeout",
    "rate_limited",
    "server_error",
    "client_error",
    "malformed",
    "connection",
    "truncated",
    "refused",
]
RETRYABLE_KINDS = frozenset({"timeout", "rate_limited", "server_error", "connection"})
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)
# A ```json block inside prose: what models without a JSON mode often answer.
_EMBEDDED_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n(?P<body>.*?)\n[ \t]*```", re.DOTALL)
_MESSAGE_LIMIT = 300


def provider_error(
    detail: str,
    *,
    kind: ErrorKind,
    provider: str,
    model: str,
    status_code: int | None = None,
    retry_after_s: float | None = None,
    usage: Usage | None = None,
    wire: WireExchange | None = None,
) -> ProviderError:
    """A ProviderError whose ``retryable`` flag and ``kind`` follow the classification above."""
    return ProviderError(
        redact_text(detail),
        retryable=kind in RETRYABLE_KINDS,
        kind=kind,
        provider=provider,
        model=model,
        status_code=status_code,
        retry_after_s=retry_after_s,
        usage=usage.model_dump() if usage is not None else None,
        wire=wire.model_dump() if wire is not None else None,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait per a Retry-After header (seconds or HTTP-date); None if absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:_MESSAGE_LIMIT]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:_MESSAGE_LIMIT]
    return json.dumps(body)[:_MESSAGE_LIMIT]


def error_from_response(
    response: httpx.Response, provider: str, model: str, wire: WireExchange | None = None
) -> ProviderError:
    """Classify a non-2xx response: 429 rate_limited, 5xx server_error, other 4xx client_error."""
    status = response.status_code
    kind: ErrorKind = "client_error"
    if status == 429:
        kind = "rate_limited"
    elif status >= 500:
        kind = "server_error"
    return provider_error(
        f"{provider} returned HTTP {status} for model {model}: {_error_message(response)}",
        kind=kind,
        provider=provider,
        model=model,
        status_code=status,
        retry_after_s=parse_retry_after(response.headers.get("retry-after")),
        wire=wire,
    )


@contextmanager
def transport_errors(provider: str, model: str) -> Iterator[None]:
    """Turn httpx timeouts and connection failures into retryable ProviderErrors."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise provider_error(
            f"{provider} timed out for model {model} ({type(exc).__name__})",
            kind="timeout",
            provider=provider,
            model=model,
        ) from exc
    except httpx.TransportError as exc:
        raise provider_error(
            f"{provider} connection failed for model {model} ({type(exc).__name__})",
            kind="connection",
            provider=provider,
            model=model,
        ) from exc


@dataclass(frozen=True)
class ProviderTimeouts:
    """How long a provider call waits: to connect, and for each read of the response."""

    read_s: float = 60.0
    connect_s: float = 10.0

    def httpx_timeout(self) -> httpx.Timeout:
        """The httpx timeout: ``read_s`` for reads, writes and the pool, never a longer connect."""
        return httpx.Timeout(self.read_s, connect=min(self.connect_s, self.read_s))


# One client per (base URL, timeouts) and event loop: a client's pooled connections belong to the
# loop that opened them, so another loop (a second asyncio.run, a test's own loop) gets its own.
# Open connections keep their loop alive here: close_provider_clients must run before it ends.
_SharedKey = tuple[str, ProviderTimeouts]
_SHARED: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[_SharedKey, httpx.AsyncClient]
] = weakref.WeakKeyDictionary()


def shared_client(base_url: str, timeouts: ProviderTimeouts) -> httpx.AsyncClient:
    """The shared client for ``base_url`` in this event loop: built on first use, its connections
    kept and reused by every later call until :func:`close_provider_clients`."""
    clients = _SHARED.setdefault(asyncio.get_running_loop(), {})
    key = (base_url, timeouts)
    client = clients.get(key)
    if client is None or client.is_closed:
        client = clients[key] = httpx.AsyncClient(timeout=timeouts.httpx_timeout())
    return client


async def close_provider_clients() -> None:
    """Close every shared client this event loop opened; call it at shutdown, on the loop that
    made the calls. Later calls open new clients."""
    clients = _SHARED.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        await client.aclose()


def encode_body(body: dict[str, Any]) -> str:
    """The JSON text a request body is sent as: compact, UTF-8, keys in the order built."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str],
    body: dict[str, Any],
    provider: str,
    model: str,
    wire_format: str,
) -> tuple[dict[str, Any], WireExchange]:
    """POST ``body`` as JSON; the decoded JSON object and the exchange as it went (secrets
    masked), or raise a classified error that carries the exchange."""
    sent = encode_body(body)
    path = httpx.URL(url).path
    with transport_errors(provider, model):
        # Sent as the exact text recorded, so a record shows byte for byte what went out.
        response = await client.post(url, content=sent.encode("utf-8"), headers=headers)
    wire = WireExchange(
        format=wire_format,
        path=path,
        request_body=redact_text(sent),
        status=response.status_code,
        response_body=redact_text(response.text),
    )
    if not response.is_success:
        raise error_from_response(response, provider, model, wire)
    return decode_json_object(response.text, provider, model, wire), wire


def decode_json_object(
    text: str, provider: str, model: str, wire: WireExchange | None = None
) -> dict[str, Any]:
    """Decode a response body that must be a JSON object; anything else is ``malformed``."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past the parser
        raise provider_error(
            f"{provider} sent a body that is not JSON for model {model}",
            kind="malformed",
            provider=provider,
            model=model,
            wire=wire,
        ) from exc
    if not isinstance(value, dict):
        raise provider_error(
            f"{provider} sent a JSON body that is not an object for model {model}",
            kind="malformed",
            provider=provider,
            model=model,
            wire=wire,
        )
    return value


def parse_json_output(
    text: str, provider: str, model: str, usage: Usage, wire: WireExchange | None = None
) -> Any:
    """Parse model output that was asked to be JSON: the whole text, the text inside one code
    fence around it, or else the first ```json block in the text."""
    match = _FENCE.match(text)
    candidate = match.group("body") if match else text
    try:
        return json.loads(candidate)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past the parser
        embedded = _EMBEDDED_FENCE.search(text)
        if embedded is not None and match is None:
            try:
                return json.loads(embedded.group("body"))
            except (ValueError, RecursionError):
                pass
        raise provider_error(
            f"{provider} model {model} returned output that is not valid JSON",
            kind="malformed",
            provider=provider,
            model=model,
            usage=usage,
            wire=wire,
        ) from exc


def malformed(
    detail: str,
    provider: str,
    model: str,
    usage: Usage | None = None,
    wire: WireExchange | None = None,
) -> ProviderError:
    """A non-retryable ``malformed`` error (the response had an unexpected shape)."""
    return provider_error(
        detail, kind="malformed", provider=provider, model=model, usage=usage, wire=wire
    )
