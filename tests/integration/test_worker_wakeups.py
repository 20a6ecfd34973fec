"""When workers wake and how they write: notices, retry timers, group commit, claim rounds."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from agent_engine.config import Settings
from agent_engine.domain.records import ChangeSet, RunRecord
from agent_engine.engine.context import build_context
from agent_engine.engine.runs import CreateRunRequest, create_run
from agent_engine.storage.changes import ChangeWriter, Write
from agent_engine.storage.database import read_transaction
from agent_engine.storage.notifications import Notifier, RunNotice
from agent_engine.storage.runs import list_steps_txn
from agent_engine.worker.known_runs import KnownRuns
from agent_engine.worker.worker import Worker, WorkerOptions
from tests.backends import one_backend
from tests.databases import PostgresServer
from tests.engines import LockingOnlyRuns
from tests.integration.test_workers import embedded_worker_client, step, wait_for


@pytest.fixture
async def slow_polling_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API with its embedded worker, polling so rarely that only wake-ups can drive it."""
    async with embedded_worker_client(settings, poll_s=600.0) as http:
        yield http


def test_notice_round_trips_and_unknown_payloads_are_refused() -> None:
    run_id = uuid.uuid4()
    when = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    notice = RunNotice.of(run_id, 7, "running", when)
    assert RunNotice.parse(notice.payload()) == notice
    assert RunNotice.parse(RunNotice.of(run_id, 8, "completed", None).payload()) == RunNotice(
        run_id, 8, "completed", None
    )
    for payload in ("", "x 1 running -", f"{run_id} seven running -", f"{run_id} 1 running"):
        assert RunNotice.parse(payload) is None


async def test_each_run_state_is_delivered_once_whichever_way_it_arrives_first() -> None:
    """A commit is announced in-process at once, and on PostgreSQL again through LISTEN: the
    echo (or any older state of the run) is dropped."""
    notifier = Notifier()
    run_id = uuid.uuid4()
    seen: list[str] = []
    async with notifier.subscribe() as queue:
        notifier.publish([RunNotice.of(run_id, 3, "running", None).payload()])
        notifier.publish([RunNotice.of(run_id, 3, "running", None).payload()])  # the echo
        notifier.publish([RunNotice.of(run_id, 2, "running", None).payload()])  # older
        notifier.publish([RunNotice.of(run_id, 4, "completed", None).payload(), "other"])
        while not queue.empty():
            seen.append(queue.get_nowait())
    assert [RunNotice.parse(p).seq if RunNotice.parse(p) else p for p in seen] == [3, 4, "other"]


async def test_started_runs_wake_an_idle_worker_without_polling(
    slow_polling_client: httpx.AsyncClient,
) -> None:
    # Started after creation, the run reaches the worker by its notification alone (a run created
    # with auto_start would be handed to the in-process worker directly: test_hand_off.py).
    body = {"goal": "wake", "steps": [step(1), step(2)]}
    run = (await slow_polling_client.post("/v1/agent-runs", json=body)).json()
    started = await slow_polling_client.post(f"/v1/agent-runs/{run['id']}/start")
    assert started.status_code == 200, started.text
    done = await wait_for(slow_polling_client, run["id"], {"completed"})
    assert [s["output_data"]["value"] for s in done["steps"]] == [1, 2]


async def test_a_retry_is_taken_when_its_backoff_ends_not_at_the_next_poll(
    slow_polling_client: httpx.AsyncClient,
) -> None:
    spec = step("flaky", fail_attempts=1)
    spec["retry_policy"] = {"max_attempts": 2, "initial_backoff_s": 0.3, "max_backoff_s": 0.3}
    body = {"goal": "backoff", "steps": [spec], "auto_start": True}
    run = (await slow_polling_client.post("/v1/agent-runs", json=body)).json()
    # The worker polls every 10 minutes: only the timer set from the notice can bring it back.
    done = await wait_for(slow_polling_client, run["id"], {"completed", "failed"})
    assert done["status"] == "completed"
    assert done["steps"][0]["attempt"] == 2
    audit = (await slow_polling_client.get(f"/v1/agent-runs/{run['id']}/audit")).json()["events"]
    scheduled = next(e for e in audit if e["type"] == "step.pending")
    retried_at = [e["created_at"] for e in audit if e["type"] == "step.running"][-1]
    waited = datetime.fromisoformat(retried_at) - datetime.fromisoformat(scheduled["created_at"])
    # Not before it was due (full jitter: the delay drawn is in the event)...
    assert waited.total_seconds() >= scheduled["payload"]["retry_in_s"] - 0.001


