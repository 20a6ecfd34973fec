"""Workers: run hand-off, claimable index, effect ledger, event notifications

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from agent_engine.storage.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# Every committed audit event is announced on one channel ("<run_id> <seq> <type>"): SSE streams
# and idle workers in any process wake on it, and it costs the writer no extra round trip.
PG_NOTIFY = [
    """
    CREATE FUNCTION audit_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('agent_engine_events', NEW.run_id::text || ' ' || NEW.seq || ' ' || NEW.type);
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER audit_events_notify AFTER INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_notify()
    """,
]
PG_DROP_NOTIFY = [
    "DROP TRIGGER IF EXISTS audit_events_notify ON audit_events",
    "DROP FUNCTION IF EXISTS audit_events_notify()",
]


def _on_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    with op.batch_alter_table("agent_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("started", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("max_parallel", sa.Integer(), nullable=False, server_default="4")
        )
        batch_op.add_column(sa.Column("claimable_at", UTCDateTime(), nullable=True))
        batch_op.create_index("ix_agent_runs_claimable_at", ["claimable_at"], unique=False)

    with op.batch_alter_table("steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retry_policy", JSON_DOC, nullable=True))
        batch_op.add_column(sa.Column("effect_intent", JSON_DOC, nullable=True))
        batch_op.add_column(sa.Column("effect_outcome", JSON_DOC, nullable=True))
        batch_op.add_column(
            sa.Column("outcome_unknown", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index(
            "ix_steps_status_lease_expires_at", ["status", "lease_expires_at"], unique=False
        )

    if _on_postgres():
        for statement in PG_NOTIFY:
            op.execute(statement)


def downgrade() -> None:
    if _on_postgres():
        for statement in PG_DROP_NOTIFY:
            op.execute(statement)
    with op.batch_alter_table("steps", schema=None) as batch_op:
        batch_op.drop_index("ix_steps_status_lease_expires_at")
        batch_op.drop_column("outcome_unknown")
        batch_op.drop_column("effect_outcome")
        batch_op.drop_column("effect_intent")
        batch_op.drop_column("retry_policy")

    with op.batch_alter_table("agent_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_agent_runs_claimable_at")
        batch_op.drop_column("claimable_at")
        batch_op.drop_column("max_parallel")
        batch_op.drop_column("started")
