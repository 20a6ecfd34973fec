"""Counting JSON depth from text agrees with the depth of the parsed value, strings and escapes
included."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_engine.domain.json_depth import exceeds_depth, text_depth, text_exceeds_depth


def parsed_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((parsed_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((parsed_depth(v) for v in value), default=0)
    return 0


# Strings full of brackets, quotes and backslashes: the characters a counter could trip on.
tricky_text = st.text(alphabet=st.sampled_from('[]{}"\\/ab\n\u00e9\U0001f600'), max_size=12)
documents = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(tricky_text, children, max_size=3)
    ),
    max_leaves=30,
)


@given(value=documents, ensure_ascii=st.booleans(), indent=st.sampled_from([None, 2]))
def test_text_depth_equals_parsed_depth(value: Any, ensure_ascii: bool, indent: int | None) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent).encode()
    depth = parsed_depth(value)
    assert text_depth(text) == depth
    for limit in (max(depth - 1, 0), depth):
        assert text_exceeds_depth(text, limit) == (depth > limit)
        assert exceeds_depth(value, limit) == (depth > limit)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"1", 0),
        (b'"[[[["', 0),
        (b"{}", 1),
        (b'{"a": [1, {"b": "]]]}"}]}', 3),
        (b'["\\"[[", [["\\\\"]]]', 3),  # an escaped quote does not end the string
        (b'["\\\\", [[]]]', 3),  # an escaped backslash does not escape the quote after it
    ],
)
def test_text_depth_ignores_brackets_inside_strings(text: bytes, depth: int) -> None:
    assert text_depth(text) == depth


def test_depth_of_very_deep_values_does_not_exhaust_the_stack() -> None:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    assert exceeds_depth(value, 64)
    assert text_depth(b"[" * 100_000 + b"]" * 100_000) == 100_000
