"""Audit you can verify offline: no statement replaces an event; approval receipts on steps

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01

- SQLite: ``INSERT OR REPLACE`` (and ``REPLACE``) deletes the conflicting row without firing
  delete triggers (``recursive_triggers`` is off), so an event could be rewritten in place. A
  BEFORE INSERT trigger refuses an insert whose ``(run_id, seq)`` or ``id`` is already taken.
  (PostgreSQL: ``INSERT … ON CONFLICT DO UPDATE`` fires the UPDATE trigger of migration 0001,
  which refuses it; TRUNCATE has its own trigger.)
- ``steps.approved_input_hash``: the hash of the resolved input an approval bound to; a claim
  whose input hashes differently sends the step back to wait for approval.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SQLITE_NO_REPLACE = """
CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events
WHEN EXISTS (
    SELECT 1 FROM audit_events
    WHERE (run_id = NEW.run_id AND seq = NEW.seq) OR (NEW.id IS NOT NULL AND id = NEW.id)
)
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: an event may not be replaced'); END
"""


def upgrade() -> None:
    with op.batch_alter_table("steps", recreate="never") as batch_op:
        batch_op.add_column(sa.Column("approved_input_hash", sa.String(64), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        op.execute(SQLITE_NO_REPLACE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_replace")
    with op.batch_alter_table("steps", recreate="never") as batch_op:
        batch_op.drop_column("approved_input_hash")
