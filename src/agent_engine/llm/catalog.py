"""The model catalog: which models exist, their tier, limits, capabilities and price overrides.

Loaded from ``AGENT_ENGINE_MODELS_FILE`` (YAML or TOML by extension), else the shipped
``models.default.yaml``. Remote models are eligible only while their provider's key variable is set.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent_engine.errors import RuntimeFailure
from agent_engine.llm.local import unavailable_reason as local_unavailable_reason
from agent_engine.llm.openai_compat import MaxTokensField
from agent_engine.llm.structured_output import StructuredOutput

Tier = Literal["small", "medium", "large"]
TIERS: tuple[Tier, ...] = ("small", "medium", "large")
ProviderKind = Literal["openai", "anthropic", "offline", "local"]
# How each kind sends a JSON schema when neither the model nor its provider says: compatible
# servers (vLLM, Ollama, llama.cpp, LM Studio) and OpenAI take response_format json_schema; the
# Messages API has forced tools; the local and offline models constrain output themselves.
DEFAULT_STRUCTURED_OUTPUT: dict[str, StructuredOutput] = {
    "openai": "json_schema",
    "anthropic": "tools",
    "local": "json_schema",
    "offline": "json_schema",
}
DEFAULT_CATALOG_PATH = Path(__file__).with_name("models.default.yaml")


class CatalogError(RuntimeFailure):
    """The model catalog file is missing, unreadable or invalid."""

    code = "invalid_model_catalog"
    http_status = 500
    title = "Invalid model catalog"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Capabilities(_Frozen):
    # Aliased because a field named "json" would shadow BaseModel.json.
    json_output: bool = Field(default=True, alias="json")
    tools: bool = False
    streaming: bool = False
    # How a JSON schema goes on the wire; unset: the provider's setting, else its kind's default.
    structured_output: StructuredOutput | None = None


class PriceOverride(_Frozen):
    """USD per million tokens; a missing cached_input/cache_write rate falls back to ``input``."""

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)
    cache_write: Decimal | None = Field(default=None, ge=0)


class ProviderConfig(_Frozen):
    kind: ProviderKind
    base_url: str | None = None
    api_key_env: str | None = None
    local: bool = False  # local runtimes cost $0 explicitly
    # Read timeout of this provider's calls; unset: AGENT_ENGINE_LLM_TIMEOUT_S.
    timeout_s: float | None = Field(default=None, gt=0)
    stream: bool = False
    max_tokens_field: MaxTokensField | None = None  # unset: max_tokens (models may override)
    # For all the provider's models (each may override); unset: the kind's default.
    structured_output: StructuredOutput | None = None


BUILTIN_PROVIDERS: dict[str, ProviderConfig] = {
    "openai": ProviderConfig(kind="openai", api_key_env="OPENAI_API_KEY"),
    "anthropic": ProviderConfig(kind="anthropic", api_key_env="ANTHROPIC_API_KEY"),
    "offline": ProviderConfig(kind="offline", local=True),
    "local": ProviderConfig(kind="local", local=True),
}


class ModelEntry(_Frozen):
    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    tier: Tier
    context_window: int = Field(gt=0)
    max_output_tokens: int = Field(gt=0)
    capabilities: Capabilities = Field(default_factory=Capabilities)
    prices: PriceOverride | None = None
    # OpenAI-compatible providers only: the field for the output limit, when not the provider's.
    max_tokens_field: MaxTokensField | None = None
    enabled: bool = True
    # Used only when no other model is eligible (the offline stand-in once real models exist).
    last_resort: bool = False

    @property
    def id(self) -> str:
        """The model id as routing and records name it: ``provider:model``."""
        return f"{self.provider}:{self.model}"


class ModelCatalog(_Frozen):
    models: list[ModelEntry]
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ModelCatalog:
        known = {**BUILTIN_PROVIDERS, **self.providers}
        seen: set[str] = set()
        for index, entry in enumerate(self.models):
            if entry.provider not in known:
                raise ValueError(f"models[{index}].provider: unknown provider '{entry.provider}'")
            if entry.id in seen:
                raise ValueError(f"models[{index}]: duplicate model '{entry.id}'")
            seen.add(entry.id)
        return self

    def find(self, model_id: str) -> ModelEntry | None:
        """The entry named ``provider:model``, if any."""
        return next((m for m in self.models if m.id == model_id), None)

    def provider(self, name: str) -> ProviderConfig:
        """The provider's configuration (declared in the file, else built in)."""
        config = self.providers.get(name) or BUILTIN_PROVIDERS.get(name)
        if config is None:
            raise CatalogError(f"unknown provider '{name}'", provider=name)
        return config

    def structured_output(self, entry: ModelEntry) -> StructuredOutput:
        """How a JSON schema is sent to ``entry``: its own setting, its provider's, else the
        default of the provider's kind."""
        config = self.provider(entry.provider)
        return (
            entry.capabilities.structured_output
            or config.structured_output
            or DEFAULT_STRUCTURED_OUTPUT[config.kind]
        )

    def is_local(self, provider_name: str) -> bool:
        """Whether the provider runs locally (offline or a declared local server): always $0."""
        config = self.providers.get(provider_name) or BUILTIN_PROVIDERS.get(provider_name)
        return config is not None and (config.local or config.kind in ("offline", "local"))

    def unavailable_reason(
        self, entry: ModelEntry, env: Mapping[str, str] | None = None
    ) -> str | None:
        """Why ``entry`` cannot be used now (disabled, key variable unset), or None if eligible."""
        if not entry.enabled:
            return "disabled in the catalog"
        config = self.provider(entry.provider)
        environ = os.environ if env is None else env
        if config.kind != "offline" and config.api_key_env and not environ.get(config.api_key_env):
            return f"not configured: {config.api_key_env} is not set"
        if config.kind == "local":
            # llama.cpp is an optional extra: without it the local model is listed, not eligible.
            return local_unavailable_reason(environ)
        return None


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _parse(path: Path, text: str) -> Any:
    suffix = path.suffix.lower()
    try:
        if suffix in {".yaml", ".yml"}:
            return yaml.safe_load(text)
        if suffix == ".toml":
            return tomllib.loads(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CatalogError(f"invalid model catalog {path}: cannot parse: {first_line}") from exc
    raise CatalogError(f"invalid model catalog {path}: extension must be .yaml, .yml or .toml")


def load_catalog(path: Path | str | None = None) -> ModelCatalog:
    """Load and validate the catalog at ``path`` (default: the shipped catalog)."""
    source = Path(path) if path is not None else DEFAULT_CATALOG_PATH
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"invalid model catalog {source}: cannot read ({exc.strerror})") from exc
    data = _parse(source, text)
    try:
        return ModelCatalog.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        message = str(first["msg"]).replace("\n", " ").removeprefix("Value error, ")
        where = f"{_field_path(first['loc'])}: " if first["loc"] else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise CatalogError(f"invalid model catalog {source}: {where}{message}{more}") from exc


_CACHE: dict[tuple[str, int], ModelCatalog] = {}


def cached_catalog(path: Path | str | None = None) -> ModelCatalog:
    """Like :func:`load_catalog`, but re-reads the file only when its modification time changes."""
    source = Path(path) if path is not None else DEFAULT_CATALOG_PATH
    try:
        key = (str(source.resolve()), source.stat().st_mtime_ns)
    except OSError:
        return load_catalog(source)  # raises the CatalogError that names the file
    if key not in _CACHE:
        _CACHE[key] = load_catalog(source)
    return _CACHE[key]
