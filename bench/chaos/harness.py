"""The chaos run from start to end: a private PostgreSQL cluster, the loopback model and MCP
servers, the API and its workers, the workload under the fault schedule, the settling, the
checks and the table. ``python -m bench.chaos`` (``make chaos``); ``CHAOS_SECONDS`` bounds the
faults, ``CHAOS_SEED`` repeats a run."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import asyncpg

from agent_engine.storage.migrations import upgrade
from bench.chaos import checks
from bench.chaos.budget_checks import check_money
from bench.chaos.checks import failure_cause
from bench.chaos.client import ChaosClient
from bench.chaos.cluster import PrivateCluster, private_cluster
from bench.chaos.faults import Injector, schedule
from bench.chaos.plans import POLICIES_FILE
from bench.chaos.processes import LEASE_S, EngineProcess, WorkerPool, engine_env, start_api, stop
from bench.chaos.report import details, table
from bench.chaos.workload import BudgetRoom, Workload
from bench.model_server import MODEL_ID, ModelServer

WORKERS = 3
SETTLE_S = 120.0
MCP_SERVER = Path(__file__).with_name("mcp_server.py")


@dataclass(frozen=True)
class Outcome:
    """What the run found: the table and the number of anomalies."""

    text: str
    anomalies: int
    faults: dict[str, int]


def _say(line: str) -> None:
    print(line, flush=True)


def _interpreter_paths() -> list[str]:
    # Commands run python3 inside the sandbox: the interpreter's folders must be visible there.
    paths = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
    if os.environ.get("PYENV_ROOT"):
        paths.add(os.path.realpath(os.environ["PYENV_ROOT"]))
    return sorted(p for p in paths if not p.startswith("/usr/"))


def _settings(work: Path, cluster: PrivateCluster, models_file: Path) -> dict[str, str]:
    (work / "policies.yaml").write_text(POLICIES_FILE, encoding="utf-8")
    mcp: dict[str, object] = {
        "command": sys.executable,
        "args": [str(MCP_SERVER)],
        "env": {"CHAOS_MCP_LOG": str(work / "mcp-calls.log")},
    }
    (work / "mcp.json").write_text(json.dumps({"mcpServers": {"chaos": mcp}}), encoding="utf-8")
    return {
        "AGENT_ENGINE_DATABASE_URL": cluster.engine_url,
        "AGENT_ENGINE_AUTO_MIGRATE": "false",
        "AGENT_ENGINE_EMBEDDED_WORKER": "false",
        "AGENT_ENGINE_WORKSPACE_ROOTS": str(work / "workspaces"),
        "AGENT_ENGINE_WORKER_LEASE_S": str(LEASE_S),
        "AGENT_ENGINE_WORKER_POLL_S": "0.2",
        "AGENT_ENGINE_WORKER_SHUTDOWN_GRACE_S": "2",
        "AGENT_ENGINE_LOG_LEVEL": "info",
        "AGENT_ENGINE_MODELS_FILE": str(models_file),
        "AGENT_ENGINE_MODEL": MODEL_ID,
        "AGENT_ENGINE_MCP_SERVERS": str(work / "mcp.json"),
        "AGENT_ENGINE_POLICIES_FILE": str(work / "policies.yaml"),
        "AGENT_ENGINE_SANDBOX": os.environ.get("CHAOS_SANDBOX", "bwrap"),
        "AGENT_ENGINE_SANDBOX_READ_ONLY_PATHS": ",".join(_interpreter_paths()),
    }


async def _budget_room(client: ChaosClient, dsn: str) -> BudgetRoom:
    """One probe call's worst case and actual cost: a budget run gets room for two calls."""
    body = {
        "goal": "budget probe",
        "steps": [{"step_type": "analyze", "input_data": {"instruction": "Probe."}}],
        "budget_usd": "10",
        "auto_start": True,
    }
    run_id = (await client.request("POST", "/v1/agent-runs", json=body)).json()["id"]
    for _ in range(600):
        if (await client.run(run_id))["status"] in {"completed", "failed"}:
            break
        await asyncio.sleep(0.1)
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT amount_usd, actual_usd FROM budget_reservations WHERE run_id = $1",
            uuid.UUID(run_id),
        )
    finally:
        await connection.close()
    if row is None or row["actual_usd"] is None:
        raise RuntimeError(f"the budget probe run {run_id} left no settled reservation")
    worst, actual = Decimal(row["amount_usd"]), Decimal(row["actual_usd"])
    limit = (worst + actual * Decimal("1.5")).quantize(Decimal("0.00000001"))
    return BudgetRoom(str(limit), str((worst * 20).quantize(Decimal("0.00000001"))))


