"""The chaos run's MCP server (stdio): one writing tool, ``record``, that appends its marker to
the server's own log file (``CHAOS_MCP_LOG``), so a tool call applied twice shows as a repeated
line whatever the engine recorded.

Run as ``python bench/chaos/mcp_server.py``; the engine starts it once per call.
"""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("chaos-server")
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False)


@server.tool(annotations=WRITES)
def record(marker: str) -> str:
    """Append ``marker`` as one line to the server's log (a side effect the engine cannot undo)."""
    with open(os.environ["CHAOS_MCP_LOG"], "a", encoding="utf-8") as log:
        log.write(marker + "\n")
        log.flush()
        os.fsync(log.fileno())
    return f"recorded {marker}"


if __name__ == "__main__":
    server.run("stdio")
