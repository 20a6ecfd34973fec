"""Real loopback HTTP servers speaking the OpenAI Chat Completions and Anthropic Messages formats.

A :class:`FakeLLMServer` runs uvicorn in a background thread on a free port (:mod:`.loopback`).
Each test scripts the replies it wants (:meth:`FakeLLMServer.script`); once the script is used up
every request gets the default success reply, or the answer of the ``responder``, when given: a
model the test plays, answering each request from what it asks. Every request received is kept
in :attr:`FakeLLMServer.requests` with its body as sent and the peer address of the TCP
connection it came on (:attr:`FakeLLMServer.connections` counts them).

With ``exact_usage=True`` every Chat Completions answer reports the usage OpenAI would charge at
most for its request (:mod:`.openai_usage`): the prompt counted with OpenAI's tokenizer by its
rule, and ``completion_tokens`` equal to the requested ``max_tokens``; so a call's actual cost
equals its worst case to the last digit.

Like the real APIs, the server refuses (400, ``invalid_request_error``) a body whose structured
output fields do not have the documented shape (:mod:`.wire_rules`), e.g. ``strict: true`` on a
schema that strict mode does not accept; :attr:`FakeLLMServer.refused` keeps the reasons.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer
from tests.fakes.openai_usage import exact_usage
from tests.fakes.wire_rules import anthropic_wire_problems, openai_wire_problems


@dataclass
class Reply:
    """One scripted reply: a status, a JSON (dict) or raw (bytes) body, or SSE events."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    sse_events: list[Any] | None = None


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: Any
    client: tuple[str, int] | None = None  # the connection's peer address: one per connection
    text: str = ""  # the body exactly as it arrived


