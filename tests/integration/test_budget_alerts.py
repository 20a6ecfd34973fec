"""Budget alerts: the audit event and its webhook delivery commit together, SSE subscribers see
the event, and a real receiver on loopback gets signed alerts, retried until it answers 2xx."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.domain.budget_thresholds import Crossing
from agent_engine.engine.budget_alerts import THRESHOLD_REACHED, add_announcements, announce
from agent_engine.engine.context import EngineContext
from agent_engine.engine.event_stream import follow_run
from agent_engine.engine.locking import change_run
from agent_engine.engine.webhooks import deliver_due, list_deliveries, start_sender
from tests.processes import free_port
from tests.webhook_receiver import Receiver, webhook_receiver

SECRET = "whsec_" + base64.b64encode(b"budget-alerts-test-secret-32byte").decode()
SPENT, LIMIT = Decimal("0.032000000"), Decimal("0.040000000")


class Clock:
    """The sender's clock, moved by the test: retries fall due without waiting."""

    def __init__(self) -> None:
        # A minute on: what is announced from now on is due.
        self.now = datetime.now(UTC) + timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, hours: float) -> None:
        self.now += timedelta(hours=hours)


@asynccontextmanager
async def engine_app(
    settings: Settings, url: str | None, **extra: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, EngineContext]]:
    """The real app (lifespan run, no worker) configured for ``url``, and its engine context."""
    update: dict[str, Any] = {"webhook_max_attempts": 3, **extra}
    if url is not None:
        update |= {"webhook_url": url, "webhook_secret": SecretStr(SECRET)}
    app = create_app(settings.model_copy(update=update))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
    ):
        yield http, app.state.engine


def crossing(run_id: uuid.UUID | None, threshold: int = 80) -> Crossing:
    if run_id is None:
        scope, subject, period = "project", "acme", "2026-12"
    else:
        scope, subject, period = "run", str(run_id), "run"
    return Crossing(
        counter_id=str(uuid.uuid4()),
        scope=scope,
        subject=subject,
        period=period,
        threshold_percent=threshold,
        spent_usd=SPENT,
        limit_usd=LIMIT,
        run_id=run_id,
    )


async def new_run(http: httpx.AsyncClient) -> uuid.UUID:
    body = {"goal": "alerts", "steps": [{"step_type": "noop", "input_data": {"value": 1}}]}
    made = await http.post("/v1/agent-runs", json=body)
    assert made.status_code == 201, made.text
    return uuid.UUID(made.json()["id"])


async def audit_events(http: httpx.AsyncClient, run_id: uuid.UUID) -> list[dict[str, Any]]:
    answer = await http.get(f"/v1/agent-runs/{run_id}/audit")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["events"])


def spec_signature(message_id: str, timestamp: str, body: bytes) -> str:
    """Written from the Standard Webhooks spec, apart from the engine's code."""
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    content = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def assert_signed(receiver: Receiver) -> None:
    for request in receiver.received:
        headers = request.headers
        expected = spec_signature(headers["webhook-id"], headers["webhook-timestamp"], request.body)
        assert headers["webhook-signature"] == expected
        assert headers["content-type"] == "application/json"


async def test_announce_appends_the_event_and_its_delivery_in_one_write_and_the_chain_verifies(
    settings: Settings,
) -> None:
    async with engine_app(settings, "http://127.0.0.1:9/hook") as (http, ctx):
        run_id = await new_run(http)
        await announce(ctx, [crossing(run_id, 50), crossing(run_id, 80)])
        events = [e for e in await audit_events(http, run_id) if e["type"] == THRESHOLD_REACHED]
        deliveries = await list_deliveries(ctx, run_id=run_id)
        verified = (await http.get(f"/v1/agent-runs/{run_id}/audit/verify")).json()
    assert [e["payload"]["threshold_percent"] for e in events] == [50, 80]
    assert events[0]["payload"]["spent_usd"] == "0.032000000"
    assert events[0]["payload"]["limit_usd"] == "0.040000000"
    assert events[0]["payload"]["scope"] == "run" and events[0]["actor"] == "budget"
    # Each delivery names the event it announces, by its place in the chain.
    by_seq = {d.payload["data"]["audit_seq"]: d for d in deliveries}
    assert sorted(by_seq) == [e["seq"] for e in events]
    for event in events:
        data = by_seq[event["seq"]].payload["data"]
        assert data["threshold_percent"] == event["payload"]["threshold_percent"]
        assert data["run_id"] == str(run_id)
    assert all(d.status == "pending" and d.attempts == 0 for d in deliveries)
    assert verified["valid"] is True and verified["first_broken"] is None, verified


