"""The replaying client on its own: order of identical requests, failures replayed as failures,
misses that name the differing fields, and a fork's fall-through to the live client."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from agent_engine.domain.canonical import content_hash
from agent_engine.errors import ProviderError, ReplayMissError
from agent_engine.llm.base import (
    CallContext,
    ChatMessage,
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMClient,
    Usage,
)
from agent_engine.llm.replaying import (
    RecordedCall,
    ReplayingLLMClient,
    ReplayRecords,
    differences,
    exchanges_of,
)

STEP = CallContext(run_id="r", step_number=3, attempt=1, purpose="step")


def request(text: str, **extra: Any) -> CompletionRequest:
    return CompletionRequest(
        messages=[
            ChatMessage(role="system", content="sys"),
            ChatMessage(role="user", content=text),
        ],
        **extra,
    )


def recorded(
    number: int,
    req: CompletionRequest,
    answer: str | None,
    *,
    attempt: int = 1,
    step: int | None = 3,
    purpose: str = "step",
) -> RecordedCall:
    document = req.model_dump(mode="json")
    response = None
    if answer is not None:
        response = CompletionResponse(
            text=answer, usage=Usage(input_tokens=7, output_tokens=2), provider="p", model="m"
        ).model_dump(mode="json")
    return RecordedCall(
        id=f"call-{number}",
        purpose=purpose,
        step_number=step,
        request_hash=content_hash(document),
        request={**document, "wire": {"body": "{}"}},
        response=response,
        provider="p",
        model="m",
        usage=Usage(input_tokens=7, output_tokens=2),
        attempt=attempt,
        error=None if answer is not None else "server_error: HTTP 503",
    )


class Live(LLMClient):
    """Stands for the router: answers "live" and records one priced call."""

    def __init__(self) -> None:
        self._calls: list[LLMCallRecord] = []

    @property
    def calls(self) -> list[LLMCallRecord]:
        return self._calls

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        self._calls.append(
            LLMCallRecord(
                provider="p",
                model="m",
                request=request.model_dump(mode="json"),
                request_hash=content_hash(request.model_dump(mode="json")),
                response={},
                usage=Usage(),
                cost_usd=Decimal("0.01"),
                latency_ms=5.0,
            )
        )
        return CompletionResponse(text="live", usage=Usage(), provider="p", model="m")


def client(calls: list[RecordedCall], **options: Any) -> ReplayingLLMClient:
    return ReplayingLLMClient(Live(), ReplayRecords(exchanges_of(calls)), STEP, **options)


async def test_the_kth_identical_request_gets_the_kth_recorded_answer() -> None:
    same = request("hello")
    replaying = client([recorded(1, same, "first"), recorded(2, same, "second")])
    assert (await replaying.complete(same)).text == "first"
    assert (await replaying.complete(same)).text == "second"
    assert [c.request["replayed_from"] for c in replaying.calls] == ["call-1", "call-2"]
    assert all(c.replayed and c.cost_usd == 0 and c.latency_ms == 0 for c in replaying.calls)
    assert replaying.calls[0].usage.input_tokens == 7
    with pytest.raises(ReplayMissError) as missed:
        await replaying.complete(same)  # a third time: the original asked only twice
    assert missed.value.data["differences"] == []


async def test_exchanges_already_served_to_the_run_are_skipped() -> None:
    same = request("hello")
    exchanges = exchanges_of([recorded(1, same, "first"), recorded(2, same, "second")])
    served = Counter([exchanges[0].key])
    replaying = ReplayingLLMClient(Live(), ReplayRecords(exchanges, served), STEP)
    assert (await replaying.complete(same)).text == "second"


async def test_a_retried_call_replays_every_attempt_and_its_answer() -> None:
    same = request("hello")
    replaying = client([recorded(1, same, None), recorded(2, same, "after retry", attempt=2)])
    assert (await replaying.complete(same)).text == "after retry"
    assert [(c.attempt, c.error is None) for c in replaying.calls] == [(1, False), (2, True)]


async def test_a_call_that_failed_is_replayed_as_the_same_failure() -> None:
    same = request("hello")
    replaying = client([recorded(1, same, None), recorded(2, same, None, attempt=2)])
    with pytest.raises(ProviderError) as failed:
        await replaying.complete(same)
    assert failed.value.is_retryable and failed.value.data["kind"] == "server_error"
    assert len(replaying.calls) == 2


async def test_a_miss_names_the_differing_fields_of_the_nearest_recorded_request() -> None:
    far = recorded(1, request("something else entirely", max_output_tokens=10), "a")
    near = recorded(2, request("hello world"), "b")
    other_step = recorded(3, request("hello there"), "c", step=4)
    replaying = client([far, near, other_step])
    with pytest.raises(ReplayMissError) as missed:
        await replaying.complete(request("hello there"))
    error = missed.value
    assert error.code == "replay_miss" and error.data["step_number"] == 3
    assert error.data["nearest_call_id"] == "call-2"  # same step first, fewest differences
    (only,) = error.data["differences"]
    assert only["path"] == "messages[1].content"
    assert (only["expected"], only["actual"], only["first_difference_at"]) == (
        "hello world",
        "hello there",
        6,
    )
    assert "messages[1].content" in error.detail and "step 3" in error.detail
    assert replaying.calls == []


def test_differences_walk_nested_fields_and_lists() -> None:
    found = list(
        differences(
            {"a": 1, "b": [{"c": "x"}, {"c": "y"}], "d": None},
            {"a": 2, "b": [{"c": "x"}], "e": True},
        )
    )
    assert [d["path"] for d in found] == ["a", "b[1]", "e"]


async def test_on_miss_live_calls_the_wrapped_client_from_the_first_miss_on() -> None:
    known = request("known")
    replaying = client([recorded(1, known, "recorded")], on_miss="live")
    assert (await replaying.complete(request("new"))).text == "live"
    # After one miss, even a recorded request goes live: the run left its original's path.
    assert (await replaying.complete(known)).text == "live"
    assert [c.replayed for c in replaying.calls] == [False, False]
    assert replaying.calls[0].cost_usd == Decimal("0.01")


async def test_a_planner_call_is_matched_by_purpose() -> None:
    plan = request("plan it")
    planner = CallContext(run_id="r", step_number=None, attempt=1, purpose="plan")
    records = ReplayRecords(
        exchanges_of([recorded(1, plan, "the plan", step=None, purpose="plan")])
    )
    assert (await ReplayingLLMClient(Live(), records, planner).complete(plan)).text == "the plan"
    with pytest.raises(ReplayMissError):
        await client([recorded(1, plan, "x", step=None, purpose="plan")]).complete(plan)


async def test_a_record_hashed_the_old_way_matches_the_request_it_records() -> None:
    same = request("hello")
    old = recorded(1, same, "from before")
    stale = RecordedCall(**{**old.__dict__, "request_hash": "0" * 64})
    replaying = client([stale])
    assert (await replaying.complete(same)).text == "from before"
    with pytest.raises(ReplayMissError):
        await replaying.complete(same)  # used once, like any record
