"""Replay as a wrapper around an LLM client: answers come from a run's recorded calls.

A :class:`ReplayingLLMClient` is bound to one :class:`~agent_engine.llm.base.CallContext` and
given the recorded exchanges of the run it replays (the engine loads them; nothing here reads
the database). A request is matched to a recorded exchange of the same purpose and step number
with the same request hash, in order: the k-th identical request gets the k-th exchange. The
recorded answer comes back without any provider being called: the new call record says
``replayed``, keeps the provider, model and tokens as data, and costs $0 with a latency of 0
(the time was spent by the original, whose record keeps it). An exchange whose every attempt
failed is replayed as the same failure.

A request with no match is a miss: ``on_miss="fail"`` raises :class:`ReplayMissError` naming
the fields that differ from the nearest recorded request; ``on_miss="live"`` (a fork that
replays what it can) hands the request, and every one after it, to the wrapped client.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal

from agent_engine.domain.canonical import content_hash
from agent_engine.errors import ProviderError, ReplayMissError
from agent_engine.llm.base import (
    CallContext,
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMClient,
    Usage,
    canonical_request,
)

OnMiss = Literal["fail", "live"]
ExchangeKey = tuple[str, int | None, str]  # purpose, step number, request hash
# What a recorded request keeps beyond the request itself (the wire body, where it came from).
_NOT_REQUEST = frozenset({"wire", "replayed_from"})
# Provider failures another attempt may cure (llm/transport.py's classification).
_RETRYABLE_KINDS = frozenset({"timeout", "connection", "rate_limited", "server_error"})
MAX_DIFFERENCES = 10
_SHOWN_CHARS = 200


@dataclass(frozen=True)
class RecordedCall:
    """One ``llm_calls`` row of the original run, as replay needs it."""

    id: str
    purpose: str
    step_number: int | None
    request_hash: str
    request: dict[str, Any]
    response: dict[str, Any] | None
    provider: str
    model: str
    usage: Usage
    attempt: int
    error: str | None


@dataclass(frozen=True)
class RecordedExchange:
    """One ``complete`` of the original: its attempts in order (retries, fallbacks); answered
    when the last one succeeded."""

    calls: tuple[RecordedCall, ...]

    @property
    def key(self) -> ExchangeKey:
        first = self.calls[0]
        return (first.purpose, first.step_number, first.request_hash)

    @property
    def request(self) -> dict[str, Any]:
        """The normalised request the original sent."""
        return {k: v for k, v in self.calls[0].request.items() if k not in _NOT_REQUEST}

    @cached_property
    def rehashed(self) -> str:
        """The recorded request's hash computed again now: a record made before the canonical
        form changed still matches the request it records."""
        return content_hash(self.request)


def exchanges_of(calls: Sequence[RecordedCall]) -> list[RecordedExchange]:
    """Group recorded calls (in recorded order) into exchanges: a new one starts at attempt 1
    or where the purpose, step or request changes."""
    exchanges: list[list[RecordedCall]] = []
    for call in calls:
        current = exchanges[-1] if exchanges else None
        if (
            current is None
            or call.attempt <= 1
            or current[-1].error is None
            or (current[0].purpose, current[0].step_number, current[0].request_hash)
            != (call.purpose, call.step_number, call.request_hash)
        ):
            exchanges.append([call])
        else:
            current.append(call)
    return [RecordedExchange(tuple(group)) for group in exchanges]


@dataclass
class ReplayRecords:
    """The exchanges of the run being replayed, and how many of each this run has used."""

    exchanges: list[RecordedExchange]
    used: Counter[ExchangeKey] = field(default_factory=Counter)

    def take(self, key: ExchangeKey) -> RecordedExchange | None:
        """The next unused exchange with ``key`` (marked used), or None. An exchange whose
        recorded hash differs matches too when its recorded request hashes to ``key`` now."""
        found = self._next(lambda e: e.key == key)
        if found is None:
            purpose, step_number, requested = key
            found = self._next(
                lambda e: e.key[:2] == (purpose, step_number) and e.rehashed == requested
            )
        return found

    def _next(self, matches: Callable[[RecordedExchange], bool]) -> RecordedExchange | None:
        """The first matching exchange not used yet (the k-th of a key after k - 1 uses)."""
        seen: Counter[ExchangeKey] = Counter()
        for exchange in self.exchanges:
            if not matches(exchange):
                continue
            seen[exchange.key] += 1
            if seen[exchange.key] > self.used[exchange.key]:
                self.used[exchange.key] += 1
                return exchange
        return None

    def nearest(
        self, call: CallContext, request: dict[str, Any]
    ) -> tuple[RecordedExchange | None, list[dict[str, Any]]]:
        """The recorded exchange whose request differs least from ``request`` (same purpose and
        step first, else any), and the differences."""
        same = [
            e for e in self.exchanges if e.key[0] == call.purpose and e.key[1] == call.step_number
        ]
        best: tuple[RecordedExchange | None, list[dict[str, Any]]] = (None, [])
        for exchange in same or self.exchanges:
            found = list(differences(exchange.request, request))
            if best[0] is None or len(found) < len(best[1]):
                best = (exchange, found)
        return best


class RecordedRuns:
    """The recorded calls of finished runs by run id, kept for the replays of this process: a
    finished run's records do not change, so each replayed step need not read them again.
    Holds at most ``size`` runs, the least recently used leaving first."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._runs: OrderedDict[str, list[RecordedCall]] = OrderedDict()

    def get(self, run_id: str) -> list[RecordedCall] | None:
        """The run's calls, if kept."""
        calls = self._runs.get(run_id)
        if calls is not None:
            self._runs.move_to_end(run_id)
        return calls

    def put(self, run_id: str, calls: list[RecordedCall]) -> None:
        """Keep the run's calls (in recorded order)."""
        self._runs[run_id] = calls
        self._runs.move_to_end(run_id)
        while len(self._runs) > self.size:
            self._runs.popitem(last=False)


