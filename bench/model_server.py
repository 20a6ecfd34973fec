"""The benchmark's own model: an OpenAI-compatible Chat Completions server on loopback that answers
every request at once with the same reply and the same usage, so a model-calling step costs
nothing but the engine's work and one HTTP round trip.

It runs uvicorn in a background thread of the benchmark process (a raw ASGI callable: no routing
layer to pay for) and counts the requests it answered and the time spent inside its handler.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from bench.results import RoundTrips

PROVIDER = "openai"  # the built-in provider name, re-pointed at this server by the catalog file
MODEL = "gpt-4o-mini"  # priced by genai-prices, as a real OpenAI call would be
MODEL_ID = f"{PROVIDER}:{MODEL}"
PROMPT_TOKENS = 120
COMPLETION_TOKENS = 30
CHAT_PATH = "/v1/chat/completions"
START_TIMEOUT_S = 10.0
# What the analyze executor asks for (its JSON schema requires a report and findings).
REPLY = json.dumps({"report": "Nothing to report.", "findings": [], "summary": "No findings."})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def completion_body() -> bytes:
    """The fixed ``chat.completion`` every request gets, with its fixed ``usage``."""
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": REPLY, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        }
    ).encode()


@dataclass(frozen=True)
class ServerCount:
    """Chat completions answered so far, requests refused, and the seconds spent answering."""

    answered: int
    refused: int
    handler_s: float

    def since(self, earlier: ServerCount) -> ServerCount:
        return ServerCount(
            self.answered - earlier.answered,
            self.refused - earlier.refused,
            self.handler_s - earlier.handler_s,
        )


class FixedReplyApp:
    """The ASGI app: a POST of a JSON body with ``messages`` to the chat path gets the fixed
    completion; anything else gets 404 or 400 (and is counted as refused)."""

    def __init__(self) -> None:
        self._body = completion_body()
        self._headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self._body)).encode()),
        ]
        self._lock = threading.Lock()
        self._answered = 0
        self._refused = 0
        self._handler_s = 0.0

    def count(self) -> ServerCount:
        with self._lock:
            return ServerCount(self._answered, self._refused, self._handler_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        # Timed from the whole body's arrival: the wait for the client to send it is not ours.
        started = time.perf_counter()
        if scope["method"] != "POST" or scope["path"] != CHAT_PATH:
            await self._refuse(send, 404, started)
        elif not _is_chat_request(body):
            await self._refuse(send, 400, started)
        else:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
            await send({"type": "http.response.body", "body": self._body})
            with self._lock:
                self._answered += 1
                self._handler_s += time.perf_counter() - started

    async def _refuse(self, send: Send, status: int, started: float) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        with self._lock:
            self._refused += 1
            self._handler_s += time.perf_counter() - started


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _is_chat_request(body: bytes) -> bool:
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and isinstance(document.get("messages"), list)


class ModelServer:
    """The fixed-reply server on a free loopback port, for the duration of :meth:`running`."""

    def __init__(self) -> None:
        self.app = FixedReplyApp()
        self.base_url = ""

    @contextmanager
    def running(self) -> Iterator[ModelServer]:
        """Serve from a background thread during the block."""
        # IPPROTO_TCP named explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets
        # whose protocol says TCP, and uvicorn writes a response's head and body separately, so
        # with Nagle on, every answer after a connection's first waits ~40 ms for a delayed ACK.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        host, port = listener.getsockname()
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            loop="asyncio",
            http="h11",
            log_config=None,  # leave the process's logging alone
            log_level="warning",
            access_log=False,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [listener]}, name="bench-model", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                listener.close()
                raise RuntimeError("the benchmark's model server did not start")
            time.sleep(0.01)
        self.base_url = f"http://{host}:{port}/v1"
        try:
            yield self
        finally:
            server.should_exit = True
            thread.join(timeout=START_TIMEOUT_S)
            listener.close()

    def count(self) -> ServerCount:
        return self.app.count()

    def write_catalog(self, directory: Path) -> Path:
        """A model catalog with one model, served by this server (no API key), priced as the
        real model; returns its path, for ``Settings(models_file=…)``."""
        catalog = {
            "providers": {
                PROVIDER: {"kind": "openai", "base_url": self.base_url, "api_key_env": None}
            },
            "models": [
                {
                    "provider": PROVIDER,
                    "model": MODEL,
                    "tier": "small",
                    "context_window": 128_000,
                    "max_output_tokens": 16_384,
                    "capabilities": {"json": True, "tools": False, "streaming": False},
                }
            ],
        }
        path = directory / "bench-models.yaml"
        path.write_text(yaml.safe_dump(catalog, sort_keys=False), encoding="utf-8")
        return path


PING = {"model": MODEL, "messages": [{"role": "user", "content": "ping"}]}


async def measure_round_trips(base_url: str, *, reused: int = 200, fresh: int = 30) -> RoundTrips:
    """Time bare httpx POSTs to the chat path, after a few unmeasured ones."""
    url = f"{base_url}{CHAT_PATH.removeprefix('/v1')}"
    reused_ms: list[float] = []
    async with httpx.AsyncClient() as client:
        for number in range(reused + 5):
            started = time.perf_counter()
            (await client.post(url, json=PING)).raise_for_status()
            if number >= 5:
                reused_ms.append((time.perf_counter() - started) * 1000)
    fresh_ms: list[float] = []
    for _ in range(fresh):
        started = time.perf_counter()
        async with httpx.AsyncClient() as client:
            (await client.post(url, json=PING)).raise_for_status()
        fresh_ms.append((time.perf_counter() - started) * 1000)
    return RoundTrips(reused_ms, fresh_ms)
