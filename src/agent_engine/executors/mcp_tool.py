"""``mcp_tool``: call one tool of a configured MCP server and record what it answered."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Coroutine, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent_engine.domain.plan import PlanStep
from agent_engine.errors import CancelledError, McpNotConfiguredError, McpToolError
from agent_engine.executors.base import (
    ExecutionLimits,
    Executor,
    ExecutorContext,
    InputProblem,
    Reconciliation,
)
from agent_engine.executors.mcp_config import SERVER_NAME, McpServers, ToolInfo
from agent_engine.executors.mcp_servers import call_tool, describe_server

TRUNCATION_MARK = "\n[… truncated {dropped} bytes of the tool's result]"
MESSAGE_CHARS = 2000  # of a failing tool's text, kept in the step's error


class McpToolInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server: str = Field(pattern=SERVER_NAME, description="A server of the MCP servers file.")
    tool: str = Field(min_length=1, max_length=128, description="A tool the server lists.")
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="The tool's arguments (its input schema); $refs allowed."
    )


class McpToolOutput(BaseModel):
    server: str
    tool: str
    content: list[dict[str, Any]] = Field(description="The tool's content blocks, as JSON.")
    structured_content: Any = Field(default=None, description="structuredContent, when sent.")
    truncated: bool = False
    result_bytes: int = Field(description="Size of the whole result as JSON, before any cut.")


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _cut_text(text: str, keep_bytes: int) -> str:
    data = text.encode("utf-8")
    kept = data[: max(keep_bytes, 0)].decode("utf-8", errors="ignore")
    return kept + TRUNCATION_MARK.format(dropped=len(data) - len(kept.encode("utf-8")))


def cap_result(result: dict[str, Any], cap_bytes: int) -> tuple[list[dict[str, Any]], Any, bool]:
    """Content blocks and structured content that fit in ``cap_bytes`` as JSON: whole blocks
    while they fit, the first text block that does not is cut with a marker, the rest dropped."""
    budget = cap_bytes
    blocks: list[dict[str, Any]] = []
    truncated = False
    for block in result.get("content") or []:
        size = _size(block)
        if size <= budget:
            blocks.append(block)
            budget -= size
            continue
        truncated = True
        if block.get("type") == "text" and budget > 256:
            overhead = size - _size(block.get("text", ""))
            blocks.append({**block, "text": _cut_text(str(block["text"]), budget - overhead - 64)})
        budget = 0
    structured = result.get("structuredContent")
    if structured is not None and _size(structured) > budget:
        # Usually the same data as the text blocks: dropped whole, a cut object means nothing.
        structured, truncated = None, True
    return blocks, structured, truncated


def _literal(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _servers(limits: ExecutionLimits | None) -> McpServers | None:
    return limits.mcp_servers if limits is not None else None


def _error_text(result: dict[str, Any]) -> str:
    texts = [str(b.get("text", "")) for b in result.get("content") or [] if b.get("type") == "text"]
    text = "\n".join(t for t in texts if t).strip() or "the tool reported an error"
    return text[:MESSAGE_CHARS]


async def _unless_cancelled(
    call: Coroutine[Any, Any, dict[str, Any]], context: ExecutorContext, what: str
) -> dict[str, Any]:
    """The call's result, or CancelledError as soon as the step is cancelled (the call is
    abandoned: a stdio server is stopped, an HTTP session closed)."""
    if context.cancelled:
        call.close()
        raise CancelledError(f"{what} cancelled before it was called")
    task = asyncio.ensure_future(call)
    waiter = asyncio.ensure_future(context.cancel_event.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise CancelledError(f"{what} cancelled while it ran; the call was abandoned")
    return task.result()


class McpToolExecutor(Executor[McpToolInput, McpToolOutput]):
    """Calls one tool of a configured MCP server (stdio or streamable HTTP) with the arguments."""

    name = "mcp_tool"
    input_model = McpToolInput
    output_model = McpToolOutput
    side_effects = True  # a tool may write anything; read-only ones say so in their annotations
    idempotent = False
    requires_approval = True
    observes = True  # its result may change what the rest of an adaptive plan should be

    def tool_name(self, input: McpToolInput) -> str | None:
        """The MCP tool called."""
        return input.tool

    def requires_approval_for(
        self, input_data: dict[str, Any], limits: ExecutionLimits | None = None
    ) -> bool:
        """No approval only for a tool its server lists as read-only (``readOnlyHint``)."""
        tool = self._tool_of(input_data, limits)
        return tool is None or not tool.read_only

    def check_plan_input(
        self, input_data: dict[str, Any], limits: ExecutionLimits | None
    ) -> list[InputProblem]:
        """An unconfigured server, or a tool its listed server does not have, is refused."""
        servers = _servers(limits)
        server, tool = _literal(input_data.get("server")), _literal(input_data.get("tool"))
        if servers is None or server is None:
            return []
        if server not in servers.servers:
            known = sorted(servers.servers) or "none"
            return [
                InputProblem(
                    "server",
                    f"MCP server {server!r} is not configured in {servers.where()}; "
                    f"configured: {known}",
                )
            ]
        tools = servers.tools_of(server)
        # Not listed (the server could not be reached): the step is checked when it runs.
        if tool is None or tools is None or tool in tools:
            return []
        return [
            InputProblem(
                "tool", f"MCP server {server!r} has no tool {tool!r}; its tools: {sorted(tools)}"
            )
        ]

    async def preview(self, input: McpToolInput, context: ExecutorContext) -> dict[str, Any]:
        """The call, the server it goes to and what the server says of the tool."""
        servers = context.limits.mcp_servers
        config = servers.servers.get(input.server)
        tool = servers.tool(input.server, input.tool)
        return {
            "input": input.model_dump(mode="json"),
            "server": describe_server(config) if config is not None else None,
            "tool": (
                {"description": tool.description, "read_only": tool.read_only} if tool else None
            ),
        }

    async def reconcile(
        self, input: McpToolInput, intent: dict[str, Any], context: ExecutorContext
    ) -> Reconciliation:
        """A read-only tool is simply called again; any other's outcome is for a person."""
        tool = context.limits.mcp_servers.tool(input.server, input.tool)
        return Reconciliation("not_applied" if tool and tool.read_only else "unknown")

    async def execute(self, input: McpToolInput, context: ExecutorContext) -> McpToolOutput:
        servers = context.limits.mcp_servers
        config = servers.servers.get(input.server)
        if config is None:
            raise McpNotConfiguredError(
                f"MCP server {input.server!r} is not configured in {servers.where()}",
                server=input.server,
            )
        result = await _unless_cancelled(
            call_tool(input.server, config, input.tool, input.arguments, servers.timeout_s),
            context,
            f"MCP tool {input.server}.{input.tool}",
        )
        if result.get("isError"):
            raise McpToolError(
                f"MCP tool {input.server}.{input.tool} failed: {_error_text(result)}",
                server=input.server,
                tool=input.tool,
            )
        content, structured, truncated = cap_result(result, servers.output_cap_bytes)
        return McpToolOutput(
            server=input.server,
            tool=input.tool,
            content=content,
            structured_content=structured,
            truncated=truncated,
            result_bytes=_size(result),
        )

    @staticmethod
    def _tool_of(input_data: dict[str, Any], limits: ExecutionLimits | None) -> ToolInfo | None:
        servers = _servers(limits)
        server, tool = _literal(input_data.get("server")), _literal(input_data.get("tool"))
        if servers is None or server is None or tool is None:
            return None
        return servers.tool(server, tool)


MCP_TOOL = McpToolExecutor()


def catalog_entries(servers: McpServers) -> list[dict[str, Any]]:
    """One planner catalog entry per listed tool: ``mcp_tool`` with ``server`` and ``tool``
    fixed and the tool's own input schema as ``arguments``."""
    entries: list[dict[str, Any]] = []
    for server in sorted(servers.servers):
        for name, tool in sorted((servers.tools_of(server) or {}).items()):
            entries.append(
                {
                    "step_type": MCP_TOOL.name,
                    "description": f"MCP tool {server}.{name}: {tool.description}".strip(),
                    "requires_approval": not tool.read_only,
                    "input_schema": {
                        "type": "object",
                        "properties": {
                            "server": {"const": server},
                            "tool": {"const": name},
                            "arguments": tool.input_schema,
                        },
                        "required": ["server", "tool", "arguments"],
                        "additionalProperties": False,
                    },
                }
            )
    return entries


def servers_named(steps: Iterable[PlanStep]) -> set[str]:
    """The servers the plan's ``mcp_tool`` steps name literally."""
    return {
        step.input_data["server"]
        for step in steps
        if step.step_type == MCP_TOOL.name and isinstance(step.input_data.get("server"), str)
    }
