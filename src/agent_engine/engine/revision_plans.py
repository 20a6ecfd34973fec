"""A revision of a running plan as a new plan version: which steps stay, which are replaced,
the planner's new steps appended after them, the checks every plan passes, and its writing.

A revised plan version lists every step the run has had, by number: the steps kept as they are
(started or finished: never rewritten), the steps replaced now or by an earlier revision (marked
``"superseded": true``; they stay as CANCELLED rows with their audit events), then the new steps.
So step numbers never change, ``$ref``s to earlier outputs keep their meaning, and the diff of two
versions shows exactly what was replaced and what was added.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from agent_engine.access_errors import MaxStepsExceededError
from agent_engine.domain.adaptive import AdaptiveBounds
from agent_engine.domain.plan import Plan, PlanStep
from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.refs import StepReferenceError, iter_references, parse_reference
from agent_engine.domain.states import StepStatus
from agent_engine.domain.transitions import append_event, move_step
from agent_engine.engine.context import EngineContext
from agent_engine.engine.plans import (
    approval_summary,
    new_step_record,
    plan_document,
    plan_version_row,
    validate_plan,
)
from agent_engine.engine.policies import PlanApprovals
from agent_engine.engine.request_limits import check_plan
from agent_engine.errors import PlanValidationError

# Steps a revision replaces: not started yet (a step waiting to retry has started: it stays).
_REPLACEABLE = frozenset({StepStatus.PENDING, StepStatus.AWAITING_APPROVAL, StepStatus.APPROVED})
# Steps a new step may not depend on: they will never be satisfied.
_DEAD = frozenset({StepStatus.CANCELLED, StepStatus.FAILED, StepStatus.REJECTED})


@dataclass(frozen=True)
class Revision:
    """A checked revision: the whole plan by step number, and what happens to which step."""

    plan: Plan
    after_step: int
    replaced: list[int]
    superseded: list[int]  # replaced now or earlier: every CANCELLED-by-revision step
    added: list[int]

    def document(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        """The plan version as recorded and hashed: the steps of ``previous`` (the version
        revised) exactly as it recorded them, the new ones after them."""
        document = plan_document(self.plan)
        earlier = previous.get("steps", []) if previous else []
        for number, entry in enumerate(earlier[: self.added[0] - 1], start=1):
            document["steps"][number - 1] = {
                key: value for key, value in entry.items() if key != "superseded"
            }
        for number in self.superseded:
            document["steps"][number - 1]["superseded"] = True
        document["revision"] = {
            "after_step": self.after_step,
            "replaced": self.replaced,
            "added": self.added,
        }
        return document


def replaceable(step: StepRecord) -> bool:
    """Whether a revision replaces ``step``: it has not started (no attempt yet)."""
    return step.status in _REPLACEABLE and step.attempt == 0


def _existing_spec(step: StepRecord) -> PlanStep:
    return PlanStep(
        step_type=step.step_type,
        input_data=step.input_data,
        depends_on=list(step.depends_on),
        optional=step.optional,
    )


def _new_specs(answer_steps: list[dict[str, Any]], first: int, after_step: int) -> list[PlanStep]:
    """The planner's steps numbered from ``first``, default dependencies filled in."""
    specs: list[PlanStep] = []
    for offset, raw in enumerate(answer_steps):
        spec = PlanStep.model_validate(raw)
        if spec.depends_on is None:
            spec = spec.model_copy(
                update={"depends_on": [after_step] if offset == 0 else [first + offset - 1]}
            )
        specs.append(spec)
    return specs


def _dead_targets(
    specs: list[PlanStep], first: int, dead: set[int], replaced: set[int]
) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    for number, spec in enumerate(specs, start=first):
        named = [("depends_on", dep) for dep in spec.depends_on or []]
        for ref in iter_references(spec.input_data):
            try:
                named.append(("input_data", parse_reference(ref)[0]))
            except StepReferenceError:
                continue  # validate_plan names a malformed reference
        for where, target in named:
            if target in replaced:
                why = "is replaced by this revision"
            elif target in dead:
                why = "was cancelled, failed or was rejected: it will never complete"
            else:
                continue
            errors.append(
                {
                    "step_number": number,
                    "field": where,
                    "message": f"step {target} {why}; depend on kept or new steps only",
                }
            )
    return errors