async def test_an_announcement_whose_write_fails_leaves_neither_event_nor_delivery(
    settings: Settings,
) -> None:
    async with engine_app(settings, "http://127.0.0.1:9/hook") as (http, ctx):
        run_id = await new_run(http)
        before = await audit_events(http, run_id)
        with pytest.raises(RuntimeError, match="after the rows were added"):
            async with change_run(ctx, run_id) as locked:
                add_announcements(locked.changes, [crossing(run_id)], ctx.settings)
                assert locked.changes.rows  # the event and its delivery are in the change set
                raise RuntimeError("after the rows were added")
        assert await audit_events(http, run_id) == before
        assert await list_deliveries(ctx) == []


async def test_without_a_webhook_the_event_is_written_and_no_delivery(settings: Settings) -> None:
    async with engine_app(settings, None) as (http, ctx):
        run_id = await new_run(http)
        await announce(ctx, [crossing(run_id, 100), crossing(None, 100)])
        events = [e for e in await audit_events(http, run_id) if e["type"] == THRESHOLD_REACHED]
        assert [e["payload"]["threshold_percent"] for e in events] == [100]
        assert await list_deliveries(ctx) == []
        assert await deliver_due(ctx) == 0
        await announce(ctx, [])  # nothing to do: no transaction, no error


async def test_a_subscriber_of_the_run_sees_the_alert_live_and_over_sse(settings: Settings) -> None:
    async with engine_app(settings, None) as (http, ctx):
        run_id = await new_run(http)
        existing = len(await audit_events(http, run_id))
        stream = follow_run(ctx, run_id, 0)
        try:
            for _ in range(existing):
                await anext(stream)
            waiting = asyncio.create_task(anext(stream))
            await asyncio.sleep(0)  # the subscriber is waiting for the next event
            await announce(ctx, [crossing(run_id, 80)])
            live = await asyncio.wait_for(waiting, timeout=30)
        finally:
            await stream.aclose()
        assert live["type"] == THRESHOLD_REACHED and live["payload"]["threshold_percent"] == 80
        cancelled = await http.post(f"/v1/agent-runs/{run_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        sse = await http.get(f"/v1/agent-runs/{run_id}/events")
    assert sse.status_code == 200
    frames = [json.loads(line[5:]) for line in sse.text.splitlines() if line.startswith("data:")]
    alerts = [frame for frame in frames if frame["type"] == THRESHOLD_REACHED]
    assert [a["payload"]["threshold_percent"] for a in alerts] == [80]
    types = [frame["type"] for frame in frames]
    assert types.index(THRESHOLD_REACHED) < types.index("run.cancelled")


async def test_receiver_failing_twice_gets_the_alert_on_the_third_attempt_signed_each_time(
    settings: Settings,
) -> None:
    clock = Clock()
    with webhook_receiver(500, 500, 200) as receiver:
        async with engine_app(settings, receiver.url) as (http, ctx):
            await announce(ctx, [crossing(None, 80)])  # a project's budget: webhook only
            assert await deliver_due(ctx, clock=clock) == 1
            (pending,) = await list_deliveries(ctx)
            assert (pending.status, pending.attempts) == ("pending", 1)
            assert pending.next_attempt_at is not None and pending.next_attempt_at > clock.now
            assert await deliver_due(ctx, clock=clock) == 0  # backing off: not due yet
            for _ in range(2):
                clock.advance(hours=2)
                assert await deliver_due(ctx, clock=clock) == 1
            clock.advance(hours=2)
            assert await deliver_due(ctx, clock=clock) == 0  # delivered: never sent again
            listed = (await http.get("/v1/webhook-deliveries")).json()["items"]
    (delivery,) = listed
    assert delivery["status"] == "delivered" and delivery["attempts"] == 3
    assert [a["status_code"] for a in delivery["history"]] == [500, 500, 200]
    assert [a["attempt"] for a in delivery["history"]] == [1, 2, 3]
    assert all(a["duration_ms"] >= 0 and a["error"] is None for a in delivery["history"])
    assert len(receiver.received) == 3
    assert {r.headers["webhook-id"] for r in receiver.received} == {delivery["webhook_id"]}
    assert_signed(receiver)
    # The same body every time; each attempt signs its own time.
    assert len({r.body for r in receiver.received}) == 1
    sent = json.loads(receiver.received[0].body)
    assert sent["type"] == THRESHOLD_REACHED and sent["data"]["subject"] == "acme"
    assert sent["data"]["spent_usd"] == "0.032000000" and sent["data"]["threshold_percent"] == 80
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.received]
    assert stamps[1] - stamps[0] == stamps[2] - stamps[1] == 7200