class DelayedWriter(ChangeWriter):
    """The real writer, each batch held back 50 ms before it is sent."""

    async def _write_batch(self, writes: list[Write]) -> list[bool]:
        await asyncio.sleep(0.05)
        return await super()._write_batch(writes)


async def test_a_retry_due_before_its_own_write_committed_is_taken_at_once(
    settings: Settings,
) -> None:
    """A backoff of at most 10 ms, writes of 50 ms: the retry falls due while the write that
    schedules it commits, so the notice of that (the worker's own) write already says "claimable
    now". That is work all the same: with polling every 10 minutes, taking it for no news would
    leave the run waiting."""
    ctx = build_context(settings)
    ctx._changes = DelayedWriter(ctx.db, ctx.notifier.publish)
    await ctx.start()
    stop = asyncio.Event()
    # Two slots: one stays free, so no full worker marks work as waiting on its own account.
    worker = Worker(ctx, WorkerOptions(worker_id="w", concurrency=2, poll_s=600))
    task = asyncio.create_task(worker.run(stop))
    try:
        spec = step("flaky", fail_attempts=1)
        spec["retry_policy"] = {"max_attempts": 2, "initial_backoff_s": 0.01, "max_backoff_s": 0.01}
        request = CreateRunRequest.model_validate(
            {"goal": "short backoff", "steps": [spec], "auto_start": True}
        )
        run_id = (await create_run(ctx, request, actor="t", idempotency_key=None)).run.id
        async with asyncio.timeout(20):
            while True:
                async with read_transaction(ctx.sessions) as session:
                    (only,) = await list_steps_txn(session, run_id)
                if only.status == "completed":
                    break
                await asyncio.sleep(0.02)
        assert only.attempt == 2
    finally:
        stop.set()
        await task
        await ctx.close()


class RecordingWriter(ChangeWriter):
    """The real writer, noting how many runs each group commit carried."""

    batches: list[int]

    async def _write_batch(self, writes: list[Write]) -> list[bool]:
        self.batches.append(len(writes))
        return await super()._write_batch(writes)


async def _run_many(
    settings: Settings,
    runs: int,
    *,
    writer_class: type[ChangeWriter],
    known: KnownRuns | None = None,
) -> Any:
    ctx = build_context(settings)
    writer = writer_class(ctx.db, ctx.notifier.publish)
    ctx._changes = writer
    await ctx.start()
    stop = asyncio.Event()
    worker = Worker(ctx, WorkerOptions(worker_id="w", concurrency=8, poll_s=0.2))
    if known is not None:
        worker.known_runs = known
    task = asyncio.create_task(worker.run(stop))
    try:
        plan = [{"step_type": "noop", "input_data": {"value": n}} for n in range(5)]
        ids = []
        for _ in range(runs):
            request = CreateRunRequest.model_validate(
                {"goal": "many", "steps": plan, "auto_start": True}
            )
            ids.append((await create_run(ctx, request, actor="t", idempotency_key=None)).run.id)
        async with asyncio.timeout(60):
            while True:
                async with read_transaction(ctx.sessions) as session:
                    views = [await list_steps_txn(session, run_id) for run_id in ids]
                if all(all(s.status == "completed" for s in steps) for steps in views):
                    break
                await asyncio.sleep(0.05)
        return worker, writer, views
    finally:
        stop.set()
        await task
        await ctx.close()


async def test_results_ready_together_share_one_commit(settings: Settings) -> None:
    RecordingWriter.batches = []
    worker, _writer, views = await _run_many(settings, 16, writer_class=RecordingWriter)
    assert all(s.output_data["value"] == s.step_number - 1 for v in views for s in v)
    assert worker.known_runs.hits > 0
    # Eight runs step at once: while one batch is in flight the next results queue behind it.
    assert max(RecordingWriter.batches) > 1
    assert sum(RecordingWriter.batches) >= worker.known_runs.hits


async def test_results_recorded_only_under_the_lock_complete_exactly_as_usual(
    settings: Settings,
) -> None:
    # Every result takes the locking path (as after any refused guarded write): the runs must
    # still complete exactly as usual, each step claimed once.
    worker, _writer, views = await _run_many(
        settings, 3, writer_class=ChangeWriter, known=LockingOnlyRuns()
    )
    assert worker.known_runs.hits == 0 and worker.known_runs.misses == 15
    assert all(s.status == "completed" and s.fence == 1 for v in views for s in v)


