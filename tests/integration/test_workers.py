"""Workers run started runs to completion: DAG parallelism, retries, cancellation, hand-back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from tests.policies import UNATTENDED, unattended_policies


@contextlib.asynccontextmanager
async def embedded_worker_client(
    settings: Settings, *, poll_s: float
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with its embedded worker running, as `serve` runs it."""
    app = create_app(
        settings.model_copy(
            update={"embedded_worker": True, "worker_poll_s": poll_s, "worker_concurrency": 4}
        )
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


@pytest.fixture
async def worker_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with embedded_worker_client(settings, poll_s=0.05) as http:
        yield http


async def wait_for(
    client: httpx.AsyncClient, run_id: str, statuses: set[str], limit_s: float = 20.0
) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while True:
        run: dict[str, Any] = (await client.get(f"/v1/agent-runs/{run_id}")).json()
        if run["status"] in statuses:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run stuck in {run['status']}: {run['steps']}")
        await asyncio.sleep(0.05)


def step(value: Any, *, depends_on: list[int] | None = None, **input_extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"step_type": "noop", "input_data": {"value": value, **input_extra}}
    if depends_on is not None:
        spec["depends_on"] = depends_on
    return spec


async def test_auto_started_run_completes_in_the_background(
    worker_client: httpx.AsyncClient,
) -> None:
    body = {"goal": "g", "steps": [step(1), step(2), step(3)], "auto_start": True}
    run = (await worker_client.post("/v1/agent-runs", json=body)).json()
    done = await wait_for(worker_client, run["id"], {"completed"})
    assert [s["output_data"]["value"] for s in done["steps"]] == [1, 2, 3]
    assert all(s["lease_owner"] is None and s["fence"] == 1 for s in done["steps"])


async def test_independent_branches_run_in_parallel_and_join(
    worker_client: httpx.AsyncClient,
) -> None:
    steps = [
        step("root", depends_on=[]),
        step("a", depends_on=[1], sleep_s=0.5),
        step("b", depends_on=[1], sleep_s=0.5),
        step("c", depends_on=[1], sleep_s=0.5),
        step({"$ref": "steps.2.output.value"}, depends_on=[2, 3, 4]),
    ]
    run = (await worker_client.post("/v1/agent-runs", json={"goal": "dag", "steps": steps})).json()
    assert (await worker_client.post(f"/v1/agent-runs/{run['id']}/start")).status_code == 200
    done = await wait_for(worker_client, run["id"], {"completed"})
    branches = done["steps"][1:4]
    # All three branches were running at once: each started before any of them finished.
    assert max(s["started_at"] for s in branches) < min(s["completed_at"] for s in branches)
    join = done["steps"][4]
    assert join["started_at"] > max(s["completed_at"] for s in branches)
    assert join["output_data"]["value"] == "a"


async def test_per_run_parallel_limit_is_respected(worker_client: httpx.AsyncClient) -> None:
    steps = [step(n, depends_on=[], sleep_s=0.3) for n in range(4)]
    body = {"goal": "limit", "steps": steps, "auto_start": True, "max_parallel": 1}
    run = (await worker_client.post("/v1/agent-runs", json=body)).json()
    done = await wait_for(worker_client, run["id"], {"completed"})
    spans = sorted((s["started_at"], s["completed_at"]) for s in done["steps"])
    assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(spans))


async def test_retryable_failures_are_retried_with_each_attempt_recorded(
    worker_client: httpx.AsyncClient,
) -> None:
    spec = step("flaky", fail_attempts=2)
    spec["retry_policy"] = {"max_attempts": 3, "initial_backoff_s": 0.05, "max_backoff_s": 0.1}
    run = (
        await worker_client.post(
            "/v1/agent-runs", json={"goal": "retry", "steps": [spec], "auto_start": True}
        )
    ).json()
    done = await wait_for(worker_client, run["id"], {"completed", "failed"})
    assert done["status"] == "completed"
    assert done["steps"][0]["attempt"] == 3
    assert done["steps"][0]["output_data"]["attempt"] == 3
    audit = (await worker_client.get(f"/v1/agent-runs/{run['id']}/audit")).json()["events"]
    failures = [e for e in audit if e["type"] == "step.failed"]
    assert [e["payload"]["attempt"] for e in failures] == [1, 2]
    assert all(e["payload"]["error"]["code"] == "transient_error" for e in failures)


