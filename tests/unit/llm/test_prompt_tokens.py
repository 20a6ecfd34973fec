"""Prompt token counts: OpenAI's rule with its tokenizer for OpenAI models, else the heuristic."""

from __future__ import annotations

import pytest

from agent_engine.llm.base import ChatMessage
from agent_engine.llm.tokens import (
    HEURISTIC_METHOD,
    PromptCount,
    _texts_tokens,
    count_prompt_tokens,
    estimate_message_tokens,
    message_text_tokens,
    openai_encoding_name,
)
from agent_engine.llm.vendored_encodings import load_encoding

CHAT = [
    ChatMessage(role="system", content="You are a careful code reviewer."),
    ChatMessage(role="user", content="Review utils.py and list three concrete problems."),
    ChatMessage(role="assistant", content="1. No tests. 2. Broad excepts. 3. Globals."),
    ChatMessage(role="user", content="Explain the second one, with an example 🙂."),
]


def _by_the_rule(messages: list[ChatMessage], encoding_name: str, per_message: int = 3) -> int:
    encoding = load_encoding(encoding_name)
    texts = sum(len(encoding.encode(m.role)) + len(encoding.encode(m.content)) for m in messages)
    return texts + per_message * len(messages) + 3


def test_a_prompt_counts_what_openai_reported_for_it() -> None:
    # OpenAI's API reported prompt_tokens=17 for exactly this request to gpt-4o-mini.
    question = [ChatMessage(role="user", content="Who won the World Cup in 2022?")]
    count = count_prompt_tokens(question, provider_kind="openai", model="gpt-4o-mini")
    assert count == PromptCount(17, "tiktoken:o200k_base")


@pytest.mark.parametrize(
    ("model", "encoding_name"),
    [
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("gpt-4.1-mini", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("ft:gpt-4o-mini:acme::abc123", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
    ],
)
def test_openai_models_are_counted_by_their_encoding_with_the_chat_framing(
    model: str, encoding_name: str
) -> None:
    count = count_prompt_tokens(CHAT, provider_kind="openai", model=model)
    assert count.method == f"tiktoken:{encoding_name}"
    assert count.tokens == _by_the_rule(CHAT, encoding_name)
    assert not count.estimated


def test_the_framing_is_three_per_message_plus_three_for_the_reply() -> None:
    one = count_prompt_tokens(CHAT[:1], provider_kind="openai", model="gpt-4o")
    two = count_prompt_tokens(CHAT[:2], provider_kind="openai", model="gpt-4o")
    encoding = load_encoding("o200k_base")
    second = CHAT[1]
    assert two.tokens - one.tokens == 3 + len(encoding.encode("user")) + len(
        encoding.encode(second.content)
    )
    assert count_prompt_tokens([], provider_kind="openai", model="gpt-4o").tokens == 3


def test_gpt_35_turbo_0301_framed_each_message_with_four_tokens() -> None:
    count = count_prompt_tokens(CHAT, provider_kind="openai", model="gpt-3.5-turbo-0301")
    assert count.tokens == _by_the_rule(CHAT, "cl100k_base", per_message=4)


@pytest.mark.parametrize(
    ("provider_kind", "model"),
    [
        ("anthropic", "claude-sonnet-4-0"),
        ("anthropic", "gpt-4o"),  # an OpenAI name behind another wire format: not OpenAI
        ("openai", "llama3.1:8b"),  # an OpenAI-compatible server with its own tokenizer
        ("openai", "gpt-oss-20b"),  # o200k_harmony: another chat format, not vendored
        ("offline", "offline-1"),
        ("local", "gemma-3-270m"),
    ],
)
def test_other_models_get_the_heuristic_marked_as_such(provider_kind: str, model: str) -> None:
    count = count_prompt_tokens(CHAT, provider_kind=provider_kind, model=model)
    assert count == PromptCount(estimate_message_tokens(CHAT), HEURISTIC_METHOD)
    assert count.estimated


def test_unknown_openai_model_names_have_no_encoding() -> None:
    assert openai_encoding_name("openai", "my-finetune") is None
    assert openai_encoding_name("openai", "gpt-4o") == "o200k_base"
    assert openai_encoding_name("anthropic", "gpt-4o") is None


def test_special_token_text_in_a_message_counts_as_ordinary_text() -> None:
    message = [ChatMessage(role="user", content="<|endoftext|>")]
    count = count_prompt_tokens(message, provider_kind="openai", model="gpt-4o")
    ordinary = load_encoding("o200k_base").encode_ordinary("<|endoftext|>")
    assert count.tokens == len(ordinary) + 1 + 3 + 3  # content, "user", framing, priming


def test_a_prompt_counted_again_is_encoded_once_and_counts_the_same() -> None:
    # A budgeted call routes twice (its worst case, then its call): one encoding serves both.
    _texts_tokens.cache_clear()
    first = message_text_tokens(CHAT, "o200k_base")
    again = message_text_tokens([message.model_copy() for message in CHAT], "o200k_base")
    assert first == again == _by_the_rule(CHAT, "o200k_base") - 3 * len(CHAT) - 3
    assert (_texts_tokens.cache_info().hits, _texts_tokens.cache_info().misses) == (1, 1)
    other = [*CHAT[:-1], ChatMessage(role="user", content="Explain the third one instead.")]
    assert message_text_tokens(other, "o200k_base") != first
    assert _texts_tokens.cache_info().misses == 2  # a different prompt is encoded anew