def openai_completion(
    text: str = "ok",
    *,
    prompt_tokens: int = 12,
    completion_tokens: int = 5,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
    usage: bool = True,
    model: str = "gpt-4o-mini-2024-07-18",
    finish_reason: str = "stop",
    refusal: str | None = None,
    tool_arguments: str | None = None,
    tool_name: str = "emit_json",
) -> Reply:
    """A Chat Completions success (usage omitted when ``usage=False``); with ``tool_arguments``
    the message is a call of ``tool_name`` (content null), with ``refusal`` a refusal."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": refusal}
    if refusal is not None:
        message["content"] = None
    if tool_arguments is not None:
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": "call_fake",
                "type": "function",
                "function": {"name": tool_name, "arguments": tool_arguments},
            }
        ]
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    }
    if usage:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
        }
    return Reply(body=body)


def openai_stream(
    pieces: list[str], *, prompt_tokens: int = 9, completion_tokens: int = 4, usage: bool = True
) -> Reply:
    """An SSE stream of deltas; with ``usage`` the final chunk carries usage and no choices."""
    events: list[Any] = [
        {"id": "chatcmpl-s", "model": "m", "choices": [{"index": 0, "delta": {"content": p}}]}
        for p in pieces
    ]
    if usage:
        events.append(
            {
                "id": "chatcmpl-s",
                "model": "m",
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )
    events.append("[DONE]")
    return Reply(sse_events=events)


def anthropic_message(
    text: str | None = "ok",
    *,
    tool_input: Any = None,
    input_tokens: int = 10,
    output_tokens: int = 6,
    cache_read: int = 0,
    cache_write: int = 0,
    usage: bool = True,
    stop_reason: str | None = None,
) -> Reply:
    """A Messages API success with a text block and/or an ``emit_json`` tool_use block; the stop
    reason is ``tool_use`` or ``end_turn`` unless given."""
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "text", "text": text})
    if tool_input is not None:
        content.append(
            {"type": "tool_use", "id": "toolu_fake", "name": "emit_json", "input": tool_input}
        )
    body: dict[str, Any] = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": "claude-fake",
        "content": content,
        "stop_reason": stop_reason or ("tool_use" if tool_input is not None else "end_turn"),
    }
    if usage:
        body["usage"] = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": cache_read,
            "cache_creation_input_tokens": cache_write,
        }
    return Reply(body=body)


def error_reply(
    status: int, message: str = "fake failure", retry_after: str | None = None
) -> Reply:
    """An error in the shape both vendors use: ``{"error": {"message": …}}``."""
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return Reply(
        status=status, body={"error": {"type": "fake", "message": message}}, headers=headers
    )


def malformed_reply() -> Reply:
    """A 200 whose body claims to be JSON but is not."""
    return Reply(body=b'{"choices": [ this is not json')


def hang_reply(seconds: float = 1.5) -> Reply:
    """A reply that arrives only after ``seconds`` (longer than the client's timeout)."""
    return Reply(delay_s=seconds, body={"error": {"message": "too late"}})


class FakeLLMServer:
    """OpenAI (``/v1/chat/completions``) and Anthropic (``/v1/messages``) on one loopback port."""

    def __init__(
        self,
        responder: Callable[[ReceivedRequest], Reply] | None = None,
        *,
        exact_usage: bool = False,
    ) -> None:
        self._replies: deque[Reply] = deque()
        self.responder = responder
        self.exact_usage = exact_usage
        self.responder_errors: list[str] = []
        self.requests: list[ReceivedRequest] = []
        self.refused: list[str] = []
        self._lock = threading.Lock()
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._handle, methods=["POST"]),
                Route("/v1/messages", self._handle, methods=["POST"]),
            ]
        )
        self._server = LoopbackServer(app)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        """How many TCP connections the requests so far came on (distinct peer addresses)."""
        return len({r.client for r in self.requests})

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order (any path)."""
        with self._lock:
            self._replies.extend(replies)

    def start(self) -> FakeLLMServer:
        """Start serving and wait until the port is bound."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving and join the server thread."""
        self._server.stop()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _next_reply(self, received: ReceivedRequest) -> Reply:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        if self.responder is not None:
            try:
                return self.responder(received)
            except Exception as exc:  # the test's model failed: a 500 it can assert on
                self.responder_errors.append(repr(exc))
                return error_reply(500, f"the responder failed: {exc!r}")
        path = received.path
        return anthropic_message() if path.endswith("/messages") else openai_completion()

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        peer = (request.client.host, request.client.port) if request.client else None
        text = raw.decode("utf-8", "replace")
        path = request.url.path
        received = ReceivedRequest(path, dict(request.headers), body, peer, text)
        self.requests.append(received)
        problems = _wire_problems(path, body)
        if problems:
            self.refused.extend(problems)
            error = {"type": "invalid_request_error", "message": "; ".join(problems)}
            return Response(json.dumps({"error": error}), 400, media_type="application/json")
        reply = self._next_reply(received)
        if self.exact_usage and path.endswith("/chat/completions"):
            reply = _with_exact_usage(reply, body)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.sse_events is not None:
            return StreamingResponse(_sse(reply.sse_events), media_type="text/event-stream")
        content = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        return Response(
            content, status_code=reply.status, headers=reply.headers, media_type="application/json"
        )


def _with_exact_usage(reply: Reply, body: dict[str, Any]) -> Reply:
    """``reply`` with its usage (JSON body or final stream chunk) as OpenAI's worst case."""
    if isinstance(reply.body, dict) and isinstance(reply.body.get("usage"), dict):
        usage = exact_usage(body, reply.body["usage"])
        return replace(reply, body={**reply.body, "usage": usage})
    if reply.sse_events is not None:
        events = [
            {**event, "usage": exact_usage(body, event["usage"])}
            if isinstance(event, dict) and isinstance(event.get("usage"), dict)
            else event
            for event in reply.sse_events
        ]
        return replace(reply, sse_events=events)
    return reply


def _wire_problems(path: str, body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["the body is not a JSON object"]
    if path.endswith("/messages"):
        return anthropic_wire_problems(body)
    return openai_wire_problems(body)


async def _sse(events: list[Any]) -> Any:
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        yield f"data: {data}\n\n".encode()
        await asyncio.sleep(0)
