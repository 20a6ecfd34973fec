"""Goal search that does not scan: a trigram index on agent_runs.goal (PostgreSQL)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01

The console's goal search is ``goal ILIKE '%text%'``: no b-tree serves it, so with 100,000 runs
a search for a rare word read the whole table (`python -m bench.scale`). A GIN index of the
goal's trigrams (``pg_trgm``, shipped with PostgreSQL and trusted since version 13, so a
database owner may create it) answers it from the index. Where the extension cannot be created
(no contrib files, no privilege) the migration goes on without the index and says so: the
search still works, by scanning. SQLite is left as it is (its installations are small).
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

CREATE_INDEX = """
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX IF NOT EXISTS ix_agent_runs_goal_trigrams
        ON agent_runs USING gin (goal gin_trgm_ops);
EXCEPTION WHEN insufficient_privilege OR undefined_file OR feature_not_supported THEN
    RAISE WARNING 'pg_trgm is not available (%): goal search scans agent_runs', SQLERRM;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CREATE_INDEX)


def downgrade() -> None:
    # The extension stays: other objects of the database may use it.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_agent_runs_goal_trigrams")
