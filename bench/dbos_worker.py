"""A DBOS worker process for the multi-process measurements:
``python -m bench.dbos_worker --url URL --executor-id ID --concurrency N``.

It launches DBOS, listens to the benchmark queue, prints ``ready`` and runs workflows until
SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from dbos import DBOS

from bench.dbos_app import QUEUE, dbos_config, sqlite_durability

READY = "dbos worker ready"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="DBOS system database URL")
    parser.add_argument("--executor-id", required=True)
    parser.add_argument("--concurrency", type=int, default=8, help="queue worker_concurrency")
    parser.add_argument("--poll-s", type=float, default=0.05, help="queue polling interval")
    parser.add_argument("--stock-sqlite", action="store_true", help="keep DBOS's SQLite defaults")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sqlite_path = (
        Path(args.url.removeprefix("sqlite:///")) if args.url.startswith("sqlite") else None
    )
    with sqlite_durability(sqlite_path, stock=args.stock_sqlite):
        DBOS(config=dbos_config(args.url, args.executor_id))
        DBOS.launch()
        DBOS.register_queue(
            QUEUE, worker_concurrency=args.concurrency, polling_interval_sec=args.poll_s
        )
        print(READY, flush=True)
        try:
            stop.wait()
        finally:
            DBOS.destroy(workflow_completion_timeout_sec=5)


if __name__ == "__main__":
    main()
