"""Token counts of prompts: OpenAI's tokenizer for OpenAI models, a heuristic for the rest.

OpenAI models (a provider of kind ``openai`` serving a model name tiktoken maps to a vendored
encoding) are counted exactly the way OpenAI counts a chat prompt; every other model gets the
~4-characters-per-token heuristic, marked ``heuristic``. Nothing here downloads anything: the
encodings ship with the package (:mod:`agent_engine.llm.vendored_encodings`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from agent_engine.llm.base import ChatMessage, Usage
from agent_engine.llm.vendored_encodings import VENDORED_ENCODINGS, load_encoding

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


HEURISTIC_METHOD = "heuristic"
TIKTOKEN_METHOD_PREFIX = "tiktoken:"
# OpenAI's chat framing ("How to count tokens with tiktoken", OpenAI cookbook): each message is
# wrapped in <|start|>{role}<|message|>{content}<|end|> (3 tokens beside the role's and the
# content's own; a message's name would cost 1 more, but our messages carry none), and every reply
# is primed with <|start|>assistant<|message|> (3 tokens). gpt-3.5-turbo-0301 framed each message
# with 4 tokens.
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING_TOKENS = 3
_LEGACY_FRAMING_MODELS = frozenset({"gpt-3.5-turbo-0301"})


@dataclass(frozen=True)
class PromptCount:
    """A prompt's token count and how it was counted: ``tiktoken:<encoding>`` (exact, the
    provider's tokenizer) or ``heuristic`` (an estimate)."""

    tokens: int
    method: str

    @property
    def estimated(self) -> bool:
        """Whether the count is the heuristic's estimate rather than the provider's tokenizer."""
        return not self.method.startswith(TIKTOKEN_METHOD_PREFIX)


def openai_encoding_name(provider_kind: str, model: str) -> str | None:
    """The vendored tiktoken encoding of ``model`` served by a provider of ``provider_kind``, or
    None when the model is not an OpenAI model tiktoken knows (then only the heuristic applies)."""
    if provider_kind != "openai":
        return None
    import tiktoken  # imported on first use: commands that never count tokens skip it

    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return None
    # E.g. gpt-oss maps to o200k_harmony, whose chat format is not the framing counted here.
    return name if name in VENDORED_ENCODINGS else None


def count_text_tokens(text: str, encoding_name: str) -> int:
    """Tokens of ``text`` in the vendored encoding ``encoding_name``; special-token text counts
    as the ordinary text it is, as the API treats message content."""
    return len(load_encoding(encoding_name).encode_ordinary(text))


def chat_framing_tokens(model: str, message_count: int) -> int:
    """The tokens OpenAI's chat format adds around ``message_count`` messages sent to ``model``,
    the reply priming included."""
    per_message = TOKENS_PER_MESSAGE + (1 if model in _LEGACY_FRAMING_MODELS else 0)
    return per_message * message_count + REPLY_PRIMING_TOKENS


def message_text_tokens(messages: Sequence[ChatMessage], encoding_name: str) -> int:
    """Tokens of the messages' roles and contents in ``encoding_name``, without the framing."""
    texts = tuple(text for message in messages for text in (message.role, message.content))
    return _texts_tokens(texts, encoding_name)


# A budgeted call routes twice, its worst case before the hold and its call after, and each
# routing counts the prompt (about 0.2 ms for 2 KB): the second count is served from here. Few
# entries, as a prompt may be large; the key's strings are mostly the request's own objects,
# whose hashes Python keeps.
@lru_cache(maxsize=16)
def _texts_tokens(texts: tuple[str, ...], encoding_name: str) -> int:
    encoding = load_encoding(encoding_name)
    # Each text is encoded once; the batch API would start a thread pool per call for nothing.
    return sum(len(encoding.encode_ordinary(text)) for text in texts)


def count_openai_chat_tokens(
    messages: Sequence[ChatMessage], encoding_name: str, *, model: str = ""
) -> int:
    """Prompt tokens of ``messages`` as OpenAI counts a chat prompt in ``encoding_name``: each
    message's role and content plus its framing, plus the reply priming."""
    return message_text_tokens(messages, encoding_name) + chat_framing_tokens(model, len(messages))


def count_prompt_tokens(
    messages: Sequence[ChatMessage], *, provider_kind: str, model: str
) -> PromptCount:
    """The prompt tokens of ``messages`` sent to ``model`` of a provider of ``provider_kind``:
    exact by OpenAI's rule for OpenAI models, else the heuristic (marked ``heuristic``)."""
    encoding_name = openai_encoding_name(provider_kind, model)
    if encoding_name is None:
        return PromptCount(estimate_message_tokens(messages), HEURISTIC_METHOD)
    tokens = count_openai_chat_tokens(messages, encoding_name, model=model)
    return PromptCount(tokens, TIKTOKEN_METHOD_PREFIX + encoding_name)
