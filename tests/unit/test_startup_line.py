"""The line `serve` logs at start: what it says for each way the database and model are set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent_engine.cli.startup import describe_model, describe_serve
from agent_engine.config import Settings
from tests.sandboxing import sandbox_problem


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(autouse=True)
def no_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AGENT_ENGINE_MODEL"):
        monkeypatch.delenv(name, raising=False)


def test_the_password_of_the_database_url_is_hidden() -> None:
    line = describe_serve(
        settings(database_url="postgresql+asyncpg://engine:s3cret@db.example:5432/engine")
    )
    assert "database postgresql+asyncpg://engine:***@db.example:5432/engine;" in line
    assert "s3cret" not in line


def test_the_worker_off_says_how_steps_get_run(tmp_path: Path) -> None:
    line = describe_serve(settings(embedded_worker=False, workspace_roots=[tmp_path]))
    assert "embedded worker off (start `agent-engine worker` to run steps)" in line
    assert line.endswith(f"workspace roots {tmp_path}")


def test_without_api_keys_the_offline_model_answers() -> None:
    assert describe_model(settings()) == "model offline:offline-1 (routed in-process)"


def test_an_api_key_makes_its_models_the_ones_routed_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert describe_model(settings()) == (
        "models openai:gpt-4o-mini, openai:gpt-4o (routed in-process by tier and price)"
    )


def test_a_pinned_model_and_a_remote_router_are_named() -> None:
    assert describe_model(settings(model="anthropic:claude-sonnet-4-0")) == (
        "model anthropic:claude-sonnet-4-0 (pinned by AGENT_ENGINE_MODEL)"
    )
    assert describe_model(settings(router_url="http://127.0.0.1:8100")) == (
        "models chosen by the router at http://127.0.0.1:8100"
    )


def test_a_broken_catalog_is_named_instead_of_a_model(tmp_path: Path) -> None:
    catalog = tmp_path / "models.yaml"
    catalog.write_text("models: [ {provider: nowhere} ]\n")
    assert describe_model(settings(models_file=catalog)).startswith(
        f"no model: invalid model catalog {catalog}"
    )


def test_a_server_without_a_sandbox_says_so_on_its_one_line(tmp_path: Path) -> None:
    line = describe_serve(settings(sandbox="none", workspace_roots=[tmp_path]))
    assert "WARNING: commands run without a sandbox (AGENT_ENGINE_SANDBOX=none)" in line
    assert "\n" not in line


def test_the_default_sandbox_is_named_or_its_problem_is() -> None:
    problem = sandbox_problem()
    line = describe_serve(settings())
    if problem is None:
        assert "; commands sandboxed by bubblewrap;" in line
    else:
        assert "run_command refused:" in line
