"""Budget reservations in one call each on PostgreSQL

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01

``agent_engine_reserve_v1`` and ``agent_engine_settle_v1`` (``storage/sql/``) do what
``engine/budgets.py`` does in Python on SQLite — lock the counters in id order, check, hold,
settle — in one round trip each, so a model call's budget bookkeeping costs two short
transactions. SQLite needs nothing here.
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute((SQL_DIR / "budget_reserve_v1.sql").read_text())
        op.execute((SQL_DIR / "budget_settle_v1.sql").read_text())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS agent_engine_settle_v1(jsonb)")
        op.execute("DROP FUNCTION IF EXISTS agent_engine_reserve_v1(jsonb)")
