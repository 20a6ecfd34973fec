"""Which schemas strict mode may take, how a non-object schema is wrapped, and how the catalog
decides each model's structured_output (its own, its provider's, else its kind's default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent_engine.llm.anthropic import AnthropicProvider
from agent_engine.llm.base import ChatMessage
from agent_engine.llm.catalog import CatalogError, load_catalog
from agent_engine.llm.openai_compat import OpenAICompatProvider
from agent_engine.llm.prompts import ANALYSIS_SCHEMA, PLAN_SCHEMA
from agent_engine.llm.providers import build_provider
from agent_engine.llm.structured_output import strict_compatible, with_instruction, wrap_schema
from tests.fakes.wire_rules import strict_schema_problems

CLOSED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z]+$"},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}},
    },
    "required": ["name", "tags"],
    "additionalProperties": False,
    "$defs": {
        "tag": {
            "type": "object",
            "properties": {"label": {"type": "string"}},
            "required": ["label"],
            "additionalProperties": False,
        }
    },
}


def _with(schema: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**schema, **changes}


def test_a_closed_schema_with_every_property_required_qualifies_for_strict() -> None:
    assert strict_compatible(CLOSED)
    assert strict_schema_problems(CLOSED) == []  # and the fake API agrees


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        (PLAN_SCHEMA, "optional properties and an open input_data object"),
        (ANALYSIS_SCHEMA, "an optional summary and an open metrics object"),
        (_with(CLOSED, required=["name"]), "a property not required"),
        (_with(CLOSED, additionalProperties=True), "an open object"),
        (
            _with(
                CLOSED, properties={**CLOSED["properties"], "n": {"type": "string", "minLength": 1}}
            ),
            "a keyword strict mode does not take",
        ),
        (
            _with(CLOSED, **{"$defs": {"tag": {"type": "object", "properties": {}}}}),
            "an open object under $defs",
        ),
        ({"anyOf": [CLOSED]}, "a root that is not an object"),
        ({"type": "array", "items": {"type": "string"}}, "an array root"),
    ],
)
def test_a_schema_strict_mode_would_refuse_is_not_sent_strict(
    schema: dict[str, Any], why: str
) -> None:
    assert not strict_compatible(schema), why


def test_a_non_object_schema_is_wrapped_with_its_definitions_moved_to_the_root() -> None:
    schema = {"type": "array", "items": {"$ref": "#/$defs/tag"}, "$defs": CLOSED["$defs"]}
    wrapped, is_wrapped = wrap_schema(schema)
    assert is_wrapped
    assert wrapped["properties"]["value"] == {"type": "array", "items": {"$ref": "#/$defs/tag"}}
    assert wrapped["$defs"] == CLOSED["$defs"]
    assert wrapped["required"] == ["value"]
    assert strict_compatible(wrapped)
    assert wrap_schema(CLOSED) == (CLOSED, False)


def test_the_instruction_joins_the_first_system_message() -> None:
    messages = [
        ChatMessage(role="system", content="one"),
        ChatMessage(role="user", content="u"),
        ChatMessage(role="system", content="two"),
    ]
    merged = with_instruction(messages, "SCHEMA")
    assert [m.content for m in merged] == ["one\n\nSCHEMA", "u", "two"]


def test_the_shipped_catalog_uses_json_schema_for_openai_and_tools_for_anthropic() -> None:
    catalog = load_catalog()
    modes = {entry.id: catalog.structured_output(entry) for entry in catalog.models}
    assert modes["openai:gpt-4o-mini"] == "json_schema"
    assert modes["anthropic:claude-sonnet-4-0"] == "tools"
    assert modes["offline:offline-1"] == "json_schema"


def test_a_model_overrides_its_provider_which_overrides_its_kind(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        """
providers:
  ollama: {kind: openai, base_url: "http://127.0.0.1:11434/v1", api_key_env: null,
           structured_output: json_object}
  oldclaude: {kind: anthropic, base_url: "http://127.0.0.1:9/", api_key_env: KEY}
models:
  - {provider: ollama, model: qwen, tier: small, context_window: 8192, max_output_tokens: 1024}
  - {provider: ollama, model: tiny, tier: small, context_window: 2048, max_output_tokens: 512,
     capabilities: {structured_output: none}}
  - {provider: openai, model: gpt-4o, tier: large, context_window: 128000,
     max_output_tokens: 16384, capabilities: {structured_output: tools}}
  - {provider: oldclaude, model: c1, tier: small, context_window: 100000, max_output_tokens: 4096,
     capabilities: {structured_output: none}}
""",
        encoding="utf-8",
    )
    catalog = load_catalog(path)
    modes = {entry.id: catalog.structured_output(entry) for entry in catalog.models}
    assert modes == {
        "ollama:qwen": "json_object",
        "ollama:tiny": "none",
        "openai:gpt-4o": "tools",
        "oldclaude:c1": "none",
    }
    ollama = build_provider("ollama", catalog)
    assert isinstance(ollama, OpenAICompatProvider)
    assert ollama.structured_output_mode("qwen") == "json_object"
    assert ollama.structured_output_mode("tiny") == "none"
    claude = build_provider("oldclaude", catalog)
    assert isinstance(claude, AnthropicProvider)
    assert not claude.uses_tool("c1")


def test_an_unknown_structured_output_is_a_clear_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n  - {provider: openai, model: m, tier: small, context_window: 10, "
        "max_output_tokens: 5, capabilities: {structured_output: grammar}}\n",
        encoding="utf-8",
    )
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert "models[0].capabilities.structured_output" in caught.value.detail
    assert "'json_schema', 'tools', 'json_object' or 'none'" in caught.value.detail
