"""Several processes coordinated by PostgreSQL alone: 1 API + 3 workers, 50 runs with parallel
branches; kill -9 at the worst moments; a zombie paused past its lease."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.databases import PostgresServer
from tests.policies import UNATTENDED, unattended_policies
from tests.processes import clean_env, free_port, running, start_worker, stop

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
async def pg_url(postgres_server: PostgresServer | None) -> AsyncIterator[str]:
    if postgres_server is None:
        pytest.skip(getattr(pytest, "postgres_skip_reason", "PostgreSQL not reachable"))
    name = await postgres_server.create_database()
    try:
        yield postgres_server.url_for(name)
    finally:
        postgres_server.discard_database(name)


@pytest.fixture
def cluster_env(pg_url: str, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "workspaces").mkdir()
    return clean_env(
        AGENT_ENGINE_DATABASE_URL=pg_url,
        AGENT_ENGINE_AUTO_MIGRATE="false",
        AGENT_ENGINE_EMBEDDED_WORKER="false",
        AGENT_ENGINE_WORKSPACE_ROOTS=str(tmp_path / "workspaces"),
        AGENT_ENGINE_WORKER_LEASE_S="2",
        AGENT_ENGINE_WORKER_POLL_S="0.2",
        AGENT_ENGINE_WORKER_SHUTDOWN_GRACE_S="5",
        AGENT_ENGINE_LOG_LEVEL="warning",
        AGENT_ENGINE_POLICIES_FILE=str(unattended_policies(tmp_path)),
    )


@pytest.fixture
def api(cluster_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    argv = ["agent_engine", "serve", "--port", str(port)]
    with running(argv, tmp_path, cluster_env, port) as url:
        yield url


async def wait_until(
    client: httpx.AsyncClient, run_id: str, statuses: set[str], limit_s: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while True:
        run: dict[str, Any] = (await client.get(f"/v1/agent-runs/{run_id}")).json()
        if run["status"] in statuses:
            return run
        assert time.monotonic() < deadline, f"run stuck in {run['status']}"
        await asyncio.sleep(0.1)


async def wait_step_owned(client: httpx.AsyncClient, run_id: str, number: int) -> str:
    """Wait until step ``number`` is running under some worker's lease; that worker's id."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        step = (await client.get(f"/v1/agent-runs/{run_id}")).json()["steps"][number - 1]
        if step["status"] == "running" and step["lease_owner"]:
            return str(step["lease_owner"])
        await asyncio.sleep(0.05)
    raise AssertionError("step never started")


