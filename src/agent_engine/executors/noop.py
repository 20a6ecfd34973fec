"""A step that does nothing: for tests, benchmarks and measuring engine overhead."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent_engine.errors import ExecutorError
from agent_engine.executors.base import Executor, ExecutorContext


class NoopInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: Any = None
    fail: bool = Field(default=False, description="Fail the step on purpose (for tests).")


class NoopOutput(BaseModel):
    value: Any = None


class NoopExecutor(Executor[NoopInput, NoopOutput]):
    name = "noop"
    input_model = NoopInput
    output_model = NoopOutput

    async def execute(self, input: NoopInput, context: ExecutorContext) -> NoopOutput:
        if input.fail:
            raise ExecutorError("noop step asked to fail")
        return NoopOutput(value=input.value)


NOOP = NoopExecutor()
