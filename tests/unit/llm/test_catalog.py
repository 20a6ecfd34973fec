"""The model catalog: the shipped default, custom YAML/TOML files, eligibility and clear errors."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from agent_engine.llm.catalog import CatalogError, cached_catalog, load_catalog

CUSTOM_YAML = """
providers:
  ollama: {kind: openai, base_url: "http://127.0.0.1:11434/v1", api_key_env: null, local: true}
models:
  - provider: ollama
    model: "llama3:8b"
    tier: small
    context_window: 8192
    max_output_tokens: 2048
    capabilities: {json: false, streaming: true}
  - provider: openai
    model: gpt-4o
    tier: large
    context_window: 128000
    max_output_tokens: 16384
    prices: {input: 2.5, output: 10, cached_input: 1.25}
"""

CUSTOM_TOML = """
[providers.vllm]
kind = "openai"
base_url = "http://127.0.0.1:8001/v1"

[[models]]
provider = "vllm"
model = "qwen"
tier = "medium"
context_window = 32768
max_output_tokens = 4096
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_default_catalog_has_offline_and_example_remote_models() -> None:
    catalog = load_catalog()
    ids = [m.id for m in catalog.models]
    assert ids == [
        "offline:offline-1",
        "local:gemma-3-270m",
        "openai:gpt-4o-mini",
        "openai:gpt-4o",
        "anthropic:claude-3-5-haiku-latest",
        "anthropic:claude-sonnet-4-0",
    ]
    offline = catalog.find("offline:offline-1")
    assert offline is not None
    assert offline.tier == "small"
    assert offline.last_resort
    assert catalog.is_local("offline")
    assert not catalog.is_local("openai")


def test_remote_models_are_eligible_only_with_their_key() -> None:
    catalog = load_catalog()
    offline, mini = catalog.find("offline:offline-1"), catalog.find("openai:gpt-4o-mini")
    haiku = catalog.find("anthropic:claude-3-5-haiku-latest")
    assert offline is not None
    assert mini is not None
    assert haiku is not None
    assert catalog.unavailable_reason(offline, env={}) is None
    assert catalog.unavailable_reason(mini, env={}) == "not configured: OPENAI_API_KEY is not set"
    assert catalog.unavailable_reason(mini, env={"OPENAI_API_KEY": "k"}) is None
    assert catalog.unavailable_reason(haiku, env={"OPENAI_API_KEY": "k"}) is not None


def test_custom_yaml_declares_providers_prices_and_capabilities(tmp_path: Path) -> None:
    catalog = load_catalog(_write(tmp_path, "models.yaml", CUSTOM_YAML))
    llama = catalog.find("ollama:llama3:8b")
    gpt = catalog.find("openai:gpt-4o")
    assert llama is not None
    assert gpt is not None
    assert not llama.capabilities.json_output
    assert llama.capabilities.streaming
    assert catalog.provider("ollama").base_url == "http://127.0.0.1:11434/v1"
    assert catalog.is_local("ollama")
    assert catalog.unavailable_reason(llama, env={}) is None  # keyless local server
    assert gpt.prices is not None
    assert gpt.prices.cached_input == Decimal("1.25")
    assert gpt.prices.cache_write is None


def test_toml_catalog_loads(tmp_path: Path) -> None:
    catalog = load_catalog(_write(tmp_path, "models.toml", CUSTOM_TOML))
    assert [m.id for m in catalog.models] == ["vllm:qwen"]
    assert catalog.models[0].tier == "medium"
    assert catalog.models[0].capabilities.json_output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "models:\n  - {provider: openai, model: a, tier: huge, context_window: 1, "
            "max_output_tokens: 1}\n",
            "models[0].tier: Input should be 'small', 'medium' or 'large'",
        ),
        (
            "models:\n  - {provider: nope, model: a, tier: small, context_window: 1, "
            "max_output_tokens: 1}\n",
            "models[0].provider: unknown provider 'nope'",
        ),
        (
            "models:\n  - {provider: openai, model: a, tier: small, context_window: 0, "
            "max_output_tokens: 1}\n",
            "models[0].context_window: Input should be greater than 0",
        ),
        ("models: [\n", "cannot parse"),
        ("{}\n", "models: Field required"),
    ],
)
def test_invalid_file_gives_one_line_error_naming_file_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    detail = caught.value.detail
    assert "\n" not in detail
    assert str(path) in detail
    assert message in detail


def test_duplicate_models_are_rejected(tmp_path: Path) -> None:
    entry = (
        "  - {provider: openai, model: a, tier: small, context_window: 9, max_output_tokens: 1}\n"
    )
    with pytest.raises(CatalogError, match="duplicate model 'openai:a'"):
        load_catalog(_write(tmp_path, "dup.yaml", "models:\n" + entry + entry))


def test_missing_file_and_unknown_extension_are_clear(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "absent.yaml")
    with pytest.raises(CatalogError, match="extension must be"):
        load_catalog(_write(tmp_path, "models.json", "{}"))


def test_cached_catalog_rereads_only_when_the_file_changes(tmp_path: Path) -> None:
    path = _write(tmp_path, "models.toml", CUSTOM_TOML)
    first = cached_catalog(path)
    assert cached_catalog(path) is first
    path.write_text(CUSTOM_TOML.replace('"qwen"', '"qwen2"'), encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert [m.model for m in cached_catalog(path).models] == ["qwen2"]
