"""Determinism: run lineage, content-addressed payloads, approval receipts, signed chain heads

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

- ``agent_runs.replay_of`` / ``forked_from`` / ``from_step`` / ``replay_mode``: a replay or a
  fork names the run it came from (no foreign key: a bundle imported from another instance may
  name a run that is not here). ``replay_mode`` is ``hermetic`` or ``verify`` for replays.
- ``agent_runs.audit_signature`` / ``audit_key_id``: the Ed25519 signature of the chain's head
  and the id of the key that made it (the key itself is never in the database).
- ``steps.reused_from``: the original step a fork reused instead of running it again.
- ``llm_calls.response_hash``: SHA-256 of the recorded response's canonical JSON.
- ``approvals.input_hash`` / ``shown_hash``: what an approval binds to (the step's exact resolved
  input) and the hash of exactly what the approver was shown.
- ``blobs``: payloads above a size stored once, by the SHA-256 of their bytes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agent_engine.storage.types import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agent_runs", recreate="never") as batch_op:
        batch_op.add_column(sa.Column("replay_of", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("forked_from", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("from_step", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("replay_mode", sa.String(16), nullable=True))
        batch_op.add_column(sa.Column("audit_signature", sa.String(128), nullable=True))
        batch_op.add_column(sa.Column("audit_key_id", sa.String(64), nullable=True))
    op.create_index("ix_agent_runs_replay_of", "agent_runs", ["replay_of"])
    op.create_index("ix_agent_runs_forked_from", "agent_runs", ["forked_from"])
    with op.batch_alter_table("steps", recreate="never") as batch_op:
        batch_op.add_column(sa.Column("reused_from", sa.Uuid(), nullable=True))
    with op.batch_alter_table("llm_calls", recreate="never") as batch_op:
        batch_op.add_column(sa.Column("response_hash", sa.String(64), nullable=True))
    with op.batch_alter_table("approvals", recreate="never") as batch_op:
        batch_op.add_column(sa.Column("input_hash", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("shown_hash", sa.String(64), nullable=True))
    op.create_table(
        "blobs",
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("hash", name="pk_blobs"),
    )


def downgrade() -> None:
    op.drop_table("blobs")
    with op.batch_alter_table("approvals", recreate="never") as batch_op:
        batch_op.drop_column("shown_hash")
        batch_op.drop_column("input_hash")
    with op.batch_alter_table("llm_calls", recreate="never") as batch_op:
        batch_op.drop_column("response_hash")
    with op.batch_alter_table("steps", recreate="never") as batch_op:
        batch_op.drop_column("reused_from")
    op.drop_index("ix_agent_runs_forked_from", table_name="agent_runs")
    op.drop_index("ix_agent_runs_replay_of", table_name="agent_runs")
    with op.batch_alter_table("agent_runs", recreate="never") as batch_op:
        for column in (
            "audit_key_id",
            "audit_signature",
            "replay_mode",
            "from_step",
            "forked_from",
            "replay_of",
        ):
            batch_op.drop_column(column)