def build_revision(
    ctx: EngineContext,
    run: RunRecord,
    steps: list[StepRecord],
    answer_steps: list[dict[str, Any]],
    *,
    after_step: int,
    bounds: AdaptiveBounds,
) -> Revision:
    """Check the planner's new steps against the run as it stands and the run's bounds.

    Raises ``MaxStepsExceededError`` over ``max_steps``, pydantic's ``ValidationError`` for a
    step of the wrong shape, and the plan checks' errors (``check_plan``, ``validate_plan``).
    """
    ordered = sorted(steps, key=lambda s: s.step_number)
    first = len(ordered) + 1
    if len(ordered) + len(answer_steps) > bounds.max_steps:
        room = max(bounds.max_steps - len(ordered), 0)
        raise MaxStepsExceededError(
            f"the revision adds {len(answer_steps)} steps to the run's {len(ordered)}, over its "
            f"max_steps {bounds.max_steps}: at most {room} new steps fit",
            limit="max_steps",
            maximum=bounds.max_steps,
        )
    replaced = {s.step_number for s in ordered if replaceable(s)}
    superseded = replaced | {s.step_number for s in ordered if s.status == StepStatus.CANCELLED}
    dead = {s.step_number for s in ordered if s.status in _DEAD}
    specs = _new_specs(answer_steps, first, after_step)
    plan = Plan(steps=[*(_existing_spec(s) for s in ordered), *specs])
    check_plan(plan, ctx.request_limits)
    added = list(range(first, first + len(specs)))
    errors = _dead_targets(specs, first, dead, replaced)
    try:
        validate_plan(
            plan, ctx.registry, has_workspace=run.workspace is not None, limits=ctx.limits
        )
    except PlanValidationError as exc:
        # Only the new steps are the planner's to correct; the kept ones were checked before.
        errors += [e for e in exc.data.get("errors") or [] if e.get("step_number") in added]
    if errors:
        details = [f"step {e['step_number']}: {e['field']}: {e['message']}" for e in errors]
        raise PlanValidationError("; ".join(details[:3]), errors=errors)
    return Revision(plan, after_step, sorted(replaced), sorted(superseded), added)


def insert_revision(
    changes: ChangeSet,
    run: RunRecord,
    revision: Revision,
    ctx: EngineContext,
    *,
    approvals: PlanApprovals,
    actor: str,
    rationale: str | None,
    llm_call_id: uuid.UUID | None,
    step_estimates: list[Decimal | None],
    previous: dict[str, Any] | None,
) -> list[StepRecord]:
    """Write ``revision`` into ``changes``: the replaced steps CANCELLED (audited), a new plan
    version (``previous``: the document of the version it revises), the new steps, and
    ``plan.revised``. The caller moves the run on."""
    document = revision.document(previous)
    version = run.plan_version + 1
    by_number = {step.step_number: step for step in changes.steps}
    for number in revision.replaced:
        step = by_number[number]
        move_step(
            changes,
            run,
            step,
            StepStatus.CANCELLED,
            actor=actor,
            reason=f"superseded: replaced by plan version {version}",
        )
    kept: list[Decimal | None] = [Decimal(0)] * (revision.added[0] - 1)
    estimates = kept + step_estimates
    changes.add(
        "plans",
        plan_version_row(
            run,
            document,
            source="revision",
            actor=actor,
            rationale=rationale,
            llm_call_id=llm_call_id,
            step_estimates=estimates,
            step_count=len(revision.plan.steps),
        ),
    )
    dependencies = revision.plan.dependencies()
    added: list[StepRecord] = []
    for number in revision.added:
        spec = revision.plan.steps[number - 1]
        step = new_step_record(run, number, spec, dependencies[number - 1], ctx.registry, approvals)
        changes.add_step(step)
        added.append(step)
    append_event(
        changes,
        run,
        "plan.revised",
        {
            "version": run.plan_version,
            "plan_hash": run.plan_hash,
            "after_step": revision.after_step,
            "replaced": revision.replaced,
            "added": revision.added,
            "rationale": rationale,
            "plan": document,
            "approvals": approval_summary(added),
        },
        actor=actor,
    )
    return added


def answer_errors(exc: ValidationError) -> list[str]:
    """A pydantic error of a new step as lines the planner can act on."""
    return [f"{'.'.join(map(str, e['loc'])) or 'step'}: {e['msg']}" for e in exc.errors()]
