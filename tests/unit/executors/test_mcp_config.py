"""The MCP servers file: the shapes MCP clients write are read; a bad file is refused in one line
naming the file and the field. And the result cap: a huge result is cut with a marker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent_engine.errors import McpServersFileError
from agent_engine.executors.mcp_config import HttpServer, StdioServer, load_mcp_servers
from agent_engine.executors.mcp_tool import cap_result


def write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def test_servers_file_reads_stdio_and_streamable_http_entries(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "mcpServers": {
                "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}},
                "remote": {"url": "http://127.0.0.1:9000/mcp"},
                "typed": {
                    "type": "http",
                    "url": "https://tools.example/mcp",
                    "headers": {"Authorization": "Bearer x"},
                },
                "explicit-stdio": {"type": "stdio", "command": "/usr/bin/server"},
            }
        },
    )
    servers = load_mcp_servers(path, timeout_s=5, output_cap_bytes=2048)
    assert servers.servers["time"] == StdioServer(
        command="uvx", args=("mcp-server-time",), env={"TZ": "UTC"}
    )
    assert servers.servers["remote"] == HttpServer(url="http://127.0.0.1:9000/mcp")
    assert isinstance(servers.servers["typed"], HttpServer)
    assert servers.servers["typed"].headers == {"Authorization": "Bearer x"}
    assert isinstance(servers.servers["explicit-stdio"], StdioServer)
    assert (servers.timeout_s, servers.output_cap_bytes) == (5, 2048)
    assert servers.listings == {}


def test_no_servers_file_means_no_servers() -> None:
    servers = load_mcp_servers(None)
    assert servers.servers == {}
    assert servers.where() == "no servers file"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("{not json", "not valid JSON"),
        ({"servers": {}}, "mcpServers: Field required"),
        ([], "(top level)"),
        ({"mcpServers": {"x": {"args": []}}}, "mcpServers.x: needs `command` (stdio) or `url`"),
        ({"mcpServers": {"x": {"command": "a", "url": "http://h/mcp"}}}, "has both `command`"),
        ({"mcpServers": {"x": {"type": "sse", "url": "http://h/sse"}}}, "type sse"),
        ({"mcpServers": {"x": "npx server"}}, "mcpServers.x: must be an object"),
        ({"mcpServers": {"x": {"command": "a", "args": "b c"}}}, "mcpServers.x.args"),
        ({"mcpServers": {"x": {"command": "a", "env": {"K": 1}}}}, "mcpServers.x.env.K"),
        ({"mcpServers": {"x": {"command": "a", "disabled": True}}}, "mcpServers.x.disabled"),
        ({"mcpServers": {"x": {"url": "ftp://h/mcp"}}}, "mcpServers.x.url"),
        ({"mcpServers": {"x": {"type": "http", "command": "a"}}}, "mcpServers.x.type"),
        ({"mcpServers": {"bad name": {"command": "a"}}}, "'bad name' (server name"),
    ],
)
def test_bad_servers_file_is_refused_naming_file_and_field(
    tmp_path: Path, document: Any, expected: str
) -> None:
    path = write(tmp_path, document)
    with pytest.raises(McpServersFileError) as caught:
        load_mcp_servers(path)
    assert caught.value.detail.startswith(f"MCP servers file {path}: ")
    assert expected in caught.value.detail
    assert "\n" not in caught.value.detail


def test_missing_servers_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(McpServersFileError, match="cannot be read"):
        load_mcp_servers(tmp_path / "absent.json")


def test_result_within_cap_is_kept_whole() -> None:
    result = {"content": [{"type": "text", "text": "hi"}], "structuredContent": {"a": 1}}
    assert cap_result(result, 1024) == ([{"type": "text", "text": "hi"}], {"a": 1}, False)


def test_huge_result_is_cut_at_the_cap_with_a_marker() -> None:
    text = "é" * 10_000  # two bytes each: the cut must not split a character
    result = {
        "content": [{"type": "text", "text": text}, {"type": "text", "text": "later"}],
        "structuredContent": {"result": text},
    }
    content, structured, truncated = cap_result(result, 4096)
    assert truncated
    assert structured is None
    assert len(content) == 1
    kept = content[0]["text"]
    assert kept.startswith("éé")
    assert kept.endswith("bytes of the tool's result]")
    assert "[… truncated " in kept
    assert len(json.dumps(content, ensure_ascii=False).encode()) <= 4096
