"""Collecting the blobs no row references any more (retention, docs/operations-logs.md): those
of runs deleted or pruned, and those of a write whose guard then failed.

A collection marks, then sweeps, in short transactions of a bounded number of rows each:

- mark: every document that may reference a blob (``domain/blob_refs.py`` ``BLOBBED_COLUMNS``)
  is read, a page of rows at a time (only rows whose text names a ``$blob``), and the hashes
  they reference are gathered;
- sweep: the blobs last written before ``cutoff`` (now less a grace period) that no document
  referenced are deleted, a batch at a time, in hash order.

Why a blob that a writer in flight references is never deleted: every write of a blob, new or
already stored, sets its ``created_at`` to the write's time (``storage/blobs.py``), in the same
transaction as the rows that reference it. A write that commits during the collection therefore
leaves its blobs written after ``cutoff`` (unless it took longer than the grace period between
preparing and committing), and the sweep deletes only blobs written before it. On PostgreSQL the
sweep locks its batch ``FOR UPDATE SKIP LOCKED`` and checks ``created_at`` again once locked: a
blob a writer holds (its insert locks it until commit) is skipped, never waited for, and a writer
that re-stores a blob the sweep holds waits for it and stores it again. On SQLite writes are
serial, so the sweep's own check is enough.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table, Text, delete, func, or_, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent_engine.domain.blob_refs import BLOBBED_COLUMNS, referenced_blobs
from agent_engine.storage.blobs import BLOBS
from agent_engine.storage.database import read_transaction, transaction
from agent_engine.storage.tables import Base

# The text every stored reference contains (``{"$blob": …}``); an escaped look-alike key
# (``"$$blob"``) does not.
REFERENCE_TEXT = '%"$blob"%'


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


# A row's primary key: a UUID, or the integer id of ``audit_events``.
RowId = uuid.UUID | int


async def referencing_page_txn(
    session: AsyncSession, table_name: str, after: RowId | None, limit: int
) -> tuple[set[str], RowId | None]:
    """The blobs referenced by the next ``limit`` rows of ``table_name`` after id ``after``
    that reference any, and the last id read (None: no row is left)."""
    table = _table(table_name)
    columns = [table.c[name] for name in BLOBBED_COLUMNS[table_name]]
    naming = or_(*(sql_cast(column, Text).like(REFERENCE_TEXT) for column in columns))
    query = select(table.c.id, *columns).where(naming).order_by(table.c.id).limit(limit)
    if after is not None:
        query = query.where(table.c.id > after)
    rows = (await session.execute(query)).all()
    if not rows:
        return set(), None
    found = referenced_blobs([list(row[1:]) for row in rows])
    return found, rows[-1][0]


async def referenced_hashes(sessions: async_sessionmaker[AsyncSession], page_rows: int) -> set[str]:
    """Every blob some row references now, read ``page_rows`` rows per read transaction."""
    found: set[str] = set()
    for table_name in BLOBBED_COLUMNS:
        after: RowId | None = None
        while True:
            async with read_transaction(sessions) as session:
                page, after = await referencing_page_txn(session, table_name, after, page_rows)
            found |= page
            if after is None:
                break
    return found


async def old_blobs_txn(
    session: AsyncSession, cutoff: datetime, after: str | None, limit: int
) -> list[str]:
    """The hashes of at most ``limit`` blobs last written before ``cutoff``, after ``after`` in
    hash order."""
    query = (
        select(BLOBS.c.hash).where(BLOBS.c.created_at < cutoff).order_by(BLOBS.c.hash).limit(limit)
    )
    if after is not None:
        query = query.where(BLOBS.c.hash > after)
    return list((await session.execute(query)).scalars())


async def delete_blobs_txn(session: AsyncSession, hashes: Sequence[str], cutoff: datetime) -> int:
    """Delete those of ``hashes`` still last written before ``cutoff``; on PostgreSQL only
    those no writer holds (locked in hash order, ``SKIP LOCKED``)."""
    if not hashes:
        return 0
    still_old = (BLOBS.c.hash.in_(sorted(hashes)), BLOBS.c.created_at < cutoff)
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        locked = select(BLOBS.c.hash).where(*still_old).order_by(BLOBS.c.hash)
        chosen = list((await session.execute(locked.with_for_update(skip_locked=True))).scalars())
        if not chosen:
            return 0
        still_old = (BLOBS.c.hash.in_(chosen), BLOBS.c.created_at < cutoff)
    result = await session.execute(delete(BLOBS).where(*still_old))
    return int(getattr(result, "rowcount", 0) or 0)


async def count_old_blobs_txn(session: AsyncSession, cutoff: datetime) -> int:
    """How many blobs were last written before ``cutoff``."""
    query = select(func.count()).select_from(BLOBS).where(BLOBS.c.created_at < cutoff)
    return int((await session.execute(query)).scalar_one())


async def collect_blobs(
    sessions: async_sessionmaker[AsyncSession],
    cutoff: datetime,
    *,
    batch_rows: int,
    dry_run: bool = False,
    stop: asyncio.Event | None = None,
) -> tuple[int, int]:
    """Delete the blobs last written before ``cutoff`` that no row references, ``batch_rows``
    per transaction (stopping between two when ``stop`` is set); ``dry_run`` only counts them.
    The number of blobs (collected, or that would be) and of sweep transactions."""
    async with read_transaction(sessions) as session:
        if await count_old_blobs_txn(session, cutoff) == 0:
            return 0, 0  # nothing old enough: no need to read the documents
    referenced = await referenced_hashes(sessions, batch_rows)
    collected = batches = 0
    after: str | None = None
    while stop is None or not stop.is_set():
        async with read_transaction(sessions) as session:
            old = await old_blobs_txn(session, cutoff, after, batch_rows)
        if not old:
            break
        after = old[-1]
        unreferenced = [digest for digest in old if digest not in referenced]
        if dry_run:
            collected += len(unreferenced)
        elif unreferenced:
            async with transaction(sessions) as session:
                collected += await delete_blobs_txn(session, unreferenced, cutoff)
            batches += 1
    return collected, batches
