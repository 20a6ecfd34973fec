"""DBOS Transact under the same workloads as our engine: sequential workflows in-process,
fan-out throughput on worker processes sharing a queue, and live progress via streams."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from dbos import DBOS, DBOSClient, EnqueueOptions, WorkflowHandle
from dbos import error as dbos_error
from sqlalchemy.engine import make_url

from bench.databases import BenchDatabase
from bench.dbos_app import (
    APP_NAME,
    QUEUE,
    SEQUENTIAL_WORKFLOW,
    STREAM_KEY,
    STREAMED_WORKFLOW,
    dbos_config,
    sequential,
    sqlite_durability,
)
from bench.dbos_worker import READY
from bench.processes import clean_env, logged_problems, worker_processes
from bench.results import SequentialResult, StreamResult, ThroughputResult
from bench.stats import StepLatencies, StepTimeline

SUBMITTERS = 8  # concurrent enqueues (the same as for our engine)
POLL_S = 0.02
ERRORS: tuple[type[BaseException], ...] = (dbos_error.DBOSException,)  # a failed DBOS measurement
FINISHED = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")


def _reader(db: BenchDatabase) -> sa.Engine:
    """A plain SQLAlchemy engine on DBOS's system database, for reading its tables."""
    if db.backend == "sqlite":
        return sa.create_engine(db.dbos_url)
    return sa.create_engine(make_url(db.dbos_url).set(drivername="postgresql+psycopg"))


def _table(db: BenchDatabase, name: str) -> str:
    return f"dbos.{name}" if db.backend == "postgres" else name


def _timelines(db: BenchDatabase, workflow_ids: Sequence[str]) -> list[StepTimeline]:
    """Each workflow's step start and completion times (DBOS records them in milliseconds)."""
    query = sa.text(
        "SELECT workflow_uuid, function_id, started_at_epoch_ms, completed_at_epoch_ms "
        f"FROM {_table(db, 'operation_outputs')} WHERE workflow_uuid IN :ids"
    ).bindparams(sa.bindparam("ids", expanding=True))
    lines = {workflow_id: StepTimeline({}, {}) for workflow_id in workflow_ids}
    engine = _reader(db)
    try:
        with engine.connect() as connection:
            for row in connection.execute(query, {"ids": list(workflow_ids)}):
                line = lines[row.workflow_uuid]
                if row.started_at_epoch_ms is not None:
                    line.started[row.function_id] = row.started_at_epoch_ms / 1000
                if row.completed_at_epoch_ms is not None:
                    line.completed[row.function_id] = row.completed_at_epoch_ms / 1000
    finally:
        engine.dispose()
    return list(lines.values())


@contextmanager
def _launched(db: BenchDatabase, *, stock_sqlite: bool) -> Iterator[None]:
    with sqlite_durability(db.sqlite_path, stock=stock_sqlite):
        DBOS(config=dbos_config(db.dbos_url, "bench-sequential"))
        DBOS.launch()
        try:
            yield
        finally:
            DBOS.destroy()


def measure_sequential(
    db: BenchDatabase, *, runs: int, steps: int, stock_sqlite: bool = False
) -> SequentialResult:
    """``runs`` workflows of ``steps`` sequential steps, one at a time, in this process."""
    run_ms: list[float] = []
    workflow_ids: list[str] = []
    with _launched(db, stock_sqlite=stock_sqlite):
        DBOS.start_workflow(sequential, steps).get_result()  # warm-up
        for _ in range(runs):
            started = time.perf_counter()
            handle = DBOS.start_workflow(sequential, steps)
            handle.get_result()
            run_ms.append((time.perf_counter() - started) * 1000)
            workflow_ids.append(handle.get_workflow_id())
    return SequentialResult(runs, steps, run_ms, StepLatencies.of(_timelines(db, workflow_ids)))


def _status_counts(engine: sa.Engine, db: BenchDatabase, prefix: str) -> dict[str, int]:
    query = sa.text(
        f"SELECT status, count(*) FROM {_table(db, 'workflow_status')} "
        "WHERE workflow_uuid LIKE :prefix GROUP BY status"
    )
    with engine.connect() as connection:
        return {row[0]: row[1] for row in connection.execute(query, {"prefix": f"{prefix}%"})}


def _wait_all(
    engine: sa.Engine, db: BenchDatabase, prefix: str, runs: int, timeout_s: float
) -> tuple[dict[str, int], bool]:
    deadline = time.monotonic() + timeout_s
    while True:
        counts = _status_counts(engine, db, prefix)
        if sum(counts.get(status, 0) for status in FINISHED) >= runs:
            return counts, True
        if time.monotonic() > deadline:
            return counts, False
        time.sleep(POLL_S)


