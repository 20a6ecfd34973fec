"""Starting the engine's own processes (router, API, workers) for multi-process tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.sandboxing import SANDBOX_ENV


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment without engine settings or provider keys, plus ``overrides``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AGENT_ENGINE_") and k not in {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
    }
    env.update(SANDBOX_ENV)
    env.update(overrides)
    return env


def wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited early:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"process never became healthy:\n{log_path.read_text(errors='replace')}")


@contextmanager
def running(argv: list[str], workdir: Path, env: dict[str, str], port: int) -> Iterator[str]:
    """Run ``python -m …argv`` in ``workdir`` until the block ends; yields its base URL."""
    log_path = workdir / f"process-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def router_process(workdir: Path, env: dict[str, str]) -> Iterator[str]:
    """The Smart Model Router as its own process on a free port."""
    port = free_port()
    argv = ["agent_engine.router", "--port", str(port), "--log-level", "warning"]
    with running(argv, workdir, env, port) as url:
        yield url


def start_worker(
    workdir: Path, env: dict[str, str], worker_id: str, *, concurrency: int = 4
) -> subprocess.Popen[bytes]:
    """``agent-engine worker`` as its own process; its log goes to ``<workdir>/<id>.log``."""
    with (workdir / f"{worker_id}.log").open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent_engine",
                "worker",
                "--id",
                worker_id,
                "--concurrency",
                str(concurrency),
            ],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
