"""Checking a plan against the executor registry and writing it as the run's steps."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import PydanticUserError

from agent_engine.domain.canonical import content_hash
from agent_engine.domain.clock import utcnow
from agent_engine.domain.plan import Plan, PlanStep
from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.refs import (
    StepReferenceError,
    iter_reference_locations,
    missing_output_field,
    parse_reference,
)
from agent_engine.domain.retry import policy_for
from agent_engine.domain.states import StepStatus
from agent_engine.domain.transitions import append_event
from agent_engine.engine.policies import PlanApprovals
from agent_engine.errors import PlanValidationError
from agent_engine.executors.base import ExecutionLimits
from agent_engine.executors.registry import ExecutorRegistry

# How many problems the one-line detail spells out; ``errors`` always lists them all.
_DETAILS_SHOWN = 3


@dataclass
class _Findings:
    """Every problem found in a plan: one-line details and the ``errors`` entries of the 422."""

    details: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add(self, step_number: int, where: str, message: str) -> None:
        """One problem of step ``step_number`` at ``where`` (an input field, or ``step_type``)."""
        shown = where if where == "step_type" else f"input_data.{where}" if where else "input_data"
        self.details.append(f"step {step_number}: {shown}: {message}")
        self.errors.append({"step_number": step_number, "field": where, "message": message})

    def refusal(self) -> PlanValidationError:
        detail = "; ".join(self.details[:_DETAILS_SHOWN])
        if len(self.details) > _DETAILS_SHOWN:
            detail += f"; and {len(self.details) - _DETAILS_SHOWN} more (see errors)"
        return PlanValidationError(detail, errors=self.errors)


def _ancestors(dependencies: list[list[int]]) -> list[set[int]]:
    closure: list[set[int]] = []
    for deps in dependencies:
        reach: set[int] = set(deps)
        for dep in deps:
            reach |= closure[dep - 1]
        closure.append(reach)
    return closure


def _steps(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"


class _OutputSchemas:
    """The JSON schema of each step type's output (as stored: field names, not aliases)."""

    def __init__(self, registry: ExecutorRegistry) -> None:
        self._registry = registry
        self._by_type: dict[str, dict[str, Any] | None] = {}

    def get(self, step_type: str) -> dict[str, Any] | None:
        if step_type not in self._by_type:
            executor = self._registry.get(step_type)
            schema: dict[str, Any] | None = None
            if executor is not None:
                try:
                    schema = executor.output_model.model_json_schema(
                        by_alias=False, mode="serialization"
                    )
                except PydanticUserError:
                    schema = None  # a plugin's output with no JSON schema: fields unchecked
            self._by_type[step_type] = schema
        return self._by_type[step_type]


def _reference_problem(
    plan: Plan, number: int, ref: str, ancestors: set[int], schemas: _OutputSchemas
) -> str | None:
    """Why the reference ``ref`` in step ``number`` cannot resolve, or ``None`` if it can."""
    try:
        target, path = parse_reference(ref)
    except StepReferenceError as exc:
        return str(exc)
    if target > len(plan.steps):
        return (
            f"reference {ref!r} names step {target}, but there is no step {target} "
            f"(the plan has {_steps(len(plan.steps))})"
        )
    if target == number:
        return f"reference {ref!r} names step {number} itself; a step can only use earlier outputs"
    if target > number:
        return (
            f"reference {ref!r} names step {target}, which comes after step {number}; "
            "a step can only use earlier outputs"
        )
    if target not in ancestors:
        return (
            f"reference {ref!r} names step {target}, which step {number} does not "
            "depend on (directly or through other steps)"
        )
    target_type = plan.steps[target - 1].step_type
    schema = schemas.get(target_type)
    missing = missing_output_field(schema, path) if schema is not None else None
    if missing is not None:
        return f"reference {ref!r}: step {target} ({target_type}): {missing}"
    return None


def validate_plan(
    plan: Plan,
    registry: ExecutorRegistry,
    *,
    has_workspace: bool,
    limits: ExecutionLimits | None = None,
) -> None:
    """Refuse a plan that cannot work, naming each step and field at fault in one error.

    Refused: unknown step types, inputs their executor rejects (its model, and its plan-time
    check of literal values, which uses ``limits`` when given, e.g. the command allowlist), and
    references that cannot resolve (to no step, to the step itself or a later one, to one the
    step does not depend on, or to a field the step's output does not have).
    """
    findings = _Findings()
    ancestors = _ancestors(plan.dependencies())
    schemas = _OutputSchemas(registry)
    for number, step in enumerate(plan.steps, start=1):
        input_valid = True
        try:
            registry.validate_step(number, step.step_type, step.input_data)
        except PlanValidationError as exc:
            findings.details.append(exc.detail)
            findings.errors.extend(exc.data.get("errors") or [])
            input_valid = False
        for where, ref in iter_reference_locations(step.input_data):
            problem = _reference_problem(plan, number, ref, ancestors[number - 1], schemas)
            if problem is not None:
                findings.add(number, where, problem)
        executor = registry.get(step.step_type)
        if executor is None:
            continue
        if executor.needs_workspace and not has_workspace:
            findings.add(number, "step_type", f"{step.step_type} needs the run's workspace")
        if input_valid:
            for found in executor.check_plan_input(step.input_data, limits):
                findings.add(number, found.field, found.message)
    if findings.errors:
        raise findings.refusal()


