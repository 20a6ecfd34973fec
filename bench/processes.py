"""Worker processes for the multi-process measurements: start, wait until ready, stop, and
collect what they logged as warnings or errors (problems worth reporting)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
PROBLEM_MARKERS = ("WARNING", "ERROR", "CRITICAL", "Traceback")


class ProcessError(RuntimeError):
    """A worker process died or never became ready."""


@dataclass
class WorkerProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def clean_env(**overrides: str) -> dict[str, str]:
    """The current environment without ``AGENT_ENGINE_*`` settings, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_ENGINE_")}
    env.update(overrides)
    return env


def _start(
    name: str, module_argv: Sequence[str], env: Mapping[str, str], log_dir: Path
) -> WorkerProcess:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", *module_argv],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
    return WorkerProcess(name, popen, log_path)


def _wait_ready(process: WorkerProcess, marker: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if marker in process.log():
            return
        if process.popen.poll() is not None:
            raise ProcessError(f"{process.name} exited early:\n{process.log()[-4000:]}")
        time.sleep(0.05)
    raise ProcessError(f"{process.name} not ready after {timeout_s:.0f}s:\n{process.log()[-4000:]}")


def _stop(process: WorkerProcess) -> None:
    if process.popen.poll() is None:
        process.popen.send_signal(signal.SIGTERM)
        try:
            process.popen.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def worker_processes(
    count: int,
    argv_for: Callable[[int], Sequence[str]],
    *,
    env: Mapping[str, str],
    log_dir: Path,
    ready_marker: str,
) -> Iterator[list[WorkerProcess]]:
    """Start ``count`` processes (``python -m <argv_for(i)>``), yield once all logged the marker.

    Their logs go to a new directory under ``log_dir``, one per call.
    """
    own_dir = Path(tempfile.mkdtemp(prefix="workers-", dir=log_dir))
    started: list[WorkerProcess] = []
    try:
        for index in range(count):
            started.append(_start(f"worker-{index}", argv_for(index), env, own_dir))
        for process in started:
            _wait_ready(process, ready_marker, READY_TIMEOUT_S)
        yield started
    finally:
        for process in started:
            _stop(process)


def logged_problems(processes: Sequence[WorkerProcess], *, limit: int = 5) -> list[str]:
    """Warning/error lines the processes logged (first ``limit``, with the total count)."""
    lines = [
        f"{process.name}: {line.strip()}"
        for process in processes
        for line in process.log().splitlines()
        if any(marker in line for marker in PROBLEM_MARKERS)
    ]
    if len(lines) > limit:
        return [*lines[:limit], f"... {len(lines) - limit} more warning/error lines"]
    return lines
