"""Retry policy: how many attempts, how long between them, and which failures deserve another."""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent_engine.errors import EngineError, ProviderError


class RetryPolicy(BaseModel):
    """Exponential backoff with full jitter: delay_n = uniform(0, min(cap, base × factor^(n-1)))."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=1, ge=1, le=20)
    initial_backoff_s: float = Field(default=1.0, ge=0, le=3600)
    max_backoff_s: float = Field(default=60.0, ge=0, le=86_400)
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)

    def delay_s(self, failed_attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the attempt after ``failed_attempt`` (1-based)."""
        ceiling = min(
            self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (failed_attempt - 1)
        )
        return (rng or random).uniform(0, ceiling)


# Per step type: LLM steps meet flaky providers and retry; file and command steps fail for reasons
# another attempt will not change (and commands are not re-run behind a human's back).
DEFAULT_POLICIES: dict[str, RetryPolicy] = {
    "analyze": RetryPolicy(max_attempts=3),
    "summarize": RetryPolicy(max_attempts=3),
    "propose_edit": RetryPolicy(max_attempts=3),
}


def policy_for(
    step_type: str, override: dict[str, Any] | None, max_attempts: int | None
) -> RetryPolicy:
    """The step's policy: its own override, else its type's default; ``max_attempts`` wins."""
    policy = (
        RetryPolicy.model_validate(override)
        if override
        else DEFAULT_POLICIES.get(step_type, RetryPolicy())
    )
    if max_attempts is not None:
        policy = policy.model_copy(update={"max_attempts": max_attempts})
    return policy


def is_retryable(error: EngineError) -> bool:
    """Provider timeouts, 5xx and 429 retry; workspace violations, validation and the rest don't."""
    if isinstance(error, ProviderError):
        return error.is_retryable
    return bool(getattr(type(error), "retryable", False))
