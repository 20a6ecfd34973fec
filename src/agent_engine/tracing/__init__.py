"""OpenTelemetry traces of runs, steps, model and tool calls (docs/tracing.md).

``setup`` turns tracing on for a process from the ``OTEL_*`` variables; ``ids`` keeps a run's
span ids on the run; ``spans`` emits the engine's spans; ``genai`` holds the GenAI semantic
conventions of model calls and the ``traceparent`` carried over HTTP. Model-call spans come
from the provider wrapper in ``llm/traced.py``.
"""

from __future__ import annotations

from agent_engine.tracing.ids import RunTrace, new_run_trace, new_span_id, run_trace
from agent_engine.tracing.setup import (
    TracingConfigError,
    process_tracing,
    setup_tracing,
    shutdown_tracing,
    tracing_active,
    tracing_requested,
)
from agent_engine.tracing.spans import (
    emit_approval_wait,
    emit_run_span,
    end_step,
    step_span,
    tool_span,
    within_run,
)

__all__ = [
    "RunTrace",
    "TracingConfigError",
    "emit_approval_wait",
    "emit_run_span",
    "end_step",
    "new_run_trace",
    "new_span_id",
    "process_tracing",
    "run_trace",
    "setup_tracing",
    "shutdown_tracing",
    "step_span",
    "tool_span",
    "tracing_active",
    "tracing_requested",
    "within_run",
]