async def test_non_retryable_failure_is_not_retried_then_retry_and_resume_by_hand(
    worker_client: httpx.AsyncClient,
) -> None:
    spec = step("broken", fail=True)
    spec["max_attempts"] = 5
    body = {"goal": "manual", "steps": [spec, step("after")], "auto_start": True}
    run = (await worker_client.post("/v1/agent-runs", json=body)).json()
    failed = await wait_for(worker_client, run["id"], {"failed"})
    assert failed["steps"][0]["attempt"] == 1  # ExecutorError is not retryable
    step_id = failed["steps"][0]["id"]
    retried = await worker_client.post(f"/v1/agent-runs/{run['id']}/steps/{step_id}/retry")
    assert retried.status_code == 200
    again = await wait_for(worker_client, run["id"], {"failed"})
    assert again["steps"][0]["attempt"] == 2
    resumed = await worker_client.post(f"/v1/agent-runs/{run['id']}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "running"
    third = await wait_for(worker_client, run["id"], {"failed"})
    assert third["steps"][0]["attempt"] == 3
    not_failed = await worker_client.post(f"/v1/agent-runs/{run['id']}/steps/{step_id}/retry")
    assert not_failed.status_code == 200  # the step is failed again, so it may be retried


async def test_resume_refuses_runs_that_did_not_fail(worker_client: httpx.AsyncClient) -> None:
    run = (await worker_client.post("/v1/agent-runs", json={"goal": "g"})).json()
    response = await worker_client.post(f"/v1/agent-runs/{run['id']}/resume")
    assert response.status_code == 409
    assert response.json()["current_state"] == "created"


async def test_cancel_stops_a_running_step(worker_client: httpx.AsyncClient) -> None:
    body = {"goal": "long", "steps": [step("slow", sleep_s=30), step("never")], "auto_start": True}
    run = (await worker_client.post("/v1/agent-runs", json=body)).json()
    deadline = time.monotonic() + 10
    while (await worker_client.get(f"/v1/agent-runs/{run['id']}")).json()["steps"][0][
        "status"
    ] != "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    started = time.monotonic()
    cancelled = (await worker_client.post(f"/v1/agent-runs/{run['id']}/cancel")).json()
    assert cancelled["status"] == "cancelled"
    assert [s["status"] for s in cancelled["steps"]] == ["cancelled", "cancelled"]
    await asyncio.sleep(0.5)
    final = (await worker_client.get(f"/v1/agent-runs/{run['id']}")).json()
    assert final["steps"][0]["status"] == "cancelled"  # the worker's late result did not land
    assert time.monotonic() - started < 5


async def test_goal_only_auto_start_is_planned_and_run_by_the_worker(
    worker_client: httpx.AsyncClient,
) -> None:
    body = {"goal": "Summarize the idea of deterministic agents", "auto_start": True}
    run = (await worker_client.post("/v1/agent-runs", json=body)).json()
    assert run["status"] == "created"
    done = await wait_for(worker_client, run["id"], {"completed", "failed"})
    assert done["status"] == "completed", done
    assert done["plan_version"] == 1


@pytest.fixture
async def command_client(
    settings: Settings, workspace_root: Path, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        settings.model_copy(
            update={
                "embedded_worker": True,
                "worker_poll_s": 0.2,
                "command_allowlist": [sys.executable],
                "policies_file": unattended_policies(tmp_path),
            }
        )
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child may linger as a zombie until reaped; that is not running.
    with contextlib.suppress(FileNotFoundError):
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    return False


def _cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    return b""


def _pids_working_in(folder: Path) -> list[int]:
    """Host pids of the processes whose cwd is ``folder`` (a sandboxed command's own pids are
    those of its PID namespace, so the test finds them this way)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/cwd") == str(folder):
                    found.append(int(entry))
    return found


async def test_cancel_kills_a_running_commands_whole_process_group(
    command_client: httpx.AsyncClient, workspace_root: Path
) -> None:
    workspace = workspace_root / "cmd"
    workspace.mkdir()
    script = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', 'the-child'])\n"
        "time.sleep(60)\n"
    )
    steps = [
        {
            "step_type": "run_command",
            "input_data": {"argv": [sys.executable, "-c", script], "timeout_s": 60},
        }
    ]
    body = {
        "goal": "cmd",
        "workspace": str(workspace),
        "steps": steps,
        "auto_start": True,
        "policy": UNATTENDED,
    }
    run = (await command_client.post("/v1/agent-runs", json=body)).json()
    # What a command writes reaches the workspace only when it ends: the test finds its child
    # by the processes working in the workspace.
    deadline = time.monotonic() + 15
    command: list[int] = []
    # The child is the process whose arguments include "the-child" as one of them (the parent
    # has those words only inside its script).
    while not any(b"the-child" in _cmdline(pid).split(b"\0") for pid in command):
        assert time.monotonic() < deadline, "the command never started"
        await asyncio.sleep(0.05)
        command = [pid for pid in _pids_working_in(workspace.resolve()) if _alive(pid)]
    assert len(command) >= 2  # the command and its child
    cancelled = (await command_client.post(f"/v1/agent-runs/{run['id']}/cancel")).json()
    assert cancelled["status"] == "cancelled"
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in command):
        assert time.monotonic() < deadline, "the command's process group survived the cancel"
        await asyncio.sleep(0.05)


async def test_synchronous_execute_heartbeats_so_workers_never_steal_its_step(
    settings: Settings,
) -> None:
    app = create_app(
        settings.model_copy(
            update={"embedded_worker": True, "worker_poll_s": 0.1, "worker_lease_s": 1.0}
        )
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        steps = [step("slow", sleep_s=2.5)]
        run = (await client.post("/v1/agent-runs", json={"goal": "g", "steps": steps})).json()
        executing = asyncio.create_task(client.post(f"/v1/agent-runs/{run['id']}/execute"))
        await asyncio.sleep(0.3)
        await client.post(f"/v1/agent-runs/{run['id']}/start")  # the worker now watches it
        response = await executing
        assert response.status_code == 200
        done = response.json()
        audit = (await client.get(f"/v1/agent-runs/{run['id']}/audit")).json()["events"]
    assert done["status"] == "completed"
    assert done["steps"][0]["attempt"] == 1  # lasted 2.5 leases, never reclaimed
    assert [e["type"] for e in audit].count("step.running") == 1
