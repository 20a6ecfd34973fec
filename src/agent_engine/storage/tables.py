"""The schema as SQLAlchemy models (DESIGN.md §3); Alembic migrations create it."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    FetchedValue,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from agent_engine.storage.types import JSONDocument, Money, UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


ZERO = Decimal(0)


class AgentRun(Base):
    __tablename__ = "agent_runs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    goal: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32))
    workspace: Mapped[str | None] = mapped_column(Text)
    plan_version: Mapped[int] = mapped_column(Integer, default=0)
    plan_hash: Mapped[str | None] = mapped_column(String(64))
    # The plan version a human approved (runs created with plan_approval wait for it).
    plan_approved_version: Mapped[int | None] = mapped_column(Integer)
    budget_usd: Mapped[Decimal | None] = mapped_column(Money)
    budget_tokens: Mapped[int | None] = mapped_column(BigInteger)
    total_cost_usd: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by: Mapped[str] = mapped_column(String(200))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONDocument, default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    # Adaptive planning's progress: revisions made, the step a revision is due after, and why
    # the loop ended (NULL: a fixed-plan run). See engine/revisions.py.
    adaptive: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # Head of the run's audit hash chain. Updating it in every audited transaction makes writers of
    # one run queue on its row lock, which keeps `seq` gap-free without a MAX() query.
    # Handed to the workers (POST …/start or auto_start); `execute` steps a run by hand either way.
    started: Mapped[bool] = mapped_column(Boolean, default=False)
    max_parallel: Mapped[int] = mapped_column(Integer, default=4)
    # When the run next has a step for a worker to claim (NULL: nothing ready). Kept by the same
    # transactions that change steps, so claiming reads one indexed column instead of the DAG.
    claimable_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    audit_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # Bumped by every write of the run or its steps; a write applies only if it is still the
    # version the change was decided from (a trigger refuses an update that does not bump it).
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    audit_head_hash: Mapped[str | None] = mapped_column(String(64))
    # Ed25519 signature of the chain head, and the id of the key that made it (never the key).
    audit_signature: Mapped[str | None] = mapped_column(String(128))
    audit_key_id: Mapped[str | None] = mapped_column(String(64))
    # Lineage: the run a replay or a fork came from (no foreign key: an imported bundle may name
    # a run that is not on this instance), and where a fork branched off.
    replay_of: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    forked_from: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    from_step: Mapped[int | None] = mapped_column(Integer)
    replay_mode: Mapped[str | None] = mapped_column(String(16))  # hermetic | verify
    # Whose monthly budgets the run's calls count against (engine/budgets.py), and why the run
    # waits for budget when it does (its planner's call did not fit).
    project: Mapped[str | None] = mapped_column(String(200))
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    budget_pause: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When `agent-engine prune` replaced the run's payloads by markers keeping their hashes.
    payloads_pruned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The run's OpenTelemetry span, chosen at creation (NULL: tracing was off); docs/tracing.md.
    trace_id: Mapped[str | None] = mapped_column(String(32))
    trace_span_id: Mapped[str | None] = mapped_column(String(16))
    trace_parent_span_id: Mapped[str | None] = mapped_column(String(16))
    trace_sampled: Mapped[bool | None] = mapped_column(Boolean)

    __table_args__ = (
        Index("ix_agent_runs_created_at_id", "created_at", "id"),
        Index("ix_agent_runs_completed_at", "completed_at"),
        Index("ix_agent_runs_status_created_at_id", "status", "created_at", "id"),
        Index("ix_agent_runs_claimable_at", "claimable_at"),
        # Counting a key's runs in flight (max_runs_in_flight) reads this, not the table.
        Index("ix_agent_runs_created_by_status", "created_by", "status"),
        Index("ix_agent_runs_project_created_at", "project", "created_at"),
    )


class Step(Base):
    __tablename__ = "steps"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("agent_runs.id", ondelete="CASCADE"))
    step_number: Mapped[int] = mapped_column(Integer)
    step_type: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(32))
    input_data: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    resolved_input: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    output_data: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    preview: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    depends_on: Mapped[list[int]] = mapped_column(JSONDocument, default=list)
    optional: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotent: Mapped[bool] = mapped_column(Boolean, default=True)
    requires_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    approval_rule: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    input_hash: Mapped[str | None] = mapped_column(String(64))
    output_hash: Mapped[str | None] = mapped_column(String(64))
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    model: Mapped[str | None] = mapped_column(String(200))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fence: Mapped[int] = mapped_column(BigInteger, default=0)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    retry_policy: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    # Effect ledger for side-effecting steps: the intent is committed before the effect, the
    # outcome after; a recovering worker reads both to decide whether the effect happened.
    effect_intent: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    effect_outcome: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    outcome_unknown: Mapped[bool] = mapped_column(Boolean, default=False)
    # The original step a fork reused instead of running it again.
    reused_from: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # The resolved input an approval bound to: a claim whose input differs waits again.
    approved_input_hash: Mapped[str | None] = mapped_column(String(64))
    # Why the step waits for budget: spent, reserved and needed when its call did not fit.
    budget_pause: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("run_id", "step_number"),
        CheckConstraint("step_number >= 1", name="step_number_positive"),
    )


class LLMCall(Base):
    __tablename__ = "llm_calls"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # NULL for calls through the OpenAI-compatible endpoint: they belong to a key or project.
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("agent_runs.id", ondelete="CASCADE"), index=True
    )
    step_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("steps.id", ondelete="CASCADE"), index=True
    )
    project: Mapped[str | None] = mapped_column(String(200))
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    purpose: Mapped[str] = mapped_column(String(32), default="step")
    provider: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    request_hash: Mapped[str] = mapped_column(String(64), index=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    response_hash: Mapped[str | None] = mapped_column(String(64))
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    cost_usd: Mapped[Decimal | None] = mapped_column(Money)
    priced: Mapped[bool] = mapped_column(Boolean, default=True)
    price_source: Mapped[str | None] = mapped_column(String(200))
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    error: Mapped[str | None] = mapped_column(Text)
    routing: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    replayed: Mapped[bool] = mapped_column(Boolean, default=False)
    # What a cached answer (``cache``) or a cheaper model chosen for the budget (``routing``)
    # saved against the call it stands in for; ``cache_of`` is the call a cached answer repeats.
    saved_usd: Mapped[Decimal | None] = mapped_column(Money)
    saving: Mapped[str | None] = mapped_column(String(16))
    cache_of: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # The budget reservation this call settled (engine/budgets.py).
    reservation_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # When retention replaced its request and response by markers keeping their hashes.
    payloads_pruned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # The calls of no run (the OpenAI-compatible endpoint's) that retention visits, oldest first.
    __table_args__ = (
        Index(
            "ix_llm_calls_gateway_created_at",
            "created_at",
            postgresql_where=text("run_id IS NULL"),
            sqlite_where=text("run_id IS NULL"),
        ),
        Index(
            "ix_llm_calls_gateway_unpruned_created_at",
            "created_at",
            postgresql_where=text("run_id IS NULL AND payloads_pruned_at IS NULL"),
            sqlite_where=text("run_id IS NULL AND payloads_pruned_at IS NULL"),
        ),
    )


class Approval(Base):
    __tablename__ = "approvals"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("agent_runs.id", ondelete="CASCADE"), index=True
    )
    step_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("steps.id", ondelete="CASCADE")
    )
    decision: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(200))
    comment: Mapped[str | None] = mapped_column(Text)
    shown: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    # The receipt: the step's exact resolved input the decision binds to, and what was shown.
    input_hash: Mapped[str | None] = mapped_column(String(64))
    shown_hash: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempt: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        # One decision per step attempt: the database, not the application, settles races.
        UniqueConstraint("step_id", "attempt"),
        CheckConstraint("decision IN ('approved', 'rejected')", name="decision_known"),
    )


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("agent_runs.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(64))
    step_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # The transaction that wrote the event, set by the database (PostgreSQL: its default
    # pg_current_xact_id(); 0 on SQLite and for events older than migration 0007). The global
    # event stream is ordered by (xact_id, id); inserts never name it.
    xact_id: Mapped[int] = mapped_column(BigInteger, server_default=FetchedValue())

    __table_args__ = (
        UniqueConstraint("run_id", "seq"),
        Index("ix_audit_events_xact_id_id", "xact_id", "id"),
    )


class PlanVersion(Base):
    """Every plan a run has had, as a versioned artifact (re-planning adds a version)."""

    __tablename__ = "plans"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("agent_runs.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    plan_hash: Mapped[str] = mapped_column(String(64))
    document: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    source: Mapped[str] = mapped_column(String(32))
    rationale: Mapped[str | None] = mapped_column(Text)
    llm_call_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("llm_calls.id", ondelete="SET NULL")
    )
    estimated_cost_usd: Mapped[Decimal | None] = mapped_column(Money)
    step_estimates: Mapped[list[Any]] = mapped_column(JSONDocument, default=list)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("run_id", "version"),)


class Blob(Base):
    """A payload stored once by the SHA-256 of its bytes; documents reference it by hash."""

    __tablename__ = "blobs"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    # When it was last written: a write that finds it stored moves it on (storage/blobs.py).
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class ApiKey(Base):
    """An API key: only its salted hash is stored; ``prefix`` (shown in the key) finds the row."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # The actor the audit log records for this key's actions; never reused, even once revoked.
    name: Mapped[str] = mapped_column(String(100), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    salt: Mapped[str] = mapped_column(String(32))
    secret_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    may_auto_approve: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        CheckConstraint("role IN ('viewer', 'operator', 'approver', 'admin')", name="role_known"),
    )


class WorkerHeartbeat(Base):
    """A worker process that is, or was lately, alive: written at start and at each heartbeat,
    removed when it stops cleanly (a crashed worker's row goes stale, then is swept)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    slots: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Alive until then: the heartbeat plus the worker's lease (another worker may then take its
    # steps), so a reader needs no knowledge of each worker's settings.
    alive_until: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AuditPrunePermit(Base):
    """A run whose audit events the prune path deletes in this transaction (migration 0016):
    without its row here, the database refuses to delete an audit event."""

    __tablename__ = "audit_prune_permits"

    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)


# The budget tables share this Base; importing them here puts them in the one metadata that
# migrations and tests read, whichever module is imported first.
from agent_engine.storage import budget_tables as _budget_tables  # noqa: E402, F401
