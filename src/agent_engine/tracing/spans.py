"""The engine's spans: a run (``invoke_agent``), a step attempt, a tool call
(``execute_tool``), an approval wait. Model calls are ``llm/traced.py``'s.

Every function here first asks whether tracing is on; off, it returns at once (a shared no-op
context manager), so the hot path builds no span.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import structlog
from opentelemetry import context as otel_context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from agent_engine.tracing.ids import RunTrace, chosen_ids, run_trace
from agent_engine.tracing.setup import STATE

_NOTHING: AbstractContextManager[None] = nullcontext()
# Our own attributes, until the conventions name them.
RUN_ID = "agent_engine.run.id"
COST = "agent_engine.cost_usd"
OUTCOME = "agent_engine.step.outcome"


class StepAttempt(Protocol):
    """What a step span names (a claimed step has it all)."""

    @property
    def run_id(self) -> Any: ...
    @property
    def step_id(self) -> Any: ...
    @property
    def step_number(self) -> int: ...
    @property
    def step_type(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def trace(self) -> RunTrace | None: ...


def _nanoseconds(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000) * 1000


def step_span(step: StepAttempt) -> AbstractContextManager[Span | None]:
    """The span of one step attempt, current inside (its model and tool calls hang from it),
    a child of the run's span."""
    tracer = STATE.tracer
    if tracer is None:
        return _NOTHING
    parent = step.trace.context() if step.trace is not None else None
    return tracer.start_as_current_span(
        f"step {step.step_type}",
        context=parent,
        kind=SpanKind.INTERNAL,
        attributes={
            RUN_ID: str(step.run_id),
            "agent_engine.step.id": str(step.step_id),
            "agent_engine.step.number": step.step_number,
            "agent_engine.step.type": step.step_type,
            "agent_engine.step.attempt": step.attempt,
        },
    )


class AttemptResult(Protocol):
    """What a step span says of an attempt's result."""

    @property
    def error(self) -> Any: ...
    @property
    def calls(self) -> Sequence[Any]: ...


def end_step(span: Span | None, result: AttemptResult | None) -> None:
    """Say on the step's span how the attempt ended when it did not complete (``failed``, or
    ``parked`` for a person: status UNSET means completed) and what its model calls cost when
    they cost anything; a failed attempt's span has status ERROR and its ``error.type``. (Each
    attribute costs a no-op step microseconds: only those that say something are set.)"""
    if span is None:
        return
    if result is None:
        span.set_attribute(OUTCOME, "parked")
        return
    cost = sum((call.cost_usd for call in result.calls if call.cost_usd is not None), Decimal(0))
    if cost:
        span.set_attribute(COST, float(cost))
    if result.error is not None:
        code = str(result.error.code)
        span.set_attributes({OUTCOME: "failed", "error.type": code})
        span.set_status(Status(StatusCode.ERROR, code))


@contextmanager
def _tool(name: str) -> Iterator[Span]:
    assert STATE.tracer is not None
    with STATE.tracer.start_as_current_span(
        f"execute_tool {name}",
        kind=SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.type": "function",
        },
    ) as span:
        try:
            yield span
        except Exception as exc:
            span.set_attribute("error.type", str(getattr(exc, "code", type(exc).__name__)))
            raise


def tool_span(name: str | None) -> AbstractContextManager[Any]:
    """An ``execute_tool {name}`` span around a tool or command call (nothing when ``name``
    is None: the step calls no tool)."""
    if STATE.tracer is None or name is None:
        return _NOTHING
    return _tool(name)


def emit_run_span(run: Any) -> None:
    """Emit the ``invoke_agent`` span of a run that just ended (completed, failed,
    cancelled), from its creation to its end, with the ids its children already name."""
    tracer = STATE.tracer
    ids = run_trace(run)
    if tracer is None or ids is None or not ids.sampled:
        return
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        RUN_ID: str(run.id),
        "agent_engine.run.status": run.status,
        "gen_ai.usage.input_tokens": run.input_tokens,
        "gen_ai.usage.output_tokens": run.output_tokens,
        COST: float(run.total_cost_usd),
    }
    if STATE.capture_content:
        attributes["agent_engine.run.goal"] = run.goal
    error = (run.error or {}).get("code") if run.status == "failed" else None
    with chosen_ids(int(ids.trace_id, 16), int(ids.span_id, 16)):
        span = tracer.start_span(
            "invoke_agent",
            context=ids.parent_context(),
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=_nanoseconds(run.created_at),
        )
    if run.status == "failed":
        span.set_attribute("error.type", str(error or "run_failed"))
        span.set_status(Status(StatusCode.ERROR, str(error or "run failed")))
    span.end(end_time=_nanoseconds(run.completed_at or run.updated_at))


def emit_approval_wait(
    ids: RunTrace | None,
    *,
    run_id: Any,
    step_number: int,
    step_type: str,
    decision: str,
    since: datetime | None,
    decided_at: datetime,
) -> None:
    """Emit the span of a step's wait for a person, now that they decided (``since``: when
    the step began to wait), a child of the run's span."""
    tracer = STATE.tracer
    if tracer is None or ids is None or since is None:
        return
    span = tracer.start_span(
        f"await_approval {step_type}",
        context=ids.context(),
        kind=SpanKind.INTERNAL,
        attributes={
            RUN_ID: str(run_id),
            "agent_engine.step.number": step_number,
            "agent_engine.step.type": step_type,
            "agent_engine.approval.decision": decision,
        },
        start_time=_nanoseconds(since),
    )
    span.end(end_time=_nanoseconds(decided_at))


@contextmanager
def _within(ids: RunTrace) -> Iterator[None]:
    token = otel_context.attach(ids.context())
    try:
        with structlog.contextvars.bound_contextvars(trace_id=ids.trace_id):
            yield
    finally:
        otel_context.detach(token)


def within_run(run: Any) -> AbstractContextManager[None]:
    """Inside, spans started hang from the run's span and log lines carry its trace id (the
    planner's model calls, made outside any step)."""
    ids = run_trace(run) if STATE.tracer is not None else None
    return _NOTHING if ids is None else _within(ids)
