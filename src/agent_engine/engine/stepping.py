"""The step runner: claim, execute outside any transaction, record — shared by the synchronous
``execute`` endpoint and the workers.

Each phase that writes is one transaction holding the run's row, so a step change, the run status
it implies and their audit events commit together or not at all. Every write about a claimed step
carries the fence it was claimed with; a stale fence is refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, InternalError, OperationalError

from agent_engine.domain.adaptive import ask_for_revision, asks_after
from agent_engine.domain.audit_cover import resolved_input_hash
from agent_engine.domain.canonical import content_hash
from agent_engine.domain.records import ChangeSet, RunRecord, StepRecord
from agent_engine.domain.states import (
    RUNNABLE_RUN_STATES,
    UNDER_WAY_RUN_STATES,
    RunStatus,
    StepStatus,
)
from agent_engine.domain.transitions import append_event, move_step
from agent_engine.engine.budget_pauses import pause_for_budget
from agent_engine.engine.claiming import Claim, OutputReader, take_ready
from agent_engine.engine.context import EngineContext, LogCapture, executor_context
from agent_engine.engine.effect_records import (
    apply_as_intended,
    park_outcome_unknown,
    record_intent,
)
from agent_engine.engine.fences import check_fence
from agent_engine.engine.ledger import record_calls
from agent_engine.engine.locking import change_run
from agent_engine.engine.replay_effects import recorded_effect
from agent_engine.engine.retries import fail_step
from agent_engine.engine.secrets import held_secrets, redact_result
from agent_engine.engine.settle import (
    plan_awaits_approval,
    refresh_claimable,
    settle_status,
)
from agent_engine.engine.step_clients import step_clients
from agent_engine.engine.step_logs import log_step_failure, step_log_context
from agent_engine.engine.step_outputs import dumped_output, storable_output
from agent_engine.errors import (
    BudgetExceededError,
    EngineError,
    ExecutorError,
    StaleFenceError,
)
from agent_engine.executors.base import Executor, ExecutorContext
from agent_engine.faults import crash_point
from agent_engine.llm.base import LLMCallRecord, LLMClient
from agent_engine.tracing import end_step, step_span, tool_span, tracing_active

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepResult:
    output: dict[str, Any] | None
    error: EngineError | None
    calls: list[LLMCallRecord]
    latency_ms: float
    recovered: bool = False  # the effect was found already applied after a crash
    logs: tuple[dict[str, str], ...] = ()


async def run_claimed(
    ctx: EngineContext, claim: Claim, *, cancel: asyncio.Event | None = None
) -> StepResult | None:
    """Execute a claimed step (None: it was parked for a human instead). The step's own failure
    is a result, never an exception; only a lost claim (StaleFenceError) propagates."""
    with step_log_context(claim), step_span(claim) as span:
        result = await _run_claimed(ctx, claim, cancel)
        end_step(span, result)
        return result


async def _run_claimed(
    ctx: EngineContext, claim: Claim, cancel: asyncio.Event | None
) -> StepResult | None:
    executor = ctx.registry[claim.step_type]
    llm, client = await step_clients(ctx, claim)
    context = executor_context(ctx, claim.run_id, claim.step_number, claim.workspace, client)
    context.prior_outputs = claim.prior_outputs
    context.attempt = claim.attempt
    context.goal = claim.goal
    capture = LogCapture()
    context.logger.addHandler(capture)
    if cancel is not None:
        context.cancel_event = cancel
    started = time.perf_counter()
    output: dict[str, Any] | None = None
    error: EngineError | None = None
    try:
        parsed = executor.validate_input(claim.resolved_input)
        if claim.prior_intent is not None:
            found = await executor.reconcile(parsed, claim.prior_intent, context)
            if found.state == "applied":
                elapsed = (time.perf_counter() - started) * 1000
                return StepResult(found.output, None, list(llm.calls), elapsed, recovered=True)
            if found.state == "unknown" and not claim.idempotent:
                await park_outcome_unknown(ctx, claim, actor=f"recovery:{claim.step_id}")
                return None
        output = await _output_of(ctx, claim, executor, parsed, context)
    except StaleFenceError:
        raise
    except ValidationError as exc:
        error = ExecutorError(f"step {claim.step_number}: resolved input is invalid: {exc}")
    except EngineError as exc:
        error = exc
    except Exception as exc:  # a plugin's bug must fail its step, not the engine
        if database_out_of_reach(exc):
            # Not the step's failure (an intent not written, a budget not reached): the
            # worker lets the lease lapse, and the step is claimed again.
            raise
        logger.exception("executor %s crashed", claim.step_type)
        error = ExecutorError(f"executor {claim.step_type} crashed: {type(exc).__name__}: {exc}")
    latency_ms = (time.perf_counter() - started) * 1000
    if capture.dropped:
        capture.lines.append({"level": "warning", "message": f"{capture.dropped} more lines"})
    if error is not None:
        log_step_failure(claim, error)
    return StepResult(output, error, list(llm.calls), latency_ms, logs=tuple(capture.lines))


def database_out_of_reach(exc: BaseException) -> bool:
    """Whether ``exc`` is the database out of reach (restarting, a backend ended, a connection
    refused or broken), which passes, rather than an error that would come back every time (bad
    data, a constraint), which fails the step."""
    if isinstance(exc, ConnectionError):  # a refused connection is not wrapped by SQLAlchemy
        return True
    transient = (OperationalError, InterfaceError, InternalError)
    return isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, transient)
    )


async def _output_of(
    ctx: EngineContext,
    claim: Claim,
    executor: Executor[Any, Any],
    parsed: BaseModel,
    context: ExecutorContext,
) -> dict[str, Any]:
    """The step's output: what the executor does (a side effect with its intent recorded
    first), or in a verify replay of a side-effecting step the original's recorded result."""
    depth = ctx.request_limits.max_json_depth
    if claim.side_effects and claim.replay is not None and claim.replay.verify:
        served = await recorded_effect(
            ctx, claim.replay, claim.step_number, claim.step_type, context
        )
        return storable_output(claim.step_number, served, depth)
    if not claim.side_effects:
        with tool_span(executor.tool_name(parsed) if tracing_active() else None):
            answer = await executor.execute(parsed, context)
        return storable_output(
            claim.step_number, dumped_output(claim.step_number, answer, depth), depth
        )
    intent = await executor.preview(parsed, context)
    await record_intent(ctx, claim, intent)
    crash_point("before_effect", claim.step_type)
    with tool_span(executor.tool_name(parsed) if tracing_active() else None):
        done = await apply_as_intended(executor, parsed, intent, context)
    if not isinstance(done, dict):
        done = dumped_output(claim.step_number, done, depth)
    output = storable_output(claim.step_number, done, depth)
    crash_point("after_effect", claim.step_type)
    return output


