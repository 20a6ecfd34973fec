"""The benchmark workloads written for DBOS Transact: the same sequential no-op steps as a
workflow of ``@DBOS.step()`` calls, and a variant that streams each step's completion.

Imported by the benchmark process and by the DBOS worker processes: DBOS finds workflows by the
names given here, whichever process enqueued them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dbos import DBOS, DBOSConfig
from sqlalchemy import event
from sqlalchemy.engine import Engine

APP_NAME = "ae-bench"
QUEUE = "bench"
SEQUENTIAL_WORKFLOW = "bench_sequential"
STREAMED_WORKFLOW = "bench_streamed"
STREAM_KEY = "progress"


@DBOS.step(name="bench_noop")
def noop(value: int) -> int:
    """The no-op step: returns its input (like the engine's ``noop`` executor)."""
    return value


@DBOS.workflow(name=SEQUENTIAL_WORKFLOW)
def sequential(steps: int) -> int:
    """``steps`` no-op steps, one after the other."""
    total = 0
    for value in range(steps):
        total += noop(value)
    return total


@DBOS.workflow(name=STREAMED_WORKFLOW)
def streamed(steps: int) -> int:
    """Like :func:`sequential`, announcing each completed step on a stream (DBOS's way for a
    client to follow a workflow live, the counterpart of our SSE endpoint)."""
    total = 0
    for value in range(steps):
        total += noop(value)
        DBOS.write_stream(STREAM_KEY, {"step": value, "written_at": time.time()})
    DBOS.close_stream(STREAM_KEY)
    return total


def dbos_config(url: str, executor_id: str) -> DBOSConfig:
    """DBOS's configuration for one benchmark process."""
    return {
        "name": APP_NAME,
        "system_database_url": url,
        "executor_id": executor_id,
        "log_level": "WARNING",
    }


def _synchronous_normal(dbapi_connection: Any, _record: Any) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")


@contextmanager
def sqlite_durability(path: Path | None, *, stock: bool) -> Iterator[None]:
    """Give DBOS's SQLite database the durability settings our engine uses (WAL journal,
    ``synchronous=NORMAL``) unless ``stock``; DBOS's own default (rollback journal, FULL)
    fsyncs every commit, which would measure the disk rather than the orchestrator."""
    if path is None or stock:
        yield
        return
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file
    event.listen(Engine, "connect", _synchronous_normal)
    try:
        yield
    finally:
        event.remove(Engine, "connect", _synchronous_normal)
