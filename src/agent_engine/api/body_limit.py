"""Refuse request bodies over the configured size with 413, before any route sees them.

A client that writes its whole body before reading (Python's ``urllib``, many simple clients)
never sees a response sent mid-upload: the server's close resets the connection under it. So
the rest of an oversized body is read and thrown away, up to a bound, before the 413 is sent
with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Receive, Scope, Send

from agent_engine.api.asgi_messages import replaying, send_problem
from agent_engine.api.problems import PROBLEM_BASE

# How much of an oversized body is read and discarded so that the client gets to read the 413;
# past this (or past the time bound) the connection is closed without waiting for the rest.
DISCARD_LIMIT_BYTES = 64 * 1024 * 1024
DISCARD_TIMEOUT_S = 30.0
SIZE_SETTING = "AGENT_ENGINE_MAX_BODY_BYTES"


class BodySizeLimit:
    """Pure ASGI middleware: checks Content-Length, then counts the bytes actually received
    (a chunked body has no Content-Length), buffering at most ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            # A client waiting for "100 Continue" has not sent the body yet: answer at once.
            # Reading it (which sends the 100) would only make the client upload it for nothing.
            waiting = headers.get(b"expect", b"").lower() == b"100-continue"
            if not waiting and int(declared) <= DISCARD_LIMIT_BYTES:
                await _discard_body(receive, 0)
            await self._refuse(scope, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnect: let the app see it
                return
            body = message.get("body", b"")
            size += len(body)
            more = message.get("more_body", False)
            if size > self.max_bytes:
                if more:
                    await _discard_body(receive, size)
                await self._refuse(scope, send)
                return
            chunks.append(body)
        buffered = b"".join(chunks)
        await self.app(scope, replaying(buffered, receive), send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        problem = {
            "type": PROBLEM_BASE + "payload-too-large",
            "title": "Payload too large",
            "status": 413,
            "detail": f"request body exceeds {self.max_bytes} bytes ({SIZE_SETTING})",
            "code": "payload_too_large",
            "instance": scope.get("path", ""),
            "limit": SIZE_SETTING,
            "maximum": self.max_bytes,
        }
        await send_problem(send, problem, close=True)


async def _discard_body(receive: Receive, already_read: int) -> None:
    """Read and drop the rest of the request body, until its end, a disconnect, or a bound."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DISCARD_TIMEOUT_S):
            await _read_until_end(receive, already_read)


async def _read_until_end(receive: Receive, read: int) -> None:
    while read <= DISCARD_LIMIT_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
