"""The agent-engine command: real subprocesses, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent_engine import __version__
from tests.processes import clean_env, free_port, stop


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


AGENT_ENGINE = str(Path(sys.executable).with_name("agent-engine"))  # the installed console script


def run_command(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENT_ENGINE, *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("postgres://postgres@127.0.0.1/db", "start the URL with 'postgresql+asyncpg://'"),
        ("postgresql://postgres@127.0.0.1/db", "start the URL with 'postgresql+asyncpg://'"),
        ("sqlite:///./engine.db", "start the URL with 'sqlite+aiosqlite://'"),
        ("mysql://root@127.0.0.1/db", "unsupported database 'mysql'"),
        ("sqlite+aiosqlite:///./missing/engine.db", "mkdir -p"),
        (
            "postgresql+asyncpg://nobody:secret@127.0.0.1:1/none",
            "could not connect to the database",
        ),
    ],
)
@pytest.mark.parametrize("command", [("db", "upgrade"), ("serve",)])
def test_database_url_mistakes_are_one_line_naming_the_variable_and_the_fix(
    tmp_path: Path, url: str, fix: str, command: tuple[str, ...]
) -> None:
    result = run_command(*command, cwd=tmp_path, AGENT_ENGINE_DATABASE_URL=url)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "AGENT_ENGINE_DATABASE_URL" in lines[0]
    assert fix in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert "secret" not in result.stderr  # a password never reaches the terminal
    assert not (tmp_path / "missing").exists()  # the folder was not made behind the user's back


def test_refused_connection_says_it_was_the_database_and_where(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://nobody:secret@127.0.0.1:1/none"
    result = run_command("worker", cwd=tmp_path, AGENT_ENGINE_DATABASE_URL=url)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: could not connect to the database at "
        "postgresql+asyncpg://nobody:***@127.0.0.1:1/none (set by AGENT_ENGINE_DATABASE_URL): "
        "[Errno 111] Connect call failed ('127.0.0.1', 1)"
    )


def test_default_database_is_made_in_the_working_folder(tmp_path: Path) -> None:
    result = run_command("db", "upgrade", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "agent-engine.db").is_file()


def test_serve_says_at_start_which_database_worker_model_and_roots(tmp_path: Path) -> None:
    roots = [tmp_path / "one", tmp_path / "two"]
    port = free_port()
    with subprocess.Popen(
        [AGENT_ENGINE, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(
            AGENT_ENGINE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'engine.db'}",
            AGENT_ENGINE_WORKSPACE_ROOTS=",".join(str(root) for root in roots),
            AGENT_ENGINE_WORKER_CONCURRENCY="3",
        ),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    ) as process:
        # Failure bound only: a server that never says it kills the read below.
        watchdog = threading.Timer(60, process.kill)
        watchdog.start()
        seen: list[str] = []
        try:
            assert process.stderr is not None
            for line in process.stderr:
                seen.append(line)
                if "agent_engine.serve" in line:
                    break
        finally:
            watchdog.cancel()
            stop(process)
    startup = seen[-1] if seen else ""
    assert "agent_engine.serve" in startup, "".join(seen)
    assert f"database sqlite+aiosqlite:///{tmp_path / 'engine.db'}" in startup
    assert "embedded worker on (concurrency 3)" in startup
    assert "model offline:offline-1" in startup
    assert f"workspace roots {roots[0]}, {roots[1]}" in startup
    assert "Traceback" not in "".join(seen)
