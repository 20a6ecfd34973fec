"""The agent-engine command: real subprocesses, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent_engine import __version__
from tests.processes import clean_env


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_engine", *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_version(tmp_path: Path) -> None:
    result = run_cli("version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == __version__


def test_db_upgrade_then_downgrade_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    up = run_cli("db", "upgrade", cwd=tmp_path, AGENT_ENGINE_DATABASE_URL=url)
    assert up.returncode == 0, up.stderr
    assert (tmp_path / "cli.db").exists()
    down = run_cli("db", "downgrade", "base", cwd=tmp_path, AGENT_ENGINE_DATABASE_URL=url)
    assert down.returncode == 0, down.stderr


def test_bad_configuration_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = run_cli("serve", cwd=tmp_path, AGENT_ENGINE_PORT="not-a-port")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "AGENT_ENGINE_PORT" in lines[0]
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "db",
        "upgrade",
        cwd=tmp_path,
        AGENT_ENGINE_DATABASE_URL="postgresql+asyncpg://nobody@127.0.0.1:1/none",
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_bad_option_is_refused(tmp_path: Path) -> None:
    result = run_cli("worker", "--concurrency", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "concurrency" in result.stderr
