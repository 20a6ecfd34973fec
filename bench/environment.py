"""What a report is measured on and against: the commit, the machine, the database, and the
optional reference systems (DBOS, LangGraph), imported only when they are to be run."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from agent_engine import __version__
from bench.databases import postgres_version
from bench.model_server import MODEL_ID


def dbos_module() -> Any:
    """The DBOS harness; exits with a one-line message when DBOS is not installed."""
    try:
        from bench import dbos_harness
    except ImportError as exc:  # the bench extra is not installed
        raise SystemExit(
            f"DBOS is not installed ({exc}): install the bench extra "
            "(uv pip sync requirements/bench.lock) or pass --skip-dbos"
        ) from None
    return dbos_harness


def langgraph_module() -> Any:
    """The LangGraph harness, or None when LangGraph is not installed (it is optional)."""
    try:
        from bench import langgraph_harness
    except ImportError:
        return None
    return langgraph_harness


def source_state() -> str:
    """The commit measured, and which engine files differed from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True
        ).stdout.splitlines()
    except OSError:
        return "source state unknown (no git)"
    if not commit:
        return "source state unknown (not a git checkout)"
    dirty = f", uncommitted changes in {len(changed)} file(s) under src/" if changed else ""
    return f"commit {commit}{dirty}"


def environment(
    args: argparse.Namespace, backends: list[str], model_url: str | None = None
) -> list[str]:
    """The report's header lines: versions, machine, settings that shape the figures."""
    lines = [
        f"agent-engine {__version__} ({source_state()}), Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.machine()}",
    ]
    if "postgres" in backends:
        lines.append(f"PostgreSQL {postgres_version(args.postgres_url)} on loopback")
    if not args.skip_dbos:
        sqlite = "stock" if args.dbos_stock_sqlite else "WAL + synchronous=NORMAL (as ours)"
        lines.append(
            f"DBOS Transact {dbos_module().dbos_version()}: queue polling "
            f"{args.dbos_poll_s}s, SQLite settings {sqlite}"
        )
    langgraph = None if args.skip_langgraph else langgraph_module()
    if langgraph is not None and "postgres" in backends:
        lines.append(langgraph.langgraph_version())
    if model_url is not None:
        lines.append(
            f"analyze steps: {MODEL_ID} answered by the benchmark's model server at {model_url} "
            "(uvicorn, a thread of the benchmark process; fixed reply and usage)"
        )
    lines.append(
        f"each figure pools {max(1, args.rounds)} rounds, alternating between the systems"
        if not args.skip_dbos
        else f"each figure pools {max(1, args.rounds)} rounds"
    )
    lines.append(time.strftime("measured %Y-%m-%d %H:%M UTC", time.gmtime()))
    return lines
