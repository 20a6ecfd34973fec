"""A webhook receiver on loopback: answers the statuses it is scripted with, keeps every request
(headers and exact body) it got."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """What the receiver answers (in turn; the last one repeats) and what it got."""

    statuses: list[int]
    url: str = ""
    received: list[Received] = field(default_factory=list)
    got_one: threading.Event = field(default_factory=threading.Event)  # a request came
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.received.append(Received(dict(request.headers), body))
            index = min(len(self.received), len(self.statuses)) - 1
        self.got_one.set()
        return Response(status_code=self.statuses[index])


@contextmanager
def webhook_receiver(*statuses: int) -> Iterator[Receiver]:
    """A real HTTP server on 127.0.0.1 answering ``statuses`` in turn at ``/hook``."""
    receiver = Receiver(list(statuses))
    app = Starlette(routes=[Route("/hook", receiver._hook, methods=["POST"])])
    with LoopbackServer(app) as server:
        receiver.url = f"{server.base_url}/hook"
        yield receiver
