"""Each candidate model's own count of a request's prompt, for its worst-case price.

OpenAI models are counted with their tokenizer over the messages exactly as they will be sent
(the schema instruction included for the modes that put the schema in the prompt); a schema sent
natively (``response_format`` or a forced tool) adds the tokens of its JSON text, an estimate
because OpenAI does not document how it frames a schema. Every other model gets the heuristic
count the tier was sized by. One request's messages are encoded once per encoding and mode,
however many candidates share them.
"""

from __future__ import annotations

import json

from agent_engine.llm.base import CompletionRequest
from agent_engine.llm.catalog import ModelCatalog, ModelEntry
from agent_engine.llm.openai_structured import sent_messages, structured_fields
from agent_engine.llm.structured_output import StructuredOutput
from agent_engine.llm.tokens import (
    HEURISTIC_METHOD,
    TIKTOKEN_METHOD_PREFIX,
    PromptCount,
    chat_framing_tokens,
    count_text_tokens,
    message_text_tokens,
    openai_encoding_name,
)

# Marks a count whose native schema part is the estimate described above.
SCHEMA_ESTIMATE_SUFFIX = "+schema"
_NATIVE_SCHEMA_MODES: frozenset[StructuredOutput] = frozenset({"json_schema", "tools"})


def schema_fields_text(request: CompletionRequest, mode: StructuredOutput | None) -> str | None:
    """The body fields carrying the request's schema natively, as compact sorted JSON; None when
    the schema is not sent natively (no schema, or it travels in the prompt)."""
    if request.json_schema is None or mode not in _NATIVE_SCHEMA_MODES:
        return None
    fields = structured_fields(request.json_schema, mode)
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class PromptCounter:
    """Counts one request's prompt for any candidate model, caching what candidates share."""

    def __init__(
        self, request: CompletionRequest, catalog: ModelCatalog, heuristic_tokens: int
    ) -> None:
        self._request = request
        self._catalog = catalog
        self._heuristic = PromptCount(heuristic_tokens, HEURISTIC_METHOD)
        self._texts: dict[tuple[str, StructuredOutput | None], tuple[int, int, bool]] = {}

    @property
    def heuristic(self) -> PromptCount:
        """The request's heuristic count, the one its tier was sized by."""
        return self._heuristic

    def count(self, entry: ModelEntry) -> PromptCount:
        """The prompt tokens ``entry`` will be charged for, and how they were counted."""
        kind = self._catalog.provider(entry.provider).kind
        encoding_name = openai_encoding_name(kind, entry.model)
        if encoding_name is None:
            return self._heuristic
        mode = (
            self._catalog.structured_output(entry)
            if self._request.json_schema is not None
            else None
        )
        text_tokens, message_count, schema_sent = self._text_tokens(encoding_name, mode)
        method = TIKTOKEN_METHOD_PREFIX + encoding_name
        if schema_sent:
            method += SCHEMA_ESTIMATE_SUFFIX
        tokens = text_tokens + chat_framing_tokens(entry.model, message_count)
        return PromptCount(tokens, method)

    def _text_tokens(
        self, encoding_name: str, mode: StructuredOutput | None
    ) -> tuple[int, int, bool]:
        key = (encoding_name, mode)
        if key not in self._texts:
            messages = sent_messages(self._request, mode)
            tokens = message_text_tokens(messages, encoding_name)
            schema_text = schema_fields_text(self._request, mode)
            if schema_text is not None:
                tokens += count_text_tokens(schema_text, encoding_name)
            self._texts[key] = (tokens, len(messages), schema_text is not None)
        return self._texts[key]
