"""The load tool's request mix (``bench/load_mix.py``) against a real `agent-engine serve`: every
request kind succeeds, event streams follow runs to their end, and a gated run is approved
through the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.load_mix import Level, Recorder, Shared, approve_once, noop_run, run_level
from tests.processes import clean_env, free_port, running

pytestmark = pytest.mark.slow


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    """`agent-engine serve` with its embedded worker on the test's database; its base URL."""
    (tmp_path / "workspaces").mkdir()
    port = free_port()
    env = clean_env(
        AGENT_ENGINE_DATABASE_URL=database_url,
        AGENT_ENGINE_AUTO_MIGRATE="false",
        AGENT_ENGINE_WORKSPACE_ROOTS=str(tmp_path / "workspaces"),
        AGENT_ENGINE_LOG_LEVEL="warning",
    )
    with running(["agent_engine", "serve", "--port", str(port)], tmp_path, env, port) as url:
        yield url


async def test_mix_sends_creates_reads_and_lists_without_an_error(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        seeded = (await http.post("/v1/agent-runs", json=noop_run("seed"))).json()["id"]
    level = Level(clients=2, approvers=1, subscribers=1, warmup_s=0.0, seconds=2.0)
    recorder = await run_level([server], level, [seeded], lambda: 0.0)
    assert recorder.errors == {}, recorder.error_samples
    assert {"create", "read", "list", "create (approval)"} <= set(recorder.latencies)
    assert recorder.streams >= 1
    assert recorder.events >= 1


async def test_approver_waits_for_the_gated_step_and_approves_it(server: str) -> None:
    shared = Shared(Recorder(), run_ids=[])  # the default window counts every request
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        run_id = await approve_once(http, shared)
        assert run_id is not None, shared.recorder.error_samples
        run = (await http.get(f"/v1/agent-runs/{run_id}")).json()
    assert shared.recorder.errors == {}, shared.recorder.error_samples
    assert len(shared.recorder.latencies["approve"]) == 1
    assert run["status"] == "completed"
    assert run["steps"][0]["requires_approval"] is True
    assert run["steps"][0]["status"] == "completed"
