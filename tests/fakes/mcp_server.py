"""A small MCP server of our own (the SDK's MCPServer) for the failure cases the reference
servers never show: a tool that raises, one that sleeps past the timeout, a huge result, and a
read-only tool beside a writing one.

Run as ``python tests/fakes/mcp_server.py`` (stdio) or ``… http PORT`` (streamable HTTP on
127.0.0.1:PORT, path ``/mcp``).
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

server = MCPServer("engine-test-server")
READ_ONLY = ToolAnnotations(read_only_hint=True)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=True)


@server.tool(annotations=READ_ONLY)
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool(annotations=WRITES)
def write_note(text: str) -> str:
    """Pretend to write a note somewhere (the tool the engine must hold for approval)."""
    return f"wrote {len(text)} characters"


@server.tool(annotations=READ_ONLY)
def fail(message: str) -> str:
    """Raise: the SDK turns it into a result with isError true and the message."""
    raise ToolError(message)


@server.tool(annotations=READ_ONLY)
async def sleep(seconds: float) -> str:
    """Answer after ``seconds``."""
    await asyncio.sleep(seconds)
    return "awake"


@server.tool(annotations=READ_ONLY)
def huge(size: int) -> str:
    """A result of ``size`` characters."""
    return "x" * size


@server.tool(annotations=READ_ONLY)
def environment() -> list[str]:
    """The names of the variables this server was started with."""
    return sorted(os.environ)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
