"""The optional sampling parameters (top_p, seed, stop) must not change the hash of a request
that does not set them: recorded runs are replayed by that hash."""

from __future__ import annotations

from agent_engine.domain.canonical import content_hash
from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.router.service import request_hash

# The hash of this request as computed before the sampling parameters existed.
RECORDED_HASH = "2ad1f1e4dbf2b3c42e229ddee7c5e261fea8a64c923abf3ba97a02cb123f2e63"
OLD_FIELDS = {"messages", "max_output_tokens", "temperature", "json_schema", "step_type", "hints"}


def _old_style(**extra: object) -> CompletionRequest:
    return CompletionRequest(
        messages=[
            ChatMessage(role="system", content="be brief"),
            ChatMessage(role="user", content="hello"),
        ],
        max_output_tokens=64,
        temperature=0.2,
        step_type="analyze",
        hints={"tier": "small"},
        **extra,  # type: ignore[arg-type]
    )


def test_a_request_without_sampling_parameters_hashes_as_it_always_did() -> None:
    request = _old_style()
    assert set(request.model_dump(mode="json")) == OLD_FIELDS
    assert request_hash(request) == RECORDED_HASH


def test_sampling_parameters_once_set_are_part_of_the_hash() -> None:
    hashes = {
        request_hash(_old_style(top_p=0.5)),
        request_hash(_old_style(seed=7)),
        request_hash(_old_style(stop=["END"])),
        RECORDED_HASH,
    }
    assert len(hashes) == 4
    dumped = _old_style(seed=7).model_dump(mode="json")
    assert dumped["seed"] == 7 and "top_p" not in dumped
    assert content_hash(dumped) == request_hash(_old_style(seed=7))