@dataclass(frozen=True)
class ContinueWith:
    """Claim the run's next ready steps in the same write that records a result: a worker that
    finishes step N of a run usually runs step N+1, and this saves it a claim round trip."""

    owner: str
    limit: int
    lease: timedelta
    llm: LLMClient
    step_types: frozenset[str] = frozenset()


async def record_result(
    ctx: EngineContext,
    claim: Claim,
    result: StepResult,
    *,
    actor: str,
    then: ContinueWith | None = None,
) -> list[Claim]:
    """Write the step's result under the run's lock if the claim's fence is still current (the
    ledger in any case), settle the run, and with ``then`` claim its next ready steps.

    Raises StaleFenceError, after the ledger is written, when the claim is no longer ours."""
    # Stepping by hand is read back at once: the run's budget holds are settled first (before
    # the lock: a settle that crosses an alert threshold writes to the run).
    await ctx.settles.wait(claim.run_id)
    async with change_run(ctx, claim.run_id, open_steps=True, also=claim.step_id) as locked:
        recorded = await decide_result(
            ctx, locked.changes, locked.read, claim, result, actor=actor, then=then
        )
    return recorded.accepted()


@dataclass(frozen=True)
class Recorded:
    """What recording a result decided: the next steps claimed with it, or, when the attempt
    no longer owns its step, the refusal (its model calls are in the ledger all the same)."""

    claims: list[Claim]
    refused: StaleFenceError | None = None

    def accepted(self) -> list[Claim]:
        """The claims; raises the refusal (once the write that holds the ledger committed)."""
        if self.refused is not None:
            raise self.refused
        return self.claims


