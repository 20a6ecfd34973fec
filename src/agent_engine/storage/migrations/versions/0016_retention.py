"""Retention: pruned payloads are remembered, and old runs' audit events may be deleted by the
prune path alone

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01

- ``agent_runs.payloads_pruned_at``: when `agent-engine prune` replaced the run's payloads
  (step outputs, resolved inputs, model requests and responses, what approvers were shown) by
  markers that keep their hashes; a pruned run is not visited again.
- ``audit_prune_permits``: the one way to delete audit events. The append-only triggers of
  migration 0001 still refuse every UPDATE and TRUNCATE, and every DELETE of an event whose run
  has no row here. The prune path inserts a permit for each run it deletes, deletes the run's
  rows and its permit in the same transaction, so no permit outlives it; any other code (or
  person) that deletes an event without writing a permit first is refused as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agent_engine.storage.types import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

PG_PERMITTED_DELETE = """
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND EXISTS (SELECT 1 FROM audit_prune_permits WHERE run_id = OLD.run_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""
PG_ALWAYS_REFUSED = """
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""
SQLITE_PERMITTED_DELETE = """
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN NOT EXISTS (SELECT 1 FROM audit_prune_permits WHERE run_id = OLD.run_id)
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END
"""
SQLITE_ALWAYS_REFUSED = """
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END
"""


def upgrade() -> None:
    with op.batch_alter_table("agent_runs", recreate="never") as batch_op:
        batch_op.add_column(sa.Column("payloads_pruned_at", UTCDateTime(), nullable=True))
    op.create_index("ix_agent_runs_completed_at", "agent_runs", ["completed_at"])
    op.create_table(
        "audit_prune_permits",
        sa.Column("run_id", sa.Uuid(), primary_key=True),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
        op.execute(SQLITE_PERMITTED_DELETE)
    else:
        op.execute(PG_PERMITTED_DELETE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
        op.execute(SQLITE_ALWAYS_REFUSED)
    else:
        op.execute(PG_ALWAYS_REFUSED)
    op.drop_table("audit_prune_permits")
    op.drop_index("ix_agent_runs_completed_at", table_name="agent_runs")
    with op.batch_alter_table("agent_runs", recreate="never") as batch_op:
        batch_op.drop_column("payloads_pruned_at")
