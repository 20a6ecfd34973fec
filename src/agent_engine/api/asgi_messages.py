"""What the request-body middlewares share: handing the app a body they already read, and
answering with a problem document themselves, below the framework's error handlers."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Message, Receive, Send

from agent_engine.api.problems import PROBLEM_MEDIA_TYPE


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app ``body`` (read in full by a middleware) as one message,
    then whatever the connection sends next (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def send_problem(send: Send, problem: dict[str, Any], *, close: bool = False) -> None:
    """Answer with ``problem`` as ``application/problem+json``; ``close``: the rest of the body
    may still be unread, so the connection cannot be reused."""
    body = json.dumps(problem).encode()
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": problem["status"], "headers": headers})
    await send({"type": "http.response.body", "body": body})