async def audit(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    result: dict[str, Any] = (await client.get(f"/v1/agent-runs/{run_id}/audit")).json()
    return result


def dag(run_number: int) -> list[dict[str, Any]]:
    """root → three parallel branches → join."""

    def noop(value: Any, depends_on: list[int]) -> dict[str, Any]:
        return {"step_type": "noop", "input_data": {"value": value}, "depends_on": depends_on}

    return [
        noop(run_number, []),
        noop("a", [1]),
        noop("b", [1]),
        noop("c", [1]),
        noop("join", [2, 3, 4]),
    ]


async def test_three_workers_finish_fifty_parallel_runs_each_step_once(
    api: str, cluster_env: dict[str, str], tmp_path: Path
) -> None:
    workers = [start_worker(tmp_path, cluster_env, f"w{n}") for n in range(3)]
    try:
        async with httpx.AsyncClient(base_url=api, timeout=30) as client:
            runs = await asyncio.gather(
                *(
                    client.post(
                        "/v1/agent-runs",
                        json={"goal": f"run {n}", "steps": dag(n), "auto_start": True},
                    )
                    for n in range(50)
                )
            )
            ids = [r.json()["id"] for r in runs]
            finished = [await wait_until(client, run_id, {"completed", "failed"}) for run_id in ids]
            assert all(run["status"] == "completed" for run in finished)
            owners: set[str] = set()
            for run_id in ids:
                log = await audit(client, run_id)
                assert log["chain_valid"]
                claims = [e for e in log["events"] if e["type"] == "step.running"]
                # Each of the 5 steps was claimed exactly once, and ran exactly once.
                assert sorted(e["payload"]["step_number"] for e in claims) == [1, 2, 3, 4, 5]
                assert all(e["payload"]["attempt"] == 1 for e in claims)
                owners |= {e["actor"] for e in claims}
        assert owners <= {"w0", "w1", "w2"} and len(owners) >= 2
    finally:
        for worker in workers:
            stop(worker)


async def test_kill_9_during_a_read_only_step_the_run_still_finishes(
    api: str, cluster_env: dict[str, str], tmp_path: Path
) -> None:
    victim = start_worker(tmp_path, cluster_env, "victim")
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        steps = [{"step_type": "noop", "input_data": {"value": 1, "sleep_s": 5}}]
        run = (
            await client.post(
                "/v1/agent-runs", json={"goal": "crash", "steps": steps, "auto_start": True}
            )
        ).json()
        assert await wait_step_owned(client, run["id"], 1) == "victim"
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        rescuer = start_worker(tmp_path, cluster_env, "rescuer")
        try:
            done = await wait_until(client, run["id"], {"completed", "failed"})
        finally:
            stop(rescuer)
        assert done["status"] == "completed"
        assert done["steps"][0]["attempt"] == 2
        log = await audit(client, run["id"])
    assert log["chain_valid"]
    reasons = [e["payload"].get("reason") for e in log["events"] if e["type"] == "step.pending"]
    assert reasons == ["lease expired"]


def _edit_plan(path: str) -> list[dict[str, Any]]:
    return [
        {
            "step_type": "edit_file",
            "input_data": {
                "path": path,
                "operation": "replace",
                "old": "VALUE = 1\n",
                "new": "VALUE = 2\n",
            },
        }
    ]


@pytest.mark.parametrize("point", ["before_effect", "after_effect"])
async def test_kill_9_around_an_edit_applies_it_exactly_once(
    api: str, cluster_env: dict[str, str], tmp_path: Path, point: str
) -> None:
    workspace = tmp_path / "workspaces" / "ws"
    workspace.mkdir()
    (workspace / "config.py").write_text("VALUE = 1\n")
    crashing = dict(cluster_env, AGENT_ENGINE_FAULT_CRASH=f"{point}:edit_file")
    victim = start_worker(tmp_path, crashing, "victim")
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        body = {
            "goal": "edit",
            "workspace": str(workspace),
            "steps": _edit_plan("config.py"),
            "auto_start": True,
            "policy": UNATTENDED,
        }
        run = (await client.post("/v1/agent-runs", json=body)).json()
        assert victim.wait(timeout=30) == -signal.SIGKILL  # it died at the crash point
        rescuer = start_worker(tmp_path, cluster_env, "rescuer")
        try:
            done = await wait_until(client, run["id"], {"completed", "failed"})
        finally:
            stop(rescuer)
        log = await audit(client, run["id"])
    assert done["status"] == "completed", done["steps"][0]["error"]
    assert (workspace / "config.py").read_text() == "VALUE = 2\n"
    assert log["chain_valid"]
    intents = [e for e in log["events"] if e["type"] == "effect.intent"]
    completed = next(e for e in log["events"] if e["type"] == "step.completed")
    if point == "after_effect":
        # The edit had happened: recovery recognised the post-hash and did not apply it again.
        assert len(intents) == 1
        assert completed["payload"].get("recovered") is True
    else:
        # Intent without effect: the pre-hash was still there, so the edit ran (once).
        assert len(intents) == 2
        assert completed["payload"].get("recovered") is None


async def test_kill_9_during_a_command_waits_for_a_human(
    api: str, cluster_env: dict[str, str], tmp_path: Path
) -> None:
    workspace = tmp_path / "workspaces" / "cmd"
    workspace.mkdir()
    victim = start_worker(tmp_path, cluster_env, "victim")
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        command = [
            "python",
            "-c",
            "import time, pathlib; time.sleep(3); pathlib.Path('ran.txt').open('a').write('x')",
        ]
        body = {
            "goal": "cmd",
            "workspace": str(workspace),
            "steps": [
                {
                    "step_type": "run_command",
                    "input_data": {"argv": command},
                }
            ],
            "auto_start": True,
            "policy": UNATTENDED,
        }
        run = (await client.post("/v1/agent-runs", json=body)).json()
        assert await wait_step_owned(client, run["id"], 1) == "victim"
        await asyncio.sleep(0.5)  # the command is running now
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        rescuer = start_worker(tmp_path, cluster_env, "rescuer")
        try:
            waiting = await wait_until(client, run["id"], {"awaiting_approval", "completed"})
            assert waiting["status"] == "awaiting_approval"
            step = waiting["steps"][0]
            assert step["status"] == "awaiting_approval"
            assert step["preview"]["outcome_unknown"] is True
            await asyncio.sleep(3.5)
            # The command died with its worker: it never finished its write.
            assert not (workspace / "ran.txt").exists()
            approved = await client.post(
                f"/v1/agent-runs/{run['id']}/steps/{step['id']}/approve",
                json={"comment": "re-run it"},
            )
            assert approved.status_code == 200
            done = await wait_until(client, run["id"], {"completed", "failed"})
        finally:
            stop(rescuer)
        log = await audit(client, run["id"])
    assert done["status"] == "completed"
    assert (workspace / "ran.txt").read_text() == "x"  # run exactly once, after the decision
    assert log["chain_valid"]


async def test_zombie_worker_paused_past_its_lease_cannot_write_its_result(
    api: str, cluster_env: dict[str, str], tmp_path: Path
) -> None:
    zombie = start_worker(tmp_path, cluster_env, "zombie")
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        steps = [{"step_type": "noop", "input_data": {"value": "z", "sleep_s": 1}}]
        run = (
            await client.post(
                "/v1/agent-runs", json={"goal": "zombie", "steps": steps, "auto_start": True}
            )
        ).json()
        assert await wait_step_owned(client, run["id"], 1) == "zombie"
        os.kill(zombie.pid, signal.SIGSTOP)
        rescuer = start_worker(tmp_path, cluster_env, "rescuer")
        try:
            done = await wait_until(client, run["id"], {"completed"})
            os.kill(zombie.pid, signal.SIGCONT)
            await asyncio.sleep(2)  # the zombie wakes up, finishes its sleep, tries to write
            final = (await client.get(f"/v1/agent-runs/{run['id']}")).json()
            log = await audit(client, run["id"])
        finally:
            os.kill(zombie.pid, signal.SIGCONT)
            stop(zombie)
            stop(rescuer)
    step = final["steps"][0]
    assert step["output_data"]["attempt"] == 2
    assert step["output_hash"] == done["steps"][0]["output_hash"]
    completions = [e for e in log["events"] if e["type"] == "step.completed"]
    assert [e["actor"] for e in completions] == ["rescuer"]
    assert log["chain_valid"]
    assert "is no longer current" in (tmp_path / "zombie.log").read_text()


async def test_sigterm_hands_back_unfinished_steps(
    api: str, cluster_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(cluster_env, AGENT_ENGINE_WORKER_SHUTDOWN_GRACE_S="0.5")
    leaving = start_worker(tmp_path, env, "leaving")
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        steps = [{"step_type": "noop", "input_data": {"value": 1, "sleep_s": 30}}]
        run = (
            await client.post(
                "/v1/agent-runs", json={"goal": "term", "steps": steps, "auto_start": True}
            )
        ).json()
        assert await wait_step_owned(client, run["id"], 1) == "leaving"
        leaving.send_signal(signal.SIGTERM)
        assert leaving.wait(timeout=15) == 0
        step = (await client.get(f"/v1/agent-runs/{run['id']}")).json()["steps"][0]
        assert step["status"] == "pending" and step["lease_owner"] is None
        log = await audit(client, run["id"])
    reasons = [e["payload"].get("reason") for e in log["events"] if e["type"] == "step.pending"]
    assert reasons == ["worker shutdown"]
