"""The client's event stream resumes a broken connection after the last event it gave (with
``Last-Event-ID``), so no event is lost or given twice; a refusal is its typed exception."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from agent_engine.client import EngineClient, EngineUnreachable, NotFound

RUN = "00000000-0000-0000-0000-000000000001"


def _event(seq: int) -> bytes:
    body = {
        "id": 100 + seq,
        "seq": seq,
        "run_id": RUN,
        "step_id": None,
        "type": "run.running" if seq < 3 else "run.completed",
        "actor": "worker",
        "created_at": "2026-12-01T12:00:00+00:00",
        "payload": {},
        "hash": "h",
    }
    return f"id: {seq}\nevent: {body['type']}\ndata: {json.dumps(body)}\n\n".encode()


class Broken(httpx.SyncByteStream):
    """Two events and a ping, then the connection breaks."""

    def __iter__(self) -> Iterator[bytes]:
        yield _event(1) + b": ping\n\n" + _event(2)
        raise httpx.ReadError("connection reset")


def test_a_broken_stream_is_resumed_after_the_last_event_seen() -> None:
    asked: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("Last-Event-ID"))
        headers = {"content-type": "text/event-stream"}
        if len(asked) == 1:
            return httpx.Response(200, headers=headers, stream=Broken())
        return httpx.Response(200, headers=headers, content=_event(3))

    with EngineClient("http://t", transport=httpx.MockTransport(answer)) as client:
        events = list(client.events(RUN))
    assert [e.seq for e in events] == [1, 2, 3]
    assert asked == ["0", "2"]
    assert events[-1].type == "run.completed"


def test_a_stream_that_keeps_breaking_is_engine_unreachable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Broken())

    transport = httpx.MockTransport(answer)
    with EngineClient("http://t", transport=transport, reconnects=1) as client:
        seen = []
        with pytest.raises(EngineUnreachable):
            seen.extend(client.events(RUN))
    assert [e.seq for e in seen] == [1, 2]  # given once each, though sent twice


def test_a_refused_stream_raises_its_family() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        problem = {"status": 404, "code": "not_found", "detail": f"no run with id {RUN!r}"}
        return httpx.Response(404, json=problem)

    transport = httpx.MockTransport(answer)
    with (
        EngineClient("http://t", transport=transport) as client,
        pytest.raises(NotFound) as missing,
    ):
        list(client.events(RUN))
    assert missing.value.detail == f"no run with id {RUN!r}"
