"""MCP servers for tests: the reference servers from PyPI and our own failure server, started
locally (stdio subprocesses, or streamable HTTP on a loopback port); no network."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.processes import free_port

BIN = Path(sys.executable).parent
FAKE_SERVER = Path(__file__).parent / "fakes" / "mcp_server.py"


def time_server() -> dict[str, Any]:
    return {"command": str(BIN / "mcp-server-time"), "args": ["--local-timezone", "Etc/UTC"]}


def git_server(repository: Path) -> dict[str, Any]:
    return {"command": str(BIN / "mcp-server-git"), "args": ["--repository", str(repository)]}


def fake_server(**env: str) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(FAKE_SERVER)], "env": env}


def dead_server() -> dict[str, Any]:
    """A configured server whose command exits at once, saying why on stderr."""
    code = "import sys; print('cannot start: no database', file=sys.stderr); sys.exit(3)"
    return {"command": sys.executable, "args": ["-c", code]}


def write_servers(folder: Path, servers: dict[str, Any]) -> Path:
    path = folder / "mcp.json"
    path.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    return path


def git_repository(folder: Path) -> Path:
    """A small repository: one commit and one untracked file."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_SYSTEM": "/dev/null", "HOME": str(folder)}

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=folder, env=env, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (folder / "README.md").write_text("inventory\n", encoding="utf-8")
    git("add", "README.md")
    git("-c", "user.name=Ada", "-c", "user.email=ada@example.org", "commit", "-qm", "First commit")
    (folder / "notes.txt").write_text("untracked\n", encoding="utf-8")
    return folder


@contextmanager
def http_fake_server(log_folder: Path) -> Iterator[str]:
    """Our failure server over streamable HTTP on a loopback port; yields its /mcp URL."""
    port = free_port()
    log_path = log_folder / f"mcp-http-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(FAKE_SERVER), "http", str(port)], stdout=log, stderr=log
        )
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"MCP server exited:\n{log_path.read_text(errors='replace')}")
            try:
                httpx.get(url, timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)
