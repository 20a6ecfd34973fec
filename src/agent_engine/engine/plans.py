"""Checking a plan against the executor registry and writing it as the run's steps."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from agent_engine.domain.approval_policy import ApprovalPolicy, decide_approval
from agent_engine.domain.canonical import content_hash
from agent_engine.domain.clock import utcnow
from agent_engine.domain.plan import Plan
from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.refs import StepReferenceError, iter_references, parse_reference
from agent_engine.domain.retry import policy_for
from agent_engine.domain.states import StepStatus
from agent_engine.domain.transitions import append_event
from agent_engine.errors import PlanValidationError
from agent_engine.executors.registry import ExecutorRegistry


def _plan_error(step_number: int, field: str, message: str) -> PlanValidationError:
    return PlanValidationError(
        f"step {step_number}: {field}: {message}",
        errors=[{"step_number": step_number, "field": field, "message": message}],
    )


def _ancestors(dependencies: list[list[int]]) -> list[set[int]]:
    closure: list[set[int]] = []
    for deps in dependencies:
        reach: set[int] = set(deps)
        for dep in deps:
            reach |= closure[dep - 1]
        closure.append(reach)
    return closure


def validate_plan(plan: Plan, registry: ExecutorRegistry, *, has_workspace: bool) -> None:
    """Refuse unknown step types, inputs their executor rejects, and references that cannot
    resolve (to a later step, or to one the step does not depend on), naming step and field."""
    ancestors = _ancestors(plan.dependencies())
    for number, step in enumerate(plan.steps, start=1):
        registry.validate_step(number, step.step_type, step.input_data)
        executor = registry[step.step_type]
        if executor.needs_workspace and not has_workspace:
            raise _plan_error(number, "step_type", f"{step.step_type} needs the run's workspace")
        for ref in iter_references(step.input_data):
            try:
                target, _ = parse_reference(ref)
            except StepReferenceError as exc:
                raise _plan_error(number, "input_data", str(exc)) from exc
            if target not in ancestors[number - 1]:
                raise _plan_error(
                    number,
                    "input_data",
                    f"reference {ref!r} names step {target}, which step {number} does not "
                    "depend on (directly or through other steps)",
                )


def plan_document(plan: Plan) -> dict[str, Any]:
    """The plan as recorded and hashed, with default dependencies filled in."""
    return {
        "steps": [
            {**step.model_dump(mode="json", exclude_none=True), "depends_on": deps}
            for step, deps in zip(plan.steps, plan.dependencies(), strict=True)
        ]
    }


def insert_plan(
    changes: ChangeSet,
    run: RunRecord,
    plan: Plan,
    registry: ExecutorRegistry,
    *,
    policy: ApprovalPolicy,
    actor: str,
    source: str,
    rationale: str | None = None,
    llm_call_id: uuid.UUID | None = None,
    step_estimates: list[Decimal | None] | None = None,
) -> list[StepRecord]:
    """Add ``plan`` as the run's steps and as a new plan version, with approval decisions and
    estimated cost per step, and record it in the audit."""
    document = plan_document(plan)
    run.plan_version += 1
    run.plan_hash = content_hash(document)
    estimates = step_estimates or [Decimal(0)] * len(plan.steps)
    known = [e for e in estimates if e is not None]
    changes.add(
        "plans",
        {
            "id": uuid.uuid4(),
            "run_id": run.id,
            "version": run.plan_version,
            "plan_hash": run.plan_hash,
            "document": document,
            "source": source,
            "rationale": rationale,
            "llm_call_id": llm_call_id,
            "estimated_cost_usd": (
                sum(known, Decimal(0)) if len(known) == len(estimates) else None
            ),
            "step_estimates": [
                {"step_number": n, "estimated_cost_usd": format(e, "f") if e is not None else None}
                for n, e in enumerate(estimates, start=1)
            ],
            "created_by": actor,
            "created_at": utcnow(),
        },
    )
    steps: list[StepRecord] = []
    for number, (spec, deps) in enumerate(zip(plan.steps, plan.dependencies(), strict=True), 1):
        executor = registry[spec.step_type]
        requires, rule = decide_approval(
            step_type=spec.step_type,
            input_data=spec.input_data,
            explicit=spec.requires_approval,
            executor_default=executor.requires_approval,
            policy=policy,
        )
        step = StepRecord(
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
            requires_approval=requires,
            approval_rule=rule,
            max_attempts=policy_for(
                spec.step_type,
                spec.retry_policy.model_dump() if spec.retry_policy else None,
                spec.max_attempts,
            ).max_attempts,
            retry_policy=spec.retry_policy.model_dump() if spec.retry_policy else None,
        )
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
            "approvals": [
                {
                    "step_number": s.step_number,
                    "requires": s.requires_approval,
                    "rule": s.approval_rule,
                }
                for s in steps
            ],
        },
        actor=actor,
    )
    return steps
