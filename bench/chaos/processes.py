"""The engine's processes under chaos: one API (``serve``, no embedded worker) and a few
``agent-engine worker`` processes, each logging to its own file, which the fault schedule kills
(``kill -9``), restarts, pauses (SIGSTOP) and resumes (SIGCONT)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
WORKER_READY = "started (concurrency"
LEASE_S = 2


class ProcessError(RuntimeError):
    """An engine process died or never became ready."""


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def engine_env(base: dict[str, str], **overrides: str) -> dict[str, str]:
    """The current environment without engine settings or provider keys, plus ``base`` and
    ``overrides`` (the source folder on ``PYTHONPATH``, so a checkout runs as it is)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AGENT_ENGINE_") and k not in {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
    }
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")) if p
    )
    env.update(base)
    env.update(overrides)
    return env


@dataclass
class EngineProcess:
    """One process of the engine and the file it logs to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    paused: bool = False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None


def _spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> EngineProcess:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "agent_engine", *argv],
            cwd=log_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return EngineProcess(name, popen, log_path)


def stop(process: EngineProcess) -> None:
    """SIGCONT (if paused), then SIGTERM, then SIGKILL after a grace period."""
    if not process.alive():
        return
    if process.paused:
        os.kill(process.popen.pid, signal.SIGCONT)
        process.paused = False
    process.popen.send_signal(signal.SIGTERM)
    try:
        process.popen.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.popen.kill()
        process.popen.wait(timeout=STOP_TIMEOUT_S)


def start_api(env: dict[str, str], log_dir: Path) -> tuple[EngineProcess, str]:
    """``agent-engine serve`` on a free port; returns it and its base URL once healthy."""
    port = free_port()
    process = _spawn("api", ["serve", "--port", str(port)], env, log_dir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not process.alive():
            raise ProcessError(f"the API exited early:\n{process.log()[-4000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop(process)
    raise ProcessError(f"the API never became healthy:\n{process.log()[-4000:]}")


@dataclass
class WorkerPool:
    """``count`` worker slots; a killed worker's slot gets a new process (and a new id)."""

    env: dict[str, str]
    log_dir: Path
    count: int
    concurrency: int = 4
    workers: list[EngineProcess] = field(default_factory=list)
    generation: int = 0
    refused_starts: int = 0

    def _start_one(self, slot: int) -> EngineProcess:
        self.generation += 1
        name = f"w{slot}-{self.generation}"
        argv = ["worker", "--id", name, "--concurrency", str(self.concurrency)]
        return _spawn(name, argv, self.env, self.log_dir)

    def start(self) -> None:
        """Start every slot's worker and wait until each logged that it started."""
        self.workers = [self._start_one(slot) for slot in range(self.count)]
        for worker in self.workers:
            self.wait_ready(worker)

    def wait_ready(self, worker: EngineProcess) -> None:
        """Wait until ``worker`` logged its start line."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while WORKER_READY not in worker.log():
            if not worker.alive():
                raise ProcessError(f"{worker.name} exited early:\n{worker.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise ProcessError(f"{worker.name} not ready:\n{worker.log()[-4000:]}")
            time.sleep(0.05)

    def kill_and_restart(self, slot: int) -> str:
        """``kill -9`` the slot's worker and start a new one in its place; the killed name."""
        victim = self.workers[slot]
        if victim.alive():
            victim.popen.send_signal(signal.SIGKILL)
            victim.popen.wait(timeout=STOP_TIMEOUT_S)
        self.workers[slot] = self._start_one(slot)
        return victim.name

    def pause(self, slot: int) -> str:
        """SIGSTOP the slot's worker; its name."""
        worker = self.workers[slot]
        os.kill(worker.popen.pid, signal.SIGSTOP)
        worker.paused = True
        return worker.name

    def resume(self, slot: int) -> None:
        """SIGCONT the slot's worker."""
        worker = self.workers[slot]
        if worker.paused:
            os.kill(worker.popen.pid, signal.SIGCONT)
            worker.paused = False

    def revive_dead(self) -> list[str]:
        """Restart, as a supervisor would, any worker that exited on its own; the ones that had
        started and then died (a crash, reported). One that exited before it started (it checks
        the database at start-up, and refuses to start while PostgreSQL restarts) is counted in
        ``refused_starts`` instead."""
        died = []
        for slot, worker in enumerate(self.workers):
            if worker.alive() or worker.paused:
                continue
            if WORKER_READY in worker.log():
                died.append(f"{worker.name} exited with {worker.popen.returncode}")
            else:
                self.refused_starts += 1
            self.workers[slot] = self._start_one(slot)
        return died

    def stop_all(self) -> None:
        """Stop every worker."""
        for worker in self.workers:
            stop(worker)
