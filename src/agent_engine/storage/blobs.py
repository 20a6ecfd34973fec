"""Content-addressed payloads: the rows a write adds for large strings, and reading documents
back whole (every reader of a step's input or output, or of a model call's request or response,
sees the expanded value).

Which strings go to ``blobs`` and how a document references them is ``domain/blob_refs.py``;
the blob rows themselves are inserted by the one write path (``storage/changes.py``), or for
the calls that belong to no run by ``storage/ledger.py``. A blob of that hash already stored is
kept, only its ``created_at`` moved on to the write's time: a blob's ``created_at`` is when it
was last written, and the blob collection (``storage/blob_collection.py``) leaves every blob
written within its grace period alone. So two runs that read the same large file store it once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.blob_refs import (
    BLOBBED_CALL_COLUMNS,
    BLOBBED_COLUMNS,
    BLOBBED_STEP_COLUMNS,
    expand,
    externalize,
    needs_expanding,
    referenced_blobs,
)
from agent_engine.domain.clock import utcnow
from agent_engine.storage.tables import Approval, AuditEvent, Base, Blob, LLMCall, PlanVersion

BLOBS = cast(Table, Blob.__table__)
DEFAULT_THRESHOLD_BYTES = 65_536


def externalize_values(
    values: dict[str, Any], columns: Sequence[str], threshold: int, blobs: dict[str, bytes]
) -> dict[str, Any]:
    """``values`` (a row's columns to write) with the documents of ``columns`` in their stored
    form; the blobs they reference are added to ``blobs``."""
    if not any(values.get(column) is not None for column in columns):
        return values
    stored = dict(values)
    for column in columns:
        if stored.get(column) is not None:
            outcome = externalize(stored[column], threshold)
            stored[column] = outcome.document
            blobs.update(outcome.blobs)
    return stored


def externalize_step_values(
    values: dict[str, Any], threshold: int, blobs: dict[str, bytes]
) -> dict[str, Any]:
    """A step's columns to write, its blobbed columns in their stored form."""
    return externalize_values(values, BLOBBED_STEP_COLUMNS, threshold, blobs)


def externalize_row(
    table: str, row: dict[str, Any], threshold: int, blobs: dict[str, bytes]
) -> dict[str, Any]:
    """A row of ``table`` to insert, its blobbed columns (``BLOBBED_COLUMNS``) in their stored
    form; a table without any is returned as it is. Hashes taken before stay those of the
    whole documents."""
    columns = BLOBBED_COLUMNS.get(table)
    return externalize_values(row, columns, threshold, blobs) if columns else row


def blob_rows(blobs: Mapping[str, bytes]) -> list[dict[str, Any]]:
    """Rows of ``blobs`` for each payload, in hash order (one lock order for every writer)."""
    now = utcnow()
    return [
        {"hash": digest, "size": len(data), "content": data, "created_at": now}
        for digest, data in sorted(blobs.items())
    ]


def touching_insert(dialect: str) -> Any:
    """The insert of blob rows that keeps a blob already stored and moves its ``created_at`` on
    (PostgreSQL: it also locks that row until the writer commits, so a concurrent collection
    skips it)."""
    statement = pg_insert(BLOBS) if dialect == "postgresql" else sqlite_insert(BLOBS)
    newer = statement.excluded.created_at
    return statement.on_conflict_do_update(
        index_elements=[BLOBS.c.hash],
        set_={"created_at": newer},
        where=BLOBS.c.created_at < newer,
    )


async def store_blobs_txn(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert blob ``rows`` (``blob_rows``' form) in the caller's transaction, in hash order."""
    if not rows:
        return
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    ordered = sorted((dict(row) for row in rows), key=lambda row: row["hash"])
    await session.execute(touching_insert(dialect), ordered)


async def blob_texts_txn(session: AsyncSession, hashes: Iterable[str]) -> dict[str, str]:
    """The stored blobs among ``hashes``, as text (hash → text)."""
    wanted = sorted(set(hashes))
    if not wanted:
        return {}
    rows = await session.execute(
        select(BLOBS.c.hash, BLOBS.c.content).where(BLOBS.c.hash.in_(wanted))
    )
    return {row.hash: bytes(row.content).decode("utf-8") for row in rows}


async def expand_documents_txn(session: AsyncSession, documents: Sequence[Any]) -> list[Any]:
    """Each stored document whole again (one query for all the blobs they reference)."""
    pending = [i for i, document in enumerate(documents) if needs_expanding(document)]
    if not pending:
        return list(documents)
    hashes: set[str] = set()
    for i in pending:
        hashes |= referenced_blobs(documents[i])
    contents = await blob_texts_txn(session, hashes)
    expanded = list(documents)
    for i in pending:
        expanded[i] = expand(documents[i], contents)
    return expanded


async def expand_rows_txn(
    session: AsyncSession, rows: Sequence[Mapping[Any, Any]], columns: Sequence[str]
) -> list[dict[str, Any]]:
    """Rows (as mappings) with the documents of ``columns`` expanded, in one query."""
    plain = [dict(row) for row in rows]
    cells = [(i, column) for i in range(len(plain)) for column in columns]
    present = [(i, column) for i, column in cells if plain[i].get(column) is not None]
    expanded = await expand_documents_txn(session, [plain[i][column] for i, column in present])
    for (i, column), value in zip(present, expanded, strict=True):
        plain[i][column] = value
    return plain


async def expand_step_rows_txn(
    session: AsyncSession, rows: Sequence[Mapping[Any, Any]]
) -> list[dict[str, Any]]:
    """``steps`` rows (as mappings) with their blobbed columns expanded."""
    return await expand_rows_txn(session, rows, BLOBBED_STEP_COLUMNS)


_ModelT = TypeVar("_ModelT", bound=Base)


async def expand_objects_txn(
    session: AsyncSession, objects: Sequence[_ModelT], columns: Sequence[str]
) -> list[_ModelT]:
    """Rows loaded as objects, with the documents of ``columns`` expanded (one query for all).
    An object that holds a reference is detached from the session first
    (``Session.expunge``), so that its whole documents are read, never written back inline."""
    stored = [obj for obj in objects if needs_expanding([getattr(obj, c) for c in columns])]
    if not stored:
        return list(objects)
    documents = [getattr(obj, column) for obj in stored for column in columns]
    expanded = iter(await expand_documents_txn(session, documents))
    for obj in stored:
        session.expunge(obj)
        for column in columns:
            setattr(obj, column, next(expanded))
    return list(objects)


async def expand_calls_txn(session: AsyncSession, calls: Sequence[LLMCall]) -> list[LLMCall]:
    """``llm_calls`` loaded as objects, with their requests and responses expanded."""
    return await expand_objects_txn(session, calls, BLOBBED_CALL_COLUMNS)


async def expand_plans_txn(
    session: AsyncSession, plans: Sequence[PlanVersion]
) -> list[PlanVersion]:
    """Plan versions loaded as objects, with their documents expanded."""
    return await expand_objects_txn(session, plans, BLOBBED_COLUMNS["plans"])


async def expand_approvals_txn(
    session: AsyncSession, approvals: Sequence[Approval]
) -> list[Approval]:
    """Approvals loaded as objects, with what they showed expanded."""
    return await expand_objects_txn(session, approvals, BLOBBED_COLUMNS["approvals"])


async def expand_events_txn(
    session: AsyncSession, events: Sequence[AuditEvent]
) -> list[AuditEvent]:
    """Audit events loaded as objects, with their payloads expanded."""
    return await expand_objects_txn(session, events, BLOBBED_COLUMNS["audit_events"])