async def decide_result(
    ctx: EngineContext,
    changes: ChangeSet,
    read: OutputReader,
    claim: Claim,
    result: StepResult,
    *,
    actor: str,
    then: ContinueWith | None,
) -> Recorded:
    """What recording a result does to the run (``changes`` holds it and its open steps): the
    ledger, the step's outcome, the run's status, and the next steps claimed with ``then``."""
    run, steps = changes.run, changes.steps
    step = changes.step(claim.step_id)
    if step is None:
        raise StaleFenceError(f"step {claim.step_id} no longer exists")
    # Calls that happened cost money whether or not this attempt may still write its result.
    record_calls(changes, run, step, result.calls)
    if step.fence != claim.fence or step.status != StepStatus.RUNNING:
        if step.status == StepStatus.CANCELLED:
            return Recorded([])  # cancelled meanwhile: the ledger is kept, the result is moot
        try:
            check_fence(step, claim)
        except StaleFenceError as exc:
            return Recorded([], refused=exc)  # the ledger is written, the result is not
    # Whatever a step produced (a command may print a key it found) is recorded without secrets.
    result = redact_result(result, held_secrets(ctx.settings.models_file))
    for line in result.logs:
        append_event(
            changes,
            run,
            "step.log",
            {"step_number": step.step_number, **line},
            actor=actor,
            step_id=step.id,
        )
    _write_result(changes, run, step, claim, result, actor=actor)
    if (
        step.status == StepStatus.COMPLETED
        and run.status in UNDER_WAY_RUN_STATES
        and asks_after(run, ctx.registry[step.step_type].observes)
    ):
        ask_for_revision(changes, run, step, actor=actor)  # adaptive: the planner looks first
    else:
        settle_status(changes, run, steps, actor=actor)
    unmet = (result.output or {}).get("unmet_goal")
    if run.status == RunStatus.COMPLETED and isinstance(unmet, str) and run.error is None:
        # Completed, but not as asked: the run says so where its status is read.
        run.error = {"code": "goal_unmet", "message": unmet, "step_number": step.step_number}
    claims: list[Claim] = []
    if (
        then is not None
        and then.limit > 0
        and run.status in RUNNABLE_RUN_STATES
        and run.started
        and not plan_awaits_approval(run)
    ):
        work = await take_ready(
            ctx,
            changes,
            read,
            owner=then.owner,
            limit=then.limit,
            lease=then.lease,
            llm=then.llm,
            step_types=then.step_types,
        )
        settle_status(changes, run, steps, actor=then.owner)
        claims = [item for item in work if isinstance(item, Claim)]
    refresh_claimable(run, steps)
    return Recorded(claims)


def _write_result(
    changes: ChangeSet,
    run: RunRecord,
    step: StepRecord,
    claim: Claim,
    result: StepResult,
    *,
    actor: str,
) -> None:
    step.latency_ms = result.latency_ms
    if claim.side_effects and step.effect_intent is not None:
        step.effect_outcome = {
            "attempt": claim.attempt,
            "ok": result.error is None,
            "recovered": result.recovered or None,
        }
    if result.error is None:
        step.lease_owner = None
        step.lease_expires_at = None
        step.output_data = result.output
        step.output_hash = content_hash(result.output)
        move_step(
            changes,
            run,
            step,
            StepStatus.COMPLETED,
            actor=actor,
            input_hash=step.input_hash,
            resolved_input_hash=resolved_input_hash(step.resolved_input),
            output_hash=step.output_hash,
            cost_usd=format(step.cost_usd, "f"),
            recovered=result.recovered or None,
        )
        return
    if isinstance(result.error, BudgetExceededError):
        pause_for_budget(changes, run, step, result.error, actor=actor)  # never failed for budget
        return
    fail_step(changes, run, step, result.error, actor=actor)
    if result.error.code == "workspace_violation":
        append_event(
            changes,
            run,
            "security.workspace_violation",
            {"step_number": step.step_number, **step.error} if step.error else {},
            actor=actor,
            step_id=step.id,
        )
