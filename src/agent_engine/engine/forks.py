"""What-if forks: a new run that reuses the original's steps before ``from_step`` and changes
that step (its input, its model, or its output given outright).

The original needs steps 1..from_step-1 finished (completed or skipped); it may itself be
finished or still under way. The fork gets the original's current plan as a new plan version.
Steps before ``from_step`` are written as they finished in the original (input, resolved input,
output and hashes), with ``reused_from`` naming the original step and no cost: they are neither
run nor paid again. Later steps are pending and run live once the workers take the fork (it is
started at once, as ``auto_start`` does), or, with ``replay``, from the original's records until
the first miss (``options["fork"]["replay"]``). A fork of a run created with ``plan_approval``
waits for a person to approve its plan, as the original did.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from pydantic import ConfigDict, Field, ValidationError, model_validator

from agent_engine.domain.approval_policy import ApprovalInputs
from agent_engine.domain.canonical import content_hash
from agent_engine.domain.clock import utcnow
from agent_engine.domain.fork_options import FORK_OPTION, fork_options
from agent_engine.domain.plan import Plan, PlanStep
from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.retry import RetryPolicy
from agent_engine.domain.states import RunStatus, StepStatus
from agent_engine.domain.text import StorableModel
from agent_engine.domain.transitions import append_event, move_run
from agent_engine.engine.context import EngineContext
from agent_engine.engine.new_runs import insert_new_run
from agent_engine.engine.plans import insert_plan, validate_plan
from agent_engine.engine.policies import (
    PlanApprovals,
    inputs_of_run,
    plan_approvals,
    refuse_loosening,
    run_options,
)
from agent_engine.engine.request_limits import check_plan
from agent_engine.engine.retention import check_not_pruned
from agent_engine.engine.runs import RunView
from agent_engine.engine.settle import refresh_claimable, settle_status
from agent_engine.errors import ForkNotReadyError, InputValidationError
from agent_engine.llm.catalog import cached_catalog
from agent_engine.storage.database import read_transaction
from agent_engine.storage.runs import load_run_txn, load_steps_txn

REUSABLE = frozenset({StepStatus.COMPLETED.value, StepStatus.SKIPPED.value})


class ForkRequest(StorableModel):
    """The body of ``POST /v1/agent-runs/{id}/fork``: where to branch off and what to change."""

    model_config = ConfigDict(extra="forbid")

    from_step: int = Field(ge=1, description="The first step not reused from the original.")
    input_data: dict[str, Any] | None = Field(
        default=None, description="A new input for step from_step (checked as a plan's is)."
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The model step from_step must use ('provider:model' from the catalog).",
    )
    output_data: dict[str, Any] | None = Field(
        default=None,
        description="Step from_step's output given outright: the step is not run.",
    )
    replay: bool = Field(
        default=False,
        description="Serve the later steps' model calls from the original's records until "
        "the first one that differs, then call models live.",
    )

    @model_validator(mode="after")
    def _one_kind_of_output(self) -> ForkRequest:
        if self.output_data is not None and (self.input_data is not None or self.model):
            raise ValueError(
                "output_data replaces the step's run: it cannot go with input_data or model"
            )
        return self

    def override(self) -> str | None:
        """Which override the request makes (None: the step runs again as it was)."""
        if self.output_data is not None:
            return "output_data"
        if self.input_data is not None:
            return "input_data"
        return "model" if self.model else None


async def fork_run(
    ctx: EngineContext,
    run_id: str,
    request: ForkRequest,
    *,
    actor: str,
    may_loosen_policy: bool = False,
) -> RunView:
    """Create and start the fork of run ``run_id`` described by ``request``.

    404 for an unknown run; 409 ``fork_not_ready`` when a step before ``from_step`` has not
    finished; 422 naming ``from_step`` out of range, or the field of an override its executor
    refuses (the input as a plan's is checked, the output against the step's output model).
    """
    async with read_transaction(ctx.sessions) as session:
        original = await load_run_txn(session, run_id)
        steps = await load_steps_txn(session, original.id)
    check_not_pruned(original, "forked")
    number = request.from_step
    if not steps:
        raise ForkNotReadyError(f"run {original.id} has no plan yet: nothing to fork from")
    if number > len(steps):
        raise InputValidationError(
            f"from_step {number} is past the last step of run {original.id} ({len(steps)})",
            errors=[{"field": "from_step", "message": f"between 1 and {len(steps)}"}],
        )
    unfinished = [s for s in steps[: number - 1] if s.status not in REUSABLE]
    if unfinished:
        first = unfinished[0]
        raise ForkNotReadyError(
            f"step {first.step_number} of run {original.id} is '{first.status}': a fork from "
            f"step {number} reuses steps 1..{number - 1}, which must have finished",
            run_id=str(original.id),
            step_number=first.step_number,
        )
    target = steps[number - 1]
    plan = _forked_plan(steps, number, request.input_data)
    check_plan(plan, ctx.request_limits)
    validate_plan(
        plan, ctx.registry, has_workspace=original.workspace is not None, limits=ctx.limits
    )
    output = _checked_output(ctx, target.step_type, request.output_data)
    if request.model:
        await _check_model(ctx, request.model)
    recorded = inputs_of_run(original.options)
    inputs = ApprovalInputs(recorded.server, recorded.run, may_loosen_policy)
    approvals = await plan_approvals(inputs, plan, ctx.limits, original.workspace)
    refuse_loosening(approvals.loosenings(plan.steps, ctx.registry))
    changes = _forked_changes(ctx, original, steps, plan, approvals, request, output, actor)
    return await insert_new_run(ctx, changes)


def _plan_step(step: StepRecord, input_data: dict[str, Any]) -> PlanStep:
    """A step of the original as a plan step. An approval the original required is required
    again; one it did not is decided anew by the policy (never loosened by the fork)."""
    return PlanStep(
        step_type=step.step_type,
        input_data=input_data,
        depends_on=list(step.depends_on),
        requires_approval=True if step.requires_approval else None,
        optional=step.optional,
        idempotent=step.idempotent,
        max_attempts=step.max_attempts,
        retry_policy=RetryPolicy.model_validate(step.retry_policy) if step.retry_policy else None,
    )


def _forked_plan(steps: list[StepRecord], number: int, input_data: dict[str, Any] | None) -> Plan:
    specs = [
        _plan_step(
            s, input_data if s.step_number == number and input_data is not None else s.input_data
        )
        for s in steps
    ]
    return Plan(steps=specs)


def _checked_output(
    ctx: EngineContext, step_type: str, output: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The output as the step's executor would have returned it; 422 naming each bad field."""
    if output is None:
        return None
    executor = ctx.registry[step_type]
    try:
        parsed = executor.output_model.model_validate(output)
    except ValidationError as exc:
        errors = [
            {
                "field": ".".join(["output_data", *(str(part) for part in error["loc"])]),
                "message": error["msg"],
            }
            for error in exc.errors()
        ]
        first = errors[0]
        raise InputValidationError(
            f"output_data is not a {step_type} output: {first['field']}: {first['message']}",
            errors=errors,
        ) from None
    dumped: dict[str, Any] = parsed.model_dump(mode="json")
    return dumped


