"""The context every log line of a step carries: structlog context variables bound while the
step executes and is recorded (docs/operations-logs.md)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from agent_engine.engine.claiming import Claim
from agent_engine.errors import EngineError

logger = logging.getLogger("agent_engine.engine.stepping")


@contextmanager
def step_log_context(claim: Claim) -> Iterator[None]:
    """Every log line inside carries the step's run, id, number and attempt, and the run's
    trace id (None when the run has no trace: the field is always there)."""
    trace_id = (
        claim.trace.trace_id
        if claim.trace is not None
        else structlog.contextvars.get_contextvars().get("trace_id")
    )
    with structlog.contextvars.bound_contextvars(
        run_id=str(claim.run_id),
        step_id=str(claim.step_id),
        step_number=claim.step_number,
        attempt=claim.attempt,
        trace_id=trace_id,
    ):
        yield


def log_step_failure(claim: Claim, error: EngineError) -> None:
    """One warning line for a step whose attempt failed, with the error's code and detail as
    the executor raised them (the log's own masking removes any key they hold)."""
    logger.warning(
        "step %s (%s) failed: %s: %s",
        claim.step_number,
        claim.step_type,
        error.code,
        error.detail,
    )
