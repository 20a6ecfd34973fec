"""Settings, read from ``AGENT_ENGINE_*`` variables and ``.env``; see ``.env.example``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/agent-engine.db"
# The engine is async throughout: each supported database with the one driver it uses.
DATABASE_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
DATABASE_URL_FORMS = "sqlite+aiosqlite:///<file> or postgresql+asyncpg://<user>@<host>/<database>"
DEFAULT_COMMAND_ALLOWLIST = ("python", "python3", "pytest", "ruff", "ls", "cat", "grep", "git")
GIB = 1 << 30


def check_database_url(value: str) -> str:
    """``value`` if it names a supported database and driver; else ValueError saying the fix."""
    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError(f"not a database URL; use {DATABASE_URL_FORMS}") from None
    backend, _, driver = url.drivername.partition("+")
    backend = "postgresql" if backend == "postgres" else backend
    expected = DATABASE_DRIVERS.get(backend)
    if expected is None:
        raise ValueError(f"unsupported database '{url.drivername}'; use {DATABASE_URL_FORMS}")
    if driver != expected:
        scheme = f"{backend}+{expected}://"
        raise ValueError(
            f"the engine needs the {expected} driver: start the URL with '{scheme}' "
            f"instead of '{url.drivername}://'"
        )
    return value


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
    # --- Command sandbox and limits: bubblewrap, and the caps a run's step may lower, never raise.
    sandbox: Literal["bwrap", "none"] = "bwrap"
    # Folders bound read-only into the sandbox besides the system (/usr, /bin, /lib*, some of
    # /etc): e.g. a virtualenv or pyenv holding an allowlisted interpreter.
    sandbox_read_only_paths: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # Executables (names or absolute paths) whose commands keep the host network.
    command_network_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    command_max_processes: int = Field(default=256, ge=1, le=65_536)
    command_max_memory_bytes: int = Field(default=4 * GIB, ge=64 << 20)
    command_max_cpu_seconds: int = Field(default=600, ge=1)
    command_max_file_bytes: int = Field(default=GIB, ge=1)
    command_max_write_bytes: int = Field(default=512 << 20, ge=1 << 20)
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        return check_database_url(value)

    @field_validator(
        "workspace_roots",
        "command_allowlist",
        "command_env_passthrough",
        "sandbox_read_only_paths",
        "command_network_allowlist",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case_level(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

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