async def _check_model(ctx: EngineContext, model: str) -> None:
    """A pinned model must be one the router knows (checked here unless routing is remote)."""
    if ctx.settings.router_url:
        return  # the remote router's catalog decides; an unknown model is recorded as ignored
    catalog = await asyncio.to_thread(cached_catalog, ctx.settings.models_file)
    if catalog.find(model) is None:
        known = ", ".join(entry.id for entry in catalog.models)
        raise InputValidationError(
            f"model {model!r} is not in the model catalog (one of: {known})",
            errors=[{"field": "model", "message": "not in the model catalog"}],
        )


def _forked_changes(
    ctx: EngineContext,
    original: RunRecord,
    originals: list[StepRecord],
    plan: Plan,
    approvals: PlanApprovals,
    request: ForkRequest,
    output: dict[str, Any] | None,
    actor: str,
) -> ChangeSet:
    """The fork's change set: the run, its plan, the reused steps and the override, audited."""
    number = request.from_step
    plan_approval = bool(original.options.get("plan_approval"))
    options = fork_options(
        from_step=number, override=request.override(), model=request.model, replay=request.replay
    )
    run = RunRecord(
        id=uuid.uuid4(),
        goal=original.goal,
        status=RunStatus.CREATED.value,
        workspace=original.workspace,
        budget_usd=original.budget_usd,
        budget_tokens=original.budget_tokens,
        created_by=actor,
        metadata=original.metadata,
        options={
            **run_options(approvals.inputs),
            "plan_approval": plan_approval,
            "auto_start": True,
            "four_eyes": bool(original.options.get("four_eyes")),
            FORK_OPTION: options,
        },
        started=True,
        max_parallel=original.max_parallel,
        forked_from=original.id,
        from_step=number,
    )
    changes = ChangeSet(run, [], new_run=True)
    append_event(
        changes,
        run,
        "run.created",
        {
            "goal": run.goal,
            "workspace": run.workspace,
            "forked_from": str(original.id),
            "from_step": number,
            "fork": options,
            "policy": approvals.inputs.server.model_dump(mode="json"),
            "may_loosen_policy": approvals.inputs.may_loosen,
        },
        actor=actor,
    )
    move_run(changes, run, RunStatus.PLANNING, actor=actor, reason="fork")
    steps = insert_plan(
        changes, run, plan, ctx.registry, approvals=approvals, actor=actor, source="fork"
    )
    move_run(changes, run, RunStatus.PLANNED, actor=actor)
    for step, source in zip(steps[: number - 1], originals, strict=False):
        _reuse(changes, run, step, source, actor)
    forked, source = steps[number - 1], originals[number - 1]
    if request.input_data is not None:
        append_event(
            changes,
            run,
            "step.input_overridden",
            {
                "step_number": number,
                "input_hash": forked.input_hash,
                "original_input_hash": source.input_hash,
            },
            actor=actor,
            step_id=forked.id,
        )
    if request.model:
        append_event(
            changes,
            run,
            "step.model_pinned",
            {"step_number": number, "model": request.model, "original_model": source.model},
            actor=actor,
            step_id=forked.id,
        )
    if output is not None:
        _override_output(changes, run, forked, source, output, actor)
    if plan_approval:
        move_run(changes, run, RunStatus.AWAITING_APPROVAL, actor=actor, reason="plan approval")
    elif all(s.status in REUSABLE for s in steps):
        move_run(changes, run, RunStatus.RUNNING, actor=actor, reason="fork")
        settle_status(changes, run, steps, actor=actor)  # nothing left to run: completed
    refresh_claimable(run, changes.steps)
    return changes