@pytest.mark.postgres
async def test_the_writers_driver_errors_are_database_errors_like_any_other(
    postgres_server: PostgresServer | None,
) -> None:
    """A failed write reaches the API's 503 handler and the worker's retry path like any other
    database error."""
    if postgres_server is None:
        pytest.skip(getattr(pytest, "postgres_skip_reason", "PostgreSQL not reachable"))
    missing = postgres_server.url_for(f"ae_missing_{uuid.uuid4().hex[:8]}")
    ctx = build_context(Settings(database_url=missing, _env_file=None))  # type: ignore[call-arg]
    request = CreateRunRequest.model_validate({"goal": "g", "steps": [step(1)]})
    try:
        with pytest.raises(DBAPIError):
            await create_run(ctx, request, actor="t", idempotency_key=None)
    finally:
        await ctx.close()


def _dsn(url: str) -> str:
    """asyncpg's form of a PostgreSQL URL of the engine's."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _unknown_run() -> ChangeSet:
    """A change set of a run that does not exist: its guard fails, nothing is written."""
    run = RunRecord(id=uuid.uuid4(), goal="g", status="created", created_by="t")
    run.status = "running"
    return ChangeSet(run, [])


@one_backend("postgres", "a server that drops connections is PostgreSQL's (SQLite is a file)")
async def test_a_connection_the_server_dropped_is_replaced_for_the_next_write(
    settings: Settings,
) -> None:
    """The writer's connections come from the engine's pool; ones the server dropped are
    replaced, and the writer is not left waiting on a batch that failed."""
    ctx = build_context(settings)
    try:
        assert await ctx.changes.apply(_unknown_run()) is False  # a pooled connection now
        admin = await asyncpg.connect(_dsn(settings.database_url))
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        # The next write fails if the drop is noticed only mid-call (nothing was written), or
        # goes through on a fresh connection if it was noticed before; the one after, surely.
        with contextlib.suppress(DBAPIError):
            await ctx.changes.apply(_unknown_run())
        assert await ctx.changes.apply(_unknown_run()) is False
    finally:
        await ctx.close()


class BreaksOnceWriter(ChangeWriter):
    """The real writer; the server drops its connection in the middle of the first batch that
    records a result (the batch waits for a row lock held here, and its backend is terminated
    while it waits): a failed write the worker cannot tell from a lost answer but by reading."""

    broke = False
    dsn = ""

    async def _write_batch(self, writes: list[Write]) -> list[bool]:
        records = any(
            table == "audit_events" and any(row["type"] == "step.completed" for row in rows)
            for write in writes
            for table, rows in write.inserts
        )
        if not records or BreaksOnceWriter.broke:
            return await super()._write_batch(writes)
        BreaksOnceWriter.broke = True
        locker = await asyncpg.connect(self.dsn)
        admin = await asyncpg.connect(self.dsn)
        try:
            # (The polls run outside the locking transaction: it would see one stats snapshot.)
            held = locker.transaction()
            await held.start()
            await locker.execute(
                "SELECT 1 FROM agent_runs WHERE id = $1 FOR UPDATE", writes[0].run_id
            )
            write = asyncio.ensure_future(super()._write_batch(writes))
            waiting = await _poll(
                admin,
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%agent_engine_apply_changes_v3%'",
            )
            await admin.execute("SELECT pg_terminate_backend($1)", waiting)
            # Gone before the lock is released: the write certainly did not commit.
            gone = (
                f"SELECT true WHERE NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = {waiting})"
            )
            await _poll(admin, gone)
            await held.rollback()
        finally:
            await locker.close()
            await admin.close()
        return await write


async def _poll(connection: Any, query: str) -> Any:
    async with asyncio.timeout(10):
        while True:
            found = await connection.fetchval(query)
            if found is not None:
                return found
            await asyncio.sleep(0.01)


@one_backend("postgres", "a server that drops connections is PostgreSQL's (SQLite is a file)")
async def test_a_result_whose_one_call_write_failed_is_recorded_by_the_locking_path(
    settings: Settings,
) -> None:
    BreaksOnceWriter.broke = False
    BreaksOnceWriter.dsn = _dsn(settings.database_url)
    # Leases of 30 s: had the result been lost, the run would wait for its lease to lapse.
    worker, _writer, views = await _run_many(settings, 1, writer_class=BreaksOnceWriter)
    assert BreaksOnceWriter.broke
    (steps,) = views
    assert [(s.status, s.attempt) for s in steps] == [("completed", 1)] * len(steps)
    assert worker.known_runs.misses >= 1
