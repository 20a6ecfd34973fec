"""A step that does nothing (or waits, or fails on purpose): for tests, benchmarks and measuring
the engine's own overhead."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent_engine.errors import CancelledError, ExecutorError, TransientExecutorError
from agent_engine.executors.base import Executor, ExecutorContext


class NoopInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: Any = None
    fail: bool = Field(default=False, description="Fail the step on purpose (not retryable).")
    fail_attempts: int = Field(
        default=0, ge=0, le=20, description="Fail this many first attempts with a retryable error."
    )
    sleep_s: float = Field(default=0.0, ge=0.0, le=600.0, description="Wait this long first.")


class NoopOutput(BaseModel):
    value: Any = None
    attempt: int = 1


class NoopExecutor(Executor[NoopInput, NoopOutput]):
    """Returns its input value; optionally waits (cancellable) or fails."""

    name = "noop"
    input_model = NoopInput
    output_model = NoopOutput
    may_start_early = True  # changes nothing: starting before its claim commits risks nothing

    async def execute(self, input: NoopInput, context: ExecutorContext) -> NoopOutput:
        if input.sleep_s:
            try:
                await asyncio.wait_for(context.cancel_event.wait(), timeout=input.sleep_s)
            except TimeoutError:
                pass
            else:
                raise CancelledError("noop step cancelled while waiting")
        if input.fail:
            raise ExecutorError("noop step asked to fail")
        if context.attempt <= input.fail_attempts:
            raise TransientExecutorError(f"noop step fails attempt {context.attempt} on purpose")
        return NoopOutput(value=input.value, attempt=context.attempt)


NOOP = NoopExecutor()
