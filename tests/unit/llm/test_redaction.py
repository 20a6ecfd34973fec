"""Secrets never leave in anything recorded; text without them is left as it is."""

from __future__ import annotations

import pytest

from agent_engine.llm.redaction import MASK, redact

SECRET = "sk-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def _secret_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


def test_a_secret_value_anywhere_in_a_tree_is_masked() -> None:
    record = {"messages": [{"role": "user", "content": f"key is {SECRET}!"}], "n": 1}
    masked = redact(record)
    assert masked == {"messages": [{"role": "user", "content": f"key is {MASK}!"}], "n": 1}
    assert SECRET in record["messages"][0]["content"]  # the original is not changed


def test_sensitive_headers_and_bearer_tokens_are_masked() -> None:
    masked = redact({"headers": {"Authorization": "x", "accept": "json"}, "note": "Bearer abc.def"})
    assert masked == {
        "headers": {"Authorization": MASK, "accept": "json"},
        "note": f"Bearer {MASK}",
    }


def test_a_tree_with_nothing_to_mask_is_returned_as_it_is() -> None:
    record = {"messages": [{"role": "user", "content": "plain text"}], "usage": {"n": 3}}
    assert redact(record) is record


def test_a_secret_beside_a_value_json_cannot_hold_is_masked() -> None:
    record = {"when": object(), "text": SECRET}
    assert redact(record)["text"] == MASK
