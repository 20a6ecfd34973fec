"""Audit events carry the transaction that wrote them, for the global stream's commit order

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27

``audit_events.id`` is taken at insert, not at commit: two transactions that commit out of id
order would let a reader of ``/v1/events`` that pages by id skip an event for good. On PostgreSQL
each event now records its transaction's id (``pg_current_xact_id()``, as bigint: the 64-bit
counter, epoch included, which never wraps), and the reader orders by ``(xact_id, id)`` up to the
oldest transaction still in progress (``engine/event_stream.py`` explains why that is enough).

Events written before this revision get 0: they were all committed before any transaction that
comes after it, so they come first, in id order. A constant default is stored in the catalog, not
written into every row, so the column is added without rewriting the table; the function default
that follows applies to new rows only. SQLite has one writer at a time, so id order is commit
order there and the column stays 0. Inserts never name the column.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEX = "ix_audit_events_xact_id_id"
WRITING_TRANSACTION = "pg_current_xact_id()::text::bigint"


def upgrade() -> None:
    # Not through batch mode on SQLite: re-creating the table would drop its append-only triggers.
    op.add_column(
        "audit_events",
        sa.Column("xact_id", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "audit_events", "xact_id", server_default=sa.text(f"({WRITING_TRANSACTION})")
        )
    op.create_index(INDEX, "audit_events", ["xact_id", "id"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="audit_events")
    op.drop_column("audit_events", "xact_id")
