"""Talking to MCP servers through the official SDK: one session per call (start or connect,
handshake, one request, close), so no server process or connection outlives the step that used
it and a crashed server costs one step, never the next."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import IO, TYPE_CHECKING, Any, TextIO

import anyio

from agent_engine.errors import ExecutorError, McpTimeoutError, McpToolError, McpUnavailableError
from agent_engine.executors.mcp_config import (
    HttpServer,
    Listing,
    McpServer,
    McpServers,
    StdioServer,
    ToolInfo,
)

if TYPE_CHECKING:
    from mcp.client.session import ClientSession

logger = logging.getLogger(__name__)

MAX_TOOL_PAGES = 50  # a server that pages forever must not hold a plan check
STDERR_TAIL_CHARS = 400


@asynccontextmanager
async def open_session(server: McpServer, errlog: TextIO) -> AsyncIterator[ClientSession]:
    """A session with ``server``, initialized; the subprocess or connection closes on exit."""
    # The SDK is imported here: most processes never call a server, and it is a heavy import.
    from mcp.client.session import ClientSession

    async with AsyncExitStack() as stack:
        if isinstance(server, StdioServer):
            from mcp.client.stdio import StdioServerParameters, stdio_client

            # The SDK adds PATH and a few non-secret defaults (HOME, USER, SHELL, TERM,
            # LOGNAME) to the env given here; nothing else of the engine's environment.
            params = StdioServerParameters(
                command=server.command, args=list(server.args), env=dict(server.env), cwd=server.cwd
            )
            read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
        else:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            client = await stack.enter_async_context(
                httpx2.AsyncClient(headers=server.headers, follow_redirects=False)
            )
            read, write = await stack.enter_async_context(
                streamable_http_client(server.url, http_client=client)
            )
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield session


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside task-group exception groups, depth first."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(exc: BaseException) -> str:
    leaves = _leaves(exc)
    # The SDK's own error says what the server said; a bare cancellation says nothing.
    named = [leaf for leaf in leaves if str(leaf)] or leaves
    first = named[0]
    text = str(first) or type(first).__name__
    if isinstance(first, OSError) and first.strerror:
        text = f"{first.strerror}: {first.filename}" if first.filename else first.strerror
    return text


def _stderr_tail(errlog: IO[str]) -> str:
    errlog.seek(0)
    text = errlog.read()
    return text.strip()[-STDERR_TAIL_CHARS:]


def _where(name: str, server: McpServer) -> str:
    if isinstance(server, StdioServer):
        return f"MCP server {name!r} (command {server.command!r})"
    return f"MCP server {name!r} ({server.url})"


async def _run(name: str, server: McpServer, timeout_s: float, request: str, work: Any) -> Any:
    """Run ``work(session)`` in a fresh session within ``timeout_s``; map every failure to an
    ExecutorError naming the server, with the server's own message (and stderr tail)."""
    from mcp.shared.exceptions import MCPError

    errlog = await asyncio.to_thread(tempfile.TemporaryFile, "w+", encoding="utf-8")
    phase = "starting"
    try:
        with anyio.fail_after(timeout_s):
            async with open_session(server, errlog) as session:
                phase = request
                return await work(session)
    except TimeoutError as exc:
        raise McpTimeoutError(
            f"{_where(name, server)}: no answer within {timeout_s:g} s while {phase} "
            "(AGENT_ENGINE_MCP_TIMEOUT_S)",
            server=name,
        ) from exc
    except ExecutorError:
        raise
    except Exception as exc:  # the SDK raises OSError, MCPError, httpx errors, in groups
        message = _describe(exc)
        tail = await asyncio.to_thread(_stderr_tail, errlog)
        if tail:
            message = f"{message}; server stderr: {tail}"
        protocol = [leaf for leaf in _leaves(exc) if isinstance(leaf, MCPError)]
        if phase != "starting" and protocol and "connection closed" not in message.lower():
            raise McpToolError(
                f"{_where(name, server)} refused {request}: {message}", server=name
            ) from exc
        raise McpUnavailableError(
            f"{_where(name, server)} is unavailable ({phase}): {message}", server=name
        ) from exc
    finally:
        await asyncio.to_thread(errlog.close)


def _tool_info(tool: Any) -> ToolInfo:
    annotations = tool.annotations
    return ToolInfo(
        name=tool.name,
        description=(tool.description or tool.title or "").strip(),
        input_schema=dict(tool.input_schema or {"type": "object"}),
        read_only=bool(annotations is not None and annotations.read_only_hint is True),
    )


async def list_tools(name: str, server: McpServer, timeout_s: float) -> dict[str, ToolInfo]:
    """Every tool the server lists (all pages), by name."""
    from mcp.types import PaginatedRequestParams

    async def work(session: ClientSession) -> dict[str, ToolInfo]:
        tools: dict[str, ToolInfo] = {}
        cursor: str | None = None
        for _ in range(MAX_TOOL_PAGES):
            params = PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            tools.update((tool.name, _tool_info(tool)) for tool in page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    result: dict[str, ToolInfo] = await _run(name, server, timeout_s, "listing tools", work)
    return result


async def call_tool(
    name: str, server: McpServer, tool: str, arguments: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    """The tool's result as JSON (``content``, ``structuredContent``, ``isError``)."""

    async def work(session: ClientSession) -> dict[str, Any]:
        result = await session.call_tool(tool, arguments)
        dumped: dict[str, Any] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        return dumped

    result: dict[str, Any] = await _run(name, server, timeout_s, f"calling {tool!r}", work)
    return result


async def refresh_listings(servers: McpServers, names: Iterable[str] | None = None) -> None:
    """List the tools of ``names`` (default: every server) that are not listed yet, at once;
    a server that cannot be reached is remembered with the reason, and tried again next time."""
    wanted = sorted(
        {n for n in (servers.servers if names is None else names) if n in servers.servers}
    )
    pending = [n for n in wanted if servers.tools_of(n) is None]
    if not pending:
        return

    async def one(name: str) -> None:
        try:
            tools = await list_tools(name, servers.servers[name], servers.timeout_s)
        except ExecutorError as exc:
            logger.warning("MCP tools not listed: %s", exc.detail)
            servers.listings[name] = Listing(None, exc.detail)
            return
        servers.listings[name] = Listing(tools)

    await asyncio.gather(*(one(name) for name in pending))


def describe_server(server: McpServer) -> dict[str, Any]:
    """The server as an approver sees it: the command it runs or the URL it calls."""
    if isinstance(server, HttpServer):
        return {"transport": "streamable-http", "url": server.url}
    return {"transport": "stdio", "command": [server.command, *server.args], "cwd": server.cwd}
