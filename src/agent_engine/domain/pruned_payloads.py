"""Pruned payloads: a document replaced by a marker that keeps the SHA-256 its audit recorded,
so a run's chain still verifies after retention removed the document (docs/operations-logs.md).

A marker is ``{"pruned": true, "sha256": <hash>}``. It stands for its document only where its
hash is the one the audit expects: a step whose real output happens to look like a marker is
still hashed as what it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent_engine.domain.canonical import content_hash

# The columns retention prunes, by table; every other column stays as written.
PRUNED_COLUMNS: dict[str, tuple[str, ...]] = {
    "steps": ("resolved_input", "output_data"),
    "llm_calls": ("request", "response"),
    "approvals": ("shown",),
}


def pruned_marker(digest: str) -> dict[str, Any]:
    """The marker that replaces a document hashing to ``digest``."""
    return {"pruned": True, "sha256": digest}


def pruned_digest(value: Any) -> str | None:
    """The hash a marker keeps (None: ``value`` is not a marker)."""
    if (
        isinstance(value, Mapping)
        and set(value) == {"pruned", "sha256"}
        and value["pruned"] is True
        and isinstance(value["sha256"], str)
    ):
        return value["sha256"]
    return None


def payload_hash(value: Any, expected: str | None) -> str:
    """The hash of a stored document as the audit sees it: a marker keeping ``expected`` counts
    as that document, anything else is hashed as it is."""
    digest = pruned_digest(value)
    if digest is not None and digest == expected:
        return digest
    return content_hash(value)


def pruned_payloads(tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Every pruned document among a run's rows (``tables``: table name → rows), named by table,
    row (step number or id) and column, with the hash it keeps."""
    found: list[dict[str, Any]] = []
    for table, columns in PRUNED_COLUMNS.items():
        for row in tables.get(table, ()):
            for column in columns:
                digest = pruned_digest(row.get(column))
                if digest is None:
                    continue
                where = (
                    {"step_number": row["step_number"]}
                    if table == "steps"
                    else {"id": str(row["id"])}
                )
                found.append({"table": table, **where, "column": column, "sha256": digest})
    return found
