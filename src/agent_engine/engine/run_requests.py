"""The body of ``POST /v1/agent-runs``: what a run is asked to do, within which limits."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import ConfigDict, Field

from agent_engine.domain.approval_policy import (
    DEFAULT_POLICY,
    POLICY_NAME_PATTERN,
    ApprovalPolicy,
)
from agent_engine.domain.plan import PlanStep
from agent_engine.domain.text import StorableModel

MAX_GOAL_CHARS = 20_000


# A project's name, wherever one is given (a run's ``project``, the ``OpenAI-Project`` header).
PROJECT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"


class CreateRunRequest(StorableModel):
    """The body of ``POST /v1/agent-runs``."""

    model_config = ConfigDict(extra="forbid")

    goal: str = Field(min_length=1, max_length=MAX_GOAL_CHARS)
    workspace: str | None = Field(default=None, min_length=1, max_length=4096)
    # At most AGENT_ENGINE_MAX_PLAN_STEPS, checked by the engine (a setting, not a constant).
    steps: list[PlanStep] | None = Field(default=None, min_length=1)
    budget_usd: Decimal | None = Field(default=None, ge=0, max_digits=20, decimal_places=9)
    budget_tokens: int | None = Field(default=None, ge=0, le=2**62)
    over_budget: Literal["warn", "refuse"] = Field(
        default="warn",
        description="When the plan's estimated cost exceeds budget_usd: create the run with a "
        "warning (options.budget_warning), or refuse it (422 estimate_over_budget).",
    )
    project: str | None = Field(
        default=None,
        pattern=PROJECT_NAME_PATTERN,
        description="The project whose monthly budget the run's model calls count against.",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    policy: str = Field(
        default=DEFAULT_POLICY,
        pattern=POLICY_NAME_PATTERN,
        description="The server's named approval policy that decides what runs without a person.",
    )
    approval_policy: ApprovalPolicy = Field(
        default_factory=ApprovalPolicy,
        description="The run's own rules: they may only add require_approval.",
    )
    plan_approval: bool = False
    auto_start: bool = False
    max_parallel: int = Field(default=4, ge=1, le=64)
    # A second person must approve: not the run's creator, nor (for the plan) the plan's.
    four_eyes: bool = False
    planning: Literal["fixed", "adaptive"] = Field(
        default="fixed",
        description="adaptive: the planner may revise the steps not yet started after each "
        "step that observes (docs/adaptive-planning.md).",
    )
    max_steps: int | None = Field(
        default=None, ge=1, description="Adaptive: steps over all plan versions, at most."
    )
    max_replans: int | None = Field(
        default=None, ge=0, description="Adaptive: plan revisions, at most."
    )
    response_cache: bool = Field(
        default=False,
        description="Answer a model request identical to one already recorded (sampling "
        "parameters included) from its recorded response, at $0 (docs/costs.md).",
    )
