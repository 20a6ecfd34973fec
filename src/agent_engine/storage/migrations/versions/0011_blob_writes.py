"""Blob writes: the write function stores content-addressed payloads once

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

``agent_engine_apply_changes_v2`` (``storage/sql/``) is v1 plus the batch's ``blobs``: inserted
first, in hash order, and kept as they are when a blob of that hash is already stored. v1 stays
until a later migration drops it, so a process of the previous release still writes while
another one already runs this one. SQLite writes the same with ``INSERT … ON CONFLICT DO
NOTHING`` and needs nothing here.
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute((SQL_DIR / "apply_changes_v2.sql").read_text())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS agent_engine_apply_changes_v2(jsonb)")
