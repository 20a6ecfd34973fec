"""A run's trace: the ids its ``invoke_agent`` span is given when the run is created, kept on
the run, and the parent every later span of the run hangs from, in whichever process.

A run outlives the process that creates it, so its span cannot be held open anywhere. Its ids
are chosen at creation and stored (``agent_runs.trace_id``, ``trace_span_id``, …); step spans
name that span as their parent; the span itself is emitted when the run ends, with those very
ids (``ChosenIdGenerator``), from its creation to its end.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

# (trace id, span id) the next span started in this context must have.
_CHOSEN: ContextVar[tuple[int, int] | None] = ContextVar("agent_engine_chosen_ids", default=None)


class ChosenIdGenerator(RandomIdGenerator):
    """Random ids, except inside :func:`chosen_ids`: the ids chosen there (a run's span,
    emitted long after its ids were handed to its children)."""

    def generate_span_id(self) -> int:
        chosen = _CHOSEN.get()
        return chosen[1] if chosen is not None else super().generate_span_id()

    def generate_trace_id(self) -> int:
        chosen = _CHOSEN.get()
        return chosen[0] if chosen is not None else super().generate_trace_id()


@contextmanager
def chosen_ids(trace_id: int, span_id: int) -> Iterator[None]:
    """Spans started inside get these ids (start exactly one)."""
    token = _CHOSEN.set((trace_id, span_id))
    try:
        yield
    finally:
        _CHOSEN.reset(token)


def new_span_id() -> str:
    """A fresh span id as 16 hex digits (never the invalid all-zero id)."""
    return f"{RandomIdGenerator().generate_span_id():016x}"


@dataclass(frozen=True)
class RunTrace:
    """The run's span: its trace, its own id, its caller's span (None: it is the root), and
    whether the trace is sampled (a caller's ``traceparent`` decides)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    sampled: bool

    def columns(self) -> dict[str, Any]:
        """The ``agent_runs`` columns that keep it."""
        return {
            "trace_id": self.trace_id,
            "trace_span_id": self.span_id,
            "trace_parent_span_id": self.parent_span_id,
            "trace_sampled": self.sampled,
        }

    def _flags(self) -> TraceFlags:
        return TraceFlags(TraceFlags.SAMPLED if self.sampled else TraceFlags.DEFAULT)

    def context(self) -> Context:
        """The context whose current span is the run's: the parent of its steps' spans."""
        span = SpanContext(
            int(self.trace_id, 16), int(self.span_id, 16), is_remote=True, trace_flags=self._flags()
        )
        return trace.set_span_in_context(NonRecordingSpan(span))

    def parent_context(self) -> Context:
        """The context the run's own span starts in: its caller's span, or none (a root)."""
        if self.parent_span_id is None:
            return Context()
        span = SpanContext(
            int(self.trace_id, 16),
            int(self.parent_span_id, 16),
            is_remote=True,
            trace_flags=self._flags(),
        )
        return trace.set_span_in_context(NonRecordingSpan(span))


def new_run_trace(carrier: Mapping[str, str] | None = None) -> RunTrace:
    """The ids of a new run's span: in the trace of the caller's ``traceparent`` (in
    ``carrier``, e.g. the request's headers) when it has a valid one, else a new trace."""
    caller = trace.get_current_span(propagate.extract(carrier or {})).get_span_context()
    if caller.is_valid:
        return RunTrace(
            f"{caller.trace_id:032x}",
            new_span_id(),
            f"{caller.span_id:016x}",
            caller.trace_flags.sampled,
        )
    return RunTrace(f"{RandomIdGenerator().generate_trace_id():032x}", new_span_id(), None, True)


def run_trace(run: Any) -> RunTrace | None:
    """The trace a run (record or row) keeps, or None when it has none."""
    trace_id = getattr(run, "trace_id", None)
    span_id = getattr(run, "trace_span_id", None)
    if not trace_id or not span_id:
        return None
    return RunTrace(
        trace_id, span_id, run.trace_parent_span_id, bool(getattr(run, "trace_sampled", True))
    )
