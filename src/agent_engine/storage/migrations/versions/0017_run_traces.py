"""Run traces: the ids of a run's OpenTelemetry span, chosen when the run is created

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01

- ``agent_runs.trace_id``: the run's trace (32 hex digits), from the creating request's
  ``traceparent`` or new; NULL when tracing was off at creation.
- ``agent_runs.trace_span_id``: the id of the run's ``invoke_agent`` span (16 hex digits),
  which its steps' spans name as their parent and which is emitted when the run ends.
- ``agent_runs.trace_parent_span_id``: the caller's span the run's span hangs from (NULL: the
  run's span is the trace's root).
- ``agent_runs.trace_sampled``: whether the trace is sampled (a caller's flag decides).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # recreate="never": SQLite adds nullable columns in place (the table has triggers).
    with op.batch_alter_table("agent_runs", recreate="never") as batch_op:
        batch_op.add_column(sa.Column("trace_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("trace_span_id", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("trace_parent_span_id", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("trace_sampled", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agent_runs", recreate="never") as batch_op:
        batch_op.drop_column("trace_sampled")
        batch_op.drop_column("trace_parent_span_id")
        batch_op.drop_column("trace_span_id")
        batch_op.drop_column("trace_id")
