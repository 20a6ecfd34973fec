"""A run and its steps as plain values, and the change set the state machine makes of them.

The state machine never talks to the database and never sees an ORM object: it is given a run
and its open steps as ``RunRecord`` and ``StepRecord`` values, changes their fields, and adds new
rows (audit events, LLM calls, approvals, plan versions, new steps) to a ``ChangeSet``. Storage
then writes the change set in one guarded write (``storage/changes.py``).

A record remembers which of its fields were assigned a different value since it was last
written: that, and the rows added, is the whole change set. JSON fields are replaced, never
mutated in place (an in-place change would not be seen).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Self

from agent_engine.domain.clock import utcnow

ZERO = Decimal(0)


class Tracked:
    """Field assignments that change a value are remembered until ``saved``."""

    _changed: set[str]

    def __setattr__(self, name: str, value: Any) -> None:
        changed = self.__dict__.get("_changed")
        if changed is not None and name not in changed:
            before = self.__dict__.get(name, _MISSING)
            if before is not value and before != value:
                changed.add(name)
        object.__setattr__(self, name, value)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_changed", set())

    @classmethod
    def stored(cls, row: Mapping[Any, Any]) -> Self:
        """The record of a row read whole from its table, with nothing changed.

        A row holds every field, so none needs a default and there is nothing to track yet:
        the values are set at once instead of through ``__setattr__`` one by one (about 8 µs a
        record, a visible share of reading a page of runs). Any other mapping goes through the
        constructor (its defaults, its errors)."""
        names = _field_names(cls)
        if len(row) != len(names) or not names.issuperset(row):
            return cls(**row)
        record = cls.__new__(cls)
        record.__dict__.update(row)
        object.__setattr__(record, "_changed", set())
        return record

    def changes(self) -> dict[str, Any]:
        """Field → new value, for each field assigned since the record was last written."""
        return {name: self.__dict__[name] for name in self._changed}

    def saved(self) -> None:
        """What was written is now the record's stored state."""
        self._changed.clear()

    def row(self) -> dict[str, Any]:
        """Every field (what inserting the record writes)."""
        return {f.name: self.__dict__[f.name] for f in fields(self)}  # type: ignore[arg-type]

    def copy(self) -> Any:
        """An independent copy with the same stored state (JSON values are never mutated in
        place, so they are shared)."""
        twin = copy.copy(self)
        object.__setattr__(twin, "_changed", set(self._changed))
        return twin


_MISSING = object()


_FIELD_NAMES: dict[type[Tracked], frozenset[str]] = {}


def _field_names(cls: type[Tracked]) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]
    return names


@dataclass(eq=False)
class RunRecord(Tracked):
    """One ``agent_runs`` row. ``version`` is bumped by every write of the run (the guard)."""

    TABLE: ClassVar[str] = "agent_runs"

    id: uuid.UUID
    goal: str
    status: str
    created_by: str
    workspace: str | None = None
    plan_version: int = 0
    plan_hash: str | None = None
    plan_approved_version: int | None = None
    budget_usd: Decimal | None = None
    budget_tokens: int | None = None
    total_cost_usd: Decimal = ZERO
    input_tokens: int = 0
    output_tokens: int = 0
    error: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    adaptive: dict[str, Any] | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    started: bool = False
    max_parallel: int = 4
    claimable_at: datetime | None = None
    audit_seq: int = 0
    audit_head_hash: str | None = None
    audit_signature: str | None = None
    audit_key_id: str | None = None
    # Lineage: the run a replay or a fork came from, and where a fork branched off.
    replay_of: uuid.UUID | None = None
    forked_from: uuid.UUID | None = None
    from_step: int | None = None
    replay_mode: str | None = None  # hermetic | verify
    # Whose monthly budgets the run's calls count against, and why it waits for budget.
    project: str | None = None
    api_key_id: uuid.UUID | None = None
    budget_pause: dict[str, Any] | None = None
    version: int = 0
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    completed_at: datetime | None = None
    payloads_pruned_at: datetime | None = None
    # The run's span (docs/tracing.md): its trace, its id, its caller's span, sampled or not.
    trace_id: str | None = None
    trace_span_id: str | None = None
    trace_parent_span_id: str | None = None
    trace_sampled: bool | None = None

    @property
    def metadata_(self) -> dict[str, Any]:  # the ORM model's attribute name, for serializers
        return self.metadata


