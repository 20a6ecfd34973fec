"""Settings, read from ``AGENT_ENGINE_*`` variables and ``.env``; see ``.env.example``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/agent-engine.db"
DEFAULT_COMMAND_ALLOWLIST = ("python", "python3", "pytest", "ruff", "ls", "cat", "grep", "git")


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the engine; one instance per process, built by :func:`get_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="AGENT_ENGINE_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    auto_migrate: bool = True
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    workspace_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path("./workspaces")]
    )
    command_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_COMMAND_ALLOWLIST)
    )
    command_env_passthrough: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["PATH", "LANG", "LC_ALL", "TZ"]
    )
    command_timeout_s: float = Field(default=60.0, gt=0)
    command_output_cap_bytes: int = Field(default=65_536, ge=1024)
    read_file_max_bytes: int = Field(default=1_048_576, ge=1)
    list_files_max: int = Field(default=1000, ge=1)
    router_url: str | None = None
    # Model provider calls: the wait for each read of a response (a catalog provider's timeout_s
    # wins) and for a connection.
    llm_timeout_s: float = Field(default=60.0, gt=0)
    llm_connect_timeout_s: float = Field(default=10.0, gt=0)
    models_file: Path | None = None
    model: str | None = None
    embedded_worker: bool = True
    worker_concurrency: int = Field(default=4, ge=1, le=256)
    worker_lease_s: float = Field(default=30.0, ge=1.0)
    worker_poll_s: float = Field(default=2.0, gt=0)
    worker_shutdown_grace_s: float = Field(default=30.0, ge=0)
    log_level: str = "info"

    @field_validator(
        "workspace_roots", "command_allowlist", "command_env_passthrough", mode="before"
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("router_url", "models_file", "model", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `AGENT_ENGINE_ROUTER_URL=` copied from .env.example means "not set".
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once on first use (never at import)."""
    return Settings()