def _enqueue_all(client: DBOSClient, prefix: str, runs: int, steps: int) -> None:
    def one(index: int) -> None:
        options: EnqueueOptions = {
            "queue_name": QUEUE,
            "workflow_name": SEQUENTIAL_WORKFLOW,
            "workflow_id": f"{prefix}{index}",
        }
        client.enqueue(options, steps)

    with ThreadPoolExecutor(SUBMITTERS) as pool:
        list(pool.map(one, range(runs)))


def _worker_argv(
    db: BenchDatabase, concurrency: int, poll_s: float, stock_sqlite: bool
) -> Callable[[int], list[str]]:
    """The argv of the i-th DBOS worker process."""

    def argv(index: int) -> list[str]:
        args = [
            "bench.dbos_worker",
            "--url",
            db.dbos_url,
            "--executor-id",
            f"bench-{index}",
            "--concurrency",
            str(concurrency),
            "--poll-s",
            str(poll_s),
        ]
        return [*args, "--stock-sqlite"] if stock_sqlite else args

    return argv


def _migrate(db: BenchDatabase, stock_sqlite: bool) -> None:
    """Create DBOS's schema once, before several worker processes launch at the same moment."""
    with _launched(db, stock_sqlite=stock_sqlite):
        pass


def measure_throughput(
    db: BenchDatabase,
    *,
    workers: int,
    concurrency: int,
    runs: int,
    steps: int,
    log_dir: Path,
    poll_s: float,
    stock_sqlite: bool = False,
    timeout_s: float = 180.0,
) -> ThroughputResult:
    """``runs`` workflows enqueued at once, run by ``workers`` processes listening to one queue
    (``worker_concurrency=concurrency`` each); wall time until every workflow finished."""
    _migrate(db, stock_sqlite)
    argv = _worker_argv(db, concurrency, poll_s, stock_sqlite)
    env = clean_env(PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    reader = _reader(db)
    try:
        with (
            worker_processes(
                workers, argv, env=env, log_dir=log_dir, ready_marker=READY
            ) as processes,
            sqlite_durability(db.sqlite_path, stock=stock_sqlite),
        ):
            client = DBOSClient(system_database_url=db.dbos_url, application_name=APP_NAME)
            try:
                _enqueue_all(client, "warm-", workers * 2, 2)
                _wait_all(reader, db, "warm-", workers * 2, timeout_s)
                started = time.perf_counter()
                _enqueue_all(client, "tp-", runs, steps)
                submitted = time.perf_counter() - started
                counts, finished = _wait_all(reader, db, "tp-", runs, timeout_s)
                wall = time.perf_counter() - started if finished else None
            finally:
                client.destroy()
            problems = logged_problems(processes)
    finally:
        reader.dispose()
    if wall is None:
        problems.insert(0, f"not all workflows finished within {timeout_s:.0f}s: {counts}")
    return ThroughputResult(workers, concurrency, runs, steps, wall, submitted, counts, problems)


def measure_stream(
    db: BenchDatabase,
    *,
    runs: int,
    steps: int,
    log_dir: Path,
    poll_s: float,
    stock_sqlite: bool = False,
) -> StreamResult:
    """Latency from a step's stream write in a worker process to a client reading the stream
    (``DBOSClient.read_stream``; LISTEN/NOTIFY on PostgreSQL, polling every ``poll_s`` on
    SQLite)."""
    _migrate(db, stock_sqlite)
    argv = _worker_argv(db, 4, poll_s, stock_sqlite)
    env = clean_env(PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    latencies: list[float] = []
    with (
        worker_processes(1, argv, env=env, log_dir=log_dir, ready_marker=READY) as processes,
        sqlite_durability(db.sqlite_path, stock=stock_sqlite),
    ):
        client = DBOSClient(
            system_database_url=db.dbos_url,
            application_name=APP_NAME,
            use_listen_notify=db.backend == "postgres",
        )
        try:
            for index in range(runs + 1):  # the first run warms up and is not counted
                options: EnqueueOptions = {
                    "queue_name": QUEUE,
                    "workflow_name": STREAMED_WORKFLOW,
                    "workflow_id": f"stream-{index}",
                }
                handle: WorkflowHandle[int] = client.enqueue(options, steps)
                for value in client.read_stream(
                    handle.get_workflow_id(), STREAM_KEY, polling_interval_sec=poll_s
                ):
                    if index > 0:
                        latencies.append((time.time() - value["written_at"]) * 1000)
        finally:
            client.destroy()
        problems = logged_problems(processes)
    return StreamResult(latencies, problems=problems)


def dbos_version() -> str:
    from importlib.metadata import version

    return version("dbos")
