"""API keys with roles, and an index for counting a key's runs in flight

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

A key is stored as a salted HMAC-SHA256 of its secret, never in the clear; ``prefix`` (part of
the key as shown, unique) finds its row with one indexed lookup. ``name`` is the actor the audit
log records and is never reused. ``agent_runs (created_by, status)`` lets creation count the
runs a key has not finished without reading the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

RUNS_INDEX = "ix_agent_runs_created_by_status"


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("may_auto_approve", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(200), nullable=True),
        sa.CheckConstraint(
            "role IN ('viewer', 'operator', 'approver', 'admin')", name="ck_api_keys_role_known"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("name", name="uq_api_keys_name"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    )
    op.create_index(RUNS_INDEX, "agent_runs", ["created_by", "status"])


def downgrade() -> None:
    op.drop_index(RUNS_INDEX, table_name="agent_runs")
    op.drop_table("api_keys")
