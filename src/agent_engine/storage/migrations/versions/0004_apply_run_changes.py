"""Hot path: create a run, and apply a run's changes, in one round trip (PostgreSQL functions)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

A worker that already holds a run's state (it wrote it in its previous transaction) records a
step's result and claims the next step without reading anything first: it sends the changes and
the audit events, guarded by the run's ``audit_seq``. Every state change of a run writes an audit
event under the run's row lock, so an unchanged ``audit_seq`` proves nothing changed since; when it
moved, the function changes nothing for that run and the worker falls back to the locking path.
Changes of several runs that are ready together go in one call and one commit (group commit).

``agent_engine_insert_run`` writes a new run with its plan, steps and first audit events from one
JSON document (every column by name, so it follows the tables as they grow).

The columns below are the only ones the hot path may write; ``storage/run_changes.py`` lists the
same names and refuses any other change (a test holds the two lists together).
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RUN_COLUMNS = (
    "status",
    "error",
    "total_cost_usd",
    "input_tokens",
    "output_tokens",
    "claimable_at",
    "audit_seq",
    "audit_head_hash",
    "updated_at",
    "completed_at",
)
STEP_COLUMNS = (
    "status",
    "resolved_input",
    "output_data",
    "preview",
    "attempt",
    "max_attempts",
    "output_hash",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "model",
    "latency_ms",
    "error",
    "lease_owner",
    "lease_expires_at",
    "fence",
    "not_before",
    "effect_intent",
    "effect_outcome",
    "outcome_unknown",
    "started_at",
    "completed_at",
)
EVENT_COLUMNS = (
    "run_id",
    "seq",
    "type",
    "step_id",
    "payload",
    "actor",
    "created_at",
    "prev_hash",
    "hash",
)


def _columns(names: tuple[str, ...], prefix: str = "") -> str:
    return ", ".join(f"{prefix}{name}" for name in names)


# jsonb_populate_record(row, patch) is the row with the patch's keys replacing its values, so one
# statement serves any subset of the columns without dynamic SQL.
CREATE_FUNCTION = f"""
CREATE FUNCTION agent_engine_apply_run_changes(p_batch jsonb)
RETURNS boolean[] LANGUAGE plpgsql AS $$
DECLARE
    item jsonb;
    v_run_id uuid;
    touched integer;
    applied boolean[] := '{{}}';
BEGIN
    -- One element per run, in run-id order (the caller sorts: one lock order for every batch).
    FOR item IN SELECT value FROM jsonb_array_elements(p_batch) LOOP
        v_run_id := (item ->> 'run_id')::uuid;
        UPDATE agent_runs AS r
        SET ({_columns(RUN_COLUMNS)}) = (
            SELECT {_columns(RUN_COLUMNS, "p.")}
            FROM jsonb_populate_record(r, item -> 'run') AS p
        )
        WHERE r.id = v_run_id AND r.audit_seq = (item ->> 'expected_seq')::bigint;
        IF NOT FOUND THEN
            applied := applied || false;  -- the run changed (or is gone) since the caller read it
            CONTINUE;
        END IF;

        UPDATE steps AS s
        SET ({_columns(STEP_COLUMNS)}) = (
            SELECT {_columns(STEP_COLUMNS, "p.")}
            FROM jsonb_populate_record(s, c.patch -> 'set') AS p
        )
        FROM jsonb_array_elements(item -> 'steps') AS c(patch)
        WHERE s.id = (c.patch ->> 'id')::uuid
          AND s.run_id = v_run_id
          AND s.fence = (c.patch ->> 'fence')::bigint;
        GET DIAGNOSTICS touched = ROW_COUNT;
        IF touched <> jsonb_array_length(item -> 'steps') THEN
            -- Cannot happen while every step change is audited; refuse rather than half-apply.
            RAISE EXCEPTION 'a step of run % changed without an audit event', v_run_id
                USING ERRCODE = 'serialization_failure';
        END IF;

        INSERT INTO audit_events ({_columns(EVENT_COLUMNS)})
        SELECT {_columns(EVENT_COLUMNS, "e.")}
        FROM jsonb_populate_recordset(NULL::audit_events, item -> 'events') AS e;
        applied := applied || true;
    END LOOP;
    RETURN applied;
END
$$
"""


CREATE_INSERT_FUNCTION = f"""
CREATE FUNCTION agent_engine_insert_run(p_rows jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO agent_runs
    SELECT * FROM jsonb_populate_recordset(NULL::agent_runs, p_rows -> 'agent_runs');
    INSERT INTO plans
    SELECT * FROM jsonb_populate_recordset(NULL::plans, p_rows -> 'plans');
    INSERT INTO steps
    SELECT * FROM jsonb_populate_recordset(NULL::steps, p_rows -> 'steps');
    INSERT INTO audit_events ({_columns(EVENT_COLUMNS)})
    SELECT {_columns(EVENT_COLUMNS, "e.")}
    FROM jsonb_populate_recordset(NULL::audit_events, p_rows -> 'audit_events') AS e;
END
$$
"""


# One notification per run per transaction, with the run's state after commit (see
# storage/notifications.py): the trigger is deferred to commit time, so it reads the final row, and
# PostgreSQL folds the identical payloads of one transaction into one notification.
NOTIFY_PER_RUN = [
    "DROP TRIGGER IF EXISTS audit_events_notify ON audit_events",
    """
    CREATE OR REPLACE FUNCTION audit_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        run record;
    BEGIN
        SELECT audit_seq, status, extract(epoch FROM claimable_at) AS claimable
        INTO run FROM agent_runs WHERE id = NEW.run_id;
        PERFORM pg_notify(
            'agent_engine_events',
            NEW.run_id::text || ' ' || run.audit_seq || ' ' || run.status || ' '
                || coalesce(run.claimable::text, '-')
        );
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE CONSTRAINT TRIGGER audit_events_notify AFTER INSERT ON audit_events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_events_notify()
    """,
]
NOTIFY_PER_EVENT = [  # migration 0003's
    "DROP TRIGGER IF EXISTS audit_events_notify ON audit_events",
    """
    CREATE OR REPLACE FUNCTION audit_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
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


def upgrade() -> None:
    # Claiming reads claimable_at alone (it covers expired leases); this index only cost writes.
    with op.batch_alter_table("steps") as batch_op:
        batch_op.drop_index("ix_steps_status_lease_expires_at")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CREATE_FUNCTION)
        op.execute(CREATE_INSERT_FUNCTION)
        for statement in NOTIFY_PER_RUN:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in NOTIFY_PER_EVENT:
            op.execute(statement)
        op.execute("DROP FUNCTION IF EXISTS agent_engine_insert_run(jsonb)")
        op.execute("DROP FUNCTION IF EXISTS agent_engine_apply_run_changes(jsonb)")
    with op.batch_alter_table("steps") as batch_op:
        batch_op.create_index(
            "ix_steps_status_lease_expires_at", ["status", "lease_expires_at"], unique=False
        )
