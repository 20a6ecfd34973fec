"""Content-addressed payloads: the rows a write adds for large strings, and reading documents
back whole (every reader of a step's input or output sees the expanded value).

Which strings go to ``blobs`` and how a document references them is ``domain/blob_refs.py``;
the blob rows themselves are inserted by the one write path (``storage/changes.py``), skipped
when a blob of that hash is already stored, so two runs that read the same large file store it
once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_engine.domain.blob_refs import (
    BLOBBED_STEP_COLUMNS,
    expand,
    externalize,
    needs_expanding,
    referenced_blobs,
)
from agent_engine.domain.clock import utcnow
from agent_engine.storage.tables import Blob

BLOBS = cast(Table, Blob.__table__)
# The columns of ``steps`` whose large strings are stored as blobs.
DEFAULT_THRESHOLD_BYTES = 65_536


def externalize_step_values(
    values: dict[str, Any], threshold: int, blobs: dict[str, bytes]
) -> dict[str, Any]:
    """``values`` (a step's columns to write) with its blobbed columns in their stored form;
    the blobs they reference are added to ``blobs``."""
    if not any(values.get(column) is not None for column in BLOBBED_STEP_COLUMNS):
        return values
    stored = dict(values)
    for column in BLOBBED_STEP_COLUMNS:
        if stored.get(column) is not None:
            outcome = externalize(stored[column], threshold)
            stored[column] = outcome.document
            blobs.update(outcome.blobs)
    return stored


def blob_rows(blobs: Mapping[str, bytes]) -> list[dict[str, Any]]:
    """Rows of ``blobs`` for each payload, in hash order (one lock order for every writer)."""
    now = utcnow()
    return [
        {"hash": digest, "size": len(data), "content": data, "created_at": now}
        for digest, data in sorted(blobs.items())
    ]


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


async def expand_step_rows_txn(
    session: AsyncSession, rows: Sequence[Mapping[Any, Any]]
) -> list[dict[str, Any]]:
    """``steps`` rows (as mappings) with their blobbed columns expanded."""
    plain = [dict(row) for row in rows]
    cells = [(i, column) for i in range(len(plain)) for column in BLOBBED_STEP_COLUMNS]
    present = [(i, column) for i, column in cells if plain[i].get(column) is not None]
    expanded = await expand_documents_txn(session, [plain[i][column] for i, column in present])
    for (i, column), value in zip(present, expanded, strict=True):
        plain[i][column] = value
    return plain