async def test_receiver_that_always_fails_ends_failed_after_max_attempts(
    settings: Settings,
) -> None:
    clock = Clock()
    with webhook_receiver(503) as receiver:
        async with engine_app(settings, receiver.url) as (http, ctx):
            await announce(ctx, [crossing(None, 100)])
            for _ in range(5):
                await deliver_due(ctx, clock=clock)
                clock.advance(hours=2)
            (delivery,) = await list_deliveries(ctx)
            failed = (await http.get("/v1/webhook-deliveries?status=failed")).json()["items"]
    assert (delivery.status, delivery.attempts) == ("failed", 3)  # webhook_max_attempts
    assert [a["status_code"] for a in delivery.history] == [503, 503, 503]
    assert len(receiver.received) == 3
    assert [d["id"] for d in failed] == [str(delivery.id)]
    assert_signed(receiver)


async def test_an_unreachable_receiver_is_recorded_as_an_error_and_retried(
    settings: Settings,
) -> None:
    clock = Clock()
    async with engine_app(settings, f"http://127.0.0.1:{free_port()}/hook") as (_, ctx):
        await announce(ctx, [crossing(None)])
        assert await deliver_due(ctx, clock=clock) == 1
        (delivery,) = await list_deliveries(ctx)
    (attempt,) = delivery.history
    assert attempt["status_code"] is None and "ConnectError" in attempt["error"]
    assert delivery.status == "pending" and delivery.next_attempt_at is not None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_background_sender_delivers_and_stops_on_request(settings: Settings) -> None:
    with webhook_receiver(200) as receiver:
        async with engine_app(settings, receiver.url, webhook_poll_s=0.05) as (_, ctx):
            stop = asyncio.Event()
            sender = start_sender(ctx, stop)
            assert sender is not None
            await announce(ctx, [crossing(None, 50)])
            assert await asyncio.to_thread(receiver.got_one.wait, 30)
            stop.set()  # the round under way records its attempt, then the sender ends
            await asyncio.wait_for(sender, timeout=30)
            (delivery,) = await list_deliveries(ctx)
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    assert len(receiver.received) == 1
    assert_signed(receiver)


async def test_no_sender_starts_without_a_webhook(settings: Settings) -> None:
    async with engine_app(settings, None) as (_, ctx):
        assert start_sender(ctx, asyncio.Event()) is None


async def test_concurrent_senders_never_send_one_delivery_twice(settings: Settings) -> None:
    clock = Clock()
    with webhook_receiver(200) as receiver:
        async with engine_app(settings, receiver.url) as (_, ctx):
            await announce(ctx, [crossing(None, threshold) for threshold in range(1, 31)])
            rounds = await asyncio.gather(*(deliver_due(ctx, clock=clock) for _ in range(3)))
            while await deliver_due(ctx, clock=clock):
                pass
            deliveries = await list_deliveries(ctx)
    assert sum(rounds) <= 30 and len(deliveries) == 30
    assert all(d.status == "delivered" and d.attempts == 1 for d in deliveries)
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert sorted(ids) == sorted(d.webhook_id for d in deliveries)  # each exactly once