def _path(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else key


def _shown(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _SHOWN_CHARS:
        return value[:_SHOWN_CHARS] + f"… ({len(value)} characters)"
    if isinstance(value, dict | list):
        text = repr(value)
        return value if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"
    return value


def differences(expected: Any, actual: Any, prefix: str = "") -> Iterator[dict[str, Any]]:
    """Each field path where ``actual`` differs from ``expected`` (``messages[1].content``),
    with both values (long ones cut) and, for text, where the first difference is."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(expected.keys() | actual.keys()):
            yield from differences(expected.get(key), actual.get(key), _path(prefix, key))
        return
    if isinstance(expected, list) and isinstance(actual, list) and expected and actual:
        for index in range(max(len(expected), len(actual))):
            left = expected[index] if index < len(expected) else None
            right = actual[index] if index < len(actual) else None
            yield from differences(left, right, _path(prefix, index))
        return
    if expected == actual:
        return
    found: dict[str, Any] = {
        "path": prefix or "$",
        "expected": _shown(expected),
        "actual": _shown(actual),
    }
    if isinstance(expected, str) and isinstance(actual, str):
        found["first_difference_at"] = next(
            (i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b),
            min(len(expected), len(actual)),
        )
    yield found


class ReplayingLLMClient(LLMClient):
    """Serves every call from the records; never touches a provider unless told to go live."""

    def __init__(
        self,
        inner: LLMClient,
        records: ReplayRecords,
        call: CallContext,
        *,
        on_miss: OnMiss = "fail",
        live: bool = False,
    ) -> None:
        self.inner = inner
        self.records = records
        self.call = call
        self.on_miss = on_miss
        self.live = live  # a fork whose replay missed once calls the model from then on
        self._calls: list[LLMCallRecord] = []

    @property
    def calls(self) -> list[LLMCallRecord]:
        return self._calls

    async def estimate_cost(self, request: CompletionRequest) -> Decimal | None:
        """Nothing is spent on a replayed call; a live one costs what the wrapped client says."""
        return await self.inner.estimate_cost(request) if self.live else Decimal(0)

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        """The recorded answer to ``request``; a miss fails or goes live (``on_miss``)."""
        if self.live:
            return await self._live(request)
        document = canonical_request(request)
        requested = content_hash(document)
        exchange = self.records.take((self.call.purpose, self.call.step_number, requested))
        if exchange is None:
            if self.on_miss == "live":
                self.live = True
                return await self._live(request)
            raise self._miss(document, requested)
        replayed = [self._replayed(recorded, document) for recorded in exchange.calls]
        self._calls.extend(replayed)
        last = exchange.calls[-1]
        if last.error is not None or last.response is None:
            kind = (last.error or "error").split(":", 1)[0]
            raise ProviderError(
                f"replayed from call {last.id}: {last.error}",
                retryable=kind in _RETRYABLE_KINDS,
                kind=kind,
                replayed_from=last.id,
            )
        answer = {k: v for k, v in last.response.items() if k != "wire"}
        return CompletionResponse.model_validate({**answer, "latency_ms": 0.0})

    async def _live(self, request: CompletionRequest) -> CompletionResponse:
        before = len(self.inner.calls)
        try:
            return await self.inner.complete(request)
        finally:
            self._calls.extend(self.inner.calls[before:])

    def _replayed(self, recorded: RecordedCall, document: dict[str, Any]) -> LLMCallRecord:
        return LLMCallRecord(
            provider=recorded.provider,
            model=recorded.model,
            request={**document, "replayed_from": recorded.id},
            request_hash=recorded.request_hash,
            response=recorded.response,
            usage=recorded.usage,
            cost_usd=Decimal(0),
            price_source="replay",
            latency_ms=0.0,
            attempt=recorded.attempt,
            error=recorded.error,
            replayed=True,
        )

    def _miss(self, document: dict[str, Any], requested: str) -> ReplayMissError:
        nearest, found = self.records.nearest(self.call, document)
        where = (
            f"step {self.call.step_number}"
            if self.call.step_number is not None
            else f"the {self.call.purpose} call"
        )
        if nearest is None:
            detail = f"replay miss at {where}: the original run recorded no model call"
        else:
            paths = ", ".join(d["path"] for d in found[:MAX_DIFFERENCES]) or "none (used up)"
            detail = (
                f"replay miss at {where} ({self.call.purpose}): no recorded call matches the "
                f"request; it differs from the nearest recorded one in {paths}"
            )
        return ReplayMissError(
            detail,
            step_number=self.call.step_number,
            purpose=self.call.purpose,
            request_hash=requested,
            nearest_call_id=nearest.calls[0].id if nearest is not None else None,
            differences=found[:MAX_DIFFERENCES],
        )
