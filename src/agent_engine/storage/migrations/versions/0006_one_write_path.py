"""One write path: a version every write of a run bumps, status checks, one generic write function

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Every change of a run (its row, its steps, the rows it adds) is written as one change set guarded
by ``agent_runs.version``: the write applies only if the run's version is still the one the change
was decided from, and bumps it. A trigger refuses any update of a run row that does not bump the
version by exactly one, so no writer can change a run behind the guard's back (heartbeats, which
change only steps, bump their runs' versions too).

Status columns get CHECK constraints (PostgreSQL) or triggers that do the same (SQLite, whose
ALTER TABLE cannot add a CHECK without rebuilding a table that others reference).

PostgreSQL writes change sets with ``agent_engine_apply_changes_v1`` (``storage/sql/``), which
takes its columns from the document it is given: a new column needs no new function. It replaces
migration 0004's two functions and their hand-kept column lists.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
RUN_STATES = (
    "created",
    "planning",
    "planned",
    "running",
    "awaiting_approval",
    "completed",
    "failed",
    "cancelled",
)
STEP_STATES = (
    "pending",
    "running",
    "awaiting_approval",
    "approved",
    "rejected",
    "completed",
    "failed",
    "skipped",
    "cancelled",
)
CHECKED = {"agent_runs": RUN_STATES, "steps": STEP_STATES}


def _in_list(states: tuple[str, ...]) -> str:
    return ", ".join(f"'{state}'" for state in states)


PG_VERSION_GUARD = [
    """
    CREATE FUNCTION agent_runs_version_bumped() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.version IS DISTINCT FROM OLD.version + 1 THEN
            RAISE EXCEPTION 'agent_runs %: an update must bump version from % to %',
                OLD.id, OLD.version, OLD.version + 1 USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END
    $$
    """,
    """
    CREATE TRIGGER agent_runs_version_bumped BEFORE UPDATE ON agent_runs
    FOR EACH ROW EXECUTE FUNCTION agent_runs_version_bumped()
    """,
]
SQLITE_VERSION_GUARD = [
    """
    CREATE TRIGGER agent_runs_version_bumped BEFORE UPDATE ON agent_runs
    WHEN NEW.version IS NOT OLD.version + 1
    BEGIN SELECT RAISE(ABORT, 'agent_runs: an update must bump version by one'); END
    """,
]


def _sqlite_status_checks() -> list[str]:
    statements = []
    for table, states in CHECKED.items():
        for event in ("INSERT", "UPDATE OF status"):
            name = f"{table}_status_known_{event.split()[0].lower()}"
            statements.append(
                f"""
                CREATE TRIGGER {name} BEFORE {event} ON {table}
                WHEN NEW.status NOT IN ({_in_list(states)})
                BEGIN SELECT RAISE(ABORT, '{table}: unknown status'); END
                """
            )
    return statements


def _migration_0004() -> object:
    """Migration 0004's module, whose functions a downgrade puts back."""
    path = Path(__file__).with_name("0004_apply_run_changes.py")
    spec = importlib.util.spec_from_file_location("migration_0004", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("agent_runs", recreate="never") as batch_op:
        batch_op.add_column(
            sa.Column("version", sa.BigInteger(), nullable=False, server_default="0")
        )
    if postgres:
        for table, states in CHECKED.items():
            op.create_check_constraint("status_known", table, f"status IN ({_in_list(states)})")
        for statement in PG_VERSION_GUARD:
            op.execute(statement)
        op.execute("DROP FUNCTION IF EXISTS agent_engine_insert_run(jsonb)")
        op.execute("DROP FUNCTION IF EXISTS agent_engine_apply_run_changes(jsonb)")
        op.execute((SQL_DIR / "apply_changes_v1.sql").read_text())
    else:
        for statement in SQLITE_VERSION_GUARD + _sqlite_status_checks():
            op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS agent_engine_apply_changes_v1(jsonb)")
        old = _migration_0004()
        op.execute(old.CREATE_FUNCTION)  # type: ignore[attr-defined]
        op.execute(old.CREATE_INSERT_FUNCTION)  # type: ignore[attr-defined]
        op.execute("DROP TRIGGER IF EXISTS agent_runs_version_bumped ON agent_runs")
        op.execute("DROP FUNCTION IF EXISTS agent_runs_version_bumped()")
        for table in CHECKED:
            op.drop_constraint("status_known", table, type_="check")
    else:
        op.execute("DROP TRIGGER IF EXISTS agent_runs_version_bumped")
        for table in CHECKED:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_status_known_insert")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_status_known_update")
    with op.batch_alter_table("agent_runs", recreate="never") as batch_op:
        batch_op.drop_column("version")