def plan_document(plan: Plan) -> dict[str, Any]:
    """The plan as recorded and hashed, with default dependencies filled in."""
    return {
        "steps": [
            {**step.model_dump(mode="json", exclude_none=True), "depends_on": deps}
            for step, deps in zip(plan.steps, plan.dependencies(), strict=True)
        ]
    }


def plan_version_row(
    run: RunRecord,
    document: dict[str, Any],
    *,
    source: str,
    actor: str,
    rationale: str | None,
    llm_call_id: uuid.UUID | None,
    step_estimates: list[Decimal | None] | None,
    step_count: int,
) -> dict[str, Any]:
    """Make ``document`` the run's next plan version (version and hash move on); its row."""
    run.plan_version += 1
    run.plan_hash = content_hash(document)
    estimates = step_estimates or [Decimal(0)] * step_count
    known = [e for e in estimates if e is not None]
    return {
        "id": uuid.uuid4(),
        "run_id": run.id,
        "version": run.plan_version,
        "plan_hash": run.plan_hash,
        "document": document,
        "source": source,
        "rationale": rationale,
        "llm_call_id": llm_call_id,
        "estimated_cost_usd": (sum(known, Decimal(0)) if len(known) == len(estimates) else None),
        "step_estimates": [
            {"step_number": n, "estimated_cost_usd": format(e, "f") if e is not None else None}
            for n, e in enumerate(estimates, start=1)
        ],
        "created_by": actor,
        "created_at": utcnow(),
    }


def new_step_record(
    run: RunRecord,
    number: int,
    spec: PlanStep,
    deps: list[int],
    registry: ExecutorRegistry,
    approvals: PlanApprovals,
) -> StepRecord:
    """Step ``number`` of the plan as a new PENDING step, its approval decided by ``approvals``."""
    executor = registry[spec.step_type]
    # A loosening the creator may not make was refused before; here it only fails closed.
    decision = approvals.decide(number, spec, approvals.executor_default(spec, executor))
    return StepRecord(
        id=uuid.uuid4(),
        run_id=run.id,
        step_number=number,
        step_type=spec.step_type,
        status=StepStatus.PENDING.value,
        input_data=spec.input_data,
        input_hash=content_hash(spec.input_data),
        depends_on=deps,
        optional=spec.optional,
        idempotent=spec.idempotent if spec.idempotent is not None else executor.idempotent,
        requires_approval=decision.requires,
        approval_rule=decision.rule,
        max_attempts=policy_for(
            spec.step_type,
            spec.retry_policy.model_dump() if spec.retry_policy else None,
            spec.max_attempts,
        ).max_attempts,
        retry_policy=spec.retry_policy.model_dump() if spec.retry_policy else None,
    )


def approval_summary(steps: list[StepRecord]) -> list[dict[str, Any]]:
    """Each step's approval decision, as the plan's audit event records it."""
    return [
        {"step_number": s.step_number, "requires": s.requires_approval, "rule": s.approval_rule}
        for s in steps
    ]


def insert_plan(
    changes: ChangeSet,
    run: RunRecord,
    plan: Plan,
    registry: ExecutorRegistry,
    *,
    approvals: PlanApprovals,
    actor: str,
    source: str,
    rationale: str | None = None,
    llm_call_id: uuid.UUID | None = None,
    step_estimates: list[Decimal | None] | None = None,
) -> list[StepRecord]:
    """Add ``plan`` as the run's steps and as a new plan version, with approval decisions (by
    ``approvals``) and estimated cost per step, and record it in the audit."""
    document = plan_document(plan)
    changes.add(
        "plans",
        plan_version_row(
            run,
            document,
            source=source,
            actor=actor,
            rationale=rationale,
            llm_call_id=llm_call_id,
            step_estimates=step_estimates,
            step_count=len(plan.steps),
        ),
    )
    steps: list[StepRecord] = []
    for number, (spec, deps) in enumerate(zip(plan.steps, plan.dependencies(), strict=True), 1):
        step = new_step_record(run, number, spec, deps, registry, approvals)
        changes.add_step(step)
        steps.append(step)
    append_event(
        changes,
        run,
        "plan.recorded",
        {
            "version": run.plan_version,
            "plan_hash": run.plan_hash,
            "source": source,
            "plan": document,
            "approvals": approval_summary(steps),
        },
        actor=actor,
    )
    return steps
