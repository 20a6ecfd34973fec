"""The plan a run executes: an ordered list of steps whose ``depends_on`` makes a DAG."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent_engine.domain.retry import RetryPolicy


class PlanStep(BaseModel):
    """One step as a client or the planner specifies it. ``depends_on`` holds step numbers."""

    model_config = ConfigDict(extra="forbid")

    step_type: str = Field(min_length=1, max_length=100)
    input_data: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[int] | None = None
    requires_approval: bool | None = None
    optional: bool = False
    idempotent: bool | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=20)
    retry_policy: RetryPolicy | None = None


class Plan(BaseModel):
    """A validated list of steps; ``depends_on`` defaults to the previous step."""

    model_config = ConfigDict(extra="forbid")

    # How many steps a plan may have is the server's setting (AGENT_ENGINE_MAX_PLAN_STEPS).
    steps: list[PlanStep] = Field(min_length=1)

    @model_validator(mode="after")
    def _dependencies_point_backwards(self) -> Plan:
        # Only earlier steps may be depended on: that alone guarantees the graph is acyclic.
        for number, step in enumerate(self.steps, start=1):
            for dep in step.depends_on or []:
                if not 1 <= dep < number:
                    raise ValueError(
                        f"step {number}: depends_on {dep} must name an earlier step "
                        f"(1..{number - 1})"
                    )
        return self

    def dependencies(self) -> list[list[int]]:
        """Each step's dependencies with the default (the step before) filled in."""
        return [
            sorted(set(step.depends_on))
            if step.depends_on is not None
            else ([number - 1] if number > 1 else [])
            for number, step in enumerate(self.steps, start=1)
        ]
