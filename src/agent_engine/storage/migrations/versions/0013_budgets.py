"""Budgets that hold: counters, reservations, project and key budgets, alert deliveries

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01

- ``budgets``: a monthly budget per project or API key.
- ``budget_counters``: per budget and period (a run, or a calendar month) the limit, what was
  spent and what is reserved; a reservation is one conditional UPDATE that cannot pass the limit.
- ``budget_reservations``: each model call's worst-case hold and what it settled to.
- ``webhook_deliveries``: alert events to POST, written with the event, retried by a sender.
- ``agent_runs.project`` / ``api_key_id``: which monthly budgets a run's calls count against;
  ``agent_runs.budget_pause`` / ``steps.budget_pause``: why a run or step waits for budget.
- ``llm_calls``: ``run_id`` may be NULL (calls through the OpenAI-compatible endpoint belong to a
  key or project, not a run), ``project`` / ``api_key_id`` name them; ``saved_usd`` and
  ``saving`` (``cache`` or ``routing``) record what a cached answer or a cheaper model saved;
  ``cache_of`` names the call a cached answer was served from; ``reservation_id`` the budget
  reservation a call settled (a settled reservation no call row names is spend whose attempt
  was lost before it could record it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agent_engine.storage.types import JSONDocument, Money, UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agent_runs", recreate="never") as batch_op:
        batch_op.add_column(sa.Column("project", sa.String(200), nullable=True))
        batch_op.add_column(sa.Column("api_key_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("budget_pause", JSONDocument, nullable=True))
    op.create_index("ix_agent_runs_project_created_at", "agent_runs", ["project", "created_at"])
    with op.batch_alter_table("steps", recreate="never") as batch_op:
        batch_op.add_column(sa.Column("budget_pause", JSONDocument, nullable=True))
    with op.batch_alter_table("llm_calls") as batch_op:
        batch_op.alter_column("run_id", existing_type=sa.Uuid(), nullable=True)
        batch_op.add_column(sa.Column("project", sa.String(200), nullable=True))
        batch_op.add_column(sa.Column("api_key_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("saved_usd", Money(), nullable=True))
        batch_op.add_column(sa.Column("saving", sa.String(16), nullable=True))
        batch_op.add_column(sa.Column("cache_of", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("reservation_id", sa.Uuid(), nullable=True))
    op.create_index("ix_llm_calls_created_at", "llm_calls", ["created_at"])
    op.create_index("ix_llm_calls_reservation_id", "llm_calls", ["reservation_id"])
    op.create_table(
        "budgets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("limit_usd", Money(), nullable=True),
        sa.Column("limit_tokens", sa.BigInteger(), nullable=True),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_budgets"),
        sa.UniqueConstraint("scope", "subject", name="uq_budgets_scope_subject"),
        sa.CheckConstraint("scope IN ('project', 'api_key')", name="ck_budgets_scope_known"),
    )
    op.create_table(
        "budget_counters",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("limit_usd", Money(), nullable=True),
        sa.Column("limit_tokens", sa.BigInteger(), nullable=True),
        sa.Column("spent_usd", Money(), nullable=False),
        sa.Column("spent_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reserved_usd", Money(), nullable=False),
        sa.Column("reserved_tokens", sa.BigInteger(), nullable=False),
        sa.Column("alerted_percent", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_budget_counters"),
        sa.UniqueConstraint(
            "scope", "subject", "period", name="uq_budget_counters_scope_subject_period"
        ),
        sa.CheckConstraint(
            "reserved_usd >= 0 AND reserved_tokens >= 0",
            name="ck_budget_counters_reserved_not_negative",
        ),
    )
    op.create_table(
        "budget_reservations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        sa.Column("step_id", sa.Uuid(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("fence", sa.BigInteger(), nullable=True),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("counter_ids", JSONDocument, nullable=False),
        sa.Column("amount_usd", Money(), nullable=False),
        sa.Column("amount_tokens", sa.BigInteger(), nullable=False),
        sa.Column("estimate", JSONDocument, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("actual_usd", Money(), nullable=True),
        sa.Column("actual_tokens", sa.BigInteger(), nullable=True),
        sa.Column("calls", JSONDocument, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("settled_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_budget_reservations"),
        sa.CheckConstraint(
            "status IN ('held', 'settled', 'released')", name="ck_budget_reservations_status_known"
        ),
    )
    op.create_index("ix_budget_reservations_run_id", "budget_reservations", ["run_id"])
    op.create_index(
        "ix_budget_reservations_status_expires_at", "budget_reservations", ["status", "expires_at"]
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("payload", JSONDocument, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("history", JSONDocument, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')",
            name="ck_webhook_deliveries_status_known",
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_status_next_attempt_at",
        "webhook_deliveries",
        ["status", "next_attempt_at"],
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("budget_reservations")
    op.drop_table("budget_counters")
    op.drop_table("budgets")
    op.drop_index("ix_llm_calls_reservation_id", table_name="llm_calls")
    op.drop_index("ix_llm_calls_created_at", table_name="llm_calls")
    with op.batch_alter_table("llm_calls") as batch_op:
        batch_op.drop_column("reservation_id")
        batch_op.drop_column("cache_of")
        batch_op.drop_column("saving")
        batch_op.drop_column("saved_usd")
        batch_op.drop_column("api_key_id")
        batch_op.drop_column("project")
        batch_op.alter_column("run_id", existing_type=sa.Uuid(), nullable=False)
    with op.batch_alter_table("steps", recreate="never") as batch_op:
        batch_op.drop_column("budget_pause")
    op.drop_index("ix_agent_runs_project_created_at", table_name="agent_runs")
    with op.batch_alter_table("agent_runs", recreate="never") as batch_op:
        batch_op.drop_column("budget_pause")
        batch_op.drop_column("api_key_id")
        batch_op.drop_column("project")