async def _chaos(
    url: str,
    cluster: PrivateCluster,
    workers: WorkerPool,
    api: EngineProcess,
    work: Path,
    seed: int,
    seconds: float,
) -> Outcome:
    client = ChaosClient(url)
    try:
        room = await _budget_room(client, cluster.dsn)
        _say(
            f"budget runs get {room.limit_usd} USD (two calls of four), raised to {room.raised_usd}"
        )
        workload = Workload(client, work / "workspaces", seed, room)
        injector = Injector(cluster, workers, random.Random(f"{seed}:faults"), _say)
        stop_event = asyncio.Event()
        tasks = [
            asyncio.create_task(workload.submit(stop_event)),
            asyncio.create_task(workload.script(stop_event)),
        ]
        faults = schedule(seconds, random.Random(seed))
        await asyncio.gather(injector.run(faults, stop_event), _stop_after(stop_event, seconds))
        await asyncio.gather(*tasks)
        problems = [f"worker {d}" for d in injector.crashes + workers.revive_dead()]
        _say("faults stopped; settling")
        await workload.settle(SETTLE_S)
        await workload.replay_completed()
        await workload.settle(SETTLE_S)  # what still moves then is an anomaly (check_settled)
        if not api.alive():
            problems.append(f"the API exited with {api.popen.returncode}")
        return await _check(
            client, cluster, work, workload, injector, seed, seconds, problems, room
        )
    finally:
        await client.close()


def _retried(client: ChaosClient, injector: Injector) -> dict[str, int]:
    retried = dict(client.retries)
    if injector.workers.refused_starts:
        retried["worker starts refused (database down)"] = injector.workers.refused_starts
    return retried


async def _stop_after(stop_event: asyncio.Event, seconds: float) -> None:
    await asyncio.sleep(seconds)
    stop_event.set()


async def _check(
    client: ChaosClient,
    cluster: PrivateCluster,
    work: Path,
    workload: Workload,
    injector: Injector,
    seed: int,
    seconds: float,
    problems: list[str],
    room: BudgetRoom,
) -> Outcome:
    listed = await client.all_runs()
    runs = {item["id"]: await client.run(item["id"]) for item in listed}
    tracked = list(workload.tracked.values())
    anomalies = [checks.Anomaly("process died", "-", p) for p in problems]
    anomalies += checks.check_settled(runs)
    anomalies += checks.check_effects(tracked, runs, work / "mcp-calls.log")
    anomalies += await checks.check_audit(client, runs)
    money, figures = await check_money(cluster.dsn, Decimal(room.limit_usd))
    anomalies += money
    anomalies += await checks.check_replays(client, tracked, runs)
    kinds = {t.run_id: t.kind for t in tracked}
    run_counts = Counter((kinds.get(r, "probe"), run["status"]) for r, run in runs.items())
    step_counts = Counter(s["status"] for run in runs.values() for s in run["steps"])
    causes = Counter(failure_cause(run) for run in runs.values() if run["status"] == "failed")
    anomalies += checks.check_failures(runs)
    text = table(
        seed=seed,
        seconds=seconds,
        faults=dict(injector.injected),
        runs=run_counts,
        steps=step_counts,
        retries=_retried(client, injector),
        script={k: v for k, v in workload.counts.items() if not k.startswith("created")},
        failures=dict(causes),
        budgets=dict(figures),
        anomalies=anomalies,
    )
    notes = "\n".join(f"fault not injected: {f}" for f in injector.failures)
    body = "\n".join(part for part in (notes, details(anomalies), text) if part)
    return Outcome(body, len(anomalies), dict(injector.injected))


def run_chaos(seconds: float, seed: int, *, keep: bool = False) -> Outcome:
    """The whole chaos run; its outcome (the table is printed as it ends)."""
    _say(f"chaos: seed {seed} (CHAOS_SEED={seed} repeats it), {seconds:.0f} s of faults")
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    (work / "workspaces").mkdir()
    server = ModelServer()
    with server.running(), private_cluster(keep=keep) as cluster:
        if keep:
            _say(f"the database stays in {cluster.folder} (pg_ctl -D {cluster.data} start)")
        asyncio.run(cluster.create_database())
        upgrade(cluster.engine_url)
        asyncio.run(cluster.install_hold_log())
        env = engine_env(_settings(work, cluster, server.write_catalog(work)))
        api, url = start_api(env, work)
        workers = WorkerPool(env, work, WORKERS)
        try:
            workers.start()
            started = time.monotonic()
            outcome = asyncio.run(_chaos(url, cluster, workers, api, work, seed, seconds))
            _say(f"(whole run {time.monotonic() - started:.0f} s)")
        finally:
            workers.stop_all()
            stop(api)
    _say(outcome.text)
    if not keep and outcome.anomalies == 0:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"logs and workspaces in {work}", file=sys.stderr, flush=True)
    return outcome


def _terminated(signum: int, _frame: object) -> None:
    # SIGTERM (a test's timeout, a CI job cancelled) unwinds like an error: the processes and
    # the private cluster are stopped and deleted on the way out.
    raise SystemExit(128 + signum)


def main() -> int:
    """``python -m bench.chaos``: exit 1 when any anomaly was found."""
    signal.signal(signal.SIGTERM, _terminated)
    seconds = float(os.environ.get("CHAOS_SECONDS", "60"))
    seed_text = os.environ.get("CHAOS_SEED")
    seed = int(seed_text) if seed_text else random.SystemRandom().randrange(1, 1_000_000)
    outcome = run_chaos(seconds, seed, keep=os.environ.get("CHAOS_KEEP") == "1")
    return 1 if outcome.anomalies else 0
