"""Build provider instances from the catalog's provider configuration (one builder per kind)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from agent_engine.llm.anthropic import AnthropicProvider
from agent_engine.llm.base import LLMProvider
from agent_engine.llm.catalog import (
    BUILTIN_PROVIDERS,
    DEFAULT_STRUCTURED_OUTPUT,
    CatalogError,
    ModelCatalog,
    ProviderConfig,
)
from agent_engine.llm.local import LocalProvider
from agent_engine.llm.openai_compat import MaxTokensField, OpenAICompatProvider
from agent_engine.llm.structured_output import StructuredOutput
from agent_engine.llm.transport import ProviderTimeouts

ProviderFactory = Callable[[str], LLMProvider]


@dataclass(frozen=True)
class ProviderSetup:
    """What a builder needs beyond the provider's own configuration."""

    timeouts: ProviderTimeouts
    max_tokens_fields: dict[str, MaxTokensField] = field(default_factory=dict)
    # Per model: how a JSON schema is sent (the catalog's resolved structured_output).
    structured_outputs: dict[str, StructuredOutput] = field(default_factory=dict)


def _read_timeout(config: ProviderConfig, setup: ProviderSetup) -> float:
    # The catalog's per-provider timeout wins over the process-wide setting.
    return config.timeout_s if config.timeout_s is not None else setup.timeouts.read_s


def _openai(name: str, config: ProviderConfig, setup: ProviderSetup) -> LLMProvider:
    return OpenAICompatProvider(
        name=name,
        base_url=config.base_url,
        api_key_env=config.api_key_env,
        timeout_s=_read_timeout(config, setup),
        connect_timeout_s=setup.timeouts.connect_s,
        stream=config.stream,
        structured_output=config.structured_output or DEFAULT_STRUCTURED_OUTPUT["openai"],
        structured_outputs=setup.structured_outputs,
        max_tokens_field=config.max_tokens_field or "max_tokens",
        max_tokens_fields=setup.max_tokens_fields,
    )


def _anthropic(name: str, config: ProviderConfig, setup: ProviderSetup) -> LLMProvider:
    return AnthropicProvider(
        name=name,
        base_url=config.base_url,
        api_key_env=config.api_key_env or "ANTHROPIC_API_KEY",
        timeout_s=_read_timeout(config, setup),
        connect_timeout_s=setup.timeouts.connect_s,
        structured_output=config.structured_output or DEFAULT_STRUCTURED_OUTPUT["anthropic"],
        structured_outputs=setup.structured_outputs,
    )


def _offline(name: str, config: ProviderConfig, setup: ProviderSetup) -> LLMProvider:
    # Imported on first use: the offline model is a sibling module and not needed by remote setups.
    from agent_engine.llm.offline import OfflineProvider

    return OfflineProvider()


def _local(name: str, config: ProviderConfig, setup: ProviderSetup) -> LLMProvider:
    # llama.cpp itself is imported on the first call: it is an optional extra.
    return LocalProvider()


BUILDERS: dict[str, Callable[[str, ProviderConfig, ProviderSetup], LLMProvider]] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "offline": _offline,
    "local": _local,
}


def build_provider(
    provider_name: str,
    catalog: ModelCatalog | None = None,
    *,
    timeouts: ProviderTimeouts | None = None,
) -> LLMProvider:
    """A provider instance for ``provider_name`` as the catalog (or the built-ins) configure it;
    ``timeouts`` apply where the catalog sets none for the provider."""
    if catalog is not None:
        config = catalog.provider(provider_name)
    elif provider_name in BUILTIN_PROVIDERS:
        config = BUILTIN_PROVIDERS[provider_name]
    else:
        raise CatalogError(f"unknown provider '{provider_name}'", provider=provider_name)
    entries = [
        entry
        for entry in (catalog.models if catalog is not None else [])
        if entry.provider == provider_name
    ]
    fields = {e.model: e.max_tokens_field for e in entries if e.max_tokens_field is not None}
    modes = {e.model: catalog.structured_output(e) for e in entries} if catalog else {}
    setup = ProviderSetup(
        timeouts=timeouts or ProviderTimeouts(),
        max_tokens_fields=fields,
        structured_outputs=modes,
    )
    return BUILDERS[config.kind](provider_name, config, setup)
