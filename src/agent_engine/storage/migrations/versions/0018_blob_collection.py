"""Retention of model calls and blobs: calls of no run pruned by age, blobs collected when no
row references them

Revision ID: 0018
Revises: 0016
Create Date: 2026-12-01

- ``llm_calls.payloads_pruned_at``: when retention replaced the call's request and response by
  markers keeping their hashes; set for the calls of runs pruned before (from
  ``agent_runs.payloads_pruned_at``). The response cache never serves a pruned call.
- Two partial indexes on ``llm_calls.created_at`` for the calls of no run (the OpenAI-compatible
  endpoint's), all of them and those not yet pruned: retention visits them oldest first without
  reading the runs' calls.
- ``ix_blobs_created_at``: the blob collection reads only blobs written before its grace period.
- ``agent_engine_apply_changes_v3`` (``storage/sql/``): v2 whose blob insert moves the
  ``created_at`` of a blob already stored on to the write's (and locks it until the write
  commits), so a blob a write in flight references again is never collected. v2 stays, so a
  process of the previous release still writes while another one already runs this one.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op

from agent_engine.storage.types import UTCDateTime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
GATEWAY = "run_id IS NULL"
UNPRUNED = "run_id IS NULL AND payloads_pruned_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("llm_calls", recreate="never") as batch_op:
        batch_op.add_column(sa.Column("payloads_pruned_at", UTCDateTime(), nullable=True))
    op.execute(
        "UPDATE llm_calls SET payloads_pruned_at = (SELECT r.payloads_pruned_at FROM agent_runs r"
        " WHERE r.id = llm_calls.run_id) WHERE run_id IN (SELECT id FROM agent_runs"
        " WHERE payloads_pruned_at IS NOT NULL)"
    )
    op.create_index(
        "ix_llm_calls_gateway_created_at",
        "llm_calls",
        ["created_at"],
        postgresql_where=sa.text(GATEWAY),
        sqlite_where=sa.text(GATEWAY),
    )
    op.create_index(
        "ix_llm_calls_gateway_unpruned_created_at",
        "llm_calls",
        ["created_at"],
        postgresql_where=sa.text(UNPRUNED),
        sqlite_where=sa.text(UNPRUNED),
    )
    op.create_index("ix_blobs_created_at", "blobs", ["created_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute((SQL_DIR / "apply_changes_v3.sql").read_text())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS agent_engine_apply_changes_v3(jsonb)")
    op.drop_index("ix_blobs_created_at", table_name="blobs")
    op.drop_index("ix_llm_calls_gateway_unpruned_created_at", table_name="llm_calls")
    op.drop_index("ix_llm_calls_gateway_created_at", table_name="llm_calls")
    with op.batch_alter_table("llm_calls", recreate="never") as batch_op:
        batch_op.drop_column("payloads_pruned_at")
