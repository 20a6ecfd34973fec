"""How hard is a request? A tier from step type, prompt size, output size, keywords and hints."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from agent_engine.llm.base import CompletionRequest
from agent_engine.llm.catalog import TIERS, Tier
from agent_engine.llm.tokens import estimate_message_tokens

STEP_TYPE_TIERS: dict[str, Tier] = {
    "plan": "medium",
    "analyze": "medium",
    "review": "medium",
    "edit_file": "medium",
    "propose_edit": "medium",
    "summarize": "small",
    "classify": "small",
    "extract": "small",
}
DEFAULT_TIER: Tier = "small"
# Prompt sizes (approximate tokens) and output sizes beyond which a request moves up a tier.
LARGE_PROMPT_TOKENS = 16_000
HUGE_PROMPT_TOKENS = 64_000
LARGE_OUTPUT_TOKENS = 4_096
ESCALATION_KEYWORDS = re.compile(
    r"\b(refactor\w*|architect\w*|security|vulnerab\w*|prove|proof|formal\w*|concurren\w*"
    r"|race condition|threat model\w*|migrat\w*)\b",
    re.IGNORECASE,
)


class ComplexityEstimate(BaseModel):
    """The tier a request needs and the reasons, in the order they were applied."""

    model_config = ConfigDict(frozen=True)

    tier: Tier
    prompt_tokens: int
    keywords: list[str]
    reasons: list[str]


def raise_tier(tier: Tier, steps: int = 1) -> Tier:
    """``tier`` moved up by ``steps`` (capped at the largest tier)."""
    return TIERS[min(len(TIERS) - 1, TIERS.index(tier) + steps)]


def _hinted_tier(hints: dict[str, Any]) -> Tier | None:
    value = hints.get("tier")
    for tier in TIERS:
        if value == tier:
            return tier
    return None


def estimate_complexity(request: CompletionRequest) -> ComplexityEstimate:
    """Estimate the tier of ``request``; ``hints.tier`` overrides the estimate."""
    prompt_tokens = estimate_message_tokens(request.messages)
    # Keywords are looked for in what the caller says (system/user), not in the model's replies.
    said = "\n".join(m.content for m in request.messages if m.role != "assistant")
    keywords = sorted({match.lower() for match in ESCALATION_KEYWORDS.findall(said)})
    hinted = _hinted_tier(request.hints)
    if hinted is not None:
        return ComplexityEstimate(
            tier=hinted, prompt_tokens=prompt_tokens, keywords=keywords, reasons=["hints.tier"]
        )
    step_type = request.step_type or ""
    tier = STEP_TYPE_TIERS.get(step_type, DEFAULT_TIER)
    reasons = [f"step_type {step_type or '(none)'} -> {tier}"]
    if prompt_tokens > HUGE_PROMPT_TOKENS:
        tier = "large"
        reasons.append(f"~{prompt_tokens} prompt tokens > {HUGE_PROMPT_TOKENS} -> large")
    elif prompt_tokens > LARGE_PROMPT_TOKENS:
        tier = raise_tier(tier)
        reasons.append(f"~{prompt_tokens} prompt tokens > {LARGE_PROMPT_TOKENS} -> {tier}")
    if request.max_output_tokens > LARGE_OUTPUT_TOKENS:
        tier = raise_tier(tier)
        reasons.append(f"max_output_tokens {request.max_output_tokens} -> {tier}")
    if keywords:
        tier = raise_tier(tier)
        reasons.append(f"keywords {', '.join(keywords)} -> {tier}")
    return ComplexityEstimate(
        tier=tier, prompt_tokens=prompt_tokens, keywords=keywords, reasons=reasons
    )
