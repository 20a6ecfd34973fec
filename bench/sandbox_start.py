"""What the bubblewrap sandbox adds to a command's start: ``python3 -c pass`` through the
run_command executor, with the sandbox (its write layer made, and applied empty, included) and
without (AGENT_ENGINE_SANDBOX=none), p50 and p95.

Run ``python -m bench.sandbox_start [--runs N]``. Target: the sandbox adds at most 50 ms p50.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from agent_engine.executors.base import ExecutionLimits, ExecutorContext
from agent_engine.executors.run_command import RUN_COMMAND
from agent_engine.executors.sandbox import sandbox_refusal
from agent_engine.llm.base import CompletionRequest, CompletionResponse, LLMCallRecord, LLMClient
from bench.stats import Summary

TARGET_MS = 50.0


class _NoModel(LLMClient):
    """run_command never calls a model."""

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        raise AssertionError("run_command does not call a model")

    @property
    def calls(self) -> list[LLMCallRecord]:
        return []


def _context(workspace: Path, python: str, sandbox: str) -> ExecutorContext:
    limits = ExecutionLimits(command_allowlist=(python,), sandbox=sandbox)
    return ExecutorContext(
        run_id="bench",
        step_number=1,
        workspace_root=workspace,
        llm=_NoModel(),
        logger=logging.getLogger("bench.sandbox"),
        limits=limits,
    )


async def _sample(context: ExecutorContext, python: str, runs: int) -> list[float]:
    command = RUN_COMMAND.validate_input({"argv": [python, "-c", "pass"]})
    await RUN_COMMAND.execute(command, context)  # warm: the probe, the page cache
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        output = await RUN_COMMAND.execute(command, context)
        samples.append((time.perf_counter() - started) * 1000)
        if output.exit_code != 0:
            raise SystemExit(f"python3 -c pass failed: {output.stderr}")
    return samples


def _row(name: str, summary: Summary) -> str:
    return f"{name:<22} {summary.p50 or 0:>9.1f} {summary.p95 or 0:>9.1f}"


def main(runs: int) -> int:
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        print("no /usr/bin/python3 to run", file=sys.stderr)
        return 1
    refusal = sandbox_refusal("bwrap")
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder:
        workspace = Path(os.path.realpath(folder))
        sandboxed = _context(workspace, python, "bwrap")
        plain = _context(workspace, python, "none")  # its own cancel event, for its own loop
        with_sandbox = Summary.of(asyncio.run(_sample(sandboxed, python, runs)))
        without = Summary.of(asyncio.run(_sample(plain, python, runs)))
    added = (with_sandbox.p50 or 0) - (without.p50 or 0)
    print(f"python3 -c pass through run_command, {runs} runs each (ms)")
    print(f"{'':<22} {'p50':>9} {'p95':>9}")
    print(_row("sandbox (bubblewrap)", with_sandbox))
    print(_row("no sandbox", without))
    added_p95 = (with_sandbox.p95 or 0) - (without.p95 or 0)
    print(f"{'added by the sandbox':<22} {added:>9.1f} {added_p95:>9.1f}")
    verdict = "met" if added <= TARGET_MS else "MISSED"
    print(f"target: at most {TARGET_MS:g} ms added at p50: {verdict}")
    return 0 if added <= TARGET_MS else 2


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    raise SystemExit(main(parser.parse_args().runs))