@dataclass(eq=False)
class StepRecord(Tracked):
    """One ``steps`` row."""

    TABLE: ClassVar[str] = "steps"

    id: uuid.UUID
    run_id: uuid.UUID
    step_number: int
    step_type: str
    status: str
    input_data: dict[str, Any]
    resolved_input: dict[str, Any] | None = None
    output_data: dict[str, Any] | None = None
    preview: dict[str, Any] | None = None
    depends_on: list[int] = field(default_factory=list)
    optional: bool = False
    idempotent: bool = True
    requires_approval: bool = False
    approval_rule: str | None = None
    attempt: int = 0
    max_attempts: int = 1
    input_hash: str | None = None
    output_hash: str | None = None
    cost_usd: Decimal = ZERO
    input_tokens: int = 0
    output_tokens: int = 0
    model: str | None = None
    latency_ms: float | None = None
    error: dict[str, Any] | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    fence: int = 0
    not_before: datetime | None = None
    retry_policy: dict[str, Any] | None = None
    effect_intent: dict[str, Any] | None = None
    effect_outcome: dict[str, Any] | None = None
    outcome_unknown: bool = False
    reused_from: uuid.UUID | None = None  # the original step a fork reused
    approved_input_hash: str | None = None  # the input the approval's receipt binds to
    budget_pause: dict[str, Any] | None = None  # spent / reserved / needed when a call did not fit
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None


@dataclass
class ChangeSet:
    """What one decision does to one run: the fields it changed on ``run`` and ``steps``, and
    the rows it adds, in the order they must be inserted (foreign keys first).

    ``new_run``: the run itself is new (its row is inserted, not updated). Otherwise the write
    is guarded by ``expected_version``, the run's version when the decision read it.
    """

    run: RunRecord
    steps: list[StepRecord]
    new_run: bool = False
    expected_version: int = field(init=False)
    new_steps: list[StepRecord] = field(default_factory=list)
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # LLM calls added but not yet named by an audit event: the next event appended carries
    # their hashes (storage appends ``llm.recorded`` for any left when the set is written).
    uncovered_calls: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.expected_version = self.run.version

    def add(self, table: str, row: dict[str, Any]) -> None:
        """A new row of ``table`` (every column given)."""
        self.rows.append((table, row))

    def add_step(self, step: StepRecord) -> None:
        """A new step of the run (a plan's steps)."""
        self.new_steps.append(step)
        self.steps.append(step)

    def step(self, step_id: uuid.UUID) -> StepRecord | None:
        return next((s for s in self.steps if s.id == step_id), None)

    def events(self) -> list[dict[str, Any]]:
        return [row for table, row in self.rows if table == "audit_events"]

    def is_empty(self) -> bool:
        return (
            not self.rows
            and not self.new_steps
            and not self.run.changes()
            and not any(step.changes() for step in self.steps)
        )


def approval_row(
    *,
    run_id: uuid.UUID,
    step_id: uuid.UUID | None,
    decision: str,
    actor: str,
    comment: str | None,
    shown: dict[str, Any],
    attempt: int,
    input_hash: str | None = None,
    shown_hash: str | None = None,
) -> dict[str, Any]:
    """A new ``approvals`` row: who decided what, on which attempt, having been shown what;
    ``input_hash`` is the receipt (the exact input the decision binds to)."""
    return {
        "id": uuid.uuid4(),
        "run_id": run_id,
        "step_id": step_id,
        "decision": decision,
        "actor": actor,
        "comment": comment,
        "shown": shown,
        "input_hash": input_hash,
        "shown_hash": shown_hash,
        "decided_at": utcnow(),
        "attempt": attempt,
    }


def copy_changes(changes: ChangeSet) -> ChangeSet:
    """An independent copy of a change set (its records copied), to try a decision on."""
    run = changes.run.copy()
    twins = {id(step): step.copy() for step in changes.steps}
    copied = ChangeSet(run, [twins[id(step)] for step in changes.steps], new_run=changes.new_run)
    copied.expected_version = changes.expected_version
    copied.new_steps = [twins[id(step)] for step in changes.new_steps]
    copied.rows = list(changes.rows)
    copied.uncovered_calls = list(changes.uncovered_calls)
    return copied
