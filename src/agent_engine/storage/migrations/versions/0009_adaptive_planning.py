"""Adaptive planning: where a run's plan revisions stand

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

``agent_runs.adaptive`` (JSON, NULL for fixed-plan runs) holds how many revisions the run made,
the step after which a revision is due (the run then waits in ``planning``), and why no more
revisions are asked once the loop ended (``max_replans``, ``goal_met``, ``budget``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("agent_runs", recreate="never") as batch_op:
        batch_op.add_column(sa.Column("adaptive", JSON_DOC, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agent_runs", recreate="never") as batch_op:
        batch_op.drop_column("adaptive")