def _reuse(
    changes: ChangeSet, run: RunRecord, step: StepRecord, source: StepRecord, actor: str
) -> None:
    """Step ``step`` of the fork is the original's ``source`` as it finished, at no cost."""
    step.status = source.status
    step.resolved_input = source.resolved_input
    step.output_data = source.output_data
    step.output_hash = source.output_hash
    step.input_hash = source.input_hash
    step.preview = source.preview
    step.model = source.model
    step.reused_from = source.id
    step.completed_at = utcnow()
    append_event(
        changes,
        run,
        "step.reused",
        {
            "step_number": step.step_number,
            "step_type": step.step_type,
            "status": step.status,
            "reused_from": str(source.id),
            "output_hash": step.output_hash,
        },
        actor=actor,
        step_id=step.id,
    )


def _override_output(
    changes: ChangeSet,
    run: RunRecord,
    step: StepRecord,
    source: StepRecord,
    output: dict[str, Any],
    actor: str,
) -> None:
    """Step ``step`` completes with ``output`` without running (its later steps read it)."""
    step.status = StepStatus.COMPLETED.value
    step.output_data = output
    step.output_hash = content_hash(output)
    step.completed_at = utcnow()
    append_event(
        changes,
        run,
        "step.output_overridden",
        {
            "step_number": step.step_number,
            "step_type": step.step_type,
            "output_hash": step.output_hash,
            "original_output_hash": source.output_hash,
        },
        actor=actor,
        step_id=step.id,
    )
