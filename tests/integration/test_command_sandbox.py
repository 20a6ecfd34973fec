"""Commands through the whole engine: provider keys are masked out of everything recorded, a
step cannot raise a limit above the server's cap, and a timed-out command fails its step (F4).
What the sandbox hides from a command of a real `serve` is in test_command_secrets_served."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.config import Settings
from tests.integration.test_plan_checks import refused
from tests.integration.test_workers import embedded_worker_client, wait_for
from tests.policies import UNATTENDED, unattended_policies
from tests.sandboxing import require_sandbox

OPENAI_KEY = "sk-test-F2-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-F2-anthropic-0123456789"
KEYS = (OPENAI_KEY, ANTHROPIC_KEY)
ENV = shutil.which("env") or "/usr/bin/env"
CAT = shutil.which("cat") or "/usr/bin/cat"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """Every app of this module knows the test policy that frees commands from approval."""
    return settings.model_copy(update={"policies_file": unattended_policies(tmp_path)})


@pytest.fixture
def provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server holds real-looking provider keys in its environment."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)


@pytest.fixture
def workspace(workspace_root: Path) -> Path:
    target = workspace_root / "project"
    target.mkdir()
    return target.resolve()


def command(*argv: str, **limits: Any) -> dict[str, Any]:
    data = {"argv": list(argv), "timeout_s": 20, **limits}
    return {"step_type": "run_command", "input_data": data}


def python(script: str, **limits: Any) -> dict[str, Any]:
    return command(sys.executable, "-c", script, **limits)


@pytest.fixture
async def commands(settings: Settings, provider_keys: None) -> AsyncIterator[httpx.AsyncClient]:
    allowed = settings.model_copy(update={"command_allowlist": [sys.executable, ENV, CAT]})
    async with embedded_worker_client(allowed, poll_s=0.2) as http:
        yield http


async def create(
    client: httpx.AsyncClient, steps: list[dict[str, Any]], workspace: Path
) -> httpx.Response:
    """A run of ``steps`` under the test policy that lets commands run without a person."""
    body = {"goal": "check", "steps": steps, "workspace": str(workspace), "policy": UNATTENDED}
    return await client.post("/v1/agent-runs", json=body)


async def finished(client: httpx.AsyncClient, steps: list[dict[str, Any]], ws: Path) -> Any:
    response = await create(client, steps, ws)
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    await client.post(f"/v1/agent-runs/{run_id}/start")
    return await wait_for(client, run_id, {"completed", "failed"}, limit_s=60)


async def everything_served(client: httpx.AsyncClient, run_id: str) -> str:
    """The run, its steps and its audit log as the API serves them."""
    texts = [
        (await client.get(f"/v1/agent-runs/{run_id}{p}")).text for p in ("", "/steps", "/audit")
    ]
    return "\n".join(texts)


async def test_provider_keys_a_command_prints_are_masked_in_everything_recorded(
    settings: Settings, provider_keys: None, workspace: Path
) -> None:
    """An operator who passes a key through to commands still never has it recorded: outputs,
    errors (a timed-out command's output) and log lines are masked centrally."""
    leaky = settings.model_copy(
        update={
            "command_allowlist": [sys.executable, ENV],
            "command_env_passthrough": ["PATH", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"],
        }
    )
    steps = [
        command(ENV),
        python(
            "import os, time; print(os.environ['ANTHROPIC_API_KEY'], flush=True); time.sleep(30)",
            timeout_s=1,
        ),
    ]
    async with embedded_worker_client(leaky, poll_s=0.2) as client:
        run = await finished(client, steps, workspace)
        served = await everything_served(client, run["id"])
    assert not any(key in served for key in KEYS)
    first, second = run["steps"]
    assert "OPENAI_API_KEY=[REDACTED]" in first["output_data"]["stdout"]
    assert second["status"] == "failed"
    assert second["error"]["code"] == "command_timed_out"
    assert second["error"]["output"]["stdout"] == "[REDACTED]\n"


async def test_a_timed_out_command_is_a_failed_step(
    commands: httpx.AsyncClient, workspace: Path
) -> None:
    """F4: the step fails with command_timed_out and its output so far, the run fails."""
    run = await finished(
        commands,
        [python("import time; print('started', flush=True); time.sleep(30)", timeout_s=1)],
        workspace,
    )
    (only,) = run["steps"]
    assert (run["status"], only["status"]) == ("failed", "failed")
    assert only["error"]["code"] == "command_timed_out"
    assert only["error"]["output"]["stdout"] == "started\n"
    assert only["error"]["output"]["timed_out"] is True


@pytest.mark.parametrize(
    ("limit", "value", "setting"),
    [
        ("max_processes", 16_384, "AGENT_ENGINE_COMMAND_MAX_PROCESSES"),
        ("memory_bytes", 64 << 30, "AGENT_ENGINE_COMMAND_MAX_MEMORY_BYTES"),
        ("max_file_bytes", 64 << 30, "AGENT_ENGINE_COMMAND_MAX_FILE_BYTES"),
        ("cpu_seconds", 3600, "AGENT_ENGINE_COMMAND_MAX_CPU_SECONDS"),
        ("max_write_bytes", 64 << 30, "AGENT_ENGINE_COMMAND_MAX_WRITE_BYTES"),
    ],
)
async def test_a_step_cannot_raise_a_limit_above_the_servers_cap(
    client: httpx.AsyncClient, workspace: Path, limit: str, value: int, setting: str
) -> None:
    """F4: the creator's limits above the server's caps are refused at creation, naming the cap."""
    body = refused(await create(client, [command("python3", **{limit: value})], workspace))
    (error,) = body["errors"]
    assert error["field"] == limit
    assert setting in error["message"] and "above the server's cap" in error["message"]


async def test_a_step_may_lower_its_limits_below_the_caps(
    client: httpx.AsyncClient, workspace: Path
) -> None:
    response = await create(client, [command("python3", max_processes=3, cpu_seconds=5)], workspace)
    assert response.status_code == 201, response.text


async def test_a_command_writing_past_max_write_bytes_fails_its_step_and_changes_nothing(
    commands: httpx.AsyncClient, workspace: Path
) -> None:
    """Many files, each small, add up past the write budget: the step fails with
    command_write_limit naming the cap, and the workspace is as it was before the run."""
    require_sandbox()
    (workspace / "kept.txt").write_text("before\n")
    script = (
        "open('kept.txt', 'w').write('after')\n"
        "for i in range(40):\n"
        "    open(f'part{i}.bin', 'wb').write(b'x' * 65536)\n"
    )
    run = await finished(commands, [python(script, max_write_bytes=1 << 20)], workspace)
    (only,) = run["steps"]
    assert (run["status"], only["status"]) == ("failed", "failed")
    assert only["error"]["code"] == "command_write_limit"
    assert "AGENT_ENGINE_COMMAND_MAX_WRITE_BYTES" in only["error"]["message"]
    assert only["error"]["output"]["write_limit_reached"] is True
    assert sorted(p.name for p in workspace.iterdir()) == ["kept.txt"]
    assert (workspace / "kept.txt").read_text() == "before\n"
