"""Response bodies. Field names follow the seed's contract (DESIGN.md §11)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PlainSerializer

from agent_engine.domain.states import RunStatus, StepStatus
from agent_engine.domain.text import StorableModel

# Money leaves as a JSON number. Stored amounts have 9 decimal places and at most 15 significant
# digits for any realistic total, which a double represents and prints back exactly.
Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]


class StepOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    run_id: uuid.UUID
    step_number: int
    step_type: str
    status: StepStatus
    input_data: dict[str, Any]
    resolved_input: dict[str, Any] | None
    output_data: dict[str, Any] | None
    preview: dict[str, Any] | None
    # Why the step waits for budget: which budget, spent, reserved and what the call needed.
    budget_pause: dict[str, Any] | None = None
    depends_on: list[int]
    optional: bool
    idempotent: bool
    requires_approval: bool
    approval_rule: str | None
    attempt: int
    max_attempts: int
    input_hash: str | None
    output_hash: str | None
    cost_usd: Money
    input_tokens: int
    output_tokens: int
    model: str | None
    latency_ms: float | None
    error: dict[str, Any] | None
    fence: int
    # The original step a fork reused instead of running it again.
    reused_from: uuid.UUID | None = None
    lease_owner: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class RunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    goal: str
    status: RunStatus
    workspace: str | None
    total_cost_usd: Money
    budget_usd: Money | None
    budget_tokens: int | None
    project: str | None = None
    # Why the run waits for budget, when its planner's call did not fit.
    budget_pause: dict[str, Any] | None = None
    input_tokens: int
    output_tokens: int
    plan_version: int
    plan_hash: str | None
    created_by: str
    error: dict[str, Any] | None
    metadata: dict[str, Any] = Field(validation_alias=AliasChoices("metadata_", "metadata"))
    options: dict[str, Any]
    # Adaptive planning: revisions made, the step a revision is due after, why the loop ended.
    adaptive: dict[str, Any] | None = None
    audit_seq: int
    # Lineage: the run this one replays or forks, where a fork branched off, how a replay runs.
    replay_of: uuid.UUID | None = None
    forked_from: uuid.UUID | None = None
    from_step: int | None = None
    replay_mode: str | None = None
    # The run's OpenTelemetry trace (32 hex digits); None when tracing was off at creation.
    trace_id: str | None = None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class RunWithSteps(RunOut):
    steps: list[StepOut]


def run_with_steps(view: Any) -> RunWithSteps:
    """A run and its steps (an engine ``RunView``) as the API renders them."""
    out = RunOut.model_validate(view.run)
    return RunWithSteps(**out.model_dump(), steps=[StepOut.model_validate(s) for s in view.steps])


class ExecuteOut(RunWithSteps):
    executed_step_id: uuid.UUID | None


class RunPage(BaseModel):
    items: list[RunOut]
    next_cursor: str | None


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    type: str
    run_id: uuid.UUID
    step_id: uuid.UUID | None
    payload: dict[str, Any]
    actor: str
    created_at: datetime
    prev_hash: str | None
    hash: str


class AuditOut(BaseModel):
    run_id: uuid.UUID
    events: list[AuditEventOut]
    chain_valid: bool
    first_invalid_seq: int | None


class ApproveIn(StorableModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(default=None, max_length=10_000)


class RejectIn(StorableModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=10_000)


class CancelIn(StorableModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=10_000)


class Health(BaseModel):
    status: str
    version: str
    database: str | None = None
    schema_revision: str | None = None


class ReadinessCheck(BaseModel):
    name: str
    status: Literal["ok", "failed", "skipped"]
    detail: str | None = None


class Readiness(Health):
    checks: list[ReadinessCheck]


class WorkerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    host: str
    slots: int
    started_at: datetime
    last_heartbeat_at: datetime
    alive: bool
    steps_in_flight: int


class WorkerList(BaseModel):
    items: list[WorkerOut]


class PlanOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    run_id: uuid.UUID
    version: int
    plan_hash: str
    document: dict[str, Any]
    source: str
    rationale: str | None
    llm_call_id: uuid.UUID | None
    estimated_cost_usd: Money | None
    step_estimates: list[Any]
    created_by: str
    created_at: datetime


class PlanDecisionIn(StorableModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(default=None, max_length=10_000)
