"""The MCP servers the engine may call: the ``mcpServers`` file, and the tool lists fetched from
them (kept per process, so that plans are checked without starting a server each time)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_engine.errors import McpServersFileError

SERVER_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class StdioServer(BaseModel):
    """A server the engine starts as a subprocess and talks to over stdin/stdout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["stdio"] = "stdio"
    command: str = Field(min_length=1)
    args: tuple[str, ...] = ()
    # The server's whole environment besides PATH and the SDK's few non-secret defaults: the
    # engine's own variables (provider keys, the database URL) never reach it.
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None


class HttpServer(BaseModel):
    """A server already running somewhere, reached over streamable HTTP."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["http", "streamable-http", "streamableHttp"] = "http"
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)


McpServer = StdioServer | HttpServer


class _ServersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mcp_servers: dict[Annotated[str, Field(pattern=SERVER_NAME)], Any] = Field(alias="mcpServers")


@dataclass(frozen=True)
class ToolInfo:
    """What the engine knows of one tool from the server's own listing."""

    name: str
    description: str
    input_schema: dict[str, Any]
    read_only: bool


@dataclass(frozen=True)
class Listing:
    """A server's tools as last listed, or why they could not be listed."""

    tools: dict[str, ToolInfo] | None
    error: str | None = None


@dataclass
class McpServers:
    """The configured servers and, per server, the tool list fetched from it (or the failure)."""

    servers: dict[str, McpServer] = field(default_factory=dict)
    source: Path | None = None
    timeout_s: float = 30.0
    output_cap_bytes: int = 65_536
    listings: dict[str, Listing] = field(default_factory=dict)

    def tools_of(self, server: str) -> dict[str, ToolInfo] | None:
        """The server's listed tools; None when they were never listed successfully."""
        listing = self.listings.get(server)
        return listing.tools if listing is not None else None

    def tool(self, server: str, tool: str) -> ToolInfo | None:
        """The tool as listed, or None when unknown (server not listed, or no such tool)."""
        tools = self.tools_of(server)
        return tools.get(tool) if tools is not None else None

    def listing_error(self, server: str) -> str | None:
        """Why the server's tools could not be listed, when they could not."""
        listing = self.listings.get(server)
        return listing.error if listing is not None else None

    def where(self) -> str:
        """Where the servers come from, for messages."""
        return f"AGENT_ENGINE_MCP_SERVERS ({self.source})" if self.source else "no servers file"


def _shape_problem(raw: Any) -> str | None:
    """Why an entry is neither a stdio nor an HTTP server (None: it is one of them)."""
    if not isinstance(raw, dict):
        return "must be an object with `command` (stdio) or `url` (streamable HTTP)"
    if raw.get("type") == "sse":
        return "type sse (the deprecated HTTP+SSE transport) is not supported: use streamable HTTP"
    if "command" in raw and "url" in raw:
        return "has both `command` and `url`: one server is one transport"
    if "command" not in raw and "url" not in raw:
        return "needs `command` (stdio) or `url` (streamable HTTP)"
    return None


def _parse_entry(path: Path, name: str, raw: Any) -> McpServer:
    problem = _shape_problem(raw)
    if problem is not None:
        raise McpServersFileError(f"MCP servers file {path}: mcpServers.{name}: {problem}")
    model: type[StdioServer] | type[HttpServer] = StdioServer if "command" in raw else HttpServer
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _field_of(f"mcpServers.{name}", first)
        raise McpServersFileError(f"MCP servers file {path}: {where}: {first['msg']}") from exc


def _field_of(prefix: str, error: Any) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    return f"{prefix}.{loc}" if loc else prefix


def load_mcp_servers(
    path: Path | None, *, timeout_s: float = 30.0, output_cap_bytes: int = 65_536
) -> McpServers:
    """Read and validate the servers file; raise McpServersFileError naming file and field."""
    if path is None:
        return McpServers(timeout_s=timeout_s, output_cap_bytes=output_cap_bytes)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise McpServersFileError(
            f"MCP servers file {path}: cannot be read ({exc.strerror})"
        ) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise McpServersFileError(f"MCP servers file {path}: not valid JSON ({exc})") from exc
    try:
        parsed = _ServersFile.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _field_of("", first).lstrip(".") or "(top level)"
        if first["type"] == "string_pattern_mismatch":
            where = f"mcpServers.{first['input']!r} (server name, {SERVER_NAME})"
        raise McpServersFileError(f"MCP servers file {path}: {where}: {first['msg']}") from exc
    servers: dict[str, McpServer] = {}
    for name, raw in parsed.mcp_servers.items():
        servers[name] = _parse_entry(path, name, raw)
    return McpServers(servers, path, timeout_s, output_cap_bytes)
