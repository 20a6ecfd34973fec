"""Approximate token counts: ~4 characters per token (no tokenizer bundled, nothing downloads)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from agent_engine.llm.base import ChatMessage, Usage

CHARS_PER_TOKEN = 4
# Chat formats add a few framing tokens per message (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(text: str) -> int:
    """Approximate token count of ``text`` (ceil(chars / 4)); always an estimate."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_message_tokens(messages: Iterable[ChatMessage]) -> int:
    """Approximate prompt tokens of a chat, including per-message framing."""
    return sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def estimated_usage(messages: Iterable[ChatMessage], text: str) -> Usage:
    """Usage counted from the text when a provider did not report it, marked as estimated."""
    return Usage(
        input_tokens=estimate_message_tokens(messages),
        output_tokens=estimate_tokens(text),
        estimated=True,
    )


def token_count(value: Any) -> int:
    """A provider's token field as a count (anything that is not an int counts as 0)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
