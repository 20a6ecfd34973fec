"""``serve`` and ``worker`` refuse a policies or MCP servers file they cannot use: one line,
file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_cli import run_cli


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_bad_policies_file_stops_the_start_in_one_line(tmp_path: Path, command: str) -> None:
    policies = tmp_path / "policies.yaml"
    policies.write_text("policies:\n  ci:\n    rules:\n      - {step_type: x, action: allow}\n")
    result = run_cli(command, cwd=tmp_path, AGENT_ENGINE_POLICIES_FILE=str(policies))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "AGENT_ENGINE_POLICIES_FILE" in lines[0] and str(policies) in lines[0]
    assert "policies.ci.rules.0.action" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_bad_mcp_servers_file_stops_the_start_in_one_line(tmp_path: Path, command: str) -> None:
    servers = tmp_path / "mcp.json"
    servers.write_text('{"mcpServers": {"time": {"command": "mcp-server-time", "args": "-v"}}}')
    result = run_cli(command, cwd=tmp_path, AGENT_ENGINE_MCP_SERVERS=str(servers))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "AGENT_ENGINE_MCP_SERVERS" in lines[0] and str(servers) in lines[0]
    assert "mcpServers.time.args" in lines[0]
    assert "Traceback" not in result.stderr
