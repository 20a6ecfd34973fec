"""Settings, read from ``AGENT_ENGINE_*`` variables and ``.env``; see ``.env.example``."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from agent_engine.domain.budget_thresholds import check_thresholds
from agent_engine.domain.webhook_signing import secret_bytes

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


def host_is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the engine; one instance per process, built by :func:`get_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="AGENT_ENGINE_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        # An error never repeats the value it refused: it may be a secret (the webhook's).
        hide_input_in_errors=True,
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
    # Strings in a step's recorded input or output, or a model call's request or response,
    # longer than this (UTF-8 bytes) are stored once, by their SHA-256, and referenced from the
    # row (docs/determinism.md).
    blob_threshold_bytes: int = Field(default=65_536, ge=64)
    list_files_max: int = Field(default=1000, ge=1)
    router_url: str | None = None
    # Model provider calls: the wait for each read of a response (a catalog provider's timeout_s
    # wins) and for a connection.
    llm_timeout_s: float = Field(default=60.0, gt=0)
    llm_connect_timeout_s: float = Field(default=10.0, gt=0)
    models_file: Path | None = None
    model: str | None = None
    # Answer a request identical to one already recorded from its response, for every run
    # (a run may also opt in alone with the run option ``response_cache``). docs/costs.md.
    response_cache: bool = False
    # The budget saver: below this fraction of a budget left the router picks the cheapest
    # eligible model of the tier below the one it would choose (0: never).
    routing_saver_below: float = Field(default=0.2, ge=0.0, le=1.0)
    embedded_worker: bool = True
    worker_concurrency: int = Field(default=4, ge=1, le=256)
    worker_lease_s: float = Field(default=30.0, ge=1.0)
    worker_poll_s: float = Field(default=2.0, gt=0)
    worker_shutdown_grace_s: float = Field(default=30.0, ge=0)
    # `agent-engine worker` serves its own /metrics on this port (0: none); each worker process
    # is its own scrape target (docs/operations.md). Loopback unless the host says otherwise.
    metrics_port: int = Field(default=0, ge=0, le=65_535)
    metrics_host: str = "127.0.0.1"
    # Prometheus observation on (the default) or off: off, nothing is counted, `/metrics`
    # answers 404 `metrics_disabled` and no worker serves a port (the cost of watching).
    metrics_enabled: bool = True
    # A link to a run's trace in the console, e.g. http://jaeger:16686/trace/{trace_id}
    # (unset: the trace id is shown, not linked). docs/tracing.md.
    trace_url_template: str | None = None
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
    # Log lines: JSON objects or readable text; unset, text on a terminal and JSON elsewhere.
    log_format: Literal["json", "console"] | None = None
    # Prune finished runs older than this many days once an hour in `serve` and `worker`
    # (unset: never; `agent-engine prune` does it by hand). docs/operations-logs.md.
    retention_days: int | None = Field(default=None, ge=1)
    # With periodic pruning: keep old runs and their audit chains, prune only their payloads.
    retention_keep_audit: bool = True
    # --- Request limits (docs/limits.md); each refusal is a 422 naming its setting ---
    # Nesting of any JSON body, and of every document a step records. At most 128: documents
    # are served wrapped in a few more levels, and the serializers stop near 255.
    max_json_depth: int = Field(default=64, ge=8, le=128)
    # Steps in one plan, explicit or made by the planner.
    max_plan_steps: int = Field(default=500, ge=1, le=10_000)
    # Keys in a run's metadata, counted at every level.
    max_metadata_keys: int = Field(default=100, ge=0, le=100_000)
    # Characters of each string (key or value) in metadata and in the approval policy.
    max_string_chars: int = Field(default=10_000, ge=1, le=1_000_000)
    # Size of one step's input_data as compact JSON (UTF-8 bytes).
    max_step_input_bytes: int = Field(default=262_144, ge=1024)

    # Authentication: API keys and roles. Auth is on when required here or when `serve` binds to
    # anything but loopback (see `auth_enforced`); off, X-Actor names the actor.
    auth_required: bool = False
    # How long a verified key is believed without asking the database again (a revocation made
    # in another process takes effect within this; in the same process at once).
    auth_cache_ttl_s: float = Field(default=5.0, ge=0, le=300)
    # Every run asks for a second person: its creator (or its plan's) may not approve it.
    four_eyes: bool = False
    # Requests per second each key may make (a token bucket of `rate_limit_burst` per key and per
    # process); 0 turns the limit off.
    rate_limit_per_s: float = Field(default=0.0, ge=0)
    rate_limit_burst: int = Field(default=120, ge=1)
    # Runs not yet over (neither completed, failed nor cancelled) a key may have; 0: no limit.
    max_runs_in_flight: int = Field(default=0, ge=0)

    # --- Approval policies and file confinement --------------------------------------------
    # Named approval policies (YAML) that runs choose by name; unset: only the built-in default.
    policies_file: Path | None = None
    # A regular file with more than one hard link may be another file's alias (outside the
    # workspace too): refused by read_file, list_files and edit_file unless this is true.
    allow_hard_links: bool = False
    # edit_file may write inside a .git folder (hooks and config name programs git runs).
    allow_git_writes: bool = False
    # --- Adaptive planning (docs/adaptive-planning.md) -------------------------------------
    # Revisions a run with planning "adaptive" may make when it names no max_replans; the most
    # it may name.
    adaptive_default_max_replans: int = Field(default=5, ge=0, le=1000)
    adaptive_max_replans: int = Field(default=20, ge=0, le=1000)
    # Steps an adaptive run may have over all its plan versions when it names no max_steps
    # (never more than max_plan_steps, which is also the most it may name).
    adaptive_default_max_steps: int = Field(default=50, ge=1, le=10_000)
    # Characters of one earlier step's output the revision prompt shows (a longer one loses
    # its middle), and of all outputs together (the oldest are left out first).
    adaptive_output_chars: int = Field(default=4000, ge=200, le=1_000_000)
    adaptive_outputs_chars: int = Field(default=60_000, ge=1000, le=10_000_000)

    # --- Model-written edits (docs/model-edits.md) --------------------------------------------
    # Answers a propose_edit step asks the model for, each refused one's errors fed back, before
    # the step fails with invalid_edit; a step's own max_attempts input wins (at most 10).
    propose_edit_max_attempts: int = Field(default=3, ge=1, le=10)
    # --- MCP servers (the mcp_tool step) ---------------------------------------------------
    # A JSON file in the ``mcpServers`` shape MCP clients use; unset: no servers, no MCP tools.
    mcp_servers: Path | None = None
    # The longest one MCP tool call may take, starting the server and the handshake included.
    mcp_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    # A tool's result (content blocks and structured content, as JSON) kept in the step's output.
    mcp_output_cap_bytes: int = Field(default=65_536, ge=1024)
    # --- Signed audit chain heads (docs/audit.md) ------------------------------------------
    # An Ed25519 private key (PEM or raw 32 bytes) that signs every run's chain head as it
    # moves; the database never holds it. Unset: heads are not signed.
    audit_signing_key_file: Path | None = None
    # The public key verify checks signatures with (PEM or raw 32 bytes); unset: the signing
    # key's public half, if a signing key is set.
    audit_verify_key_file: Path | None = None
    # --- Budget alerts and their webhook (docs/webhooks.md) ------------------------------------
    # Percentages of a budget announced once each per budget and period (integers 1..100,
    # ascending).
    budget_alert_thresholds: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [50, 80, 100]
    )
    # ``whsec_`` + base64 of 24..64 bytes; required with a URL. Never logged, never stored.
    # (Declared before the URL: the URL's check reads it.)
    webhook_secret: SecretStr | None = None
    # Where alerts are POSTed (Standard Webhooks signed); unset: audit and SSE events only.
    webhook_url: str | None = None
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # How often the sender looks for deliveries that are due.
    webhook_poll_s: float = Field(default=2.0, gt=0, le=3600)

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

    @field_validator(
        "router_url",
        "models_file",
        "model",
        "policies_file",
        "mcp_servers",
        "audit_signing_key_file",
        "audit_verify_key_file",
        "webhook_url",
        "webhook_secret",
        "log_format",
        "retention_days",
        "trace_url_template",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `AGENT_ENGINE_ROUTER_URL=` copied from .env.example means "not set".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("trace_url_template")
    @classmethod
    def _trace_url_usable(cls, value: str | None) -> str | None:
        if value is not None and (
            not value.startswith(("http://", "https://")) or "{trace_id}" not in value
        ):
            raise ValueError(
                "a trace URL template starts with http:// or https:// and holds {trace_id}"
            )
        return value

    @field_validator("budget_alert_thresholds", mode="before")
    @classmethod
    def _thresholds_listed(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("budget_alert_thresholds")
    @classmethod
    def _thresholds_valid(cls, value: list[int]) -> list[int]:
        return list(check_thresholds(value))

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url_usable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("the webhook URL must start with http:// or https://")
        if info.data.get("webhook_secret") is None:
            raise ValueError(
                "set without AGENT_ENGINE_WEBHOOK_SECRET (a valid one): webhooks are always "
                "signed; a secret is whsec_ + base64 of 24 to 64 bytes"
            )
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret_valid(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret_bytes(value.get_secret_value())  # ValueError says what is wrong (not the value)
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def auth_enforced(self) -> bool:
        """Whether requests need an API key: when required, and always off loopback."""
        return self.auth_required or not host_is_loopback(self.host)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once on first use (never at import)."""
    return Settings()
