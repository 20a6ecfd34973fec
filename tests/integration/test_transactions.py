"""A state change and its audit event commit together or not at all."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from agent_engine.config import Settings
from agent_engine.domain.records import ChangeSet
from agent_engine.domain.states import RunStatus
from agent_engine.domain.transitions import move_run
from agent_engine.engine.context import build_context
from agent_engine.engine.locking import change_run
from agent_engine.engine.runs import CreateRunRequest, create_run
from agent_engine.errors import InvalidTransitionError
from agent_engine.storage.audit import list_events_txn
from agent_engine.storage.database import read_transaction, transaction
from agent_engine.storage.runs import get_run_txn, load_run_txn
from tests.backends import one_backend


class Boom(Exception):
    pass


async def test_failed_transaction_leaves_neither_state_nor_event(settings: Settings) -> None:
    ctx = build_context(settings)
    try:
        view = await create_run(ctx, CreateRunRequest(goal="g"), actor="t", idempotency_key=None)
        with pytest.raises(Boom):
            async with transaction(ctx.sessions) as session:
                record = await load_run_txn(session, view.run.id, lock=True)
                changes = ChangeSet(record, [])
                move_run(changes, record, RunStatus.PLANNING, actor="t")
                # The rows reach the database inside the transaction, which then fails.
                assert await ctx.changes.apply_in(session, [changes]) == [True]
                raise Boom
        async with transaction(ctx.sessions) as session:
            run = await get_run_txn(session, view.run.id)
            events = await list_events_txn(session, run.id)
        assert run.status == "created"
        assert run.audit_seq == 1
        assert [e.type for e in events] == ["run.created"]
    finally:
        await ctx.close()


async def test_illegal_transition_changes_nothing(settings: Settings) -> None:
    ctx = build_context(settings)
    try:
        view = await create_run(ctx, CreateRunRequest(goal="g"), actor="t", idempotency_key=None)
        with pytest.raises(InvalidTransitionError):
            async with change_run(ctx, view.run.id) as locked:
                move_run(locked.changes, locked.changes.run, RunStatus.COMPLETED, actor="t")
        async with transaction(ctx.sessions) as session:
            run = await get_run_txn(session, view.run.id)
            assert run.status == "created"
            assert len(await list_events_txn(session, run.id)) == 1
    finally:
        await ctx.close()


@one_backend("postgres", "SQLite's reads keep their BEGIN, which gives them one snapshot there")
async def test_reads_on_postgres_run_outside_a_transaction(settings: Settings) -> None:
    # READ COMMITTED gives each statement its own snapshot anyway: a read needs no BEGIN and
    # ROLLBACK round trips.
    ctx = build_context(settings)
    try:
        async with read_transaction(ctx.sessions) as session:
            # Each call outside a transaction is a transaction of its own, with its own id.
            first = await session.scalar(text("SELECT pg_current_xact_id()::text"))
            second = await session.scalar(text("SELECT pg_current_xact_id()::text"))
        assert first != second
    finally:
        await ctx.close()
