"""The global event stream in commit order: a reader that resumes after the last id it saw never
misses an event that committed after a later one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from agent_engine.config import Settings
from agent_engine.engine.context import build_context
from agent_engine.engine.event_stream import START, StreamFilter, _read_all
from agent_engine.storage.audit import event_hash
from agent_engine.storage.types import utcnow
from tests.backends import one_backend
from tests.integration.test_events import noop, read_events, server

__all__ = ["server"]  # the fixture, used by name
MARK = "test.by_hand"


async def read_until(
    client: httpx.AsyncClient,
    url: str,
    done: Callable[[list[dict[str, Any]]], bool],
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The bodies of a live stream's events, read until ``done`` says enough."""
    bodies: list[dict[str, Any]] = []

    async def read() -> None:
        async with client.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    bodies.append(json.loads(line[5:]))
                    if done(bodies):
                        return

    await asyncio.wait_for(read(), timeout=30)  # a failure bound only
    return bodies


def has_ids(*wanted: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda bodies: set(wanted) <= {b["id"] for b in bodies}


@pytest.fixture
async def connections(settings: Settings) -> AsyncIterator[list[asyncpg.Connection]]:
    """Three connections of their own to the test's PostgreSQL database, for transactions held
    open by hand."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("concurrent writers that commit out of id order are PostgreSQL's")
    dsn = make_url(settings.database_url).set(drivername="postgresql")
    opened = [await asyncpg.connect(dsn.render_as_string(hide_password=False)) for _ in range(3)]
    try:
        yield opened
    finally:
        for connection in opened:
            await connection.close()


async def append_event(connection: asyncpg.Connection, run_id: str) -> int:
    """Append an event to the run's chain as the engine does (locked run row, next seq, chained
    hash, head moved) inside the connection's open transaction; its id."""
    run = await connection.fetchrow(
        "SELECT id, audit_seq, audit_head_hash FROM agent_runs WHERE id = $1 FOR UPDATE",
        run_id,
    )
    seq, created_at, payload = run["audit_seq"] + 1, utcnow(), {"by": "hand"}
    digest = event_hash(
        run_id=run["id"],
        seq=seq,
        type=MARK,
        step_id=None,
        payload=payload,
        actor="test",
        created_at=created_at,
        prev_hash=run["audit_head_hash"],
    )
    event_id: int = await connection.fetchval(
        "INSERT INTO audit_events (run_id, seq, type, payload, actor, created_at, prev_hash, hash)"
        " VALUES ($1, $2, $3, $4::jsonb, 'test', $5, $6, $7) RETURNING id",
        run["id"],
        seq,
        MARK,
        json.dumps(payload),
        created_at,
        run["audit_head_hash"],
        digest,
    )
    await connection.execute(
        "UPDATE agent_runs SET audit_seq = $2, audit_head_hash = $3, version = version + 1"
        " WHERE id = $1",
        run["id"],
        seq,
        digest,
    )
    return event_id


@one_backend("postgres", "concurrent writers that commit out of id order are PostgreSQL's")
async def test_an_event_committed_after_a_later_one_reaches_a_reader_that_resumes(
    server: str, settings: Settings, connections: list[asyncpg.Connection]
) -> None:
    """Transaction A inserts an event and stays open; B inserts one (a higher id) and commits;
    an older transaction inserts a third (the highest id) and commits. A reader gets the third,
    which no open transaction holds back; A commits; the reader resumes after the last id it
    saw and still gets A's event, then B's (paging by id, A's would be lost: its id is below
    the last one seen; and so would B's)."""
    older, a, b = connections
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        runs = [
            (await client.post("/v1/agent-runs", json={"goal": g, "steps": [noop(1)]})).json()
            for g in ("older", "a", "b")
        ]
        older_tx, a_tx, b_tx = older.transaction(), a.transaction(), b.transaction()
        await older_tx.start()
        await older.fetchval("SELECT pg_current_xact_id()")  # the oldest transaction id
        await a_tx.start()
        a_event = await append_event(a, runs[1]["id"])
        await b_tx.start()
        b_event = await append_event(b, runs[2]["id"])
        await b_tx.commit()
        older_event = await append_event(older, runs[0]["id"])
        await older_tx.commit()
        assert a_event < b_event < older_event

        seen = await read_until(client, "/v1/events", has_ids(older_event))
        assert a_event not in {e["id"] for e in seen}  # not committed
        # One read while A is open: B's event waits behind A (it commits after A in the
        # stream's order), the older transaction's does not.
        ctx = build_context(settings)
        try:
            placed, _full, held_back = await _read_all(ctx, START, StreamFilter())
        finally:
            await ctx.close()
        read_ids = [body["id"] for _place, body in placed]
        assert older_event in read_ids and b_event not in read_ids and held_back
        await a_tx.commit()
        last = seen[-1]["id"]
        resumed = await read_until(
            client, "/v1/events", has_ids(a_event, b_event), headers={"Last-Event-ID": str(last)}
        )
        whole = await read_until(client, "/v1/events", has_ids(a_event, b_event, older_event))
        audits = [(await client.get(f"/v1/agent-runs/{run['id']}/audit")).json() for run in runs]
    assert last == older_event
    assert [e["id"] for e in resumed] == [a_event, b_event]
    # Every event once, the hand-made ones where they committed relative to the others.
    ids = [e["id"] for e in whole]
    assert len(ids) == len(set(ids)) == sum(len(audit["events"]) for audit in audits)
    assert ids[-3:] == [older_event, a_event, b_event]
    assert all(audit["chain_valid"] for audit in audits)


async def test_resuming_the_global_stream_gives_exactly_the_rest_in_the_same_order(
    server: str,
) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        body = {"goal": "g", "steps": [noop(1), noop(2), noop(3)], "auto_start": True}
        run = (await client.post("/v1/agent-runs", json=body)).json()
        await read_events(client, f"/v1/agent-runs/{run['id']}/events")  # until it is done
        audit = (await client.get(f"/v1/agent-runs/{run['id']}/audit")).json()["events"]
        everything = await read_until(client, "/v1/events", lambda got: len(got) == len(audit))
        cut = everything[3]["id"]
        rest = await read_until(
            client,
            "/v1/events",
            lambda got: len(got) == len(audit) - 4,
            headers={"Last-Event-ID": str(cut)},
        )
    assert [e["type"] for e in everything] == [a["type"] for a in audit]
    assert [e["id"] for e in rest] == [e["id"] for e in everything[4:]]


async def test_positions_past_32_bits_are_read(settings: Settings) -> None:
    """Transaction ids grow past 2**31 (and carry the epoch above bit 32): a position there is
    compared as a bigint."""
    ctx = build_context(settings)
    try:
        placed, full, held_back = await _read_all(ctx, (2**40, 2**40), StreamFilter())
    finally:
        await ctx.close()
    assert (placed, full, held_back) == ([], False, False)
