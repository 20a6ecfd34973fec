"""Build provider instances from the catalog's provider configuration (one builder per kind)."""

from __future__ import annotations

from collections.abc import Callable

from agent_engine.llm.anthropic import AnthropicProvider
from agent_engine.llm.base import LLMProvider
from agent_engine.llm.catalog import BUILTIN_PROVIDERS, CatalogError, ModelCatalog, ProviderConfig
from agent_engine.llm.local import LocalProvider
from agent_engine.llm.openai_compat import OpenAICompatProvider

ProviderFactory = Callable[[str], LLMProvider]


def _openai(name: str, config: ProviderConfig) -> LLMProvider:
    return OpenAICompatProvider(
        name=name,
        base_url=config.base_url,
        api_key_env=config.api_key_env,
        timeout_s=config.timeout_s,
        stream=config.stream,
        max_tokens_field=config.max_tokens_field or "max_completion_tokens",
    )


def _anthropic(name: str, config: ProviderConfig) -> LLMProvider:
    return AnthropicProvider(
        name=name,
        base_url=config.base_url,
        api_key_env=config.api_key_env or "ANTHROPIC_API_KEY",
        timeout_s=config.timeout_s,
    )


def _offline(name: str, config: ProviderConfig) -> LLMProvider:
    # Imported on first use: the offline model is a sibling module and not needed by remote setups.
    from agent_engine.llm.offline import OfflineProvider

    return OfflineProvider()


def _local(name: str, config: ProviderConfig) -> LLMProvider:
    # llama.cpp itself is imported on the first call: it is an optional extra.
    return LocalProvider()


BUILDERS: dict[str, Callable[[str, ProviderConfig], LLMProvider]] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "offline": _offline,
    "local": _local,
}


def build_provider(provider_name: str, catalog: ModelCatalog | None = None) -> LLMProvider:
    """A provider instance for ``provider_name`` as the catalog (or the built-ins) configure it."""
    if catalog is not None:
        config = catalog.provider(provider_name)
    elif provider_name in BUILTIN_PROVIDERS:
        config = BUILTIN_PROVIDERS[provider_name]
    else:
        raise CatalogError(f"unknown provider '{provider_name}'", provider=provider_name)
    return BUILDERS[config.kind](provider_name, config)
