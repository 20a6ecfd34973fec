"""The mcp_tool executor against real MCP servers started here: the reference time and git
servers from PyPI, and our own failure server over stdio and streamable HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from agent_engine.domain.retry import is_retryable
from agent_engine.errors import (
    CancelledError,
    McpNotConfiguredError,
    McpTimeoutError,
    McpToolError,
    McpUnavailableError,
)
from agent_engine.executors.base import ExecutionLimits, ExecutorContext
from agent_engine.executors.mcp_config import McpServers, load_mcp_servers
from agent_engine.executors.mcp_servers import refresh_listings
from agent_engine.executors.mcp_tool import MCP_TOOL, McpToolOutput, catalog_entries
from agent_engine.llm.base import CompletionRequest, CompletionResponse, LLMCallRecord, LLMClient
from tests.mcp_servers import (
    dead_server,
    fake_server,
    git_repository,
    git_server,
    http_fake_server,
    time_server,
    write_servers,
)
from tests.processes import free_port


class NoModel(LLMClient):
    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        raise AssertionError("mcp_tool never calls a model")

    @property
    def calls(self) -> list[LLMCallRecord]:
        return []


def servers_for(tmp_path: Path, entries: dict[str, Any], **caps: Any) -> McpServers:
    return load_mcp_servers(write_servers(tmp_path, entries), **caps)


def context_for(servers: McpServers) -> ExecutorContext:
    return ExecutorContext(
        run_id="run",
        step_number=1,
        workspace_root=None,
        llm=NoModel(),
        logger=logging.getLogger("test"),
        limits=ExecutionLimits(mcp_servers=servers),
    )


async def call(servers: McpServers, server: str, tool: str, **arguments: Any) -> McpToolOutput:
    data = {"server": server, "tool": tool, "arguments": arguments}
    return await MCP_TOOL.execute(MCP_TOOL.validate_input(data), context_for(servers))


async def test_time_server_answers_the_current_time_in_the_timezone(tmp_path: Path) -> None:
    servers = servers_for(tmp_path, {"time": time_server()})
    output = await call(servers, "time", "get_current_time", timezone="Asia/Tokyo")
    assert output.structured_content["timezone"] == "Asia/Tokyo"
    assert output.structured_content["datetime"].endswith("+09:00")
    parsed = json.loads(output.content[0]["text"])
    assert parsed["timezone"] == "Asia/Tokyo"
    assert output.truncated is False


async def test_git_server_reports_status_and_log_of_a_repository(tmp_path: Path) -> None:
    repository = git_repository(tmp_path / "repo")
    servers = servers_for(tmp_path, {"git": git_server(repository)})
    status = await call(servers, "git", "git_status", repo_path=str(repository))
    assert "notes.txt" in status.content[0]["text"]
    log = await call(servers, "git", "git_log", repo_path=str(repository))
    assert "First commit" in log.content[0]["text"]
    assert "Ada" in log.content[0]["text"]


async def test_tool_lists_give_read_only_hints_and_catalog_entries(tmp_path: Path) -> None:
    repository = git_repository(tmp_path / "repo")
    servers = servers_for(tmp_path, {"git": git_server(repository), "own": fake_server()})
    await refresh_listings(servers)
    assert servers.tool("git", "git_status").read_only  # type: ignore[union-attr]
    assert not servers.tool("git", "git_commit").read_only  # type: ignore[union-attr]
    assert (
        MCP_TOOL.requires_approval_for(
            {"server": "own", "tool": "echo"}, ExecutionLimits(mcp_servers=servers)
        )
        is False
    )
    for tool in ("write_note", "not_listed"):
        assert MCP_TOOL.requires_approval_for(
            {"server": "own", "tool": tool}, ExecutionLimits(mcp_servers=servers)
        )
    entries = {
        (
            e["input_schema"]["properties"]["server"]["const"],
            e["input_schema"]["properties"]["tool"]["const"],
        ): e
        for e in catalog_entries(servers)
    }
    commit = entries[("git", "git_commit")]
    assert commit["step_type"] == "mcp_tool"
    assert commit["requires_approval"] is True
    assert "message" in commit["input_schema"]["properties"]["arguments"]["properties"]
    assert entries[("own", "echo")]["requires_approval"] is False


async def test_plan_check_refuses_unknown_server_and_unlisted_tool(tmp_path: Path) -> None:
    servers = servers_for(tmp_path, {"own": fake_server(), "down": dead_server()})
    await refresh_listings(servers)
    limits = ExecutionLimits(mcp_servers=servers)
    [problem] = MCP_TOOL.check_plan_input({"server": "nope", "tool": "x"}, limits)
    assert problem.field == "server"
    assert "'nope' is not configured" in problem.message
    assert "['down', 'own']" in problem.message
    [problem] = MCP_TOOL.check_plan_input({"server": "own", "tool": "rm_rf"}, limits)
    assert problem.field == "tool"
    assert "'rm_rf'" in problem.message and "echo" in problem.message
    assert MCP_TOOL.check_plan_input({"server": "own", "tool": "echo"}, limits) == []
    # A server that could not be listed: its step is checked when it runs, and the reason kept.
    assert MCP_TOOL.check_plan_input({"server": "down", "tool": "any"}, limits) == []
    assert "cannot start: no database" in (servers.listing_error("down") or "")


async def test_tool_that_raises_fails_the_step_with_its_message(tmp_path: Path) -> None:
    servers = servers_for(tmp_path, {"own": fake_server()})
    with pytest.raises(McpToolError) as caught:
        await call(servers, "own", "fail", message="the disk is full")
    assert caught.value.code == "mcp_error"
    assert caught.value.detail.startswith("MCP tool own.fail failed: ")
    assert caught.value.detail.endswith("the disk is full")
    assert is_retryable(caught.value)


async def test_unknown_tool_at_run_time_is_a_tool_error(tmp_path: Path) -> None:
    servers = servers_for(tmp_path, {"own": fake_server()})
    with pytest.raises(McpToolError, match="nosuch"):
        await call(servers, "own", "nosuch")


async def test_tool_past_the_timeout_fails_the_step(tmp_path: Path) -> None:
    servers = servers_for(tmp_path, {"own": fake_server()}, timeout_s=3)
    with pytest.raises(McpTimeoutError) as caught:
        await call(servers, "own", "sleep", seconds=60)
    assert "no answer within 3 s while calling 'sleep'" in caught.value.detail
    assert "AGENT_ENGINE_MCP_TIMEOUT_S" in caught.value.detail
    assert is_retryable(caught.value)


async def test_cancelled_step_abandons_the_call(tmp_path: Path) -> None:
    servers = servers_for(tmp_path, {"own": fake_server()}, timeout_s=120)
    context = context_for(servers)
    data = {"server": "own", "tool": "sleep", "arguments": {"seconds": 600}}
    asyncio.get_running_loop().call_later(1.0, context.cancel_event.set)
    with pytest.raises(CancelledError, match="cancelled while it ran"):
        await MCP_TOOL.execute(MCP_TOOL.validate_input(data), context)
    context.cancel_event.set()
    with pytest.raises(CancelledError, match="before it was called"):
        await MCP_TOOL.execute(MCP_TOOL.validate_input(data), context)


async def test_huge_result_is_truncated_at_the_cap(tmp_path: Path) -> None:
    servers = servers_for(tmp_path, {"own": fake_server()}, output_cap_bytes=4096)
    output = await call(servers, "own", "huge", size=200_000)
    assert output.truncated
    assert output.result_bytes > 200_000
    text = output.content[0]["text"]
    assert text.startswith("xxxx")
    assert text.endswith("bytes of the tool's result]")
    assert len(json.dumps(output.model_dump(mode="json")["content"])) <= 4096
    assert output.structured_content is None


async def test_stdio_server_gets_only_its_configured_env_and_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    monkeypatch.setenv("AGENT_ENGINE_DATABASE_URL", "postgresql://secret")
    servers = servers_for(tmp_path, {"own": fake_server(SERVER_SETTING="on")})
    output = await call(servers, "own", "environment")
    names = set(output.structured_content["result"])
    assert {"PATH", "SERVER_SETTING"} <= names
    assert "OPENAI_API_KEY" not in names
    assert not any(name.startswith("AGENT_ENGINE_") for name in names)
    # What else there is: the SDK's non-secret defaults and Python's locale coercion.
    assert names <= {
        "PATH",
        "SERVER_SETTING",
        "HOME",
        "LOGNAME",
        "SHELL",
        "TERM",
        "USER",
        "LC_CTYPE",
    }


async def test_streamable_http_server_is_called(tmp_path: Path) -> None:
    with http_fake_server(tmp_path) as url:
        servers = servers_for(tmp_path, {"remote": {"url": url}}, timeout_s=5)
        await refresh_listings(servers)
        assert servers.tool("remote", "echo") is not None
        output = await call(servers, "remote", "echo", text="over http")
        assert output.content == [{"type": "text", "text": "over http"}]
        with pytest.raises(McpToolError, match="boom over http"):
            await call(servers, "remote", "fail", message="boom over http")
        with pytest.raises(McpTimeoutError, match="while calling 'sleep'"):
            await call(servers, "remote", "sleep", seconds=60)
        # The server is still there for the next call: only the late one was abandoned.
        assert (await call(servers, "remote", "echo", text="again")).content[0]["text"] == "again"


async def test_server_that_exits_at_once_is_unavailable_with_its_stderr(tmp_path: Path) -> None:
    servers = servers_for(tmp_path, {"down": dead_server()})
    with pytest.raises(McpUnavailableError) as caught:
        await call(servers, "down", "anything")
    assert caught.value.code == "mcp_unavailable"
    assert "MCP server 'down'" in caught.value.detail
    assert "cannot start: no database" in caught.value.detail
    assert is_retryable(caught.value)


async def test_missing_command_is_unavailable(tmp_path: Path) -> None:
    servers = servers_for(tmp_path, {"gone": {"command": str(tmp_path / "no-such-server")}})
    with pytest.raises(McpUnavailableError, match="No such file or directory"):
        await call(servers, "gone", "anything")


async def test_http_url_nobody_listens_on_is_unavailable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    servers = servers_for(tmp_path, {"remote": {"url": url}})
    with pytest.raises(McpUnavailableError) as caught:
        await call(servers, "remote", "echo", text="x")
    assert url in caught.value.detail


async def test_server_no_longer_configured_fails_without_retry(tmp_path: Path) -> None:
    servers = servers_for(tmp_path, {})
    with pytest.raises(McpNotConfiguredError) as caught:
        await call(servers, "time", "get_current_time", timezone="UTC")
    assert not is_retryable(caught.value)
