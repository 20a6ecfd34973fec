"""The effect ledger's writes around a side effect: its intent, committed before the effect
starts, and the wait for a human when a crash left its outcome unknown."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agent_engine.domain.states import StepStatus
from agent_engine.domain.transitions import append_event, move_step
from agent_engine.engine.claiming import Claim
from agent_engine.engine.context import EngineContext
from agent_engine.engine.fences import claimed_step
from agent_engine.engine.locking import change_run
from agent_engine.engine.secrets import held_secrets, redact_value
from agent_engine.engine.settle import settle_run
from agent_engine.errors import StaleEditError
from agent_engine.executors.base import Executor, ExecutorContext


async def record_intent(ctx: EngineContext, claim: Claim, intent: dict[str, Any]) -> None:
    """Commit what a side effect is about to do before doing it (the effect ledger's first half)."""
    async with change_run(ctx, claim.run_id, open_steps=True, also=claim.step_id) as locked:
        changes = locked.changes
        step = claimed_step(changes, claim)
        intent = redact_value(intent, held_secrets(ctx.settings.models_file))
        step.effect_intent = {"attempt": claim.attempt, "fence": claim.fence, **intent}
        step.effect_outcome = None
        append_event(
            changes,
            changes.run,
            "effect.intent",
            {"step_number": step.step_number, **step.effect_intent},
            actor=step.lease_owner or "worker",
            step_id=step.id,
        )


async def park_outcome_unknown(ctx: EngineContext, claim: Claim, *, actor: str) -> None:
    """A crashed side effect whose outcome cannot be known waits for a human to decide."""
    async with change_run(ctx, claim.run_id) as locked:
        changes = locked.changes
        run = changes.run
        step = claimed_step(changes, claim)
        step.outcome_unknown = True
        step.preview = {
            "outcome_unknown": True,
            "message": "a previous attempt started this effect and its outcome is unknown; "
            "approve to run it again, reject to stop",
            "intent": claim.prior_intent,
        }
        step.effect_intent = None
        step.lease_owner = None
        step.lease_expires_at = None
        move_step(
            changes,
            run,
            step,
            StepStatus.AWAITING_APPROVAL,
            actor=actor,
            reason="outcome unknown",
            shown=step.preview,
        )
        settle_run(changes, run, changes.steps, actor=actor)


async def apply_as_intended(
    executor: Executor[Any, Any], input: BaseModel, intent: dict[str, Any], context: ExecutorContext
) -> BaseModel | dict[str, Any]:
    """Apply the effect the intent just recorded, and only that one: the input is pinned to the
    intent's preview (an edit to the file's hash it was planned on). Two attempts of one step can
    act at once (a worker whose lease lapsed while it acted, and the one that took the step
    over); the later one then finds the world changed, and an effect found already applied (the
    file has the intent's post-hash) gives its output instead of being applied a second time.

    Returns the executor's output model, or the reconciled output as JSON values."""
    data = input.model_dump(mode="json")
    bound = executor.bind_preview(data, intent)
    pinned = input if bound is data else executor.validate_input(bound)
    try:
        output: BaseModel = await executor.execute(pinned, context)
    except StaleEditError:
        found = await executor.reconcile(pinned, intent, context)
        if found.state == "applied" and found.output is not None:
            return found.output
        raise
    return output
