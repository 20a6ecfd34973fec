"""`agent-engine keys` and the bind rule of `serve`, as real subprocesses: off loopback, `serve`
refuses to start until an admin key exists, and then requires keys."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import httpx

from tests.integration.test_cli import AGENT_ENGINE, run_command
from tests.processes import clean_env, free_port, stop, wait_healthy

MAKE_ADMIN = "`agent-engine keys create --role admin`"


def _db(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'engine.db'}"


def test_keys_are_made_once_listed_and_revoked_with_one_line_errors(tmp_path: Path) -> None:
    db = _db(tmp_path)
    made = run_command(
        "keys",
        "create",
        "--name",
        "ci",
        "--role",
        "operator",
        cwd=tmp_path,
        AGENT_ENGINE_DATABASE_URL=db,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("ae_") and len(token.splitlines()) == 1
    assert "shown only now" in made.stderr
    listed = run_command("keys", "list", cwd=tmp_path, AGENT_ENGINE_DATABASE_URL=db)
    assert listed.returncode == 0 and "ci" in listed.stdout and "operator" in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout
    for args, fragment in [
        (("create", "--name", "ci", "--role", "viewer"), "exists already"),
        (("create", "--name", "x", "--role", "boss"), "unknown role 'boss'"),
        (("revoke", "nobody"), "no API key named 'nobody'"),
    ]:
        failed = run_command("keys", *args, cwd=tmp_path, AGENT_ENGINE_DATABASE_URL=db)
        assert failed.returncode != 0
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0]
    revoked = run_command("keys", "revoke", "ci", cwd=tmp_path, AGENT_ENGINE_DATABASE_URL=db)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout


def test_serve_off_loopback_without_an_admin_key_exits_with_one_line_and_never_binds(
    tmp_path: Path,
) -> None:
    port = free_port()
    result = run_command(
        "serve",
        "--port",
        str(port),
        cwd=tmp_path,
        AGENT_ENGINE_HOST="0.0.0.0",
        AGENT_ENGINE_DATABASE_URL=_db(tmp_path),
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "no admin API key exists" in lines[0]
    assert "agent-engine keys create" in lines[0] and "--role admin" in lines[0]
    assert "Uvicorn running" not in result.stderr + result.stdout
    # A viewer key is not enough either.
    run_command(
        "keys",
        "create",
        "--name",
        "v",
        "--role",
        "viewer",
        cwd=tmp_path,
        AGENT_ENGINE_DATABASE_URL=_db(tmp_path),
    )
    again = run_command(
        "serve",
        "--port",
        str(port),
        cwd=tmp_path,
        AGENT_ENGINE_AUTH_REQUIRED="true",
        AGENT_ENGINE_DATABASE_URL=_db(tmp_path),
    )
    assert again.returncode != 0 and "AGENT_ENGINE_AUTH_REQUIRED" in again.stderr


def test_serve_off_loopback_with_an_admin_key_starts_and_requires_keys(tmp_path: Path) -> None:
    db = _db(tmp_path)
    made = run_command(
        "keys",
        "create",
        "--name",
        "root",
        "--role",
        "admin",
        cwd=tmp_path,
        AGENT_ENGINE_DATABASE_URL=db,
    )
    token = made.stdout.strip()
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [AGENT_ENGINE, "serve", "--host", "0.0.0.0", "--port", str(port)],
            cwd=tmp_path,
            env=clean_env(AGENT_ENGINE_DATABASE_URL=db),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log_path)
        without = httpx.get(f"{url}/v1/agent-runs", timeout=10)
        with_key = httpx.get(
            f"{url}/v1/agent-runs", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
    finally:
        stop(process)
    assert without.status_code == 401 and without.headers["www-authenticate"] == "Bearer"
    assert with_key.status_code == 200
    assert "auth on (bound to 0.0.0.0): API keys required" in log_path.read_text()


def test_serve_on_loopback_says_auth_is_off(tmp_path: Path) -> None:
    with subprocess.Popen(
        [AGENT_ENGINE, "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=clean_env(AGENT_ENGINE_DATABASE_URL=_db(tmp_path)),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    ) as process:
        watchdog = threading.Timer(60, process.kill)  # failure bound only
        watchdog.start()
        startup = ""
        try:
            assert process.stderr is not None
            for line in process.stderr:
                if "agent_engine.serve" in line:
                    startup = line
                    break
        finally:
            watchdog.cancel()
            stop(process)
    assert "auth off: loopback only; X-Actor honoured" in startup
