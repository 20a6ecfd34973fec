"""Retention: prune finished runs older than a cutoff in bounded batches, one short
transaction each, so no prune holds locks for long (docs/operations-logs.md).

With ``keep_audit`` the runs stay and only their payloads go, replaced by markers keeping their
hashes: every audit chain still verifies and names what was pruned. Without it the runs are
deleted whole, audit events included, through the prune permit of migration 0016.

The model calls of no run (the OpenAI-compatible endpoint's) made before the cutoff lose their
payloads the same way, keeping their hashes, tokens and cost; without ``keep_audit`` those of a
month before the current one are deleted (the current month's spend is counted from them when a
monthly budget is set). Last, the blobs no row references any more are collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent_engine.domain.budget_math import month_bounds, month_of
from agent_engine.domain.clock import utcnow
from agent_engine.domain.records import RunRecord
from agent_engine.engine.context import EngineContext
from agent_engine.errors import InputValidationError, PayloadsPrunedError
from agent_engine.storage.blob_collection import collect_blobs
from agent_engine.storage.database import (
    create_engine,
    create_sessionmaker,
    read_transaction,
    transaction,
)
from agent_engine.storage.retention import (
    PrunedCounts,
    count_old_gateway_calls_txn,
    count_old_runs_txn,
    delete_calls_txn,
    delete_runs_txn,
    old_gateway_call_ids_txn,
    old_run_ids_txn,
    prune_call_payloads_txn,
    prune_payloads_txn,
)

logger = logging.getLogger(__name__)
BATCH_RUNS = 500
BATCH_ROWS = 1000  # model calls of no run, or blobs, per transaction
# A blob last written more recently is never collected: a write still in flight (prepared,
# not committed) may reference it (storage/blob_collection.py).
BLOB_GRACE = timedelta(hours=1)
PRUNE_INTERVAL_S = 3600.0
COLLECT_EVERY_ROUNDS = 24  # the periodic prune collects blobs once a day
_AGE = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h`` or ``90m`` as a duration (InputValidationError for anything else)."""
    match = _AGE.match(text)
    if match is None or int(match.group(1)) == 0:
        raise InputValidationError(
            f"--older-than {text!r}: expected a positive whole number of days, hours or "
            "minutes, e.g. 30d, 12h or 90m"
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def check_not_pruned(run: RunRecord, verb: str) -> None:
    """Refuse (409 ``payloads_pruned``) to replay or fork a run whose payloads were pruned:
    its recorded outputs and model answers are hashes now."""
    if run.payloads_pruned_at is not None:
        raise PayloadsPrunedError(
            f"run {run.id} cannot be {verb}: retention pruned its payloads on "
            f"{run.payloads_pruned_at.isoformat()} (their hashes are kept for the audit)",
            run_id=str(run.id),
        )


@dataclass
class PruneReport:
    """What one prune did (or, dry, would do)."""

    cutoff: datetime
    keep_audit: bool
    dry_run: bool
    runs: int = 0
    batches: int = 0
    payloads: PrunedCounts = field(default_factory=PrunedCounts)
    # Calls of no run (the OpenAI-compatible endpoint's) whose payloads went, and those deleted.
    gateway_pruned: int = 0
    gateway_deleted: int = 0
    # Blobs no row referenced, last written before the grace period.
    blobs: int = 0

    def line(self) -> str:
        """One line for the operator."""
        verb = "would be" if self.dry_run else "were"
        done = "payloads pruned" if self.keep_audit else "deleted"
        counts = self.payloads
        detail = (
            f" ({counts.steps} step, {counts.llm_calls} model call and {counts.approvals} "
            "approval rows pruned)"
            if self.keep_audit and not self.dry_run
            else ""
        )
        return (
            f"{self.runs} finished runs older than {self.cutoff.isoformat()} {verb} {done} "
            f"in {self.batches} batches{detail}; the payloads of {self.gateway_pruned} model "
            f"calls of no run older than it {verb} pruned and {self.gateway_deleted} such calls "
            f"{verb} deleted; {self.blobs} unreferenced blobs {verb} collected"
        )


def deletable_before(cutoff: datetime, now: datetime) -> datetime:
    """Before when a call of no run may be deleted: older than ``cutoff`` and of a month
    before this one, since setting a monthly budget counts this month's spend from the ledger
    (``engine/budget_changes.py``); earlier months live on in their budget counters."""
    return min(cutoff, month_bounds(month_of(now))[0])


async def prune(
    sessions: async_sessionmaker[AsyncSession],
    older_than: timedelta,
    *,
    keep_audit: bool,
    dry_run: bool = False,
    batch_runs: int = BATCH_RUNS,
    batch_rows: int = BATCH_ROWS,
    blob_grace: timedelta = BLOB_GRACE,
    collect: bool = True,
    stop: asyncio.Event | None = None,
) -> PruneReport:
    """Prune every finished run that ended more than ``older_than`` ago, ``batch_runs`` runs
    per transaction, then the model calls of no run made before then and the blobs no row
    references that were last written more than ``blob_grace`` ago, ``batch_rows`` per
    transaction (stopping between two when ``stop`` is set; ``collect=False``: no blob
    collection); ``dry_run`` counts them and changes nothing."""
    now = utcnow()
    report = PruneReport(now - older_than, keep_audit, dry_run)
    await _prune_runs(sessions, report, batch_runs, stop)
    await _prune_gateway_calls(
        sessions, report, deletable_before(report.cutoff, now), batch_rows, stop
    )
    if collect and (stop is None or not stop.is_set()):
        report.blobs, _ = await collect_blobs(
            sessions, utcnow() - blob_grace, batch_rows=batch_rows, dry_run=dry_run, stop=stop
        )
    return report


async def _prune_runs(
    sessions: async_sessionmaker[AsyncSession],
    report: PruneReport,
    batch_runs: int,
    stop: asyncio.Event | None,
) -> None:
    keep_audit = report.keep_audit
    if report.dry_run:
        async with read_transaction(sessions) as session:
            report.runs = await count_old_runs_txn(session, report.cutoff, unpruned=keep_audit)
        report.batches = -(-report.runs // batch_runs)
        return
    while stop is None or not stop.is_set():
        async with transaction(sessions) as session:
            run_ids = await old_run_ids_txn(session, report.cutoff, batch_runs, unpruned=keep_audit)
            if keep_audit:
                report.payloads += await prune_payloads_txn(session, run_ids)
            else:
                await delete_runs_txn(session, run_ids)
        if not run_ids:
            return
        report.runs += len(run_ids)
        report.batches += 1


async def _prune_gateway_calls(
    sessions: async_sessionmaker[AsyncSession],
    report: PruneReport,
    deletable: datetime,
    batch_rows: int,
    stop: asyncio.Event | None,
) -> None:
    """Without ``keep_audit`` delete the calls of no run made before ``deletable``; in both
    modes, replace the payloads of those older than the cutoff that remain (cost kept)."""
    if report.dry_run:
        async with read_transaction(sessions) as session:
            if not report.keep_audit:
                report.gateway_deleted = await count_old_gateway_calls_txn(
                    session, deletable, unpruned=False
                )
            unpruned = await count_old_gateway_calls_txn(session, report.cutoff, unpruned=True)
            report.gateway_pruned = unpruned - (
                await count_old_gateway_calls_txn(session, deletable, unpruned=True)
                if not report.keep_audit
                else 0
            )
        return
    steps = [(deletable, False, delete_calls_txn)] if not report.keep_audit else []
    steps.append((report.cutoff, True, prune_call_payloads_txn))
    for before, unpruned, act in steps:
        while stop is None or not stop.is_set():
            async with transaction(sessions) as session:
                call_ids = await old_gateway_call_ids_txn(
                    session, before, batch_rows, unpruned=unpruned
                )
                done = await act(session, call_ids)
            if not call_ids:
                break
            if unpruned:
                report.gateway_pruned += done
            else:
                report.gateway_deleted += done


async def prune_database(
    database_url: str,
    older_than: timedelta,
    *,
    keep_audit: bool,
    dry_run: bool,
    batch_runs: int = BATCH_RUNS,
    batch_rows: int = BATCH_ROWS,
    blob_grace: timedelta = BLOB_GRACE,
) -> PruneReport:
    """:func:`prune` on the database at ``database_url`` (`agent-engine prune`)."""
    engine = create_engine(database_url)
    try:
        sessions = create_sessionmaker(engine, lambda _: None)
        return await prune(
            sessions,
            older_than,
            keep_audit=keep_audit,
            dry_run=dry_run,
            batch_runs=batch_runs,
            batch_rows=batch_rows,
            blob_grace=blob_grace,
        )
    finally:
        await engine.dispose()


def start_retention(ctx: EngineContext, stop: asyncio.Event) -> asyncio.Task[None] | None:
    """Start pruning by AGENT_ENGINE_RETENTION_DAYS in the background, now and once an hour
    until ``stop`` is set (None: the setting is unset). Several processes may each run it: a
    batch locks its runs with SKIP LOCKED, and a pruned run is not visited again."""
    days = ctx.settings.retention_days
    if days is None:
        return None
    keep_audit = ctx.settings.retention_keep_audit
    return asyncio.create_task(
        prune_periodically(ctx.sessions, days, keep_audit=keep_audit, stop=stop), name="retention"
    )


async def prune_periodically(
    sessions: async_sessionmaker[AsyncSession],
    retention_days: int,
    *,
    keep_audit: bool,
    stop: asyncio.Event,
    interval_s: float = PRUNE_INTERVAL_S,
) -> None:
    """Prune by the retention setting now and every ``interval_s`` until ``stop`` is set,
    collecting blobs in the first round and every ``COLLECT_EVERY_ROUNDS`` after (a collection
    reads every document that references a blob); a failed round is logged and the next one
    tries again."""
    rounds = 0
    while not stop.is_set():
        try:
            age = timedelta(days=retention_days)
            collect = rounds % COLLECT_EVERY_ROUNDS == 0
            report = await prune(sessions, age, keep_audit=keep_audit, collect=collect, stop=stop)
        except (DBAPIError, OSError):  # the database may be away a while: the next round retries
            logger.exception("retention: prune failed")
        else:
            rounds += 1
            if report.runs or report.gateway_pruned or report.gateway_deleted or report.blobs:
                logger.info("retention: %s", report.line())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
