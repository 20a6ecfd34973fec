"""Verify replays through the real app and its embedded worker, on SQLite and PostgreSQL: side
effects are served from the records, so no command runs, no MCP tool is called and no file is
written; an edit's file must have its recorded before- or after-hash."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from agent_engine.config import Settings
from tests.backends import one_backend
from tests.fakes.llm_servers import FakeLLMServer
from tests.mcp_servers import FAKE_SERVER, write_servers
from tests.replay_flow import (
    STORE,
    EchoModel,
    app_client,
    audit,
    calls_of,
    create,
    finish,
    hashes,
    replay,
    reset_workspace,
    sample_copy,
    sample_plan,
)


@pytest.fixture
def model() -> Iterator[tuple[FakeLLMServer, EchoModel]]:
    echo = EchoModel()
    with FakeLLMServer(responder=echo) as server:
        yield server, echo


@pytest.fixture
async def client(
    settings: Settings, model: tuple[FakeLLMServer, EchoModel], tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings, model[0], tmp_path) as (_, http):
        yield http


async def test_verify_replay_of_the_sample_story_runs_no_command_and_writes_nothing(
    client: httpx.AsyncClient,
    model: tuple[FakeLLMServer, EchoModel],
    workspace_root: Path,
    database_url: str,
) -> None:
    server, _ = model
    workspace = sample_copy(workspace_root)
    counter = workspace / "counter.txt"
    steps = sample_plan(command=True)
    # The command also counts its runs in a file: a side effect the replay must not repeat.
    steps[4]["input_data"]["argv"] = [
        sys.executable,
        "-c",
        "import pathlib, subprocess, sys; p = pathlib.Path('counter.txt');"
        " p.write_text(str(int(p.read_text() if p.exists() else '0') + 1));"
        " sys.exit(subprocess.call([sys.executable, '-m', 'pytest', '-q',"
        " '-p', 'no:cacheprovider']))",
    ]
    original = await finish(client, (await create(client, workspace, steps=steps))["id"])
    assert original["status"] == "completed", hashes(original)
    assert counter.read_text() == "1"
    asked = len(server.requests)

    reset_workspace(workspace)  # the edit is checked against the file's recorded before-hash
    before = (workspace / STORE).read_bytes()
    again = await finish(
        client, (await replay(client, original["id"], "verify"))["id"], approve=False
    )

    assert again["status"] == "completed", hashes(again)
    assert hashes(again) == hashes(original)
    assert again["replay_mode"] == "verify"
    assert not counter.exists()  # the command never ran
    assert (workspace / STORE).read_bytes() == before  # the edit was checked, not made
    assert len(server.requests) == asked and float(again["total_cost_usd"]) == 0
    assert all(c.replayed for c in await calls_of(database_url, again["id"]))
    kinds = [e["type"] for e in await audit(client, again["id"])]
    assert "effect.intent" not in kinds  # nothing was about to happen


async def test_verify_accepts_the_edit_before_or_after_and_refuses_any_other_file(
    client: httpx.AsyncClient,
    model: tuple[FakeLLMServer, EchoModel],
    workspace_root: Path,
) -> None:
    server, _ = model
    workspace = sample_copy(workspace_root)
    store = workspace / STORE
    original = await finish(
        client, (await create(client, workspace, steps=sample_plan(command=False)[3:4]))["id"]
    )
    assert original["status"] == "completed", hashes(original)
    edited = store.read_bytes()

    # On the original's own, edited workspace: the recorded after-hash is there.
    on_edited = await finish(client, (await replay(client, original["id"], "verify"))["id"])
    assert on_edited["status"] == "completed", hashes(on_edited)
    assert hashes(on_edited) == hashes(original) and store.read_bytes() == edited
    # On the workspace as the original found it: the before-hash; nothing is written.
    reset_workspace(workspace)
    before = store.read_bytes()
    on_reset = await finish(client, (await replay(client, original["id"], "verify"))["id"])
    assert on_reset["status"] == "completed" and store.read_bytes() == before
    # Any other file fails the edit with the hashes named.
    store.write_text("something else\n", encoding="utf-8")
    changed = await finish(client, (await replay(client, original["id"], "verify"))["id"])
    assert changed["status"] == "failed"
    edit = changed["steps"][0]
    assert edit["status"] == "failed" and edit["error"]["code"] == "stale_edit"
    recorded = original["steps"][0]["output_data"]
    assert edit["error"]["expected_sha256"] == recorded["before_sha256"]
    assert edit["error"]["after_sha256"] == recorded["after_sha256"]
    assert store.read_text(encoding="utf-8") == "something else\n"
    assert server.requests == []


# Starts the test MCP server after counting the start in the file named by its second argument.
COUNTED_START = (
    "import pathlib, runpy, sys; c = pathlib.Path(sys.argv[2]);"
    " c.write_text(str(int(c.read_text() if c.exists() else '0') + 1));"
    " sys.argv = [sys.argv[1]]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


@one_backend(
    "sqlite",
    "a tool's answer is served from its record as a command's is, which the sample story test "
    "checks on both backends; this one starts an MCP server",
)
async def test_verify_replay_calls_no_mcp_tool(
    settings: Settings,
    model: tuple[FakeLLMServer, EchoModel],
    workspace_root: Path,
    tmp_path: Path,
) -> None:
    starts = tmp_path / "mcp-starts.txt"
    servers = write_servers(
        tmp_path,
        {
            "own": {
                "command": sys.executable,
                "args": ["-c", COUNTED_START, str(FAKE_SERVER), str(starts)],
            }
        },
    )
    workspace = sample_copy(workspace_root)
    step = {
        "step_type": "mcp_tool",
        "input_data": {"server": "own", "tool": "write_note", "arguments": {"text": "hello"}},
    }
    async with app_client(
        settings, model[0], tmp_path, mcp_servers=servers, mcp_timeout_s=30.0
    ) as (_, client):
        original = await finish(client, (await create(client, workspace, steps=[step]))["id"])
        assert original["status"] == "completed", hashes(original)
        assert "wrote 5 characters" in str(original["steps"][0]["output_data"]["content"])
        called = int(starts.read_text())
        again = await finish(
            client, (await replay(client, original["id"], "verify"))["id"], approve=False
        )
        assert again["status"] == "completed", hashes(again)
        assert hashes(again) == hashes(original)
        assert int(starts.read_text()) == called  # the server was not even started
