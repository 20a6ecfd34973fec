"""Durability under faults, on a private PostgreSQL cluster of the test's own (never the shared
server): a worker outlives its database going away, and the short chaos run (``make chaos``
with ``CHAOS_SECONDS=30``) injects every kind of fault and finds no anomaly."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agent_engine.storage.migrations import upgrade
from bench.chaos.cluster import cluster_problem, private_cluster
from bench.chaos.faults import KINDS, RESTART
from bench.chaos.processes import REPO, WorkerPool, engine_env, start_api, stop
from tests.sandboxing import sandbox_problem

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
CHAOS_SECONDS = 30


@pytest.fixture(autouse=True)
def _cluster_possible() -> None:
    problem = cluster_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs a private PostgreSQL cluster: {problem}")
    pytest.skip(problem)


def _wait_completed(url: str, run_id: str) -> str:
    status = ""
    for _ in range(600):
        status = str(httpx.get(f"{url}/v1/agent-runs/{run_id}", timeout=5).json()["status"])
        if status in {"completed", "failed", "cancelled"}:
            return status
        time.sleep(0.1)
    return status


def test_a_worker_outlives_its_database_stopping_and_coming_back(tmp_path: Path) -> None:
    with private_cluster() as cluster:
        asyncio.run(cluster.create_database())
        upgrade(cluster.engine_url)
        (tmp_path / "workspaces").mkdir()
        env = engine_env(
            {
                "AGENT_ENGINE_DATABASE_URL": cluster.engine_url,
                "AGENT_ENGINE_AUTO_MIGRATE": "false",
                "AGENT_ENGINE_EMBEDDED_WORKER": "false",
                "AGENT_ENGINE_WORKSPACE_ROOTS": str(tmp_path / "workspaces"),
                "AGENT_ENGINE_WORKER_LEASE_S": "2",
                "AGENT_ENGINE_WORKER_POLL_S": "0.2",
                "AGENT_ENGINE_LOG_LEVEL": "info",
            }
        )
        api, url = start_api(env, tmp_path)
        workers = WorkerPool(env, tmp_path, 1)
        try:
            workers.start()
            cluster.stop("fast")
            # Long enough for claim rounds and heartbeats to meet a refused connection.
            time.sleep(2)
            cluster.start()
            assert workers.workers[0].alive(), workers.workers[0].log()[-3000:]
            body = {"goal": "after", "steps": [{"step_type": "noop", "input_data": {}}]}
            for _ in range(100):  # the API's own connections come back too
                created = httpx.post(f"{url}/v1/agent-runs", json=body | {"auto_start": True})
                if created.status_code == 201:
                    break
                time.sleep(0.1)
            assert created.status_code == 201, created.text
            assert _wait_completed(url, created.json()["id"]) == "completed"
        finally:
            workers.stop_all()
            stop(api)


def test_the_short_chaos_run_injects_every_fault_and_finds_no_anomaly() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAOS_")}
    env |= {"CHAOS_SECONDS": str(CHAOS_SECONDS), "CHAOS_SEED": "20261201"}
    if sandbox_problem() is not None and os.environ.get("CI") != "true":
        env["CHAOS_SANDBOX"] = "none"  # commands unsandboxed where bubblewrap cannot run
    harness = subprocess.Popen(
        [sys.executable, "-m", "bench.chaos"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = harness.communicate(timeout=170)
    except subprocess.TimeoutExpired:
        harness.terminate()  # it stops its processes and deletes its cluster on SIGTERM
        stdout, stderr = harness.communicate(timeout=60)
    output = stdout + stderr
    lines = stdout.strip().splitlines()
    assert lines and lines[-1] == "anomalies: 0", output[-6000:]
    assert harness.returncode == 0, output[-6000:]
    injected = {
        kind: int(match.group(1))
        for kind in KINDS
        if (match := re.search(rf"^  {re.escape(kind)} +(\d+)$", stdout, re.MULTILINE))
    }
    assert set(injected) == set(KINDS) and all(n >= 1 for n in injected.values()), injected
    assert injected[RESTART] >= 2, injected
