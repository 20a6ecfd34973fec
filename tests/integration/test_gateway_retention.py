"""Retention of the model calls of no run (the OpenAI-compatible endpoint's): their large bodies
are stored as blobs; older than the horizon they lose their payloads, keeping their hashes,
tokens and cost; without --keep-audit those of a month before the current one are deleted, and
those of the current month stay (setting a monthly budget counts the month's spend from them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from agent_engine.config import Settings
from agent_engine.domain.blob_refs import expand, referenced_blobs
from agent_engine.domain.budget_math import month_bounds, month_of
from agent_engine.domain.canonical import content_hash
from agent_engine.domain.clock import utcnow
from agent_engine.domain.pruned_payloads import pruned_marker
from agent_engine.engine.retention import PruneReport, deletable_before, prune_database
from agent_engine.storage.blobs import BLOBS
from agent_engine.storage.tables import LLMCall
from tests.audit_runs import raw_database

CALLS = LLMCall.__table__
# A horizon of a microsecond: every call the test made is older than it.
HORIZON = timedelta(microseconds=1)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"blob_threshold_bytes": 256})


def question(topic: str) -> str:
    return "".join(f"{topic}: question line {n}\n" for n in range(60))  # over the threshold


async def ask(client: httpx.AsyncClient, text: str) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    answered = await client.post("/v1/chat/completions", json=body)
    assert answered.status_code == 200, answered.text


async def gateway_rows(settings: Settings) -> list[Any]:
    """The calls of no run as stored, oldest first."""
    async with raw_database(settings.database_url) as connection:
        query = select(CALLS).where(CALLS.c.run_id.is_(None)).order_by(CALLS.c.created_at)
        return list((await connection.execute(query)).all())


async def blob_texts(settings: Settings) -> dict[str, str]:
    async with raw_database(settings.database_url) as connection:
        rows = (await connection.execute(select(BLOBS.c.hash, BLOBS.c.content))).all()
    return {row.hash: bytes(row.content).decode() for row in rows}


async def two_calls_this_month_and_last(settings: Settings, client: httpx.AsyncClient) -> None:
    """Two gateway calls: one made in the previous month, one at this month's first instant;
    every blob last written long ago (past the collection's grace period)."""
    await ask(client, question("last month"))
    await ask(client, question("this month"))
    first, second = await gateway_rows(settings)
    month_start = month_bounds(month_of(utcnow()))[0]
    async with raw_database(settings.database_url) as connection:
        for row, at in ((first, month_start - timedelta(days=1)), (second, month_start)):
            await connection.execute(
                update(CALLS).where(CALLS.c.id == row.id).values(created_at=at)
            )
        await connection.execute(update(BLOBS).values(created_at=utcnow() - timedelta(days=2)))


async def pruned(settings: Settings, **options: Any) -> PruneReport:
    defaults: dict[str, Any] = {"dry_run": False, "batch_rows": 1}
    return await prune_database(settings.database_url, HORIZON, **{**defaults, **options})


async def test_keep_audit_prunes_old_gateway_payloads_keeping_hashes_tokens_and_cost(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await two_calls_this_month_and_last(settings, client)
    before = await gateway_rows(settings)
    texts = await blob_texts(settings)
    for row in before:  # the large bodies went to blobs
        assert referenced_blobs(row.request) and "question line 30" not in str(row.request)
    dry = await pruned(settings, keep_audit=True, dry_run=True)
    assert (dry.gateway_pruned, dry.gateway_deleted) == (2, 0)

    report = await pruned(settings, keep_audit=True)
    assert (report.gateway_pruned, report.gateway_deleted) == (2, 0)
    assert "the payloads of 2 model calls of no run older than it were pruned" in report.line()
    after = await gateway_rows(settings)
    for old, new in zip(before, after, strict=True):
        assert new.request == pruned_marker(content_hash(expand(old.request, texts)))
        assert new.response == pruned_marker(old.response_hash)
        assert new.response_hash == content_hash(expand(old.response, texts))
        kept = ("request_hash", "cost_usd", "input_tokens", "output_tokens", "model")
        assert [getattr(new, name) for name in kept] == [getattr(old, name) for name in kept]
        assert new.payloads_pruned_at is not None
    # Their blobs are referenced by no row now: the same prune collected them.
    assert report.blobs == len(referenced_blobs([[r.request, r.response] for r in before]))
    assert await blob_texts(settings) == {}
    again = await pruned(settings, keep_audit=True)
    assert again.gateway_pruned == 0  # a pruned call is not visited twice


async def test_without_keep_audit_only_calls_of_a_past_month_are_deleted(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await two_calls_this_month_and_last(settings, client)
    _, this_month = await gateway_rows(settings)
    dry = await pruned(settings, keep_audit=False, dry_run=True)
    assert (dry.gateway_pruned, dry.gateway_deleted) == (1, 1)

    report = await pruned(settings, keep_audit=False)
    assert (report.gateway_pruned, report.gateway_deleted) == (1, 1)
    (kept,) = await gateway_rows(settings)
    assert kept.id == this_month.id and kept.cost_usd == this_month.cost_usd
    assert kept.response == pruned_marker(this_month.response_hash)


def test_a_call_may_be_deleted_only_before_both_the_horizon_and_the_current_month() -> None:
    now = datetime(2026, 12, 15, 12, tzinfo=UTC)
    long_ago = now - timedelta(days=90)
    assert deletable_before(long_ago, now) == long_ago
    # Within the month: its calls count when a monthly budget is set, so none goes yet.
    assert deletable_before(now - timedelta(days=3), now) == datetime(2026, 12, 1, tzinfo=UTC)
