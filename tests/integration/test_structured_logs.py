"""Structured logs of a run that used a provider key: the engine's log lines, captured as `serve`
writes them, are JSON objects, the lines of the step carry its run, step and attempt, and the
key, which the provider's error repeats, appears in none of them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.api.app import create_app
from agent_engine.cli.log_setup import chosen_format, configure_logging
from agent_engine.config import Settings
from tests.fakes.llm_servers import FakeLLMServer, error_reply

KEY = "sk-test-logs-0123456789abcdefghij"


@pytest.fixture
def fake_llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def keyed_settings(
    settings: Settings, tmp_path: Path, fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    catalog = tmp_path / "models.yaml"
    catalog.write_text(
        "providers:\n"
        f"  fakeai: {{kind: openai, base_url: '{fake_llm.openai_base_url}',"
        " api_key_env: OPENAI_API_KEY, timeout_s: 5}\n"
        "models:\n"
        "  - {provider: fakeai, model: writer-x, tier: medium, context_window: 100000,"
        " max_output_tokens: 8192, prices: {input: 1, output: 2}}\n",
        encoding="utf-8",
    )
    return settings.model_copy(
        update={"models_file": catalog, "model": "fakeai:writer-x", "log_format": "json"}
    )


@pytest.fixture
def captured(keyed_settings: Settings) -> Iterator[io.StringIO]:
    loggers = [logging.getLogger(name) for name in ("", "agent_engine", "uvicorn")]
    levels = [logger.level for logger in loggers]
    stream = io.StringIO()
    handler = configure_logging(keyed_settings, stream)
    yield stream
    logging.getLogger().removeHandler(handler)
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.fixture
async def client(keyed_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(keyed_settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


async def test_a_run_with_a_provider_key_logs_json_step_lines_without_the_key(
    client: httpx.AsyncClient, fake_llm: FakeLLMServer, captured: io.StringIO, workspace_root: Path
) -> None:
    # The provider repeats the key it was sent, as real ones do in their 401s.
    fake_llm.script(error_reply(401, f"Incorrect API key provided: {KEY}."))
    step = {"step_type": "analyze", "input_data": {"instruction": "look"}, "max_attempts": 1}
    (workspace_root / "project").mkdir()
    body = {"goal": "analyze", "workspace": str(workspace_root / "project"), "steps": [step]}
    created = await client.post("/v1/agent-runs", json=body)
    assert created.status_code == 201, created.text
    run = created.json()
    executed = await client.post(f"/v1/agent-runs/{run['id']}/execute")
    assert executed.status_code == 200, executed.text
    assert fake_llm.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    step_row = executed.json()["steps"][0]
    assert step_row["status"] == "failed"
    # Before its own log line is written, one by an ordinary logger in a step's context.
    logging.getLogger("agent_engine.engine").info("the key is %s", KEY)

    text = captured.getvalue()
    assert KEY not in text
    lines: list[dict[str, Any]] = [json.loads(line) for line in text.splitlines()]
    step_lines = [line for line in lines if line.get("step_id") == step_row["id"]]
    failure = next(line for line in step_lines if "failed" in line["event"])
    assert failure["run_id"] == run["id"] and failure["attempt"] == 1
    assert "trace_id" in failure and failure["level"] == "warning"
    assert "[REDACTED]" in failure["event"]
    free = next(line for line in lines if line["event"].startswith("the key is"))
    assert free["event"] == "the key is [REDACTED]" and "step_id" not in free


def test_format_follows_the_setting_else_the_terminal(settings: Settings) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert chosen_format(settings, io.StringIO()) == "json"
    assert chosen_format(settings, Terminal()) == "console"
    console = settings.model_copy(update={"log_format": "console"})
    assert chosen_format(console, io.StringIO()) == "console"
