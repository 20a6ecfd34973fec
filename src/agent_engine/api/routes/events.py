"""Server-Sent Events of the audit log: one run, or all runs with filters. Resumable with
``Last-Event-ID`` (a run's stream uses the event's ``seq``; the global one its id, in commit
order)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse

from agent_engine.api.access import requires
from agent_engine.api.deps import Engine
from agent_engine.domain.principals import Role
from agent_engine.engine.event_stream import StopAt, StreamFilter, check_run, follow_all, follow_run
from agent_engine.errors import InputValidationError
from agent_engine.storage.runs import parse_run_id

router = APIRouter(tags=["events"])
PING_S = 15


def _check_prefix(prefix: str | None) -> None:
    if prefix is not None and not prefix.isprintable():
        raise InputValidationError(
            "type must be printable text", errors=[{"field": "type", "message": "not printable"}]
        )


def _last_id(header: str | None, query: int | None) -> int:
    if query is not None:
        return query
    if header is None or not header.strip():
        return 0
    if not header.strip().isdigit():
        raise InputValidationError(
            "Last-Event-ID must be an event id this server sent",
            errors=[{"field": "Last-Event-ID", "message": "not an integer"}],
        )
    return int(header)


async def _sse(
    stream: AsyncIterator[dict[str, object]], key: str
) -> AsyncIterator[ServerSentEvent]:
    async for body in stream:
        yield ServerSentEvent(
            data=json.dumps(body, separators=(",", ":"), default=str),
            event=str(body["type"]),
            id=str(body[key]),
        )


@router.get(
    "/v1/agent-runs/{run_id}/events",
    response_class=EventSourceResponse,
    **requires(Role.VIEWER),
)
async def run_events(
    run_id: str,
    engine: Engine,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    after: Annotated[int | None, Query(ge=0, description="Resume after this seq")] = None,
    type_prefix: Annotated[str | None, Query(alias="type", max_length=64)] = None,
    until: Annotated[
        StopAt,
        Query(
            description="End at `finished` (completed or cancelled), or also when `waiting` "
            "for a person (an approval, or a failed run)"
        ),
    ] = StopAt.FINISHED,
) -> EventSourceResponse:
    """The run's events in order (state changes, outputs, approvals, costs), then live ones;
    the stream ends after the last event of a completed or cancelled run, or with
    ``until=waiting`` also of a run that waits for a person."""
    _check_prefix(type_prefix)
    run_uuid = await check_run(engine, run_id)
    after_seq = _last_id(last_event_id, after)
    stream = follow_run(engine, run_uuid, after_seq, type_prefix=type_prefix, until=until)
    return EventSourceResponse(_sse(stream, "seq"), ping=PING_S)


@router.get("/v1/events", response_class=EventSourceResponse, **requires(Role.VIEWER))
async def all_events(
    engine: Engine,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    after: Annotated[int | None, Query(ge=0, description="Resume after this event id")] = None,
    run_id: Annotated[str | None, Query(max_length=64)] = None,
    type_prefix: Annotated[str | None, Query(alias="type", max_length=64)] = None,
) -> EventSourceResponse:
    """Events of every run (filter by `run_id` and `type` prefix) in commit order, live; ids
    are global."""
    _check_prefix(type_prefix)
    flt = StreamFilter(run_id=parse_run_id(run_id) if run_id else None, type_prefix=type_prefix)
    stream = follow_all(engine, _last_id(last_event_id, after), flt)
    return EventSourceResponse(_sse(stream, "id"), ping=PING_S)
