"""The one provider interface: messages and parameters in; text/JSON, usage and raw response out."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent_engine.domain.canonical import content_hash

# Hints that steer routing for this moment only (how much budget is left): they are not part of
# what is asked, so the request's hash (replay matching, the response cache) leaves them out.
# The share of the tightest budget left, which the budget saver routes by (never hashed).
BUDGET_FRACTION_HINT = "budget_fraction_left"
ROUTING_ONLY_HINTS = frozenset({BUDGET_FRACTION_HINT})


def _unset(value: object) -> bool:
    return value is None


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class CompletionRequest(BaseModel):
    """What a caller asks of a model. ``step_type`` and ``hints`` feed routing, not the provider."""

    model_config = ConfigDict(frozen=True)

    messages: list[ChatMessage]
    max_output_tokens: int = Field(default=1024, ge=1, le=200_000)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    json_schema: dict[str, Any] | None = None
    step_type: str | None = None
    hints: dict[str, Any] = Field(default_factory=dict)
    # Sampling parameters a caller of the OpenAI-compatible endpoint may set. Left out of the
    # dump while unset, so a request without them hashes exactly as before they existed (recorded
    # runs are replayed by that hash).
    top_p: float | None = Field(default=None, ge=0.0, le=1.0, exclude_if=_unset)
    seed: int | None = Field(default=None, exclude_if=_unset)
    stop: list[str] | None = Field(default=None, max_length=4, exclude_if=_unset)


class Usage(BaseModel):
    """Token usage of one or more calls; an immutable value that adds up."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            estimated=self.estimated or other.estimated,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class WireExchange(BaseModel):
    """One HTTP (or in-process) exchange with a provider, exactly as it went: the body sent and
    the body received as text, secrets masked. ``format`` names the wire format."""

    model_config = ConfigDict(frozen=True)

    format: str
    path: str
    request_body: str
    status: int | None = None
    response_body: str | None = None


class CompletionResponse(BaseModel):
    """A provider's answer, normalised. ``raw`` is the provider's body with secrets removed;
    ``wire`` is the exchange as it went on the wire (None for providers without one)."""

    model_config = ConfigDict(frozen=True)

    text: str
    json_value: Any | None = None
    usage: Usage
    provider: str
    model: str
    raw: dict[str, Any] = Field(default_factory=dict)
    latency_ms: float = 0.0
    wire: WireExchange | None = None


class LLMCallRecord(BaseModel):
    """One provider call (successful or not) as the ledger stores it in ``llm_calls``."""

    model_config = ConfigDict(frozen=True)

    provider: str
    model: str
    request: dict[str, Any]
    request_hash: str
    response: dict[str, Any] | None
    usage: Usage
    cost_usd: Decimal | None  # None: the model has no known price (unpriced, flagged)
    price_source: str | None = None
    latency_ms: float
    attempt: int = 1
    error: str | None = None
    routing: dict[str, Any] | None = None
    replayed: bool = False
    # False when ``cost_usd`` is an assumed price (the model has no known one) or None.
    priced: bool = True
    # Served from an earlier call's recorded response (``cache_of``): no tokens, $0.
    cached: bool = False
    cache_of: str | None = None
    # What this call saved and how: ``cache`` (the original's cost) or ``routing`` (the budget
    # saver chose a cheaper model than it would have).
    saved_usd: Decimal | None = None
    saving: Literal["cache", "routing"] | None = None
    # The budget reservation the call settled (None: no budget applied to it).
    reservation_id: str | None = None


class WorstCase(BaseModel):
    """The most a call can cost: the model that would answer, its whole prompt (counted by
    ``prompt_count_method``) and every requested output token, at that model's prices."""

    model_config = ConfigDict(frozen=True)

    model: str
    usd: Decimal | None  # None: the model has no known price
    tokens: int
    prompt_tokens: int
    prompt_count_method: str = "heuristic"


def canonical_request(request: CompletionRequest) -> dict[str, Any]:
    """The request as recorded and hashed: its JSON form without the routing-only hints."""
    document = request.model_dump(mode="json")
    if ROUTING_ONLY_HINTS & document["hints"].keys():
        hints = document["hints"]
        document["hints"] = {k: v for k, v in hints.items() if k not in ROUTING_ONLY_HINTS}
    return document


def canonical_request_hash(request: CompletionRequest) -> str:
    """SHA-256 of the canonical JSON of the request (the same for every attempt and model)."""
    return content_hash(canonical_request(request))


@dataclass(frozen=True)
class CallContext:
    """Where a model call comes from: the run, its step (None for the planner and its
    revisions), the step's attempt and the call's purpose (``step``, ``plan``, ``revision``).
    The engine binds a client to one context; wrappers around the client (replay, and later
    tracing) read it instead of guessing from the request."""

    run_id: str
    step_number: int | None
    attempt: int
    purpose: str


class LLMProvider(abc.ABC):
    """A model vendor or runtime. Implementations never log or store API keys."""

    name: str

    @abc.abstractmethod
    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        """Call ``model`` with ``request``; raise ``ProviderError`` on failure."""


class LLMClient(abc.ABC):
    """What executors and the planner call: routes, calls, and keeps the call records."""

    @abc.abstractmethod
    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        """Answer ``request`` with some model; every attempt is appended to :attr:`calls`."""

    @property
    @abc.abstractmethod
    def calls(self) -> list[LLMCallRecord]:
        """Every provider call made through this client so far, in order."""

    async def estimate_cost(self, request: CompletionRequest) -> Decimal | None:
        """Estimated USD of answering ``request`` (nothing is called); None when this client
        cannot tell, or the model it would use has no known price."""
        return None

    async def worst_case(
        self, request: CompletionRequest, room_usd: Decimal | None = None
    ) -> WorstCase | None:
        """The most answering ``request`` can cost with ``room_usd`` left (nothing is called):
        what a budget reservation holds. None when this client cannot tell. Raises
        ``BudgetExceededError`` when no model it could use fits ``room_usd``."""
        return None

    async def complete_within(
        self, request: CompletionRequest, limit_usd: Decimal
    ) -> CompletionResponse:
        """``complete``, spending at most ``limit_usd`` over all its attempts and fallbacks (a
        reservation's amount). A client that makes one call per request needs nothing more."""
        return await self.complete(request)
